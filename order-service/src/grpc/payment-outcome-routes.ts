import type { ServiceImpl } from "@connectrpc/connect";
import { DomainError } from "@shop/platform/errors";
import { failpoint } from "@shop/platform/failpoints";
import type { Logger } from "@shop/platform/logger";
import { withChildSpan } from "@shop/platform/tracing";
import { PaymentEvent, type PaymentOutcomeService } from "@shop/sdk/order";
import type { OrderStore } from "../db/order-store.js";
import type { PaymentOutcome } from "../domain/order.js";
import { toProtoOrder } from "./routes.js";

const EVENT: Record<number, PaymentOutcome["event"]> = {
  [PaymentEvent.CHARGED]: "CHARGED",
  [PaymentEvent.REFUSED]: "REFUSED",
  [PaymentEvent.REFUNDED]: "REFUNDED",
};

/** PaymentOutcomeService: the payment service's decisions, taken in once each (OrderStore.recordPaymentOutcome). */
export function createPaymentOutcomeServiceImpl({ store, logger }: { store: OrderStore; logger: Logger }): ServiceImpl<typeof PaymentOutcomeService> {
  return {
    async recordPaymentOutcome(req) {
      // The rules hold event to CHARGED, REFUSED or REFUNDED, the amount to 1..10^10 and currency to "EUR".
      const event = EVENT[req.event]!;
      try {
        // The change continues the trace the request carries (the order's own, from
        // CreateOrder on), not the relay's batch span that called: so what this
        // change writes (a refund, shipment or voucher request) stays in the order's trace.
        const { order, changed } = await withChildSpan("order.record-payment-outcome", req.traceparent || undefined, () =>
          store.recordPaymentOutcome({
            messageKey: req.messageKey,
            orderId: req.orderId,
            event,
            reason: req.refusalReason || undefined,
            amountCents: Number(req.amountCents),
            currency: req.currency,
          }),
        );
        failpoint("order.payment-outcome.before-reply");
        return { order: toProtoOrder(order), changed };
      } catch (err) {
        if (!(err instanceof DomainError)) {
          logger.error({ rpc: "RecordPaymentOutcome", orderId: req.orderId, event, err }, `RecordPaymentOutcome failed for order ${req.orderId}`);
        }
        throw err;
      }
    },
  };
}
