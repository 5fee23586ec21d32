import { OrderStatus, VoucherStatus as DeliveryStatus, type Order } from "@shop/sdk/order";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { VoucherStatus, type Voucher } from "@shop/sdk/voucher";

/**
 * Every way orders and vouchers can disagree. The first four are seen from a
 * sent, qualifying order; the voucher kinds from a voucher's side. Only an
 * ISSUED voucher counts as an order's voucher: a voided one is history.
 */
export const VOUCHER_DRIFT_KINDS = [
  "missing_voucher",
  "dead_delivery",
  "dead_delivery_conflict",
  "missing_delivery",
  "voucher_without_order",
  "voucher_for_unsent_order",
  "voucher_for_unqualified_order",
  "customer_mismatch",
  "amount_mismatch",
] as const;
export type VoucherDriftKind = (typeof VOUCHER_DRIFT_KINDS)[number];

/**
 * Every way an order and its payment can disagree (payment-compare.ts): the
 * order service's view (orders.payment_status) against the payment service's
 * decision (its charge and refund of the order).
 */
export const PAYMENT_DRIFT_KINDS = [
  "charge_undelivered",
  "refund_undelivered",
  "charge_undecided",
  "refund_undecided",
  "refund_missing",
  "payment_conflict",
  "charge_without_order",
  "payment_mismatch",
] as const;
export type PaymentDriftKind = (typeof PAYMENT_DRIFT_KINDS)[number];

/**
 * Every way an order and its shipment can disagree (shipping-compare.ts): the
 * order service's view (orders.shipping_status, sent_by) against the delivery
 * service's shipment of the order.
 */
export const SHIPPING_DRIFT_KINDS = [
  "shipment_event_undelivered",
  "shipment_missing",
  "shipment_without_order",
  "shipping_conflict",
  "shipment_mismatch",
] as const;
export type ShippingDriftKind = (typeof SHIPPING_DRIFT_KINDS)[number];

export const DRIFT_KINDS = [...VOUCHER_DRIFT_KINDS, ...PAYMENT_DRIFT_KINDS, ...SHIPPING_DRIFT_KINDS] as const;
export type DriftKind = VoucherDriftKind | PaymentDriftKind | ShippingDriftKind;
export const isPaymentKind = (kind: DriftKind): kind is PaymentDriftKind => (PAYMENT_DRIFT_KINDS as readonly string[]).includes(kind);
export const isShippingKind = (kind: DriftKind): kind is ShippingDriftKind => (SHIPPING_DRIFT_KINDS as readonly string[]).includes(kind);

/** What the reconciler does about a kind of drift. */
export const REPAIR_OF: Record<DriftKind, string> = {
  missing_voucher: "issue a live voucher (idempotent), then requeue the delivery so the order records it",
  dead_delivery: "issue the voucher if missing, then requeue the dead delivery",
  dead_delivery_conflict: "report only: the order's voucher was issued for another request, a person must decide",
  missing_delivery: "requeue the delivery so the order service records the voucher",
  voucher_without_order: "void the voucher (within the window and the per-run cap)",
  voucher_for_unsent_order: "void the voucher (within the window and the per-run cap)",
  voucher_for_unqualified_order: "void the voucher (within the window and the per-run cap)",
  customer_mismatch: "report only: needs a person",
  amount_mismatch: "report only: needs a person",
  charge_undelivered: "deliver the payment service's decision (CHARGED or REFUSED) to the order: RecordPaymentOutcome, key charge:<order> (within the per-run cap)",
  refund_undelivered: "deliver the refund to the order: RecordPaymentOutcome REFUNDED, key refund:<order> (within the per-run cap)",
  charge_undecided: "requeue the order's charge request (RequeuePayment, within the per-run cap)",
  refund_undecided: "requeue the order's refund request (RequeuePayment, within the per-run cap)",
  refund_missing: "deliver CHARGED so the order requests its refund itself, then requeue the refund request (within the per-run cap); a person if the order already records the charge",
  payment_conflict: "report only: the order and the payment service contradict each other, a person must decide",
  charge_without_order: "report only: a decided charge for an order that does not exist or has no payment, a person must decide",
  payment_mismatch: "report only: the charge's customer, amount or currency is not the order's, a person must decide",
  shipment_event_undelivered:
    "deliver the shipment's events the order has not learned (SHIPPED, DELIVERED or DECLINED) to the order: RecordShipmentEvent, key shipment:<order>:<EVENT> (within the per-run cap)",
  shipment_missing: "requeue the order's shipment request (RequeueShipment, within the per-run cap)",
  shipment_without_order: "report only: a shipment for an order that does not exist or is not in shipping, a person must decide",
  shipping_conflict: "report only: the order and its shipment contradict each other, a person must decide",
  shipment_mismatch: "report only: the shipment's customer, total or currency is not the order's, a person must decide",
};

