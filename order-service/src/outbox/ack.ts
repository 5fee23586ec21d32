import type { ResultSetHeader, RowDataPacket } from "mysql2/promise";
import { inTransaction, type Pool } from "@shop/platform/db";

export interface Delivery {
  id: number;
  voucherId: string;
}

/**
 * Marks delivered rows, fenced on the claim token: `AND locked_by = ?` makes
 * the ack of a claimer whose lease expired (and whose rows another relay has
 * since claimed) change nothing. That is harmless: the voucher service is
 * idempotent per order, so the new claimer gets the same voucher back with
 * created=false and acks it itself.
 *
 * Two statements for the whole batch, in one transaction: a locking read of
 * the rows still fenced to this token (which also names the stale ones), then
 * one UPDATE with a CASE for the voucher ids, fenced again. One statement per
 * row cost a round trip each and was the largest cost of a backlog drain.
 * The locking read walks the primary key in id order, the same order every
 * relay locks in, so two acks over overlapping rows cannot deadlock.
 *
 * Returns the ids whose fence did not match.
 */
export async function ackDelivered(pool: Pool, token: string, deliveries: Delivery[]): Promise<number[]> {
  if (deliveries.length === 0) return [];
  const ids = deliveries.map((d) => d.id);
  return inTransaction(pool, async (conn) => {
    const [owned] = await conn.query<RowDataPacket[]>(
      `SELECT id FROM voucher_outbox WHERE id IN (?) AND locked_by = ? ORDER BY id FOR UPDATE`,
      [ids, token],
    );
    const mine = new Set(owned.map((r) => Number(r.id)));
    const acked = deliveries.filter((d) => mine.has(d.id));
    if (acked.length > 0) {
      await conn.query<ResultSetHeader>(
        `UPDATE voucher_outbox
            SET status = 'delivered', voucher_id = CASE id ${acked.map(() => "WHEN ? THEN ?").join(" ")} END,
                delivered_at = NOW(3), locked_by = NULL, last_error = NULL
          WHERE id IN (?) AND locked_by = ?`,
        [...acked.flatMap((d) => [d.id, d.voucherId]), acked.map((d) => d.id), token],
      );
    }
    return ids.filter((id) => !mine.has(id)).sort((a, b) => a - b);
  });
}
