import type { Order } from "@shop/sdk/order";
import { qualifiesForVoucher } from "@shop/order-service/domain/order";
import type { QualifiesFn } from "./compare.js";

/**
 * The voucher rule as the order service writes it, applied to an order read
 * through the API. Not restated here: two copies of a rule drift apart, and
 * the reconciler exists to catch drift, not to cause it.
 */
export const qualifies: QualifiesFn = (order: Order) =>
  qualifiesForVoucher({ currency: order.currency, totalCents: Number(order.totalCents) });