export interface IssueRequest {
  orderId: string;
  customerId: string;
  orderTotalCents: bigint;
  currency: string;
}

/** One disagreement and the repair it calls for; the repair's outcome is recorded by the runner. */
export interface Finding {
  kind: VoucherDriftKind;
  orderId: string;
  voucherId?: string;
  /** Why this is drift, in words an operator can act on. */
  detail: string;
  /** Issue this voucher (BatchIssueVouchers). */
  issue?: IssueRequest;
  /** The order's voucher delivery state was PENDING when seen: a voucher that appears meanwhile was the relay's, not a repair. */
  deliveryWasPending?: boolean;
  /** Call RequeueVoucher for the order (after the issue, if any, succeeded). */
  requeue?: boolean;
  /** With requeue: redeliver even a delivery the order service records as done (its recorded voucher is gone or wrong). */
  redeliver?: boolean;
  /** Void this voucher with this reason; issuedAt decides whether it lies in the run's window (voids never reach outside it). */
  void?: { voucherId: string; reason: string; issuedAt?: Date };
}

/** The business rule, injected so this module stays free of any service's code. */
export type QualifiesFn = (order: Order) => boolean;

const SENT = new Set([OrderStatus.SENT, OrderStatus.DELIVERED]);

export const isSent = (order: Order): boolean => SENT.has(order.status);

export const formatCents = (cents: bigint, currency = "EUR"): string => {
  const sign = cents < 0n ? "-" : "";
  const abs = cents < 0n ? -cents : cents;
  return `${sign}${abs / 100n}.${String(abs % 100n).padStart(2, "0")} ${currency}`;
};

const statusName = (status: OrderStatus): string => OrderStatus[status] ?? String(status);

/** Disagreements between an ISSUED voucher and the sent, qualifying order it belongs to. */
function mismatches(order: Order, voucher: Voucher): Finding[] {
  const out: Finding[] = [];
  if (voucher.customerId !== order.customerId) {
    out.push({
      kind: "customer_mismatch",
      orderId: order.id,
      voucherId: voucher.id,
      detail: `voucher is for customer ${JSON.stringify(voucher.customerId)}, the order for ${JSON.stringify(order.customerId)}`,
    });
  }
  if (voucher.orderTotalCents !== order.totalCents) {
    out.push({
      kind: "amount_mismatch",
      orderId: order.id,
      voucherId: voucher.id,
      detail: `voucher records an order total of ${formatCents(voucher.orderTotalCents)}, the order is ${formatCents(order.totalCents, order.currency)}`,
    });
  }
  return out;
}

function voidFinding(kind: VoucherDriftKind, orderId: string, voucher: Voucher, detail: string): Finding {
  return {
    kind,
    orderId,
    voucherId: voucher.id,
    detail,
    void: { voucherId: voucher.id, reason: `reconciler: ${detail}`.slice(0, 255), issuedAt: voucher.issuedAt ? timestampDate(voucher.issuedAt) : undefined },
  };
}

/**
 * Compares sent orders with the vouchers found for them (keyed by order id:
 * the live voucher if the order has one, else its latest voided one). Orders
 * that are not sent are ignored here; their vouchers are judged from the
 * voucher side. An owed order whose only voucher is voided is missing its
 * voucher: the customer holds nothing usable.
 */
