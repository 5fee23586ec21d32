import { expect } from "chai";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { OrderSchema, OrderStatus, PaymentEvent, PaymentMethod, PaymentStateSchema, PaymentStatus, type Order } from "@shop/sdk/order";
import { OrderPaymentSchema, PaymentOutcome, RefusalReason, type OrderPayment } from "@shop/sdk/payment";
import { checkPayments, isPaymentRepairable, type PaymentFinding } from "../src/payment-compare.js";

const T0 = new Date("2030-01-01T00:00:00.000Z");
const at = (minutes: number) => timestampFromDate(new Date(T0.getTime() + minutes * 60_000));
/** The run's window ends 60 minutes after T0: anything at or after it is left to the relays. */
const CUTOFF = new Date(T0.getTime() + 60 * 60_000);

function order(id: string, status: OrderStatus, payment: PaymentStatus, extra: MessageInitShape<typeof OrderSchema> = {}): Order {
  return create(OrderSchema, {
    id,
    customerId: "cust-1",
    totalCents: 12_000n,
    currency: "EUR",
    status,
    createdAt: at(0),
    payment: create(PaymentStateSchema, { method: payment === PaymentStatus.NONE ? PaymentMethod.UNSPECIFIED : PaymentMethod.ACCOUNT, status: payment }),
    ...extra,
  });
}

function charged(orderId: string, extra: MessageInitShape<typeof OrderPaymentSchema> = {}): OrderPayment {
  return create(OrderPaymentSchema, {
    orderId,
    customerId: "cust-1",
    chargeOutcome: PaymentOutcome.CHARGED,
    amountCents: 12_000n,
    currency: "EUR",
    decidedAt: at(1),
    ...extra,
  });
}

const refused = (orderId: string, extra: MessageInitShape<typeof OrderPaymentSchema> = {}) =>
  charged(orderId, { chargeOutcome: PaymentOutcome.REFUSED, refusalReason: RefusalReason.INSUFFICIENT_FUNDS, ...extra });
const refunded = (orderId: string, extra: MessageInitShape<typeof OrderPaymentSchema> = {}) => charged(orderId, { refunded: true, refundedAt: at(30), ...extra });

function check(orders: Order[], payments: OrderPayment[], ids?: string[]): PaymentFinding[] {
  return checkPayments(
    ids ?? [...new Set([...orders.map((o) => o.id), ...payments.map((p) => p.orderId)])],
    new Map(orders.map((o) => [o.id, o])),
    new Map(payments.map((p) => [p.orderId, p])),
    CUTOFF,
  );
}

const brief = (fs: PaymentFinding[]) => fs.map((f) => [f.kind, f.orderId, f.deliver?.event ?? null, f.deliver?.messageKey ?? null, f.requeue ?? null]);

