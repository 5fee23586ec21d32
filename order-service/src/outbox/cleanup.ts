import type { envReader } from "@shop/platform/config";
import { inTransaction, retryTransient, type Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import type { ResultSetHeader, RowDataPacket } from "mysql2/promise";

export interface OutboxCleanupConfig {
  /**
   * How long a delivered outbox row is kept before it is removed (its voucher
   * id moves to orders.voucher_id). Default 7 days: long enough to look into
   * a delivery's attempts and errors after the fact. 0 keeps rows forever
   * (the cleanup does not run).
   */
  retentionMs: number;
  /**
   * Pause between two sweeps; a sweep removes everything past retention, one
   * batch at a time. Default 60000 ms: rows become removable at the rate
   * orders are sent, so a minute's worth is a few batches.
   */
  intervalMs: number;
  /**
   * Rows removed per transaction. Default 500: each batch holds its row locks
   * for a few milliseconds, and a small batch keeps the undo log and the
   * replication event small.
   */
  batchSize: number;
  /**
   * Pause between two batches of one sweep. Default 20 ms: leaves the
   * database to the claim and MarkOrderSent between batches when a large
   * backlog of delivered rows is being removed.
   */
  batchPauseMs: number;
}

export const OUTBOX_CLEANUP_DEFAULTS: Readonly<OutboxCleanupConfig> = {
  retentionMs: 7 * 24 * 3_600_000,
  intervalMs: 60_000,
  batchSize: 500,
  batchPauseMs: 20,
};

/** Reads OUTBOX_RETENTION_MS, OUTBOX_CLEANUP_INTERVAL_MS, OUTBOX_CLEANUP_BATCH; problems go to the reader. */
export function outboxCleanupConfigFromEnv(env: ReturnType<typeof envReader>): OutboxCleanupConfig {
  const d = OUTBOX_CLEANUP_DEFAULTS;
  return {
    // Up to ten years; 0 disables the cleanup.
    retentionMs: env.int("OUTBOX_RETENTION_MS", d.retentionMs, { min: 0, max: 10 * 365 * 24 * 3_600_000 }),
    intervalMs: env.int("OUTBOX_CLEANUP_INTERVAL_MS", d.intervalMs, { min: 10, max: 86_400_000 }),
    batchSize: env.int("OUTBOX_CLEANUP_BATCH", d.batchSize, { min: 1, max: 10_000 }),
    batchPauseMs: d.batchPauseMs,
  };
}

/**
 * The delivered rows due for removal, oldest first, on the
 * (status, delivered_at, id) index: the scan starts at the oldest delivered
 * row and stops after LIMIT, so it never reads pending rows nor rows inside
 * the retention period. A plain (non-locking) read: the rows are locked only
 * by the DELETE, after the orders they belong to.
 */
export const CLEANUP_SELECT_SQL = `SELECT id, order_id, voucher_id
  FROM voucher_outbox FORCE INDEX (voucher_outbox_delivered_idx)
 WHERE status = 'delivered' AND delivered_at < DATE_SUB(NOW(3), INTERVAL ? MICROSECOND)
 ORDER BY status, delivered_at, id
 LIMIT ?`;

/**
 * Removes one batch of delivered rows older than retentionMs, in one short
 * transaction: the voucher ids go to orders.voucher_id first, then the rows
 * are deleted, so an order never shows "no voucher" in between. Returns the
 * number of rows removed.
 *
 * The read is not locking, so between it and the writes a row may have been
 * requeued and delivered again (RequeueVoucher with redeliver, then the
 * relay's ack), with another voucher after a void. The rows are therefore
 * read again under lock, and only a row still delivered with the voucher id
 * first read is archived and removed; any other is left for a later sweep
 * (its delivered_at is new, so it is back inside retention). Archiving the
 * id read first would put the old voucher on the order and delete the row
 * holding the new one.
 *
 * Locks: the orders first, then the outbox rows, the same order MarkOrderSent
 * and RequeueVoucher take them in; the relay's ack locks outbox rows only. The
 * relay's claim never waits on them: it reads only status='pending' entries
 * of its index, and with READ COMMITTED (createPool) there are no gap locks
 * between the two ranges.
 *
 * `afterRead` runs between the first read and the locks; tests use it to
 * interleave a requeue and redelivery deterministically.
 */
export async function removeDeliveredBatch(
  pool: Pool,
  retentionMs: number,
  batchSize: number,
  hooks: { afterRead?: () => Promise<void> } = {},
): Promise<number> {
  return inTransaction(pool, async (conn) => {
    const [rows] = await conn.query<RowDataPacket[]>(CLEANUP_SELECT_SQL, [retentionMs * 1000, batchSize]);
    if (rows.length === 0) return 0;
    await hooks.afterRead?.();
    const readVoucher = new Map(rows.map((r) => [Number(r.id), r.voucher_id == null ? null : String(r.voucher_id)]));
    await conn.query(`SELECT id FROM orders WHERE id IN (?) ORDER BY id FOR UPDATE`, [[...new Set(rows.map((r) => String(r.order_id)))]]);
    const [locked] = await conn.query<RowDataPacket[]>(
      `SELECT id, order_id, voucher_id, status FROM voucher_outbox WHERE id IN (?) ORDER BY id FOR UPDATE`,
      [[...readVoucher.keys()]],
    );
    const unchanged = locked.filter(
      (r) => r.status === "delivered" && r.voucher_id != null && String(r.voucher_id) === readVoucher.get(Number(r.id)),
    );
    if (unchanged.length === 0) return 0;
    const cases = unchanged.map(() => "WHEN ? THEN ?").join(" ");
    await conn.query(
      `UPDATE orders SET voucher_id = CASE id ${cases} END WHERE id IN (?)`,
      [...unchanged.flatMap((r) => [r.order_id, r.voucher_id]), unchanged.map((r) => r.order_id)],
    );
    // Fenced again in the statement itself: only a row still delivered with the voucher just archived is removed.
    const [res] = await conn.query<ResultSetHeader>(
      `DELETE FROM voucher_outbox WHERE status = 'delivered' AND (${unchanged.map(() => "(id = ? AND voucher_id = ?)").join(" OR ")})`,
      unchanged.flatMap((r) => [r.id, r.voucher_id]),
    );
    return res.affectedRows;
  });
}

export interface OutboxCleanupDeps {
  pool: Pool;
  logger: Logger;
  config: OutboxCleanupConfig;
}

/**
 * Keeps voucher_outbox from growing forever: every intervalMs it removes the
 * delivered rows older than retentionMs, batchSize at a time with a pause
 * between batches, until none is left. Runs inside the order service; any
 * number of replicas may run it at once (they remove disjoint or already
 * removed rows, and a deadlock between them is retried).
 */
export class OutboxCleanup {
  private readonly pool: Pool;
  private readonly log: Logger;
  private readonly config: OutboxCleanupConfig;
  private stopping = false;
  private running?: Promise<void>;
  private timer?: NodeJS.Timeout;
  private wakeUp?: () => void;
  /** Rows removed since start, for tests and the benchmark. */
  removed = 0;

  constructor(deps: OutboxCleanupDeps) {
    this.pool = deps.pool;
    this.config = { ...deps.config };
    this.log = deps.logger.child({ component: "outbox-cleanup" });
  }

  /** Does nothing when retentionMs is 0 (rows are kept forever). */
  start(): void {
    if (this.running || this.stopping || this.config.retentionMs === 0) return;
    this.log.info({ ...this.config }, "outbox cleanup started");
    this.running = this.loop();
  }

  /** Ends the current pause; the batch in progress finishes. Idempotent. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    this.wakeUp?.();
    await this.running;
  }

  /** One sweep: removes every row past retention. Returns the number removed. */
  async sweep(): Promise<number> {
    let total = 0;
    while (!this.stopping) {
      const n = await retryTransient(() => removeDeliveredBatch(this.pool, this.config.retentionMs, this.config.batchSize));
      total += n;
      this.removed += n;
      if (n < this.config.batchSize) break;
      await this.sleep(this.config.batchPauseMs);
    }
    if (total > 0) this.log.info({ removed: total }, `removed ${total} delivered outbox row(s) past retention`);
    return total;
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      try {
        await this.sweep();
      } catch (err) {
        this.log.error({ err }, "outbox cleanup failed; trying again at the next interval");
      }
      await this.sleep(this.config.intervalMs);
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopping) return Promise.resolve();
    return new Promise((resolve) => {
      this.wakeUp = resolve;
      this.timer = setTimeout(resolve, ms);
    });
  }
}
