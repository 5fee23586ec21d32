import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { OrderStatus, SentBy, ShipmentEvent, ShippingStatus, type Order } from "@shop/sdk/order";
import { ShipmentStatus, type Shipment } from "@shop/sdk/delivery";
import { formatCents, type ShippingDriftKind } from "./compare.js";

/** One shipment event to hand to the order service (ShipmentEventService.RecordShipmentEvent), as the delivery relay would have. */
export interface EventDelivery {
  /** The delivery service's key of the event, "shipment:<order>:<EVENT>": the order's inbox dedups it against the relay's own delivery. */
  messageKey: string;
  event: ShipmentEvent;
  shipmentId: string;
  carrier: string;
  /** For DECLINED: the carrier's reason. */
  declineReason: string;
  occurredAt?: Timestamp;
}

/** One disagreement between an order and its shipment, and the repair it calls for. */
export interface ShippingFinding {
  kind: ShippingDriftKind;
  orderId: string;
  /** Why this is drift, in words an operator can act on. */
  detail: string;
  /** Deliver these events, in this order (RecordShipmentEvent). */
  deliver?: EventDelivery[];
  /** RequeueShipment for the order: its shipment request never reached the delivery service. */
  requeue?: boolean;
}

/** A finding the reconciler can repair by itself (the others wait for a person). */
export const isShippingRepairable = (f: ShippingFinding): boolean => !!(f.deliver?.length || f.requeue);

const date = (ts: Timestamp | undefined): Date | undefined => (ts ? timestampDate(ts) : undefined);
const statusName = (s: OrderStatus): string => OrderStatus[s] ?? String(s);
const shippingName = (s: ShippingStatus): string => ShippingStatus[s] ?? String(s);
const shipmentName = (s: ShipmentStatus): string => ShipmentStatus[s] ?? String(s);
const sentByName = (s: SentBy): string => (s === SentBy.UNSPECIFIED ? "nobody" : (SentBy[s] ?? String(s)));

/** The key the delivery service gives an event of this order: its outbox's message_key and the order's inbox key. */
export const shipmentEventKey = (orderId: string, event: "SHIPPED" | "DELIVERED" | "DECLINED"): string => `shipment:${orderId}:${event}`;

function eventOf(s: Shipment, event: "SHIPPED" | "DELIVERED" | "DECLINED"): EventDelivery {
  const at = event === "SHIPPED" ? s.shippedAt : event === "DELIVERED" ? s.deliveredAt : s.declinedAt;
  return {
    messageKey: shipmentEventKey(s.orderId, event),
    event: ShipmentEvent[event],
    shipmentId: s.id,
    carrier: s.carrier,
    declineReason: event === "DECLINED" ? s.declineReason : "",
    occurredAt: at,
  };
}

/** How the shipment reads in a detail line. */
function describe(s: Shipment): string {
  const when = (ts: Timestamp | undefined) => date(ts)?.toISOString() ?? "an unknown time";
  switch (s.status) {
    case ShipmentStatus.SHIPPED:
      return `shipment ${s.id} (${s.carrier}) SHIPPED at ${when(s.shippedAt)}`;
    case ShipmentStatus.DELIVERED:
      return `shipment ${s.id} (${s.carrier}) DELIVERED at ${when(s.deliveredAt)}`;
    case ShipmentStatus.DECLINED:
      return `shipment ${s.id} (${s.carrier}) DECLINED (${s.declineReason || "no reason"}) at ${when(s.declinedAt)}`;
    default:
      return `shipment ${s.id} (${s.carrier}) ${shipmentName(s.status)} since ${when(s.updatedAt)}`;
  }
}

/** The order's customer, total and currency against the shipment's; empty when they agree. */
function mismatch(order: Order, s: Shipment): string[] {
  const out: string[] = [];
  if (s.customerId !== order.customerId) out.push(`the shipment is for customer ${JSON.stringify(s.customerId)}, the order for ${JSON.stringify(order.customerId)}`);
  if (s.totalCents !== order.totalCents || s.currency !== order.currency) {
    out.push(`the shipment records a total of ${formatCents(s.totalCents, s.currency)}, the order's is ${formatCents(order.totalCents, order.currency)}`);
  }
  return out;
}

/**
 * Compares what the order service knows of each order's shipment
 * (shipping_status, sent_by) with the delivery service's shipment, for these
 * order ids (an id may be missing from either map: an order the order
 * service does not know, an order the delivery service has no shipment for).
 *
 * `cutoff` is the run's window end (now − grace): an event that happened, or
 * a shipment request made, at or after it is left alone, since the relays
 * may still be delivering it. Contradictions are reported whatever their
 * age: no delivery in flight ever produces them (the order records
 * REQUESTED before its shipment can exist, and moves only by the shipment's
 * events, in the order they happened).
 */
