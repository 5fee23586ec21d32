import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { OrderStatus, PaymentEvent, PaymentMethod, PaymentStatus, type Order } from "@shop/sdk/order";
import { PaymentOutcome, RefusalReason, type OrderPayment } from "@shop/sdk/payment";
import { formatCents, type PaymentDriftKind } from "./compare.js";

/** An outcome to hand to the order service (PaymentOutcomeService.RecordPaymentOutcome), as the payment relay would have. */
export interface OutcomeDelivery {
  /** The payment service's key of the decision, the order's inbox key: "charge:<order>" or "refund:<order>". */
  messageKey: string;
  event: PaymentEvent;
  /** For REFUSED: the payment service's reason (INSUFFICIENT_FUNDS, NO_ACCOUNT). */
  refusalReason: string;
  amountCents: bigint;
  currency: string;
}

/** One disagreement between an order and its payment, and the repair it calls for. */
export interface PaymentFinding {
  kind: PaymentDriftKind;
  orderId: string;
  /** Why this is drift, in words an operator can act on. */
  detail: string;
  /** Deliver this outcome first (RecordPaymentOutcome). */
  deliver?: OutcomeDelivery;
  /**
   * RequeuePayment for the order: "always" (the request is undecided), or
   * "if-owed" after the delivery: only when the order, having learned of the
   * charge, owes a refund (payment REFUND_PENDING).
   */
  requeue?: "always" | "if-owed";
}

/** A finding the reconciler can repair by itself (the others wait for a person). */
export const isPaymentRepairable = (f: PaymentFinding): boolean => !!(f.deliver || f.requeue);

const date = (ts: Timestamp | undefined): Date | undefined => (ts ? timestampDate(ts) : undefined);
const statusName = (s: OrderStatus): string => OrderStatus[s] ?? String(s);
const paymentName = (s: PaymentStatus): string => PaymentStatus[s] ?? String(s);
const reasonName = (r: RefusalReason): string => (r === RefusalReason.UNSPECIFIED ? "" : (RefusalReason[r] ?? ""));

/** How the payment service's decision reads in a detail line. */
function decision(p: OrderPayment): string {
  const when = date(p.decidedAt)?.toISOString() ?? "an unknown time";
  if (p.chargeOutcome === PaymentOutcome.REFUSED) return `refused (${reasonName(p.refusalReason) || "no reason"}) at ${when}`;
  const refund = p.refunded ? `, refunded at ${date(p.refundedAt)?.toISOString() ?? "an unknown time"}` : "";
  return `charged ${formatCents(p.amountCents, p.currency)} at ${when}${refund}`;
}

/** The order's customer, amount and currency against the charge's; empty when they agree. */
function mismatch(order: Order, p: OrderPayment): string[] {
  const out: string[] = [];
  if (p.customerId !== order.customerId) out.push(`the charge is for customer ${JSON.stringify(p.customerId)}, the order for ${JSON.stringify(order.customerId)}`);
  if (p.amountCents !== order.totalCents || p.currency !== order.currency) {
    out.push(`the charge is ${formatCents(p.amountCents, p.currency)}, the order's total ${formatCents(order.totalCents, order.currency)}`);
  }
  return out;
}

const chargeDelivery = (p: OrderPayment): OutcomeDelivery => ({
  messageKey: `charge:${p.orderId}`,
  event: p.chargeOutcome === PaymentOutcome.CHARGED ? PaymentEvent.CHARGED : PaymentEvent.REFUSED,
  refusalReason: p.chargeOutcome === PaymentOutcome.REFUSED ? reasonName(p.refusalReason) : "",
  amountCents: p.amountCents,
  currency: p.currency,
});

const refundDelivery = (p: OrderPayment): OutcomeDelivery => ({
  messageKey: `refund:${p.orderId}`,
  event: PaymentEvent.REFUNDED,
  refusalReason: "",
  amountCents: p.amountCents,
  currency: p.currency,
});

/** When the order asked for its refund: at its cancellation, or when a cancelled order learned of its charge. */
function refundRequestedAt(order: Order): Date | undefined {
  const times = [date(order.cancelledAt), date(order.payment?.chargedAt)].filter((d): d is Date => d !== undefined);
  if (times.length === 0) return date(order.createdAt);
  return new Date(Math.max(...times.map((d) => d.getTime())));
}

/**
 * Compares what the order service knows of each order's payment with what the
 * payment service decided, for these order ids (an id may be missing from
 * either map: an order the order service does not know, a charge the payment
 * service never decided).
 *
 * `cutoff` is the run's window end (now − grace): a decision made, a refund
 * made, an order created or a refund requested at or after it is left alone,
 * since the relays may still be delivering it. Contradictions are reported
 * whatever their age: no delivery in flight ever produces them.
 */
