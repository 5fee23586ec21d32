import { failedPrecondition } from "@shop/platform/errors";
import { VoucherRule } from "@shop/rules/voucher-rule";
import type { OutboxEntry } from "./voucher-state.js";

export type OrderStatus = "PENDING" | "SENT" | "DELIVERED" | "CANCELLED" | "AWAITING_PAYMENT" | "PAID" | "PAYMENT_FAILED";

/** NONE: no payment through the shop (every order before payments); ACCOUNT: charged to the customer's account. */
export type PaymentMethod = "NONE" | "ACCOUNT";

/** What the order knows of its payment. */
export type PaymentStatus = "NONE" | "AWAITING" | "CHARGED" | "REFUSED" | "REFUND_PENDING" | "REFUNDED";

/** Where the order's shipment stands: NONE (shipped by hand), REQUESTED (released), then as its shipment's events say. */
export type ShippingStatus = "NONE" | "REQUESTED" | "SHIPPED" | "DELIVERED" | "DECLINED";

/** Who marked the order sent. */
export type SentBy = "HAND" | "SHIPMENT";

/** A shipment's event as the delivery service reports it (RecordShipmentEvent). */
export interface ShipmentEventFacts {
  event: "SHIPPED" | "DELIVERED" | "DECLINED";
  /** For DECLINED: the carrier's reason. */
  declineReason?: string;
}

/** A payment decision as the payment service reports it (RecordPaymentOutcome). */
export interface PaymentOutcome {
  event: "CHARGED" | "REFUSED" | "REFUNDED";
  /** For REFUSED: the payment service's reason. */
  reason?: string;
  amountCents: number;
  currency: string;
}

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
  paymentMethod: PaymentMethod;
  paymentStatus: PaymentStatus;
  paymentReason: string | null;
  chargedAt: Date | null;
  refundedAt: Date | null;
  shippingStatus: ShippingStatus;
  /** The carrier asked for at CreateOrder, or chosen at release; null: the delivery service's default. */
  carrier: string | null;
  shippingRequestedAt: Date | null;
  shippingDeclineReason: string | null;
  /** Null while unsent, and for orders sent before shipping existed. */
  sentBy: SentBy | null;
}

/** What the payment service needs to charge the order; a snapshot written with the order. */
export interface ChargeRequest {
  orderId: string;
  customerId: string;
  amountCents: number;
  currency: string;
}

/** What the payment service needs to refund the order's charge. */
export interface RefundRequest {
  orderId: string;
  amountCents: number;
  currency: string;
}

/** What the delivery service needs to create the shipment; a snapshot written with the order. */
export interface ShipmentRequest {
  orderId: string;
  customerId: string;
  totalCents: number;
  currency: string;
  /** Empty: the delivery service's default carrier. */
  carrier: string;
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
  /** Present exactly when this transition owes the customer a refund; written with the order, in one transaction. */
  refundRequest?: RefundRequest;
  /** Present exactly when this transition releases the order for shipping; written with the order, in one transaction. */
  shipmentRequest?: ShipmentRequest;
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
  /** Default NONE: an order without payment, PENDING at once. */
  paymentMethod?: PaymentMethod;
  /** The carrier to ship with when the order is released; empty or absent: the delivery service's default. */
  carrier?: string;
}

/** A new order; a paid one starts AWAITING_PAYMENT, its charge request written with it (chargeRequestFor). */
export function newOrder(input: NewOrder, id: string, now: Date): Order {
  const paid = (input.paymentMethod ?? "NONE") === "ACCOUNT";
  return {
    id,
    customerId: input.customerId,
    totalCents: input.totalCents,
    currency: input.currency,
    status: paid ? "AWAITING_PAYMENT" : "PENDING",
    requestId: input.requestId,
    createdAt: now,
    updatedAt: now,
    sentAt: null,
    deliveredAt: null,
    cancelledAt: null,
    paymentMethod: paid ? "ACCOUNT" : "NONE",
    paymentStatus: paid ? "AWAITING" : "NONE",
    paymentReason: null,
    chargedAt: null,
    refundedAt: null,
    shippingStatus: "NONE",
    carrier: input.carrier || null,
    shippingRequestedAt: null,
    shippingDeclineReason: null,
    sentBy: null,
  };
}

