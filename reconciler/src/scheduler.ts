import cron, { type ScheduledTask } from "node-cron";
import type { Logger } from "@shop/platform/logger";

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
}

/**
 * Runs reconciliation on a cron schedule. Runs never overlap: a tick that
 * comes while a run is still going is skipped (and logged), not queued, since
 * the next run covers the same ground anyway.
 */
export class ReconcileScheduler {
  private task?: ScheduledTask;
  private inFlight?: Promise<unknown>;
  /** Runs started and ticks skipped because a run was still going, for logs and tests. */
  readonly stats = { started: 0, skipped: 0 };

  constructor(private readonly opts: SchedulerOptions) {
    if (!cron.validate(opts.cron)) throw new Error(`invalid cron expression ${JSON.stringify(opts.cron)}`);
  }

  start(): void {
    if (this.task) return;
    const { logger } = this.opts;
    const name = this.opts.name ?? "reconcile";
    this.task = cron.schedule(
      this.opts.cron,
      () => {
        this.stats.started++;
        const run = this.opts.run().catch((err) => logger.error({ err }, "scheduled reconcile run threw"));
        this.inFlight = run;
        void run.finally(() => {
          if (this.inFlight === run) this.inFlight = undefined;
        });
        return run;
      },
      {
        name,
        noOverlap: true,
        timezone: this.opts.timezone,
        // node-cron's own warnings (overlap, missed ticks) go through our logger instead of the console.
        logger: {
          info: (m) => logger.debug({ task: name }, m),
          warn: (m) => logger.debug({ task: name }, m),
          error: (m, err) => logger.error({ task: name, err: err ?? m }, String(m)),
          debug: (m) => logger.debug({ task: name }, String(m)),
        },
      },
    );
    this.task.on("execution:overlap", () => {
      this.stats.skipped++;
      logger.warn({ task: name }, "reconcile tick skipped: the previous run is still going");
    });
    logger.info({ cron: this.opts.cron, timezone: this.opts.timezone, nextRun: this.task.getNextRun()?.toISOString() }, "reconcile scheduler started");
  }

  /** Stops scheduling and waits for a run in flight to finish. Idempotent. */
  async stop(): Promise<void> {
    const task = this.task;
    this.task = undefined;
    if (task) {
      await task.stop();
      await task.destroy();
    }
    await this.inFlight;
  }
}
