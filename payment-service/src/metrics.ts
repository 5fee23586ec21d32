import { Code } from "@connectrpc/connect";
import { createDeliveryMetrics, registerOutboxGauges, type RegisteredDeliveryMetrics } from "@shop/engine/metrics";
import type { DeliveryMetrics } from "@shop/engine/relay";
import type { Pool } from "@shop/platform/db";
import { toConnectError } from "@shop/platform/errors";
import type { Logger } from "@shop/platform/logger";
import { createMetrics, Counter, type ProcessMetrics, type Registry } from "@shop/platform/metrics";
import { paymentOutbox } from "./outbox/outcome-flow.js";

export type MovementCall = "top_up" | "charge" | "refund";
export type MovementResult = "applied" | "refused" | "replayed" | "conflict";

export interface PaymentMetrics extends ProcessMetrics {
  /**
   * payment_requests_total{call,result}: TopUp, ChargeOrder and RefundOrder
   * answers by outcome. applied moved money; refused is a definite refusal
   * (insufficient funds, no account, nothing to refund); replayed answered a
   * recorded outcome (a retry after a lost reply); conflict is ALREADY_EXISTS
   * (a key reused with other facts: a bug or a tampered request). Requests
   * that break the proto's rules never reach the handler: rpc_requests_total
   * counts them, as for every method. Many replays mean lost replies.
   */
  requests: Counter<"call" | "result">;
  /** The in-process payment relay's counters (payment_relay_*), registered whether or not it runs here. */
  relay: PaymentRelayMetrics;
}

/**
 * What the payment relay records:
 * - payment_relay_deliveries_total{result}: outbox rows settled: delivered
 *   (acked), retry (scheduled again), dead (refused for good), stale (the
 *   lease was lost first and the write was fenced off);
 * - payment_relay_call_failures_total{code,cause}: RecordPaymentOutcome calls
 *   that failed as a whole; cause="misconfigured" (UNAUTHENTICATED,
 *   PERMISSION_DENIED, UNIMPLEMENTED) delivers nothing and is alerted on;
 * - payment_relay_batch_split_rows_total: rows of claims that failed as a
 *   whole with a suspect code and were split to find the row at fault;
 * - payment_outcome_commit_to_ack_seconds: from the commit that decided
 *   (outbox created_at) to the relay's ack of the order service's answer.
 */
export type PaymentRelayMetrics = DeliveryMetrics & RegisteredDeliveryMetrics;

export function createPaymentRelayMetrics(registry: Registry): PaymentRelayMetrics {
  return createDeliveryMetrics(registry, {
    deliveries: {
      name: "payment_relay_deliveries_total",
      help: "Payment outbox rows settled by the payment relay, by result: delivered, retry, dead, stale (lease lost, write fenced off).",
    },
    callFailures: {
      name: "payment_relay_call_failures_total",
      help:
        "RecordPaymentOutcome calls to the order service that failed as a whole, by gRPC status and cause: misconfigured (the relay's token, " +
        "scope or ORDER_SERVICE_URL), unavailable (outage), suspect (may be a poison request), request (refused for good).",
    },
    splits: {
      name: "payment_relay_batch_split_rows_total",
      help: "Rows of payment outcome claims that failed as a whole with a code their content may have caused, and were split to find the row at fault.",
    },
    commitToAck: {
      name: "payment_outcome_commit_to_ack_seconds",
      help: "Time from the commit that decided a charge or refund (payment_outbox created_at) to the payment relay's ack of its delivery to the order service.",
    },
  });
}

/**
 * payment_outbox_pending, payment_outbox_dead and
 * payment_outbox_oldest_pending_age_seconds: the engine's outbox gauges on
 * the outcome flow, read at scrape time with one query and cached (cacheMs,
 * default 5000); a failed reading is logged and the last good one served.
 */
export function registerPaymentOutboxGauges(opts: { registry: Registry; pool: Pool; logger: Logger; cacheMs?: number }): void {
  registerOutboxGauges({
    ...opts,
    flow: paymentOutbox,
    names: {
      pending: { name: "payment_outbox_pending", help: "Payment outcomes waiting for delivery to the order service (outbox rows with status pending)." },
      dead: { name: "payment_outbox_dead", help: "Payment outcomes the order service refused for good (status dead), until requeued." },
      oldestPendingAgeSeconds: {
        name: "payment_outbox_oldest_pending_age_seconds",
        help: "Age of the oldest pending payment outcome (database clock); 0 when none is pending.",
      },
    },
  });
}

const CALLS: MovementCall[] = ["top_up", "charge", "refund"];
const RESULTS: MovementResult[] = ["applied", "refused", "replayed", "conflict"];

/** The payment service's registry: process and RPC metrics, payment_requests_total, the outbox gauges and the relay's counters. */
export function createPaymentMetrics(opts: { pool: Pool; logger: Logger; outboxCacheMs?: number }): PaymentMetrics {
  const base = createMetrics();
  registerPaymentOutboxGauges({ registry: base.registry, pool: opts.pool, logger: opts.logger, cacheMs: opts.outboxCacheMs });
  const requests = new Counter({
    name: "payment_requests_total",
    help: "TopUp, ChargeOrder and RefundOrder answers by call and result: applied, refused, replayed, conflict.",
    labelNames: ["call", "result"] as const,
    registers: [base.registry],
  });
  for (const call of CALLS) for (const result of RESULTS) requests.inc({ call, result }, 0);
  return { ...base, requests, relay: createPaymentRelayMetrics(base.registry) };
}

/** The result label of a failed call; undefined for failures that are not about the request (database, internal). */
export function refusalResult(err: unknown): MovementResult | undefined {
  const code = toConnectError(err).code;
  return code === Code.AlreadyExists ? "conflict" : undefined;
}
