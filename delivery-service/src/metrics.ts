import { Code } from "@connectrpc/connect";
import { createDeliveryMetrics, registerOutboxGauges, type RegisteredDeliveryMetrics } from "@shop/engine/metrics";
import type { DeliveryMetrics } from "@shop/engine/relay";
import type { Pool } from "@shop/platform/db";
import { toConnectError } from "@shop/platform/errors";
import type { Logger } from "@shop/platform/logger";
import { createMetrics, Counter, type ProcessMetrics, type Registry } from "@shop/platform/metrics";
import { createCarrierMetrics, type CarrierMetrics } from "./carriers/worker.js";
import { shipmentEventOutbox } from "./outbox/event-flow.js";

/** The calls that change shipments: CreateShipment, the four CarrierService reports, ResumeShipment. */
export type ShipmentCall = "create" | "confirm" | "decline" | "ship" | "deliver" | "resume";
export type ShipmentResult = "applied" | "declined" | "replayed" | "refused" | "conflict";

export interface DeliveryServiceMetrics extends ProcessMetrics {
  /**
   * delivery_requests_total{call,result}: the calls that change shipments by
   * outcome. applied changed the shipment (created it, moved its status,
   * resumed it); declined is a CreateShipment whose carrier this service does
   * not know, recorded DECLINED at once (orders naming a carrier missing from
   * CARRIERS); replayed changed nothing (a retry after a lost reply, a status
   * the shipment already had, nothing parked to resume); refused is
   * FAILED_PRECONDITION or NOT_FOUND (a transition the lifecycle forbids, a
   * carrier that takes no RPC reports, no such shipment); conflict is
   * ALREADY_EXISTS (an order's shipment asked for again with other facts: a
   * bug or a tampered request). Requests that break the proto's rules or the
   * access rules never reach the handler: rpc_requests_total counts them, as
   * for every method.
   */
  requests: Counter<"call" | "result">;
  /** The in-process delivery relay's counters (delivery_relay_*), registered whether or not it runs here. */
  relay: DeliveryRelayMetrics;
  /** The carrier worker's counters (carrier_*), registered whether or not it runs here. */
  carriers: CarrierMetrics;
}

/**
 * What the delivery relay records:
 * - delivery_relay_deliveries_total{result}: outbox rows settled: delivered
 *   (acked), retry (scheduled again), dead (refused for good), stale (the
 *   lease was lost first and the write was fenced off);
 * - delivery_relay_call_failures_total{code,cause}: RecordShipmentEvent calls
 *   that failed as a whole; cause="misconfigured" (UNAUTHENTICATED,
 *   PERMISSION_DENIED, UNIMPLEMENTED) delivers nothing and is alerted on;
 * - delivery_relay_batch_split_rows_total: rows of claims that failed as a
 *   whole with a suspect code and were split to find the row at fault;
 * - shipment_event_commit_to_ack_seconds: from the commit that recorded the
 *   event (outbox created_at) to the relay's ack of the order service's answer.
 */
export type DeliveryRelayMetrics = DeliveryMetrics & RegisteredDeliveryMetrics;

export function createDeliveryRelayMetrics(registry: Registry): DeliveryRelayMetrics {
  return createDeliveryMetrics(registry, {
    deliveries: {
      name: "delivery_relay_deliveries_total",
      help: "Shipment event outbox rows settled by the delivery relay, by result: delivered, retry, dead, stale (lease lost, write fenced off).",
    },
    callFailures: {
      name: "delivery_relay_call_failures_total",
      help:
        "RecordShipmentEvent calls to the order service that failed as a whole, by gRPC status and cause: misconfigured (the relay's token, " +
        "scope or ORDER_SERVICE_URL), unavailable (outage), suspect (may be a poison request), request (refused for good).",
    },
    splits: {
      name: "delivery_relay_batch_split_rows_total",
      help: "Rows of shipment event claims that failed as a whole with a code their content may have caused, and were split to find the row at fault.",
    },
    commitToAck: {
      name: "shipment_event_commit_to_ack_seconds",
      help: "Time from the commit that recorded a shipment's SHIPPED, DELIVERED or DECLINED (shipment_event_outbox created_at) to the delivery relay's ack of its delivery to the order service.",
    },
  });
}

/**
 * shipment_event_outbox_pending, shipment_event_outbox_dead and
 * shipment_event_outbox_oldest_pending_age_seconds: the engine's outbox
 * gauges on the event flow, read at scrape time with one query and cached
 * (cacheMs, default 5000); a failed reading is logged and the last good one
 * served.
 */
export function registerShipmentEventOutboxGauges(opts: { registry: Registry; pool: Pool; logger: Logger; cacheMs?: number }): void {
  registerOutboxGauges({
    ...opts,
    flow: shipmentEventOutbox,
    names: {
      pending: { name: "shipment_event_outbox_pending", help: "Shipment events waiting for delivery to the order service (outbox rows with status pending)." },
      dead: { name: "shipment_event_outbox_dead", help: "Shipment events the order service refused for good (status dead), until requeued." },
      oldestPendingAgeSeconds: {
        name: "shipment_event_outbox_oldest_pending_age_seconds",
        help: "Age of the oldest pending shipment event (database clock); 0 when none is pending.",
      },
    },
  });
}

/** The label pairs that can occur, all shown from the start at 0 so rates and alerts need no absent() guards. */
const PAIRS: Array<[ShipmentCall, ShipmentResult[]]> = [
  ["create", ["applied", "declined", "replayed", "conflict"]],
  ["confirm", ["applied", "replayed", "refused"]],
  ["decline", ["applied", "replayed", "refused"]],
  ["ship", ["applied", "replayed", "refused"]],
  ["deliver", ["applied", "replayed", "refused"]],
  ["resume", ["applied", "replayed", "refused"]],
];

/** The delivery service's registry: process and RPC metrics, delivery_requests_total, the outbox gauges, the relay's and the carrier worker's counters. */
export function createDeliveryServiceMetrics(opts: { pool: Pool; logger: Logger; outboxCacheMs?: number }): DeliveryServiceMetrics {
  const base = createMetrics();
  registerShipmentEventOutboxGauges({ registry: base.registry, pool: opts.pool, logger: opts.logger, cacheMs: opts.outboxCacheMs });
  const requests = new Counter({
    name: "delivery_requests_total",
    help: "CreateShipment, CarrierService reports and ResumeShipment answers by call and result: applied, declined, replayed, refused, conflict.",
    labelNames: ["call", "result"] as const,
    registers: [base.registry],
  });
  for (const [call, results] of PAIRS) for (const result of results) requests.inc({ call, result }, 0);
  return { ...base, requests, relay: createDeliveryRelayMetrics(base.registry), carriers: createCarrierMetrics(base.registry) };
}

/** The result label of a failed call; undefined for failures that are not about the request (database, internal). */
export function refusalResult(err: unknown): ShipmentResult | undefined {
  const code = toConnectError(err).code;
  if (code === Code.AlreadyExists) return "conflict";
  if (code === Code.FailedPrecondition || code === Code.NotFound) return "refused";
  return undefined;
}
