import { readOutboxStats as readStats, type OutboxStats } from "@shop/engine/stats";
import type { Pool } from "@shop/platform/db";
import { voucherOutbox } from "./voucher-flow.js";

export type { OutboxStats } from "@shop/engine/stats";

/** The voucher outbox's gauges query, built by the engine (see FlowSql.stats); a test EXPLAINs it. */
export const OUTBOX_STATS_SQL = voucherOutbox.sql.stats;

/** Reads voucher_outbox's gauges; `timeoutMs` bounds the query so a scrape cannot pile up behind a slow database. */
export function readOutboxStats(pool: Pool, timeoutMs: number): Promise<OutboxStats> {
  return readStats(pool, voucherOutbox, timeoutMs);
}