export function chargeRequestFor(order: Order): ChargeRequest {
  return { orderId: order.id, customerId: order.customerId, amountCents: order.totalCents, currency: order.currency };
}

function refundRequestFor(order: Order): RefundRequest {
  return { orderId: order.id, amountCents: order.totalCents, currency: order.currency };
}

/** A CreateOrder retry must repeat the first request; anything else reusing its request_id is a conflict. */
export function isSameCreateRequest(existing: Order, input: NewOrder): boolean {
  return (
    existing.requestId === input.requestId &&
    existing.customerId === input.customerId &&
    existing.totalCents === input.totalCents &&
    existing.currency === input.currency &&
    existing.paymentMethod === (input.paymentMethod ?? "NONE") &&
    existing.carrier === (input.carrier || null)
  );
}

/** The refusal of a change by hand to an order its shipment moves. */
function inShipping(order: Order, what: string): Error {
  return failedPrecondition(
    `order ${order.id} is in shipping (shipping status ${order.shippingStatus}): the delivery service's shipment events move it, so it cannot be ${what} by hand`,
  );
}

/**
 * PENDING (no payment) or PAID → SENT by hand (sent_by HAND), recording the
 * voucher request when the order qualifies. Already SENT or DELIVERED is
 * success without change (a client retry after a lost reply must not request
 * a second voucher); CANCELLED cannot be sent, nor can an order whose payment
 * is undecided or refused, nor one released for shipping (its shipment marks it sent).
 */
export function markSent(order: Order, now: Date, rule: VoucherRule = RULE): SentTransition {
  switch (order.status) {
    case "SENT":
    case "DELIVERED":
      return { order, changed: false };
  }
  if (order.shippingStatus !== "NONE") throw inShipping(order, "marked sent");
  return send(order, now, "HAND", rule);
}

function send(order: Order, now: Date, by: SentBy, rule: VoucherRule): SentTransition {
  switch (order.status) {
    case "SENT":
    case "DELIVERED":
      return { order, changed: false };
    case "CANCELLED":
      throw failedPrecondition(`order ${order.id} is cancelled and cannot be marked sent`);
    case "AWAITING_PAYMENT":
      throw failedPrecondition(`order ${order.id} is awaiting payment and cannot be marked sent until it is PAID`);
    case "PAYMENT_FAILED":
      throw failedPrecondition(
        `order ${order.id}: its payment was refused${order.paymentReason ? ` (${order.paymentReason})` : ""}, so it cannot be marked sent`,
      );
    case "PENDING":
    case "PAID": {
      const sent: Order = { ...order, status: "SENT", sentAt: now, updatedAt: now, sentBy: by };
      if (!orderQualifies(sent, rule)) return { order: sent, changed: true };
      return { order: sent, changed: true, voucherRequest: voucherRequestFor(sent) };
    }
  }
}

/** SENT → DELIVERED; already DELIVERED is success without change. */
export function markDelivered(order: Order, now: Date): Transition {
  if (order.status === "DELIVERED") return { order, changed: false };
  if (order.shippingStatus !== "NONE") throw inShipping(order, "marked delivered");
  switch (order.status) {
    case "PENDING":
    case "AWAITING_PAYMENT":
    case "PAID":
    case "PAYMENT_FAILED":
      throw failedPrecondition(`order ${order.id} has not been sent yet and cannot be marked delivered`);
    case "CANCELLED":
      throw failedPrecondition(`order ${order.id} is cancelled and cannot be marked delivered`);
    case "SENT":
      return { order: { ...order, status: "DELIVERED", deliveredAt: now, updatedAt: now }, changed: true };
  }
}

