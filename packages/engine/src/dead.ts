import type { ResultSetHeader, RowDataPacket } from "mysql2/promise";
import type { Pool } from "@shop/platform/db";
import type { AnyFlow, Flow } from "./flow.js";

/** A dead outbox row: its payload, attempts and last error; its id is the keyset position for paging. */
export type DeadRow<Row extends object> = Row & { id: number; attempts: number; lastError: string | null; createdAt: Date };

/**
 * Dead rows after outbox id `afterId`, oldest first. The claim index's
 * status prefix limits the read to dead rows; sorting them by id is a small
 * filesort over those rows only (dead rows are few, and each one is an alert).
 */
export async function listDead<Row extends object>(
  pool: Pool,
  flow: Flow<Row, unknown>,
  afterId: number,
  limit: number,
): Promise<Array<DeadRow<Row>>> {
  const [rows] = await pool.query<RowDataPacket[]>(
    `SELECT ${["id", ...flow.columns, "attempts", "last_error", "created_at"].join(", ")}
       FROM ${flow.table} FORCE INDEX (${flow.claimIndex})
      WHERE status = 'dead' AND id > ?
      ORDER BY id
      LIMIT ?`,
    [afterId, limit],
  );
  return rows.map((r) => ({
    ...flow.def.fromRow(r),
    id: Number(r.id),
    attempts: Number(r.attempts),
    lastError: r.last_error ?? null,
    createdAt: r.created_at,
  }));
}

/**
 * Puts dead rows back in the queue, due now, once their cause is fixed. Only
 * rows still dead change (a row requeued twice is due once); attempts and
 * last_error are kept, so a row whose own failure parked it is still sent apart
 * from its neighbours (OWN_FAILURE_MARK) and its history stays visible.
 * Returns the number of rows requeued.
 */
export async function requeueDead(pool: Pool, flow: AnyFlow, ids: number[]): Promise<number> {
  if (ids.length === 0) return 0;
  const [res] = await pool.query<ResultSetHeader>(
    `UPDATE ${flow.table} SET status = 'pending', next_attempt_at = NOW(3), locked_by = NULL WHERE id IN (?) AND status = 'dead'`,
    [ids],
  );
  return res.affectedRows;
}
