import type { envReader } from "@shop/platform/config";
import { inTransaction, retryTransient, type Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import type { ResultSetHeader, RowDataPacket } from "mysql2/promise";
import type { AnyFlow } from "./flow.js";

export interface OutboxCleanupConfig {
  /**
   * How long a delivered outbox row is kept before it is removed (what must
   * outlive it is copied by the flow's archive hook). Default 7 days: long enough to look into
   * a delivery's attempts and errors after the fact. 0 keeps rows forever
   * (the cleanup does not run).
   */
  retentionMs: number;
  /**
   * Pause between two sweeps; a sweep removes everything past retention, one
   * batch at a time. Default 60000 ms: rows become removable at the rate
   * they are written, so a minute's worth is a few batches.
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
   * database to the claim and the flow's writers between batches when a large
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

/**
 * Reads `prefix` + RETENTION_MS, CLEANUP_INTERVAL_MS, CLEANUP_BATCH (OUTBOX_*
 * for the voucher flow); problems go to the reader.
 */
export function outboxCleanupConfigFromEnv(env: ReturnType<typeof envReader>, prefix = "OUTBOX_"): OutboxCleanupConfig {
  const d = OUTBOX_CLEANUP_DEFAULTS;
  return {
    // Up to ten years; 0 disables the cleanup.
    retentionMs: env.int(`${prefix}RETENTION_MS`, d.retentionMs, { min: 0, max: 10 * 365 * 24 * 3_600_000 }),
    intervalMs: env.int(`${prefix}CLEANUP_INTERVAL_MS`, d.intervalMs, { min: 10, max: 86_400_000 }),
    batchSize: env.int(`${prefix}CLEANUP_BATCH`, d.batchSize, { min: 1, max: 10_000 }),
    batchPauseMs: d.batchPauseMs,
  };
}

/**
 * Removes one batch of delivered rows older than retentionMs, in one short
 * transaction: the flow's archive hook copies what must outlive them first
 * (the voucher id onto its order), then the rows are deleted, so nothing is
 * missing in between. Returns the number of rows removed. The read is
 * flow.sql.cleanupSelect (index-served; see its comment).
 *
 * The read is not locking, so between it and the writes a row may have been
 * requeued and delivered again (for vouchers: RequeueVoucher with redeliver,
 * then the relay's ack), with another result. The rows are therefore read
 * again under lock, and only a row still delivered with the result first
 * read is archived and removed; any other is left for a later sweep (its
 * delivered_at is new, so it is back inside retention). Archiving the result
 * read first would copy the old one and delete the row holding the new one.
 * A row whose result column is NULL is never removed: the ack always writes
 * it, so such a row was written by hand, and is kept for a person to see.
 *
 * Locks: what archive.lock() takes first (the orders, for vouchers), then the
 * outbox rows, the order the flow's writers take them in; the relay's ack
 * locks outbox rows only. The relay's claim never waits on them: it reads
 * only status='pending' entries of its index, and with READ COMMITTED
 * (createPool) there are no gap locks between the two ranges.
 *
 * `afterRead` runs between the first read and the locks; tests use it to
 * interleave a requeue and redelivery deterministically.
 */
export async function removeDeliveredBatch(
  pool: Pool,
  flow: AnyFlow,
  retentionMs: number,
  batchSize: number,
  hooks: { afterRead?: () => Promise<void> } = {},
): Promise<number> {
  return inTransaction(pool, async (conn) => {
    const [rows] = await conn.query<RowDataPacket[]>(flow.sql.cleanupSelect, [retentionMs * 1000, batchSize]);
    if (rows.length === 0) return 0;
    await hooks.afterRead?.();
    const results = flow.resultColumns;
    const read = new Map(rows.map((r) => [Number(r.id), r]));
    await flow.def.archive?.lock?.(conn, rows);
    const [locked] = await conn.query<RowDataPacket[]>(
      `SELECT ${["id", "status", ...results].join(", ")} FROM ${flow.table} WHERE id IN (?) ORDER BY id FOR UPDATE`,
      [[...read.keys()]],
    );
    const unchanged = locked
      .filter((r) => r.status === "delivered" && results.every((c) => r[c] != null && String(r[c]) === String(read.get(Number(r.id))![c])))
      .map((r) => read.get(Number(r.id))!);
    if (unchanged.length === 0) return 0;
    await flow.def.archive?.copy(conn, unchanged);
    // Fenced again in the statement itself: only a row still delivered with the result just archived is removed.
    const fence = ["id = ?", ...results.map((c) => `${c} = ?`)].join(" AND ");
    const [res] = await conn.query<ResultSetHeader>(
      `DELETE FROM ${flow.table} WHERE status = 'delivered' AND (${unchanged.map(() => `(${fence})`).join(" OR ")})`,
      unchanged.flatMap((r) => [r.id, ...results.map((c) => r[c])]),
    );
    return res.affectedRows;
  });
}

export interface OutboxCleanupDeps {
  pool: Pool;
  flow: AnyFlow;
  logger: Logger;
  config: OutboxCleanupConfig;
}

/**
 * Keeps a flow's outbox from growing forever: every intervalMs it removes the
 * delivered rows older than retentionMs, batchSize at a time with a pause
 * between batches, until none is left. Runs inside the service that owns the
 * outbox; any number of replicas may run it at once (they remove disjoint or already
 * removed rows, and a deadlock between them is retried).
 */
export class OutboxCleanup {
  private readonly pool: Pool;
  private readonly flow: AnyFlow;
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
    this.flow = deps.flow;
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
      const n = await retryTransient(() => removeDeliveredBatch(this.pool, this.flow, this.config.retentionMs, this.config.batchSize));
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