/**
 * → CANCELLED from PENDING, AWAITING_PAYMENT, PAID or PAYMENT_FAILED; already
 * CANCELLED is success without change. A sent order keeps its voucher, so it
 * cannot be cancelled. A PAID order's refund is requested in the same
 * transaction. An order cancelled while its charge is undecided keeps
 * payment AWAITING: if the charge turns out CHARGED, the refund is requested
 * then (paymentOutcome), never before the charge is known, since the payment
 * service answers a refund of an undecided charge NOT_CHARGED for good.
 */
export function cancel(order: Order, now: Date): SentTransition {
  if (order.status === "CANCELLED") return { order, changed: false };
  if (order.shippingStatus !== "NONE") throw inShipping(order, "cancelled");
  return cancelNow(order, now);
}

function cancelNow(order: Order, now: Date): SentTransition {
  switch (order.status) {
    case "CANCELLED":
      return { order, changed: false };
    case "SENT":
    case "DELIVERED":
      throw failedPrecondition(`order ${order.id}: a sent order cannot be cancelled`);
    case "PENDING":
    case "AWAITING_PAYMENT":
    case "PAYMENT_FAILED":
      return { order: { ...order, status: "CANCELLED", cancelledAt: now, updatedAt: now }, changed: true };
    case "PAID": {
      const cancelled: Order = { ...order, status: "CANCELLED", cancelledAt: now, updatedAt: now, paymentStatus: "REFUND_PENDING" };
      return { order: cancelled, changed: true, refundRequest: refundRequestFor(cancelled) };
    }
  }
}

/**
 * Moves the order on by a payment decision. CHARGED: AWAITING → CHARGED and
 * the order AWAITING_PAYMENT → PAID, or, for an order cancelled meanwhile,
 * REFUND_PENDING with its refund request. REFUSED: AWAITING → REFUSED and
 * AWAITING_PAYMENT → PAYMENT_FAILED (a cancelled order stays cancelled).
 * REFUNDED: REFUND_PENDING → REFUNDED. An outcome the order already has is
 * success without change; one that contradicts it, or names another amount
 * or currency, is refused (FAILED_PRECONDITION) and changes nothing.
 */
export function paymentOutcome(order: Order, outcome: PaymentOutcome, now: Date): SentTransition {
  if (order.paymentMethod !== "ACCOUNT") {
    throw failedPrecondition(`order ${order.id} was created without payment; a payment outcome (${outcome.event}) does not apply to it`);
  }
  if (outcome.amountCents !== order.totalCents || outcome.currency !== order.currency) {
    throw failedPrecondition(
      `payment outcome ${outcome.event} for order ${order.id} names ${outcome.amountCents} ${outcome.currency}, but the order is ${order.totalCents} ${order.currency}`,
    );
  }
  const contradiction = () =>
    failedPrecondition(`payment outcome ${outcome.event} for order ${order.id} contradicts its payment status ${order.paymentStatus}`);
  switch (outcome.event) {
    case "CHARGED": {
      if (order.paymentStatus === "CHARGED" || order.paymentStatus === "REFUND_PENDING" || order.paymentStatus === "REFUNDED") {
        return { order, changed: false };
      }
      if (order.paymentStatus !== "AWAITING") throw contradiction();
      const charged: Order = { ...order, paymentStatus: "CHARGED", chargedAt: now, updatedAt: now };
      if (order.status === "AWAITING_PAYMENT") return { order: { ...charged, status: "PAID" }, changed: true };
      if (order.status === "CANCELLED") {
        const owed: Order = { ...charged, paymentStatus: "REFUND_PENDING" };
        return { order: owed, changed: true, refundRequest: refundRequestFor(owed) };
      }
      throw contradiction();
    }
    case "REFUSED": {
      if (order.paymentStatus === "REFUSED") return { order, changed: false };
      if (order.paymentStatus !== "AWAITING") throw contradiction();
      const refused: Order = { ...order, paymentStatus: "REFUSED", paymentReason: outcome.reason || null, updatedAt: now };
      return { order: order.status === "AWAITING_PAYMENT" ? { ...refused, status: "PAYMENT_FAILED" } : refused, changed: true };
    }
    case "REFUNDED": {
      if (order.paymentStatus === "REFUNDED") return { order, changed: false };
      if (order.paymentStatus !== "REFUND_PENDING") throw contradiction();
      return { order: { ...order, paymentStatus: "REFUNDED", refundedAt: now, updatedAt: now }, changed: true };
    }
  }
}

