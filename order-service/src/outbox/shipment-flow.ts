import { Code } from "@connectrpc/connect";
import { defineFlow, type Claimed, type Flow, type ItemResult } from "@shop/engine";
import { codeName } from "@shop/engine/classify";
import { batchOfSingles } from "@shop/engine/singles";
import { normalizeTraceparent } from "@shop/platform/tracing";
import type { DeliveryClient } from "@shop/sdk/clients";
import { ShipmentStatus } from "@shop/sdk/delivery";

/**
 * The shipment flow on the delivery engine. shipment_outbox is written in the
 * transaction that releases an order for shipping (ReleaseOrderForShipping,
 * or the CHARGED outcome that makes an order PAID with SHIP_PAID_ORDERS on);
 * each row is one CreateShipment call to the delivery service, which keeps
 * one shipment per order and answers a replay with the shipment it has. What
 * the carrier then does comes back to the order through the delivery
 * service's own outbox (RecordShipmentEvent), so a delivered row here only
 * means "the delivery service has the shipment".
 */
export interface ShipmentRow {
  messageKey: string;
  orderId: string;
  customerId: string;
  totalCents: number;
  currency: string;
  /** Empty: the delivery service's default carrier. */
  carrier: string;
}

/** The delivery service's answer, for logs. */
export interface ShipmentCreated {
  shipmentId: string;
  status: string;
}

/** What an operator should check when the delivery service refuses the order service's relay itself. */
export function deliveryMisconfigurationHint(code: number): string {
  switch (code as Code) {
    case Code.Unauthenticated:
      return "the delivery service does not accept the relay's token (missing, expired, not addressed to delivery-service, or signed by a key it does not trust): check RELAY_TOKEN / RELAY_TOKEN_FILE against the delivery service's AUTH_JWKS_FILE / AUTH_JWKS / AUTH_PUBLIC_KEYS, AUTH_AUDIENCE and AUTH_ISSUER";
    case Code.PermissionDenied:
      return "the relay's token lacks shipments:create: give the relay a token of the relay role (npm run auth -- token --key <file> --role relay)";
    case Code.Unimplemented:
      return "DELIVERY_SERVICE_URL does not serve shop.delivery.v1.DeliveryService: wrong URL or port";
    default:
      return "the relay's settings for the delivery service (DELIVERY_SERVICE_URL, RELAY_TOKEN) are wrong";
  }
}

const TEXTS = {
  delivered: "shipment requests taken by the delivery service",
  retry: "shipment request failed; retry scheduled",
  refused: "shipment request refused for good; outbox row is dead until requeued (RequeueShipment)",
  ackFailed: "shipments created but the ack failed; the rows are sent again after their lease (the delivery service answers with the same shipment)",
  misconfigured: (code: number) =>
    `the delivery service refused the relay itself (${codeName(code)}): ${deliveryMisconfigurationHint(code)}; ` +
    "no shipment is requested until this is fixed, the rows stay pending and are retried with backoff",
};

function shipmentFlowDefinition(delivery?: DeliveryClient): Flow<ShipmentRow, ShipmentCreated> {
  const client = (): DeliveryClient => {
    if (!delivery) throw new Error("this shipment flow was defined without a delivery client: it can claim and settle, not deliver");
    return delivery;
  };
  const single = async (row: Claimed<ShipmentRow>, call: { timeoutMs: number }): Promise<ItemResult<ShipmentCreated>> => {
    const res = await client().createShipment(
      {
        orderId: row.orderId,
        customerId: row.customerId,
        totalCents: BigInt(row.totalCents),
        currency: row.currency,
        carrier: row.carrier,
        traceparent: normalizeTraceparent(row.traceparent) ?? "",
      },
      call,
    );
    if (!res.shipment) return { own: "CreateShipment: an answer without a shipment" };
    return { result: { shipmentId: res.shipment.id, status: ShipmentStatus[res.shipment.status] ?? String(res.shipment.status) }, created: res.created };
  };
  return defineFlow<ShipmentRow, ShipmentCreated>({
    name: "shipment",
    table: "shipment_outbox",
    columns: ["message_key", "order_id", "customer_id", "total_cents", "currency", "carrier"],
    fromRow: (r) => ({
      messageKey: String(r.message_key),
      orderId: String(r.order_id),
      customerId: String(r.customer_id),
      totalCents: Number(r.total_cents),
      currency: String(r.currency),
      carrier: String(r.carrier ?? ""),
    }),
    key: { name: "orderId", of: (row) => row.orderId },
    deliver: { batchMethod: "CreateShipment", singleMethod: "CreateShipment", batch: batchOfSingles(single), single },
    texts: TEXTS,
  });
}

/** The flow for claims, acks, stats and cleanup, without a client. */
export const shipmentOutbox = shipmentFlowDefinition();

export function shipmentFlow(delivery: DeliveryClient): Flow<ShipmentRow, ShipmentCreated> {
  return shipmentFlowDefinition(delivery);
}
