import cron, { type ScheduledTask } from "node-cron";
import type { Logger } from "@shop/platform/logger";

/** What makes the scheduler tick: a cron task in production, a test's own hand in tests. */
export interface Ticker {
  /** Starts calling onTick at every tick. */
  start(onTick: () => void): void;
  /** Stops ticking. Idempotent. */
  stop(): Promise<void>;
  /** The next tick, if known (for the start-up log line). */
  nextRun(): Date | null;
}

/**
 * Ticks on a node-cron expression in a timezone. The task is created
 * stopped (cron.createTask) and started by start(), so nothing fires before
 * the scheduler is ready; `task` is there for tests, whose task.execute()
 * is a tick without waiting on the wall clock.
 */
export function cronTicker(expression: string, timezone: string, logger: Logger, name = "reconcile"): Ticker & { readonly task: ScheduledTask } {
  let onTick: (() => void) | undefined;
  const task = cron.createTask(expression, () => onTick?.(), {
    name,
    timezone,
    // node-cron's own messages (missed ticks) go through our logger instead of the console.
    logger: {
      info: (m) => logger.debug({ task: name }, m),
      warn: (m) => logger.warn({ task: name }, m),
      error: (m, err) => logger.error({ task: name, err: err ?? m }, String(m)),
      debug: (m) => logger.debug({ task: name }, String(m)),
    },
  });
  return {
    task,
    start(fn) {
      onTick = fn;
      task.start();
    },
    async stop() {
      await task.stop();
      await task.destroy();
    },
    nextRun: () => task.getNextRun(),
  };
}

export interface SchedulerOptions {
  /** node-cron expression (5 fields, or 6 with seconds). */
  cron: string;
  /** IANA timezone the expression is read in. */
  timezone: string;
  /** One run; its promise must settle when the run is over, which is what keeps runs from overlapping. */
  run: () => Promise<unknown>;
  logger: Logger;
  /** Task name in node-cron's registry and in logs. Default "reconcile". */
  name?: string;
  /** What makes it tick. Default a cron ticker on `cron` in `timezone`. */
  ticker?: Ticker;
}

/**
 * Runs reconciliation on a cron schedule. Runs never overlap: a tick that
 * comes while a run is still going is skipped (and logged), not queued, since
 * the next run covers the same ground anyway.
 */
export class ReconcileScheduler {
  private readonly ticker: Ticker;
  private started = false;
  private inFlight?: Promise<unknown>;
  /** Runs started and ticks skipped because a run was still going, for logs and tests. */
  readonly stats = { started: 0, skipped: 0 };

  constructor(private readonly opts: SchedulerOptions) {
    if (!cron.validate(opts.cron)) throw new Error(`invalid cron expression ${JSON.stringify(opts.cron)}`);
    this.ticker = opts.ticker ?? cronTicker(opts.cron, opts.timezone, opts.logger, opts.name);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.ticker.start(() => this.tick());
    this.opts.logger.info(
      { cron: this.opts.cron, timezone: this.opts.timezone, nextRun: this.ticker.nextRun()?.toISOString() },
      "reconcile scheduler started",
    );
  }

  /** The run in flight, if any (a tick starts one unless one is going). */
  get running(): Promise<unknown> | undefined {
    return this.inFlight;
  }

  private tick(): void {
    const { logger } = this.opts;
    if (!this.started) return;
    if (this.inFlight) {
      this.stats.skipped++;
      logger.warn({ task: this.opts.name ?? "reconcile" }, "reconcile tick skipped: the previous run is still going");
      return;
    }
    this.stats.started++;
    const run = this.opts
      .run()
      .catch((err) => logger.error({ err }, "scheduled reconcile run threw"))
      .finally(() => {
        if (this.inFlight === run) this.inFlight = undefined;
      });
    this.inFlight = run;
  }

  /** Stops scheduling and waits for a run in flight to finish. Idempotent. */
  async stop(): Promise<void> {
    if (this.started) {
      this.started = false;
      await this.ticker.stop();
    }
    await this.inFlight;
  }
}
