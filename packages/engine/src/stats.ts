import type { RowDataPacket } from "mysql2/promise";
import type { Pool } from "@shop/platform/db";
import type { AnyFlow } from "./flow.js";

export interface OutboxStats {
  pending: number;
  dead: number;
  /** Age of the oldest pending row (database clock), 0 when none is pending. */
  oldestPendingAgeSeconds: number;
}

/**
 * Reads a flow's outbox gauges with flow.sql.stats (one index-only pass over
 * pending and dead rows; see its comment); `timeoutMs` bounds the query so a
 * scrape cannot pile up behind a slow database.
 */
export async function readOutboxStats(pool: Pool, flow: AnyFlow, timeoutMs: number): Promise<OutboxStats> {
  const [rows] = await pool.query<RowDataPacket[]>({ sql: flow.sql.stats, timeout: timeoutMs });
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
