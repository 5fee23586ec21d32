import type { RowDataPacket } from "mysql2/promise";
import type { Pool } from "@shop/platform/db";

export interface OutboxStats {
  pending: number;
  dead: number;
  /** Age of the oldest pending row (database clock), 0 when none is pending. */
  oldestPendingAgeSeconds: number;
}

/**
 * Counts pending and dead rows in one pass over the claim index
 * (status, next_attempt_at, id): the status prefix is a range, the scan is
 * index-only ("Using index"), and GROUP BY status follows the index order, so
 * no temporary table. Its cost grows with pending + dead rows, never with the
 * delivered rows that make up most of the table.
 *
 * The oldest pending row is the one with the smallest id: ids are
 * AUTO_INCREMENT and created_at is stamped in the inserting transaction, so
 * id order is creation order (a requeued row keeps both). MIN(id) comes from
 * the same index entries (InnoDB keeps the primary key in every secondary
 * index), and one primary-key lookup fetches its created_at. The age is
 * computed on the database clock, the one that wrote created_at.
 */
export const OUTBOX_STATS_SQL = `SELECT g.status, g.n, TIMESTAMPDIFF(MICROSECOND, o.created_at, NOW(3)) AS age_us
  FROM (SELECT status, COUNT(*) AS n, MIN(id) AS min_id
          FROM voucher_outbox FORCE INDEX (voucher_outbox_claim_idx)
         WHERE status IN ('pending', 'dead')
         GROUP BY status) g
  LEFT JOIN voucher_outbox o ON o.id = g.min_id`;

/** Reads the outbox gauges; `timeoutMs` bounds the query so a scrape cannot pile up behind a slow database. */
export async function readOutboxStats(pool: Pool, timeoutMs: number): Promise<OutboxStats> {
  const [rows] = await pool.query<RowDataPacket[]>({ sql: OUTBOX_STATS_SQL, timeout: timeoutMs });
  const stats: OutboxStats = { pending: 0, dead: 0, oldestPendingAgeSeconds: 0 };
  for (const r of rows) {
    if (r.status === "pending") {
      stats.pending = Number(r.n);
      stats.oldestPendingAgeSeconds = Math.max(0, Number(r.age_us ?? 0) / 1e6);
    } else if (r.status === "dead") {
      stats.dead = Number(r.n);
    }
  }
  return stats;
}
