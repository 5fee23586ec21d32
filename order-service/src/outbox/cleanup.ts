import type { envReader } from "@shop/platform/config";
import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import {
  OutboxCleanup as EngineCleanup,
  outboxCleanupConfigFromEnv as cleanupConfigFromEnv,
  removeDeliveredBatch as removeBatch,
  type OutboxCleanupConfig,
} from "@shop/engine/cleanup";
import { voucherOutbox } from "./voucher-flow.js";

export { OUTBOX_CLEANUP_DEFAULTS, type OutboxCleanupConfig } from "@shop/engine/cleanup";

/** Reads OUTBOX_RETENTION_MS, OUTBOX_CLEANUP_INTERVAL_MS, OUTBOX_CLEANUP_BATCH; problems go to the reader. */
export function outboxCleanupConfigFromEnv(env: ReturnType<typeof envReader>): OutboxCleanupConfig {
  return cleanupConfigFromEnv(env, "OUTBOX_");
}

/** The voucher outbox's retention read, built by the engine (see FlowSql.cleanupSelect); a test EXPLAINs it. */
export const CLEANUP_SELECT_SQL = voucherOutbox.sql.cleanupSelect;

/**
 * Removes one batch of delivered voucher_outbox rows past retention: the
 * engine's removeDeliveredBatch, whose archive hook (voucher-flow.ts) locks
 * the orders and moves each voucher id to orders.voucher_id before the row
 * goes. Only rows still delivered with the voucher first read are removed.
 */
export function removeDeliveredBatch(
  pool: Pool,
  retentionMs: number,
  batchSize: number,
  hooks: { afterRead?: () => Promise<void> } = {},
): Promise<number> {
  return removeBatch(pool, voucherOutbox, retentionMs, batchSize, hooks);
}

export interface OutboxCleanupDeps {
  pool: Pool;
  logger: Logger;
  config: OutboxCleanupConfig;
}

/** Keeps voucher_outbox from growing forever: the engine's cleanup on the voucher flow. */
export class OutboxCleanup extends EngineCleanup {
  constructor(deps: OutboxCleanupDeps) {
    super({ ...deps, flow: voucherOutbox });
  }
}
