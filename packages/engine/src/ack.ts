import type { ResultSetHeader, RowDataPacket } from "mysql2/promise";
import { inTransaction, type Pool } from "@shop/platform/db";
import type { AnyFlow } from "./flow.js";

export interface Ack {
  id: number;
  /** The flow's resultColumns, in order (the voucher id); empty when it keeps none. */
  values: unknown[];
}

/**
 * Marks delivered rows, fenced on the claim token: `AND locked_by = ?` makes
 * the ack of a claimer whose lease expired (and whose rows another relay has
 * since claimed) change nothing. That is harmless: receivers are idempotent
 * per key, so the new claimer gets the same outcome back (created=false) and
 * acks it itself.
 *
 * Two statements for the whole batch, in one transaction: a locking read of
 * the rows still fenced to this token (which also names the stale ones), then
 * one UPDATE with a CASE per result column, fenced again. One statement per
 * row cost a round trip each and was the largest cost of a backlog drain.
 * The locking read walks the primary key in id order, the same order every
 * relay locks in, so two acks over overlapping rows cannot deadlock.
 *
 * Returns the ids whose fence did not match.
 */
export async function ack(pool: Pool, flow: AnyFlow, token: string, acks: Ack[]): Promise<number[]> {
  if (acks.length === 0) return [];
  const ids = acks.map((d) => d.id);
  return inTransaction(pool, async (conn) => {
    const [owned] = await conn.query<RowDataPacket[]>(flow.sql.lockOwned, [ids, token]);
    const mine = new Set(owned.map((r) => Number(r.id)));
    const acked = acks.filter((d) => mine.has(d.id));
    if (acked.length > 0) {
      const whens = acked.map(() => "WHEN ? THEN ?").join(" ");
      const sets = flow.resultColumns.map((c) => `${c} = CASE id ${whens} END, `).join("");
      await conn.query<ResultSetHeader>(
        `UPDATE ${flow.table}
            SET status = 'delivered', ${sets}delivered_at = NOW(3), locked_by = NULL, last_error = NULL
          WHERE id IN (?) AND locked_by = ?`,
        [...flow.resultColumns.flatMap((_, i) => acked.flatMap((d) => [d.id, d.values[i]])), acked.map((d) => d.id), token],
      );
    }
    return ids.filter((id) => !mine.has(id)).sort((a, b) => a - b);
  });
}