describe("compare: orders' payments against the payment service's decisions", () => {
  it("finds nothing where both sides agree, at every stage of a paid order's life", () => {
    const orders = [
      order("paid", OrderStatus.PAID, PaymentStatus.CHARGED),
      order("sent", OrderStatus.SENT, PaymentStatus.CHARGED),
      order("failed", OrderStatus.PAYMENT_FAILED, PaymentStatus.REFUSED),
      order("refunded", OrderStatus.CANCELLED, PaymentStatus.REFUNDED),
      order("cancelled-refused", OrderStatus.CANCELLED, PaymentStatus.REFUSED),
      order("unpaid", OrderStatus.SENT, PaymentStatus.NONE),
    ];
    const payments = [charged("paid"), charged("sent"), refused("failed"), refunded("refunded"), refused("cancelled-refused")];
    expect(check(orders, payments)).to.deep.equal([]);
  });

  it("delivers a charge whose order never learned of it, under the payment relay's own key", () => {
    const [f, ...rest] = check([order("a", OrderStatus.AWAITING_PAYMENT, PaymentStatus.AWAITING)], [charged("a")]);
    expect(rest).to.deep.equal([]);
    expect(f).to.deep.include({ kind: "charge_undelivered", orderId: "a" });
    expect(f!.deliver).to.deep.equal({ messageKey: "charge:a", event: PaymentEvent.CHARGED, refusalReason: "", amountCents: 12_000n, currency: "EUR" });
    expect(f!.requeue).to.equal(undefined);
    expect(f!.detail).to.contain("charged 120.00 EUR at 2030-01-01T00:01:00.000Z");
  });

  it("delivers a refusal with its reason, also to an order cancelled meanwhile", () => {
    const findings = check(
      [order("a", OrderStatus.AWAITING_PAYMENT, PaymentStatus.AWAITING), order("b", OrderStatus.CANCELLED, PaymentStatus.AWAITING)],
      [refused("a"), refused("b", { refusalReason: RefusalReason.NO_ACCOUNT })],
    );
    expect(brief(findings)).to.deep.equal([
      ["charge_undelivered", "a", PaymentEvent.REFUSED, "charge:a", null],
      ["charge_undelivered", "b", PaymentEvent.REFUSED, "charge:b", null],
    ]);
    expect(findings.map((f) => f.deliver!.refusalReason)).to.deep.equal(["INSUFFICIENT_FUNDS", "NO_ACCOUNT"]);
  });

  it("leaves a decision made at or after the window's end to the payment relay", () => {
    expect(check([order("a", OrderStatus.AWAITING_PAYMENT, PaymentStatus.AWAITING)], [charged("a", { decidedAt: timestampFromDate(CUTOFF) })])).to.deep.equal([]);
    expect(check([order("a", OrderStatus.AWAITING_PAYMENT, PaymentStatus.AWAITING)], [charged("a", { decidedAt: at(59) })])).to.have.length(1);
  });

  it("requeues a charge the payment service never decided, once the order is older than the window's end", () => {
    const old = order("old", OrderStatus.AWAITING_PAYMENT, PaymentStatus.AWAITING);
    const young = order("young", OrderStatus.AWAITING_PAYMENT, PaymentStatus.AWAITING, { createdAt: at(60) });
    const cancelled = order("cancelled", OrderStatus.CANCELLED, PaymentStatus.AWAITING);
    expect(brief(check([old, young, cancelled], []))).to.deep.equal([
      ["charge_undecided", "old", null, null, "always"],
      ["charge_undecided", "cancelled", null, null, "always"],
    ]);
  });

  it("delivers a refund decided but never delivered, under the refund's key, once it is older than the window's end", () => {
    const pending = (id: string) => order(id, OrderStatus.CANCELLED, PaymentStatus.REFUND_PENDING, { cancelledAt: at(20) });
    const findings = check([pending("a"), pending("b")], [refunded("a"), refunded("b", { refundedAt: at(60) })]);
    expect(brief(findings)).to.deep.equal([["refund_undelivered", "a", PaymentEvent.REFUNDED, "refund:a", null]]);
    expect(findings[0]!.deliver).to.include({ amountCents: 12_000n, currency: "EUR", refusalReason: "" });
  });

  it("requeues a refund the payment service never made, counting from when the order asked for it", () => {
    const findings = check(
      [
        order("old", OrderStatus.CANCELLED, PaymentStatus.REFUND_PENDING, { cancelledAt: at(20) }),
        order("fresh-cancel", OrderStatus.CANCELLED, PaymentStatus.REFUND_PENDING, { cancelledAt: at(60) }),
        // Cancelled while awaiting, learned of the charge later: the refund was asked for then.
        order("late-charge", OrderStatus.CANCELLED, PaymentStatus.REFUND_PENDING, { cancelledAt: at(5), payment: create(PaymentStateSchema, { method: PaymentMethod.ACCOUNT, status: PaymentStatus.REFUND_PENDING, chargedAt: at(61) }) }),
      ],
      [charged("old"), charged("fresh-cancel"), charged("late-charge")],
    );
    expect(brief(findings)).to.deep.equal([["refund_undecided", "old", null, null, "always"]]);
    expect(findings[0]!.detail).to.contain("since 2030-01-01T00:20:00.000Z");
  });

  it("delivers CHARGED to a cancelled order that never learned of its charge, so it asks for the refund itself, then requeues the refund", () => {
    const [f] = check([order("a", OrderStatus.CANCELLED, PaymentStatus.AWAITING)], [charged("a")]);
    expect(brief([f!])).to.deep.equal([["refund_missing", "a", PaymentEvent.CHARGED, "charge:a", "if-owed"]]);
    expect(f!.detail).to.contain("owed a refund");
  });

  it("leaves to a person a cancelled order that records its charge but never asked for the refund", () => {
    const [f, ...rest] = check([order("a", OrderStatus.CANCELLED, PaymentStatus.CHARGED)], [charged("a")]);
    expect(rest).to.deep.equal([]);
    expect(f).to.include({ kind: "refund_missing", orderId: "a" });
    expect(isPaymentRepairable(f!)).to.equal(false);
  });

  it("leaves every contradiction to a person, never repairing it", () => {
    const findings = check(
      [
        order("refused-but-paid", OrderStatus.PAID, PaymentStatus.CHARGED),
        order("charged-but-failed", OrderStatus.PAYMENT_FAILED, PaymentStatus.REFUSED),
        order("refunded-unasked", OrderStatus.PAID, PaymentStatus.CHARGED),
        order("refunded-while-awaiting", OrderStatus.AWAITING_PAYMENT, PaymentStatus.AWAITING),
        order("refund-of-refused", OrderStatus.CANCELLED, PaymentStatus.REFUND_PENDING),
        order("refunded-not", OrderStatus.CANCELLED, PaymentStatus.REFUNDED),
        order("paid-no-charge", OrderStatus.PAID, PaymentStatus.CHARGED),
        order("failed-no-charge", OrderStatus.PAYMENT_FAILED, PaymentStatus.REFUSED),
        order("refund-no-charge", OrderStatus.CANCELLED, PaymentStatus.REFUND_PENDING),
      ],
      [
        refused("refused-but-paid"),
        charged("charged-but-failed"),
        refunded("refunded-unasked"),
        refunded("refunded-while-awaiting"),
        refused("refund-of-refused"),
        charged("refunded-not"),
      ],
    );
    expect(findings.map((f) => [f.kind, f.orderId])).to.deep.equal([
      ["payment_conflict", "refused-but-paid"],
      ["payment_conflict", "charged-but-failed"],
      ["payment_conflict", "refunded-unasked"],
      ["payment_conflict", "refunded-while-awaiting"],
      ["payment_conflict", "refund-of-refused"],
      ["payment_conflict", "refunded-not"],
      ["payment_conflict", "paid-no-charge"],
      ["payment_conflict", "failed-no-charge"],
      ["payment_conflict", "refund-no-charge"],
    ]);
    expect(findings.filter(isPaymentRepairable)).to.deep.equal([]);
    expect(findings[1]!.detail).to.contain("debited for a failed order");
  });

  it("reports a debit for an order the order service does not know, or for an order without payment, and repairs neither", () => {
    const findings = check([order("no-payment", OrderStatus.SENT, PaymentStatus.NONE)], [charged("ghost"), charged("no-payment")]);
    expect(findings.map((f) => [f.kind, f.orderId, isPaymentRepairable(f)])).to.deep.equal([
      ["charge_without_order", "no-payment", false],
      ["charge_without_order", "ghost", false],
    ]);
    expect(findings[0]!.detail).to.contain("has no payment through the shop");
    expect(findings[1]!.detail).to.contain("does not know");
  });

  it("reports a charge whose customer, amount or currency is not the order's instead of delivering it", () => {
    const awaiting = (id: string) => order(id, OrderStatus.AWAITING_PAYMENT, PaymentStatus.AWAITING);
    const findings = check(
      [awaiting("amount"), awaiting("customer"), order("paid", OrderStatus.PAID, PaymentStatus.CHARGED)],
      [charged("amount", { amountCents: 11_999n }), charged("customer", { customerId: "cust-2" }), charged("paid", { amountCents: 1n })],
    );
    expect(findings.map((f) => [f.kind, f.orderId, isPaymentRepairable(f)])).to.deep.equal([
      ["payment_mismatch", "amount", false],
      ["payment_mismatch", "customer", false],
      ["payment_mismatch", "paid", false],
    ]);
    expect(findings[0]!.detail).to.contain("the charge is 119.99 EUR, the order's total 120.00 EUR");
    expect(findings[1]!.detail).to.contain('customer "cust-2"');
  });

  it("ignores orders without payment the payment service never heard of, and ids neither side knows", () => {
    expect(check([order("plain", OrderStatus.SENT, PaymentStatus.NONE)], [], ["plain", "nobody"])).to.deep.equal([]);
  });

  it("looks at each order once, however often its id is given", () => {
    expect(check([order("a", OrderStatus.AWAITING_PAYMENT, PaymentStatus.AWAITING)], [charged("a")], ["a", "a"])).to.have.length(1);
  });
});
