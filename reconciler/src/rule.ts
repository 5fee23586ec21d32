import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Order } from "@shop/sdk/order";
import { VoucherRule } from "@shop/rules/voucher-rule";
import type { QualifiesFn } from "./compare.js";

/**
 * The voucher rule the order service applies (@shop/rules, not restated
 * here: two copies of a rule drift apart), judged like the order service
 * judges it: by the version in force at the order's sent_at, a time the
 * order database stamped. Neither the reconciler's clock nor the time of the
 * run enters, so a threshold change never reaches back to orders sent before it.
 */
export function qualifiesUnder(rule: VoucherRule): QualifiesFn {
  return (order: Order) => {
    // Only sent orders are judged, and the order service stamps sent_at in the write that makes an order sent.
    if (!order.sentAt) throw new Error(`order ${order.id} is sent but has no sent_at: no voucher rule version can be applied to it`);
    return rule.qualifies({ currency: order.currency, totalCents: Number(order.totalCents) }, timestampDate(order.sentAt));
  };
}

/** Today's list of rule versions. */
export const qualifies: QualifiesFn = qualifiesUnder(new VoucherRule());