export function checkSentOrders(orders: Order[], vouchersByOrder: Map<string, Voucher>, qualifies: QualifiesFn): Finding[] {
  const out: Finding[] = [];
  for (const order of orders) {
    if (!isSent(order)) continue;
    const found = vouchersByOrder.get(order.id);
    const live = found?.status === VoucherStatus.ISSUED ? found : undefined;
    const voided = found && !live ? found : undefined;
    if (!qualifies(order)) {
      if (live) {
        out.push(voucherFindingFor(live, order, qualifies)!);
      }
      continue;
    }
    const delivery = order.voucher?.status ?? DeliveryStatus.UNSPECIFIED;
    const issue: IssueRequest = {
      orderId: order.id,
      customerId: order.customerId,
      orderTotalCents: order.totalCents,
      currency: order.currency,
    };
    const voidedNote = voided ? `its voucher ${voided.id} is voided (${voided.voidReason || "no reason recorded"})` : "";
    const conflicts = live ? mismatches(order, live) : [];
    if (delivery === DeliveryStatus.DEAD && conflicts.length > 0) {
      // Requeueing cannot help: the voucher service answers ALREADY_EXISTS for this order id every time.
      out.push({
        kind: "dead_delivery_conflict",
        orderId: order.id,
        voucherId: live!.id,
        detail:
          `delivery died after ${order.voucher?.attempts ?? 0} attempt(s) (${order.voucher?.lastError || "no error recorded"}) and cannot succeed: ` +
          `the order's voucher ${live!.id} was issued for another request (${conflicts.map((c) => c.detail).join("; ")})`,
      });
    } else if (delivery === DeliveryStatus.DEAD) {
      const why = order.voucher?.lastError || "no error recorded";
      out.push({
        kind: "dead_delivery",
        orderId: order.id,
        voucherId: live?.id,
        detail: `delivery died after ${order.voucher?.attempts ?? 0} attempt(s): ${why}${live ? "" : voided ? `; ${voidedNote}` : "; no voucher was issued"}`,
        issue: live ? undefined : issue,
        requeue: true,
      });
    } else if (!live) {
      const recorded =
        delivery === DeliveryStatus.ISSUED && order.voucher?.voucherId && order.voucher.voucherId !== voided?.id
          ? ` (the order records voucher ${order.voucher.voucherId}, which does not exist)`
          : "";
      out.push({
        kind: "missing_voucher",
        orderId: order.id,
        voucherId: voided?.id,
        detail: voided
          ? `sent order over the threshold (${formatCents(order.totalCents, order.currency)}) has no live voucher: ${voidedNote}${recorded}`
          : `sent order over the threshold (${formatCents(order.totalCents, order.currency)}) has no voucher${recorded}`,
        issue,
        deliveryWasPending: delivery === DeliveryStatus.PENDING,
        requeue: true,
        redeliver: delivery === DeliveryStatus.ISSUED,
      });
    } else if (delivery === DeliveryStatus.ISSUED && order.voucher?.voucherId && order.voucher.voucherId !== live.id) {
      out.push({
        kind: "missing_delivery",
        orderId: order.id,
        voucherId: live.id,
        detail: `the order records voucher ${order.voucher.voucherId}, but the order's voucher is ${live.id}`,
        requeue: true,
        redeliver: true,
      });
    } else if (delivery !== DeliveryStatus.PENDING && delivery !== DeliveryStatus.ISSUED) {
      out.push({
        kind: "missing_delivery",
        orderId: order.id,
        voucherId: live.id,
        detail: `voucher ${live.id} exists but the order service has no delivery for it (state ${DeliveryStatus[delivery] ?? delivery})`,
        requeue: true,
      });
    }
    out.push(...conflicts);
  }
  return out;
}

/**
 * What is wrong with one ISSUED voucher given its order (undefined when the
 * order does not exist); undefined when nothing is. Mismatches are left to
 * checkVouchers, which can report more than one.
 */
function voucherFindingFor(voucher: Voucher, order: Order | undefined, qualifies: QualifiesFn): Finding | undefined {
  if (!order) return voidFinding("voucher_without_order", voucher.orderId, voucher, `order ${voucher.orderId} does not exist`);
  if (!isSent(order)) {
    return voidFinding("voucher_for_unsent_order", order.id, voucher, `order ${order.id} is not sent (status ${statusName(order.status)})`);
  }
  if (!qualifies(order)) {
    return voidFinding(
      "voucher_for_unqualified_order",
      order.id,
      voucher,
      `order ${order.id} does not qualify (total ${formatCents(order.totalCents, order.currency)})`,
    );
  }
  return undefined;
}

/** Judges vouchers against their orders (keyed by order id). Voided vouchers were already dealt with. */
export function checkVouchers(vouchers: Voucher[], ordersById: Map<string, Order>, qualifies: QualifiesFn): Finding[] {
  const out: Finding[] = [];
  for (const voucher of vouchers) {
    if (voucher.status !== VoucherStatus.ISSUED) continue;
    const order = ordersById.get(voucher.orderId);
    const finding = voucherFindingFor(voucher, order, qualifies);
    if (finding) out.push(finding);
    else out.push(...mismatches(order!, voucher));
  }
  return out;
}

/** Identity of a finding, so the same drift seen from both sides (or twice through the overlap) counts once. */
export const findingKey = (f: Finding): string => `${f.kind}:${f.orderId}:${f.voucherId ?? ""}`;
