import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { defineFlow, type Flow, type ItemResult } from "@shop/engine";
import { codeName } from "@shop/engine/classify";
import { batchOfSingles } from "@shop/engine/singles";
import { normalizeTraceparent } from "@shop/platform/tracing";
import type { ShipmentEventClient } from "@shop/sdk/clients";
import { ShipmentEvent, type RecordShipmentEventRequestSchema } from "@shop/sdk/order";

/**
 * The event flow on the delivery engine: shipment_event_outbox (written by
 * the transaction that records a shipment's SHIPPED, DELIVERED or DECLINED),
 * delivered to the order service's ShipmentEventService.RecordShipmentEvent,
 * one call per row (the RPC has no batch form: batchOfSingles runs a claim's
 * calls side by side). The order service keeps "shipment-event:" +
 * message_key in its inbox, so a redelivery after a lost ack is answered
 * changed=false and moves nothing. The shipment and its transitions keep
 * every event for good, so a delivered row needs no archive before retention
 * removes it.
 */
export interface ShipmentEventMessage {
  /** "shipment:<order id>:<EVENT>": the order service's inbox key (behind "shipment-event:"). */
  messageKey: string;
  orderId: string;
  shipmentId: string;
  event: "SHIPPED" | "DELIVERED" | "DECLINED";
  /** The shipment's carrier. */
  carrier: string;
  /** Set when DECLINED: the carrier's reason (UNKNOWN_CARRIER, NO_CAPACITY, ...). */
  reason: string | null;
  /** When the delivery service recorded the event. */
  occurredAt: Date;
}

/** What a delivery gives back: whether the order changed (false for a replay, or an event the order had passed). */
export interface ShipmentEventRecorded {
  changed: boolean;
}

const EVENTS = { SHIPPED: ShipmentEvent.SHIPPED, DELIVERED: ShipmentEvent.DELIVERED, DECLINED: ShipmentEvent.DECLINED } as const;

/**
 * The row's RecordShipmentEvent request. The stored traceparent goes along
 * normalized to version 00, or empty if it is unreadable: the order service
 * refuses a malformed one (INVALID_ARGUMENT, which would park the row), and
 * tracing must never cost an event.
 */
export function requestFor(row: ShipmentEventMessage & { traceparent?: string }): MessageInitShape<typeof RecordShipmentEventRequestSchema> {
  return {
    messageKey: row.messageKey,
    orderId: row.orderId,
    // The store writes only these three. Anything else (a row edited by hand) goes as UNSPECIFIED, which the
    // order service refuses as INVALID_ARGUMENT: that row alone is parked dead, naming why, and the relay goes on.
    event: EVENTS[row.event] ?? ShipmentEvent.UNSPECIFIED,
    shipmentId: row.shipmentId,
    carrier: row.carrier,
    declineReason: row.event === "DECLINED" ? (row.reason ?? "") : "",
    occurredAt: timestampFromDate(row.occurredAt),
    traceparent: normalizeTraceparent(row.traceparent) ?? "",
  };
}

/**
 * What an operator should check when the order service refuses the delivery
 * relay itself (a `misconfigured` code). Names the settings, never the token.
 */
export function misconfigurationHint(code: number): string {
  switch (code as Code) {
    case Code.Unauthenticated:
      return "the order service does not accept the delivery relay's token (missing, expired, addressed to another service or from another issuer, or signed by a key it does not trust): check DELIVERY_RELAY_TOKEN / DELIVERY_RELAY_TOKEN_FILE against the order service's keys (AUTH_JWKS_FILE, AUTH_JWKS or AUTH_PUBLIC_KEYS), AUTH_AUDIENCE and AUTH_ISSUER";
    case Code.PermissionDenied:
      return "the delivery relay's token lacks the scope RecordShipmentEvent needs (orders:shipment-event): give it a token of the delivery-relay role (npm run auth -- token --key <file> --role delivery-relay) in DELIVERY_RELAY_TOKEN or DELIVERY_RELAY_TOKEN_FILE";
    case Code.Unimplemented:
      return "ORDER_SERVICE_URL does not serve shop.order.v1.ShipmentEventService/RecordShipmentEvent: wrong URL or port (the order service's gRPC port), or an order service without shipping";
    default:
      return "the delivery relay's settings for the order service (ORDER_SERVICE_URL, DELIVERY_RELAY_TOKEN) are wrong";
  }
}

/** The flow's columns and texts, without the client: enough for claims, acks, stats and cleanup. */
function eventFlowDefinition(orders?: ShipmentEventClient) {
  const client = (): ShipmentEventClient => {
    if (!orders) throw new Error("this shipment event flow was defined without an order service client: it can claim and settle, not deliver");
    return orders;
  };
  const single = async (
    row: ShipmentEventMessage & { traceparent?: string },
    call: { timeoutMs: number },
  ): Promise<ItemResult<ShipmentEventRecorded>> => {
    const res = await client().recordShipmentEvent(requestFor(row), call);
    return { result: { changed: res.changed }, created: res.changed };
  };
  return defineFlow<ShipmentEventMessage, ShipmentEventRecorded>({
    name: "shipment event",
    table: "shipment_event_outbox",
    columns: ["message_key", "order_id", "shipment_id", "event", "carrier", "reason", "occurred_at"],
    fromRow: (r) => ({
      messageKey: String(r.message_key),
      orderId: String(r.order_id),
      shipmentId: String(r.shipment_id),
      event: String(r.event) as ShipmentEventMessage["event"],
      carrier: String(r.carrier),
      reason: r.reason === null || r.reason === undefined ? null : String(r.reason),
      occurredAt: r.occurred_at instanceof Date ? r.occurred_at : new Date(String(r.occurred_at)),
    }),
    key: { name: "messageKey", of: (row) => row.messageKey },
    deliver: {
      batchMethod: "RecordShipmentEvent",
      singleMethod: "RecordShipmentEvent",
      batch: batchOfSingles(single),
      single,
    },
    texts: {
      delivered: "shipment events delivered",
      retry: "shipment event delivery failed; retry scheduled",
      refused: "shipment event refused for good by the order service; outbox row is dead until requeued",
      gaveUp: (attempts) =>
        `shipment event delivery gave up after ${attempts} attempts, the last failing on its own account; outbox row is dead until requeued`,
      ackFailed: "shipment events recorded but the ack failed; the rows are delivered again after their lease (the order service replays, changed=false)",
      misconfigured: (code) =>
        `the order service refused the delivery relay itself (${codeName(code)}): ${misconfigurationHint(code)}; ` +
        "no shipment event is delivered until this is fixed, the rows stay pending and are retried with backoff",
    },
  });
}

export type ShipmentEventFlow = Flow<ShipmentEventMessage, ShipmentEventRecorded>;

/** The event flow for claims, acks, stats and cleanup: it has no client and cannot deliver. */
export const shipmentEventOutbox: ShipmentEventFlow = eventFlowDefinition();

/** The event flow delivering with `orders`. */
export function shipmentEventFlow(orders: ShipmentEventClient): ShipmentEventFlow {
  return eventFlowDefinition(orders);
}
