import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import { createMetrics, Counter, Gauge, Histogram, type ProcessMetrics, type Registry } from "@shop/platform/metrics";
import { readOutboxStats, type OutboxStats } from "./outbox/stats.js";

/** What the relay records; optional in RelayDeps so tests and tools can run a relay without it. */
export interface RelayMetrics {
  /**
   * relay_deliveries_total{result}: rows settled, by what became of them:
   * delivered (acked), retry (scheduled again), dead (refused for good),
   * stale (the lease was lost first and the write was fenced off).
   */
  deliveries: Counter<"result">;
  /**
   * relay_call_failures_total{code,cause}: calls to the voucher service that
   * failed as a whole, by status and cause (see FailureCause). A
   * misconfigured relay (cause="misconfigured": UNAUTHENTICATED,
   * PERMISSION_DENIED, UNIMPLEMENTED) delivers nothing and is alerted on.
   */
  callFailures: Counter<"code" | "cause">;
  /** relay_batch_split_rows_total: rows of batches that failed as a whole and were split to find a poison row. */
  splits: Counter;
  /** voucher_commit_to_issue_seconds: from the outbox row's commit (created_at) to the relay's ack of its voucher. */
  commitToIssue: Histogram;
}

/**
 * Seconds. Normally tens of milliseconds (the relay is woken by the commit);
 * the long tail is retries with backoff and outages, up to the 5-minute
 * backoff cap and beyond.
 */
const COMMIT_TO_ISSUE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600];

export function createRelayMetrics(registry: Registry): RelayMetrics {
  const deliveries = new Counter({
    name: "relay_deliveries_total",
    help: "Outbox rows settled by the relay, by result: delivered, retry, dead, stale (lease lost, write fenced off).",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  // Present from the start, so rate() and alerts see 0 rather than no series.
  for (const result of ["delivered", "retry", "dead", "stale"]) deliveries.inc({ result }, 0);
  const callFailures = new Counter({
    name: "relay_call_failures_total",
    help:
      "Calls to the voucher service that failed as a whole, by gRPC status and cause: misconfigured (the relay's token, scope or URL), " +
      "unavailable (outage), suspect (may be a poison request), request (refused for good).",
    labelNames: ["code", "cause"] as const,
    registers: [registry],
  });
  // The series the alerts watch, present from the start.
  for (const code of ["UNAUTHENTICATED", "PERMISSION_DENIED", "UNIMPLEMENTED"]) callFailures.inc({ code, cause: "misconfigured" }, 0);
  const splits = new Counter({
    name: "relay_batch_split_rows_total",
    help: "Rows of voucher batches that failed as a whole with a code their content may have caused, and were split to find the row at fault.",
    registers: [registry],
  });
  const commitToIssue = new Histogram({
    name: "voucher_commit_to_issue_seconds",
    help: "Time from the commit that requested a voucher (outbox created_at) to the relay's ack of the issued voucher.",
    buckets: COMMIT_TO_ISSUE_BUCKETS,
    registers: [registry],
  });
  return { deliveries, callFailures, splits, commitToIssue };
}

export interface OutboxGaugeOptions {
  registry: Registry;
  pool: Pool;
  logger: Logger;
  /**
   * How long one reading of the outbox serves scrapes. Default 5000 ms: any
   * number of scrapers (several Prometheus servers, a person with curl)
   * cost at most one query per 5 s per process.
   */
  cacheMs?: number;
  /** Bound on the query. Default 2000 ms, under Prometheus' default 10 s scrape timeout. */
  timeoutMs?: number;
}

/**
 * voucher_outbox_pending, voucher_outbox_dead and
 * voucher_outbox_oldest_pending_age_seconds, read at scrape time with one
 * query (see OUTBOX_STATS_SQL). A failed reading is logged and the last good
 * one is served: a database outage shows on /readyz and in the RPC error
 * codes, and the scrape keeps its other metrics.
 */
export function registerOutboxGauges(opts: OutboxGaugeOptions): void {
  const cacheMs = opts.cacheMs ?? 5_000;
  const timeoutMs = opts.timeoutMs ?? 2_000;
  const log = opts.logger.child({ component: "metrics" });
  let last: OutboxStats = { pending: 0, dead: 0, oldestPendingAgeSeconds: 0 };
  let reading: { at: number; stats: Promise<OutboxStats> } | undefined;

  const current = (): Promise<OutboxStats> => {
    const now = Date.now();
    if (!reading || now - reading.at >= cacheMs) {
      reading = {
        at: now,
        stats: readOutboxStats(opts.pool, timeoutMs).then(
          (s) => (last = s),
          (err) => {
            log.warn({ err }, "reading the outbox gauges failed; serving the last reading");
            return last;
          },
        ),
      };
    }
    return reading.stats;
  };

  const gauge = (name: string, help: string, pick: (s: OutboxStats) => number) =>
    new Gauge({
      name,
      help,
      registers: [opts.registry],
      async collect() {
        this.set(pick(await current()));
      },
    });
  gauge("voucher_outbox_pending", "Voucher requests waiting for delivery (outbox rows with status pending).", (s) => s.pending);
  gauge("voucher_outbox_dead", "Voucher requests the voucher service refused for good (status dead), until requeued.", (s) => s.dead);
  gauge(
    "voucher_outbox_oldest_pending_age_seconds",
    "Age of the oldest pending voucher request (database clock); 0 when none is pending.",
    (s) => s.oldestPendingAgeSeconds,
  );
}

export interface OrderMetrics extends ProcessMetrics {
  relay: RelayMetrics;
}

/** The order service's registry: process and RPC metrics, outbox gauges, and the in-process relay's metrics. */
export function createOrderMetrics(opts: { pool: Pool; logger: Logger; outboxCacheMs?: number }): OrderMetrics {
  const base = createMetrics();
  registerOutboxGauges({ registry: base.registry, pool: opts.pool, logger: opts.logger, cacheMs: opts.outboxCacheMs });
  return { ...base, relay: createRelayMetrics(base.registry) };
}