export function checkPayments(
  orderIds: Iterable<string>,
  ordersById: Map<string, Order>,
  paymentsByOrder: Map<string, OrderPayment>,
  cutoff: Date,
): PaymentFinding[] {
  const out: PaymentFinding[] = [];
  const settled = (d: Date | undefined) => d !== undefined && d.getTime() < cutoff.getTime();
  for (const orderId of new Set(orderIds)) {
    const order = ordersById.get(orderId);
    const p = paymentsByOrder.get(orderId);
    const decided = p && (p.chargeOutcome === PaymentOutcome.CHARGED || p.chargeOutcome === PaymentOutcome.REFUSED) ? p : undefined;
    if (!order) {
      if (decided) {
        out.push({ kind: "charge_without_order", orderId, detail: `the payment service ${decision(decided)} for order ${orderId}, which the order service does not know` });
      }
      continue;
    }
    const method = order.payment?.method ?? PaymentMethod.UNSPECIFIED;
    const status = order.payment?.status ?? PaymentStatus.UNSPECIFIED;
    const state = `order ${statusName(order.status)}, payment ${paymentName(status)}`;
    if (!decided) {
      if (method !== PaymentMethod.ACCOUNT) continue;
      if (status === PaymentStatus.AWAITING) {
        if (settled(date(order.createdAt))) {
          out.push({
            kind: "charge_undecided",
            orderId,
            detail: `the order has awaited its charge since ${date(order.createdAt)!.toISOString()} (${state}) and the payment service has decided nothing`,
            requeue: "always",
          });
        }
      } else if (status === PaymentStatus.CHARGED || status === PaymentStatus.REFUND_PENDING || status === PaymentStatus.REFUNDED) {
        out.push({ kind: "payment_conflict", orderId, detail: `the order records a charge (${state}), the payment service decided none` });
      } else if (status === PaymentStatus.REFUSED) {
        out.push({ kind: "payment_conflict", orderId, detail: `the order records a refused charge (${state}), the payment service decided none` });
      }
      continue;
    }
    if (method !== PaymentMethod.ACCOUNT) {
      out.push({
        kind: "charge_without_order",
        orderId,
        detail: `the payment service ${decision(decided)} for order ${orderId}, which has no payment through the shop (${state})`,
      });
      continue;
    }
    const differs = mismatch(order, decided);
    if (differs.length > 0) {
      out.push({ kind: "payment_mismatch", orderId, detail: `${differs.join("; ")} (${state}; the payment service ${decision(decided)})` });
      continue;
    }
    const charged = decided.chargeOutcome === PaymentOutcome.CHARGED;
    const refunded = charged && decided.refunded;
    const says = `the payment service ${decision(decided)}`;
    switch (status) {
      case PaymentStatus.AWAITING:
        if (refunded) {
          out.push({ kind: "payment_conflict", orderId, detail: `${says}, but the order never learned of the charge and so never asked for a refund (${state})` });
        } else if (!settled(date(decided.decidedAt))) {
          // Decided after the cutoff: the payment relay may still be delivering it.
        } else if (charged && order.status === OrderStatus.CANCELLED) {
          out.push({
            kind: "refund_missing",
            orderId,
            detail: `${says}, the order was cancelled without learning of it (${state}): the customer is owed a refund`,
            deliver: chargeDelivery(decided),
            requeue: "if-owed",
          });
        } else {
          out.push({ kind: "charge_undelivered", orderId, detail: `${says}, the order still awaits the outcome (${state})`, deliver: chargeDelivery(decided) });
        }
        break;
      case PaymentStatus.CHARGED:
        if (!charged) {
          out.push({ kind: "payment_conflict", orderId, detail: `${says}, but the order records it as charged (${state})` });
        } else if (refunded) {
          out.push({ kind: "payment_conflict", orderId, detail: `${says}, but the order never asked for a refund (${state})` });
        } else if (order.status === OrderStatus.CANCELLED) {
          // CancelOrder of a charged order requests the refund in its own transaction: this one was cancelled without.
          out.push({
            kind: "refund_missing",
            orderId,
            detail: `${says}, the order was cancelled but records the charge without a refund request (${state}): the customer is owed a refund a person must request`,
          });
        }
        break;
      case PaymentStatus.REFUSED:
        if (charged) {
          out.push({ kind: "payment_conflict", orderId, detail: `${says}, but the order records the charge as refused (${state}): the customer was debited for a failed order` });
        }
        break;
      case PaymentStatus.REFUND_PENDING:
        if (!charged) {
          out.push({ kind: "payment_conflict", orderId, detail: `${says}, but the order awaits a refund of a charge (${state})` });
        } else if (refunded) {
          if (settled(date(decided.refundedAt))) {
            out.push({ kind: "refund_undelivered", orderId, detail: `${says}, the order still awaits the refund (${state})`, deliver: refundDelivery(decided) });
          }
        } else if (settled(refundRequestedAt(order))) {
          out.push({
            kind: "refund_undecided",
            orderId,
            detail: `the order has awaited its refund since ${refundRequestedAt(order)!.toISOString()} (${state}) and ${says} without a refund`,
            requeue: "always",
          });
        }
        break;
      case PaymentStatus.REFUNDED:
        if (!refunded) {
          out.push({ kind: "payment_conflict", orderId, detail: `${says}, but the order records a refund (${state})` });
        }
        break;
      default:
        out.push({ kind: "payment_conflict", orderId, detail: `${says}, but the order's payment is in no known state (${state})` });
    }
  }
  return out;
}

/** Identity of a payment finding, so the same drift seen from both sides (or through a recheck) counts once. */
export const paymentFindingKey = (f: PaymentFinding): string => `${f.kind}:${f.orderId}`;