export function checkShipping(
  orderIds: Iterable<string>,
  ordersById: Map<string, Order>,
  shipmentsByOrder: Map<string, Shipment>,
  cutoff: Date,
): ShippingFinding[] {
  const out: ShippingFinding[] = [];
  const settled = (ts: Timestamp | undefined) => {
    const d = date(ts);
    return d !== undefined && d.getTime() < cutoff.getTime();
  };
  for (const orderId of new Set(orderIds)) {
    const order = ordersById.get(orderId);
    const s = shipmentsByOrder.get(orderId);
    if (!order) {
      if (s) out.push({ kind: "shipment_without_order", orderId, detail: `the delivery service has ${describe(s)} for order ${orderId}, which the order service does not know` });
      continue;
    }
    const shipping = order.shipping?.status ?? ShippingStatus.UNSPECIFIED;
    const state = `order ${statusName(order.status)}, shipping ${shippingName(shipping)}, sent by ${sentByName(order.sentBy)}`;
    if (!s) {
      if (shipping === ShippingStatus.REQUESTED) {
        const requestedAt = order.shipping?.requestedAt;
        if (settled(requestedAt)) {
          out.push({
            kind: "shipment_missing",
            orderId,
            detail: `the order has awaited its shipment since ${date(requestedAt)!.toISOString()} (${state}) and the delivery service has none`,
            requeue: true,
          });
        }
      } else if (shipping === ShippingStatus.SHIPPED || shipping === ShippingStatus.DELIVERED || shipping === ShippingStatus.DECLINED) {
        out.push({ kind: "shipping_conflict", orderId, detail: `the order records its shipment's events (${state}), the delivery service has no shipment for it` });
      }
      continue;
    }
    const says = `the delivery service has ${describe(s)}`;
    if (shipping === ShippingStatus.NONE || shipping === ShippingStatus.UNSPECIFIED) {
      const hand =
        order.sentBy === SentBy.HAND && (s.status === ShipmentStatus.SHIPPED || s.status === ShipmentStatus.DELIVERED)
          ? ": the order was sent by hand and shipped by the carrier too"
          : "";
      out.push({ kind: "shipment_without_order", orderId, detail: `${says} for an order that is not in shipping (${state})${hand}` });
      continue;
    }
    const differs = mismatch(order, s);
    if (differs.length > 0) {
      out.push({ kind: "shipment_mismatch", orderId, detail: `${differs.join("; ")} (${state}; ${says})` });
      continue;
    }
    if (order.sentBy === SentBy.HAND) {
      out.push({ kind: "shipping_conflict", orderId, detail: `the order was marked sent by hand while in shipping (${state}); ${says}` });
      continue;
    }
    const conflict = (why: string) => out.push({ kind: "shipping_conflict", orderId, detail: `${says}, but ${why} (${state})` });
    switch (shipping) {
      case ShippingStatus.REQUESTED:
        if (s.status === ShipmentStatus.SHIPPED) {
          if (settled(s.shippedAt)) {
            out.push({ kind: "shipment_event_undelivered", orderId, detail: `${says}, the order has not learned it (${state})`, deliver: [eventOf(s, "SHIPPED")] });
          }
        } else if (s.status === ShipmentStatus.DELIVERED) {
          // SHIPPED then DELIVERED, under the delivery service's two keys, as its relay delivers them.
          if (settled(s.deliveredAt)) {
            out.push({
              kind: "shipment_event_undelivered",
              orderId,
              detail: `${says}, the order has learned neither that it shipped nor that it arrived (${state})`,
              deliver: [eventOf(s, "SHIPPED"), eventOf(s, "DELIVERED")],
            });
          }
        } else if (s.status === ShipmentStatus.DECLINED) {
          if (settled(s.declinedAt)) {
            out.push({ kind: "shipment_event_undelivered", orderId, detail: `${says}, the order has not learned it (${state})`, deliver: [eventOf(s, "DECLINED")] });
          }
        } else if (s.status !== ShipmentStatus.CREATED && s.status !== ShipmentStatus.CONFIRMED) {
          conflict("the shipment is in no known state");
        }
        break;
      case ShippingStatus.SHIPPED:
        if (s.status === ShipmentStatus.DELIVERED) {
          if (settled(s.deliveredAt)) {
            out.push({ kind: "shipment_event_undelivered", orderId, detail: `${says}, the order has not learned it arrived (${state})`, deliver: [eventOf(s, "DELIVERED")] });
          }
        } else if (s.status !== ShipmentStatus.SHIPPED) {
          conflict("the order records it as shipped");
        }
        break;
      case ShippingStatus.DELIVERED:
        if (s.status !== ShipmentStatus.DELIVERED) conflict("the order records it as delivered");
        break;
      case ShippingStatus.DECLINED:
        if (s.status !== ShipmentStatus.DECLINED) conflict("the order records it as declined");
        break;
      default:
        conflict("the order's shipping is in no known state");
    }
  }
  return out;
}

/** Identity of a shipping finding, so the same drift seen from both sides (or through a recheck) counts once. */
export const shippingFindingKey = (f: ShippingFinding): string => `${f.kind}:${f.orderId}`;
