import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import { Counter, Gauge, Histogram, type Registry } from "@shop/platform/metrics";
import type { AnyFlow } from "./flow.js";
import type { DeliveryMetrics } from "./relay.js";
import { readOutboxStats, type OutboxStats } from "./stats.js";

/** A metric's name and help text. */
export interface MetricName {
  name: string;
  help: string;
}

export interface DeliveryMetricNames {
  /** Counter{result}: delivered, retry, dead, stale. The voucher flow: relay_deliveries_total. */
  deliveries: MetricName;
  /** Counter{code,cause}: calls that failed as a whole. The voucher flow: relay_call_failures_total. */
  callFailures: MetricName;
  /** Counter: rows of batches split to find a poison row. The voucher flow: relay_batch_split_rows_total. */
  splits: MetricName;
  /** Histogram, seconds from the row's commit to its ack. The voucher flow: voucher_commit_to_issue_seconds. */
  commitToAck: MetricName;
}

/**
 * Seconds. Normally tens of milliseconds (the relay is woken by the commit);
 * the long tail is retries with backoff and outages, up to the 5-minute
 * backoff cap and beyond.
 */
export const COMMIT_TO_ACK_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600];

/** The metrics as registered, for callers that read them back (tests) or keep their own names for them. */
export interface RegisteredDeliveryMetrics {
  deliveries: Counter<"result">;
  callFailures: Counter<"code" | "cause">;
  splits: Counter;
  commitToAck: Histogram;
}

/** A relay's counters and latency histogram, registered under a flow's names. */
export function createDeliveryMetrics(registry: Registry, names: DeliveryMetricNames): DeliveryMetrics & RegisteredDeliveryMetrics {
  const deliveries = new Counter({ ...names.deliveries, labelNames: ["result"] as const, registers: [registry] });
  // Present from the start, so rate() and alerts see 0 rather than no series.
  for (const result of ["delivered", "retry", "dead", "stale"]) deliveries.inc({ result }, 0);
  const callFailures = new Counter({ ...names.callFailures, labelNames: ["code", "cause"] as const, registers: [registry] });
  // The series the misconfiguration alerts watch, present from the start.
  for (const code of ["UNAUTHENTICATED", "PERMISSION_DENIED", "UNIMPLEMENTED"]) callFailures.inc({ code, cause: "misconfigured" }, 0);
  const splits = new Counter({ ...names.splits, registers: [registry] });
  const commitToAck = new Histogram({ ...names.commitToAck, buckets: COMMIT_TO_ACK_BUCKETS, registers: [registry] });
  return { deliveries, callFailures, splits, commitToAck };
}

export interface OutboxGaugeOptions {
  registry: Registry;
  pool: Pool;
  flow: AnyFlow;
  logger: Logger;
  names: { pending: MetricName; dead: MetricName; oldestPendingAgeSeconds: MetricName };
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
 * A flow's outbox gauges (pending, dead, age of the oldest pending row), read
 * at scrape time with one query (flow.sql.stats). A failed reading is logged
 * and the last good one is served: a database outage shows on /readyz and in
 * the RPC error codes, and the scrape keeps its other metrics.
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
        stats: readOutboxStats(opts.pool, opts.flow, timeoutMs).then(
          (s) => (last = s),
          (err) => {
            log.warn({ err, flow: opts.flow.name }, "reading the outbox gauges failed; serving the last reading");
            return last;
          },
        ),
      };
    }
    return reading.stats;
  };

  const gauge = (metric: MetricName, pick: (s: OutboxStats) => number) =>
    new Gauge({
      ...metric,
      registers: [opts.registry],
      async collect() {
        this.set(pick(await current()));
      },
    });
  gauge(opts.names.pending, (s) => s.pending);
  gauge(opts.names.dead, (s) => s.dead);
  gauge(opts.names.oldestPendingAgeSeconds, (s) => s.oldestPendingAgeSeconds);
}
