import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { DomainError } from "@shop/platform/errors";
import { failpoint } from "@shop/platform/failpoints";
import type { Logger } from "@shop/platform/logger";
import { withChildSpan } from "@shop/platform/tracing";
import { ShipmentEvent, type ShipmentEventService } from "@shop/sdk/order";
import type { OrderStore } from "../db/order-store.js";
import type { ShipmentEventFacts } from "../domain/order.js";
import { toProtoOrder } from "./routes.js";

const EVENT: Record<number, ShipmentEventFacts["event"]> = {
  [ShipmentEvent.SHIPPED]: "SHIPPED",
  [ShipmentEvent.DELIVERED]: "DELIVERED",
  [ShipmentEvent.DECLINED]: "DECLINED",
};

/** ShipmentEventService: the delivery service's shipment events, taken in once each (OrderStore.recordShipmentEvent). */
export function createShipmentEventServiceImpl({ store, logger }: { store: OrderStore; logger: Logger }): ServiceImpl<typeof ShipmentEventService> {
  return {
    async recordShipmentEvent(req) {
      // The rules hold event to SHIPPED, DELIVERED or DECLINED, and the ids, carrier and reason to their patterns.
      const event = EVENT[req.event]!;
      try {
        // The change continues the trace the request carries (the order's own, from
        // CreateOrder on), not the relay's batch span that called: so what this
        // change writes (a refund, shipment or voucher request) stays in the order's trace.
        const { order, changed } = await withChildSpan("order.record-shipment-event", req.traceparent || undefined, () =>
          store.recordShipmentEvent({
            messageKey: req.messageKey,
            orderId: req.orderId,
            event,
            shipmentId: req.shipmentId,
            carrier: req.carrier || undefined,
            declineReason: req.declineReason || undefined,
            occurredAt: req.occurredAt ? timestampDate(req.occurredAt) : undefined,
          }),
        );
        failpoint("order.shipment-event.before-reply");
        return { order: toProtoOrder(order), changed };
      } catch (err) {
        if (!(err instanceof DomainError)) {
          logger.error({ rpc: "RecordShipmentEvent", orderId: req.orderId, event, err }, `RecordShipmentEvent failed for order ${req.orderId}`);
        }
        throw err;
      }
    },
  };
}
