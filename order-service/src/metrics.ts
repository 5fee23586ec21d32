import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import { createDeliveryMetrics, registerOutboxGauges as registerFlowGauges } from "@shop/engine/metrics";
import { createMetrics, type Counter, type Histogram, type ProcessMetrics, type Registry } from "@shop/platform/metrics";
import { voucherOutbox } from "./outbox/voucher-flow.js";

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
 * The relay's metrics, under their established names: the engine's delivery
 * metrics for the voucher flow.
 */
export function createRelayMetrics(registry: Registry): RelayMetrics {
  const m = createDeliveryMetrics(registry, {
    deliveries: {
      name: "relay_deliveries_total",
      help: "Outbox rows settled by the relay, by result: delivered, retry, dead, stale (lease lost, write fenced off).",
    },
    callFailures: {
      name: "relay_call_failures_total",
      help:
        "Calls to the voucher service that failed as a whole, by gRPC status and cause: misconfigured (the relay's token, scope or URL), " +
        "unavailable (outage), suspect (may be a poison request), request (refused for good).",
    },
    splits: {
      name: "relay_batch_split_rows_total",
      help: "Rows of voucher batches that failed as a whole with a code their content may have caused, and were split to find the row at fault.",
    },
    commitToAck: {
      name: "voucher_commit_to_issue_seconds",
      help: "Time from the commit that requested a voucher (outbox created_at) to the relay's ack of the issued voucher.",
    },
  });
  return { deliveries: m.deliveries, callFailures: m.callFailures, splits: m.splits, commitToIssue: m.commitToAck };
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
 * voucher_outbox_oldest_pending_age_seconds: the engine's outbox gauges on
 * the voucher flow, read at scrape time with one query (see OUTBOX_STATS_SQL)
 * and cached; a failed reading is logged and the last good one is served.
 */
export function registerOutboxGauges(opts: OutboxGaugeOptions): void {
  registerFlowGauges({
    ...opts,
    flow: voucherOutbox,
    names: {
      pending: { name: "voucher_outbox_pending", help: "Voucher requests waiting for delivery (outbox rows with status pending)." },
      dead: { name: "voucher_outbox_dead", help: "Voucher requests the voucher service refused for good (status dead), until requeued." },
      oldestPendingAgeSeconds: {
        name: "voucher_outbox_oldest_pending_age_seconds",
        help: "Age of the oldest pending voucher request (database clock); 0 when none is pending.",
      },
    },
  });
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
