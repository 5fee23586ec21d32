import { failedPrecondition } from "@shop/platform/errors";
import { VoucherRule } from "@shop/rules/voucher-rule";
import type { OutboxEntry } from "./voucher-state.js";

export type OrderStatus = "PENDING" | "SENT" | "DELIVERED" | "CANCELLED";

/** The only currency orders are taken in. */
export const ORDER_CURRENCY = "EUR";

/** An order as stored. Money is integer cents; totals stay far below 2^53. */
export interface Order {
  id: string;
  customerId: string;
  totalCents: number;
  currency: string;
  status: OrderStatus;
  /** The caller's CreateOrder idempotency key. */
  requestId: string;
  createdAt: Date;
  updatedAt: Date;
  sentAt: Date | null;
  deliveredAt: Date | null;
  cancelledAt: Date | null;
}

/** What the voucher service needs to issue the voucher; a snapshot, so delivery never reads orders. */
export interface VoucherRequest {
  orderId: string;
  customerId: string;
  totalCents: number;
  currency: string;
}

export interface Transition {
  order: Order;
  /** False when the order already was in the target state and nothing is to be written. */
  changed: boolean;
}

export interface SentTransition extends Transition {
  /** Present exactly when this transition makes a voucher due; it is written with the order, in one transaction. */
  voucherRequest?: VoucherRequest;
}

/** Today's list of rule versions (@shop/rules); tests pass their own list to the functions below. */
const RULE = new VoucherRule();

/**
 * Whether a sent order earns a voucher, judged by the rule version in force
 * at its sent_at (the order database's clock, stamped in the MarkOrderSent
 * transaction), so a later change of the rule never changes the answer for it.
 */
export function orderQualifies(order: Pick<Order, "id" | "currency" | "totalCents" | "sentAt">, rule: VoucherRule = RULE): boolean {
  return rule.qualifies(order, sentAtOf(order));
}

function sentAtOf(order: Pick<Order, "id" | "sentAt">): Date {
  // Every write that makes an order SENT stamps sent_at in the same statement; an order without one was never sent.
  if (!order.sentAt) throw new Error(`order ${order.id} has no sent_at, so no voucher rule version applies to it`);
  return order.sentAt;
}

export interface NewOrder {
  customerId: string;
  totalCents: number;
  currency: typeof ORDER_CURRENCY;
  requestId: string;
}

export function newOrder(input: NewOrder, id: string, now: Date): Order {
  return {
    id,
    customerId: input.customerId,
    totalCents: input.totalCents,
    currency: input.currency,
    status: "PENDING",
    requestId: input.requestId,
    createdAt: now,
    updatedAt: now,
    sentAt: null,
    deliveredAt: null,
    cancelledAt: null,
  };
}

/** A CreateOrder retry must repeat the first request; anything else reusing its request_id is a conflict. */
export function isSameCreateRequest(existing: Order, input: NewOrder): boolean {
  return (
    existing.requestId === input.requestId &&
    existing.customerId === input.customerId &&
    existing.totalCents === input.totalCents &&
    existing.currency === input.currency
  );
}

/**
 * PENDING → SENT, recording the voucher request when the order qualifies.
 * Already SENT or DELIVERED is success without change (a client retry after a
 * lost reply must not request a second voucher); CANCELLED cannot be sent.
 */
export function markSent(order: Order, now: Date, rule: VoucherRule = RULE): SentTransition {
  switch (order.status) {
    case "SENT":
    case "DELIVERED":
      return { order, changed: false };
    case "CANCELLED":
      throw failedPrecondition(`order ${order.id} is cancelled and cannot be marked sent`);
    case "PENDING": {
      const sent: Order = { ...order, status: "SENT", sentAt: now, updatedAt: now };
      if (!orderQualifies(sent, rule)) return { order: sent, changed: true };
      return { order: sent, changed: true, voucherRequest: voucherRequestFor(sent) };
    }
  }
}

/** SENT → DELIVERED; already DELIVERED is success without change. */
export function markDelivered(order: Order, now: Date): Transition {
  switch (order.status) {
    case "DELIVERED":
      return { order, changed: false };
    case "PENDING":
      throw failedPrecondition(`order ${order.id} has not been sent yet and cannot be marked delivered`);
    case "CANCELLED":
      throw failedPrecondition(`order ${order.id} is cancelled and cannot be marked delivered`);
    case "SENT":
      return { order: { ...order, status: "DELIVERED", deliveredAt: now, updatedAt: now }, changed: true };
  }
}

/** PENDING → CANCELLED; already CANCELLED is success without change. A sent order keeps its voucher, so it cannot be cancelled. */
export function cancel(order: Order, now: Date): Transition {
  switch (order.status) {
    case "CANCELLED":
      return { order, changed: false };
    case "SENT":
    case "DELIVERED":
      throw failedPrecondition(`order ${order.id}: a sent order cannot be cancelled`);
    case "PENDING":
      return { order: { ...order, status: "CANCELLED", cancelledAt: now, updatedAt: now }, changed: true };
  }
}

export function voucherRequestFor(order: Order): VoucherRequest {
  return { orderId: order.id, customerId: order.customerId, totalCents: order.totalCents, currency: order.currency };
}

export type RequeueAction =
  /** No outbox row although one is due (lost, or a bug): record the request. */
  | { kind: "insert"; request: VoucherRequest }
  /** Delivery failed for good: back to pending, due now. */
  | { kind: "revive" }
  /**
   * Delivered, but the caller (the reconciler) found the recorded voucher
   * gone or wrong: deliver again; the voucher service answers with the
   * order's current voucher and the ack records its id.
   */
  | { kind: "redeliver"; request: VoucherRequest }
  /** Pending, or delivered and not asked to redeliver: already on its way or done. */
  | { kind: "none" };

/**
 * What RequeueVoucher does for this order and its outbox row. Only a sent
 * (or delivered), qualifying order is owed a voucher; anything else is refused.
 */
export function requeueAction(order: Order, entry: OutboxEntry | null, redeliver = false, rule: VoucherRule = RULE): RequeueAction {
  const request = owedVoucher(order, rule);
  if (!entry) return { kind: "insert", request };
  if (entry.status === "dead") return { kind: "revive" };
  if (redeliver && entry.status === "delivered") return { kind: "redeliver", request };
  return { kind: "none" };
}

function owedVoucher(order: Order, rule: VoucherRule): VoucherRequest {
  if (order.status !== "SENT" && order.status !== "DELIVERED") {
    throw failedPrecondition(`order ${order.id} is ${order.status}, not sent; no voucher is due`);
  }
  if (!orderQualifies(order, rule)) {
    const sentAt = sentAtOf(order);
    throw failedPrecondition(
      `order ${order.id} does not qualify for a voucher (${order.totalCents} cents ${order.currency}; an order sent at ${sentAt.toISOString()} needs ${rule.describe(sentAt)})`,
    );
  }
  return voucherRequestFor(order);
}
