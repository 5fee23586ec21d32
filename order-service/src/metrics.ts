import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import { createDeliveryMetrics, registerOutboxGauges as registerFlowGauges } from "@shop/engine/metrics";
import { createMetrics, type Counter, type Histogram, type ProcessMetrics, type Registry } from "@shop/platform/metrics";
import type { DeliveryMetrics } from "@shop/engine/relay";
import { chargeOutbox, refundOutbox } from "./outbox/payment-flows.js";
import { shipmentOutbox } from "./outbox/shipment-flow.js";
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

/**
 * The charge or refund relay's metrics: <flow>_relay_deliveries_total,
 * <flow>_relay_call_failures_total, <flow>_relay_batch_split_rows_total and
 * <flow>_commit_to_decision_seconds (from the request's commit to the ack of
 * the payment service's decision).
 */
export function createPaymentRelayMetrics(registry: Registry, flow: "charge" | "refund"): DeliveryMetrics {
  return createDeliveryMetrics(registry, {
    deliveries: {
      name: `${flow}_relay_deliveries_total`,
      help: `${flow} requests settled by the order service's ${flow} relay, by result: delivered (decided by the payment service), retry, dead, stale.`,
    },
    callFailures: {
      name: `${flow}_relay_call_failures_total`,
      help: `Calls to the payment service's ${flow === "charge" ? "ChargeOrder" : "RefundOrder"} that failed as a whole, by gRPC status and cause.`,
    },
    splits: { name: `${flow}_relay_batch_split_rows_total`, help: `Rows of ${flow} batches split to find a row at fault.` },
    commitToAck: {
      name: `${flow}_commit_to_decision_seconds`,
      help: `Time from the commit that requested the ${flow} (outbox created_at) to the ack of the payment service's decision.`,
    },
  });
}

/** charge_outbox_* and refund_outbox_* gauges: pending, dead, age of the oldest pending request. */
export function registerPaymentOutboxGauges(opts: OutboxGaugeOptions): void {
  for (const [flow, what] of [
    [chargeOutbox, "charge"],
    [refundOutbox, "refund"],
  ] as const) {
    registerFlowGauges({
      ...opts,
      flow,
      names: {
        pending: { name: `${what}_outbox_pending`, help: `${what} requests waiting for the payment service (status pending).` },
        dead: { name: `${what}_outbox_dead`, help: `${what} requests the payment service refused for good (status dead), until requeued.` },
        oldestPendingAgeSeconds: {
          name: `${what}_outbox_oldest_pending_age_seconds`,
          help: `Age of the oldest pending ${what} request (database clock); 0 when none is pending.`,
        },
      },
    });
  }
}

/**
 * The shipment relay's metrics: shipment_relay_deliveries_total,
 * shipment_relay_call_failures_total, shipment_relay_batch_split_rows_total
 * and shipment_commit_to_create_seconds (from the release's commit to the ack
 * of the delivery service's shipment).
 */
export function createShipmentRelayMetrics(registry: Registry): DeliveryMetrics {
  return createDeliveryMetrics(registry, {
    deliveries: {
      name: "shipment_relay_deliveries_total",
      help: "Shipment requests settled by the order service's shipment relay, by result: delivered (the delivery service has the shipment), retry, dead, stale.",
    },
    callFailures: {
      name: "shipment_relay_call_failures_total",
      help: "Calls to the delivery service's CreateShipment that failed as a whole, by gRPC status and cause.",
    },
    splits: { name: "shipment_relay_batch_split_rows_total", help: "Rows of shipment batches split to find a row at fault." },
    commitToAck: {
      name: "shipment_commit_to_create_seconds",
      help: "Time from the commit that released the order for shipping (outbox created_at) to the ack of the delivery service's shipment.",
    },
  });
}

/** shipment_outbox_* gauges: pending, dead, age of the oldest pending shipment request. */
export function registerShipmentOutboxGauges(opts: OutboxGaugeOptions): void {
  registerFlowGauges({
    ...opts,
    flow: shipmentOutbox,
    names: {
      pending: { name: "shipment_outbox_pending", help: "Shipment requests waiting for the delivery service (status pending)." },
      dead: { name: "shipment_outbox_dead", help: "Shipment requests the delivery service refused for good (status dead), until requeued." },
      oldestPendingAgeSeconds: {
        name: "shipment_outbox_oldest_pending_age_seconds",
        help: "Age of the oldest pending shipment request (database clock); 0 when none is pending.",
      },
    },
  });
}

export interface OrderMetrics extends ProcessMetrics {
  relay: RelayMetrics;
  chargeRelay: DeliveryMetrics;
  refundRelay: DeliveryMetrics;
  shipmentRelay: DeliveryMetrics;
}

/** The order service's registry: process and RPC metrics, outbox gauges, and the in-process relays' metrics. */
export function createOrderMetrics(opts: { pool: Pool; logger: Logger; outboxCacheMs?: number }): OrderMetrics {
  const base = createMetrics();
  const gauges = { registry: base.registry, pool: opts.pool, logger: opts.logger, cacheMs: opts.outboxCacheMs };
  registerOutboxGauges(gauges);
  registerPaymentOutboxGauges(gauges);
  registerShipmentOutboxGauges(gauges);
  return {
    ...base,
    relay: createRelayMetrics(base.registry),
    chargeRelay: createPaymentRelayMetrics(base.registry, "charge"),
    refundRelay: createPaymentRelayMetrics(base.registry, "refund"),
    shipmentRelay: createShipmentRelayMetrics(base.registry),
  };
}