export type PaymentRequeue =
  /** No request row although one is owed: record it. */
  | { kind: "insert-charge"; request: ChargeRequest }
  | { kind: "insert-refund"; request: RefundRequest }
  /** The request failed for good: back to pending, due now. */
  | { kind: "revive"; table: "charge" | "refund" }
  /** Pending or delivered: already on its way (a delivered one awaits the payment service's outcome). */
  | { kind: "none"; table: "charge" | "refund" };

/**
 * What RequeuePayment does for this order and the state of its charge or
 * refund request row: only an undecided charge or an owed refund can be put
 * back on its way; anything else is refused.
 */
export function paymentRequeueAction(order: Order, row: { status: string } | null): PaymentRequeue {
  if (order.paymentStatus === "AWAITING") {
    if (!row) return { kind: "insert-charge", request: chargeRequestFor(order) };
    return row.status === "dead" ? { kind: "revive", table: "charge" } : { kind: "none", table: "charge" };
  }
  if (order.paymentStatus === "REFUND_PENDING") {
    if (!row) return { kind: "insert-refund", request: refundRequestFor(order) };
    return row.status === "dead" ? { kind: "revive", table: "refund" } : { kind: "none", table: "refund" };
  }
  throw failedPrecondition(
    order.paymentStatus === "NONE"
      ? `order ${order.id} has no payment; nothing to requeue`
      : `order ${order.id}: its payment is ${order.paymentStatus}, nothing is owed to the payment service`,
  );
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

export function shipmentRequestFor(order: Order): ShipmentRequest {
  return { orderId: order.id, customerId: order.customerId, totalCents: order.totalCents, currency: order.currency, carrier: order.carrier ?? "" };
}

/** The outbox and inbox key of an order's shipment request. */
export function shipmentMessageKey(orderId: string): string {
  return `shipment:${orderId}`;
}

/**
 * Hands the order to the delivery service: shipping NONE → REQUESTED with
 * the shipment request written in the same transaction. For an order
 * without payment that is PENDING, or a PAID one. The carrier is the one
 * given here, else the one chosen at CreateOrder, else none (the delivery
 * service's default). An order already in shipping is success without
 * change, whatever carrier is asked for now; any other order is refused,
 * saying why.
 */
export function releaseForShipping(order: Order, carrier: string | undefined, now: Date): SentTransition {
  if (order.shippingStatus !== "NONE") return { order, changed: false };
  switch (order.status) {
    case "PENDING":
    case "PAID":
      break;
    case "AWAITING_PAYMENT":
      throw failedPrecondition(`order ${order.id} is awaiting payment; it can be released for shipping once it is PAID`);
    case "PAYMENT_FAILED":
      throw failedPrecondition(`order ${order.id}: its payment was refused, so it cannot be shipped`);
    case "CANCELLED":
      throw failedPrecondition(`order ${order.id} is cancelled and cannot be shipped`);
    case "SENT":
    case "DELIVERED":
      throw failedPrecondition(`order ${order.id} was already marked ${order.status === "SENT" ? "sent" : "delivered"} by hand; it cannot be shipped through the delivery service`);
  }
  const released: Order = { ...order, shippingStatus: "REQUESTED", carrier: carrier || order.carrier, shippingRequestedAt: now, updatedAt: now };
  return { order: released, changed: true, shipmentRequest: shipmentRequestFor(released) };
}

/**
 * Moves an order in shipping on by its shipment's event, in whatever order
 * the events arrive:
 *   SHIPPED   REQUESTED (order PENDING/PAID) → SENT, sent_by SHIPMENT, the voucher rule applied;
 *   DELIVERED REQUESTED → SENT and DELIVERED in one step (the voucher rule applied once), SHIPPED → DELIVERED;
 *   DECLINED  REQUESTED → CANCELLED with the carrier's reason, a charged order's refund requested as CancelOrder does.
 * An event the order has reached or passed (SHIPPED after DELIVERED, a
 * second DECLINED) is success without change. An event that contradicts the
 * order (an order never released, DECLINED after SHIPPED, SHIPPED or
 * DELIVERED after DECLINED) is refused and changes nothing.
 */
export function shipmentEvent(order: Order, facts: ShipmentEventFacts, now: Date, rule: VoucherRule = RULE): SentTransition {
  const contradiction = (why: string) =>
    failedPrecondition(`shipment event ${facts.event} for order ${order.id} contradicts the order: ${why}`);
  if (order.shippingStatus === "NONE") throw contradiction("it was never released for shipping");
  const requested = order.shippingStatus === "REQUESTED";
  if (requested && order.status !== "PENDING" && order.status !== "PAID") {
    // Release takes only PENDING and PAID orders, and nothing by hand moves an order in shipping.
    throw contradiction(`it is ${order.status} while its shipment is only requested`);
  }
  switch (facts.event) {
    case "SHIPPED": {
      if (order.shippingStatus === "SHIPPED" || order.shippingStatus === "DELIVERED") return { order, changed: false };
      if (order.shippingStatus === "DECLINED") throw contradiction("its shipment was declined");
      const t = send(order, now, "SHIPMENT", rule);
      return { ...t, order: { ...t.order, shippingStatus: "SHIPPED" } };
    }
    case "DELIVERED": {
      if (order.shippingStatus === "DELIVERED") return { order, changed: false };
      if (order.shippingStatus === "DECLINED") throw contradiction("its shipment was declined");
      const sent = requested ? send(order, now, "SHIPMENT", rule) : { order, changed: true };
      const delivered: Order = { ...sent.order, status: "DELIVERED", deliveredAt: now, updatedAt: now, shippingStatus: "DELIVERED" };
      return { ...sent, order: delivered, changed: true };
    }
    case "DECLINED": {
      if (order.shippingStatus === "DECLINED") return { order, changed: false };
      if (!requested) throw contradiction(`its shipment was already ${order.shippingStatus.toLowerCase()}`);
      const t = cancelNow(order, now);
      return { ...t, order: { ...t.order, shippingStatus: "DECLINED", shippingDeclineReason: facts.declineReason || null } };
    }
  }
}

export type ShipmentRequeue =
  /** No request row although the order is released: record it. */
  | { kind: "insert"; request: ShipmentRequest }
  /** The request failed for good: back to pending, due now. */
  | { kind: "revive" }
  /** Pending or delivered: already on its way or done. */
  | { kind: "none" };

/**
 * What RequeueShipment does for this order and its shipment request row:
 * only an order whose shipment is requested and has not moved it yet can
 * have its request put back on its way.
 */
export function shipmentRequeueAction(order: Order, row: { status: string } | null): ShipmentRequeue {
  if (order.shippingStatus === "NONE") throw failedPrecondition(`order ${order.id} is not in shipping (never released); nothing to requeue`);
  if (order.shippingStatus !== "REQUESTED") {
    throw failedPrecondition(`order ${order.id}: its shipment has already moved it (shipping status ${order.shippingStatus}); nothing to requeue`);
  }
  if (!row) return { kind: "insert", request: shipmentRequestFor(order) };
  return row.status === "dead" ? { kind: "revive" } : { kind: "none" };
}
