import { expect } from "chai";
import { DomainError } from "@shop/platform/errors";
import {
  cancel,
  isSameCreateRequest,
  markDelivered,
  markSent,
  newOrder,
  paymentOutcome,
  paymentRequeueAction,
  type Order,
  type PaymentOutcome,
} from "../../src/domain/order.js";

const t0 = new Date("2026-12-01T10:00:00Z");
const t1 = new Date("2026-12-01T10:00:05Z");

const paid = (over: Partial<Order> = {}): Order => ({
  ...newOrder({ customerId: "alice", totalCents: 12_000, currency: "EUR", requestId: "k-1", paymentMethod: "ACCOUNT" }, "01ORDER", t0),
  ...over,
});
const charged: PaymentOutcome = { event: "CHARGED", amountCents: 12_000, currency: "EUR" };
const refused: PaymentOutcome = { event: "REFUSED", reason: "INSUFFICIENT_FUNDS", amountCents: 12_000, currency: "EUR" };
const refunded: PaymentOutcome = { event: "REFUNDED", amountCents: 12_000, currency: "EUR" };

function refusal(fn: () => unknown): DomainError {
  try {
    fn();
  } catch (err) {
    if (err instanceof DomainError && err.kind === "failed_precondition") return err;
    throw err;
  }
  throw new Error("expected FAILED_PRECONDITION");
}

describe("paid orders (domain)", () => {
  it("a paid order starts AWAITING_PAYMENT with payment AWAITING; an order without payment starts PENDING with payment NONE", () => {
    const o = paid();
    expect([o.status, o.paymentMethod, o.paymentStatus]).to.deep.equal(["AWAITING_PAYMENT", "ACCOUNT", "AWAITING"]);
    const plain = newOrder({ customerId: "alice", totalCents: 12_000, currency: "EUR", requestId: "k-2" }, "02ORDER", t0);
    expect([plain.status, plain.paymentMethod, plain.paymentStatus]).to.deep.equal(["PENDING", "NONE", "NONE"]);
  });

  it("a CreateOrder retry must repeat the payment method", () => {
    const o = paid();
    expect(isSameCreateRequest(o, { customerId: "alice", totalCents: 12_000, currency: "EUR", requestId: "k-1", paymentMethod: "ACCOUNT" })).to.equal(true);
    expect(isSameCreateRequest(o, { customerId: "alice", totalCents: 12_000, currency: "EUR", requestId: "k-1" })).to.equal(false);
  });

  it("CHARGED makes it PAID, once; a replay changes nothing", () => {
    const t = paymentOutcome(paid(), charged, t1);
    expect(t.changed).to.equal(true);
    expect([t.order.status, t.order.paymentStatus, t.order.chargedAt]).to.deep.equal(["PAID", "CHARGED", t1]);
    expect(t.refundRequest).to.equal(undefined);
    expect(paymentOutcome(t.order, charged, t1).changed).to.equal(false);
  });

  it("REFUSED makes it PAYMENT_FAILED with the reason; it can then be neither sent nor charged", () => {
    const t = paymentOutcome(paid(), refused, t1);
    expect([t.order.status, t.order.paymentStatus, t.order.paymentReason]).to.deep.equal(["PAYMENT_FAILED", "REFUSED", "INSUFFICIENT_FUNDS"]);
    expect(refusal(() => markSent(t.order, t1)).message).to.match(/payment was refused \(INSUFFICIENT_FUNDS\)/);
    expect(refusal(() => paymentOutcome(t.order, charged, t1)).message).to.match(/contradicts its payment status REFUSED/);
    expect(paymentOutcome(t.order, refused, t1).changed).to.equal(false);
  });

  it("an order awaiting payment cannot be marked sent or delivered; a PAID one can be sent and keeps payment CHARGED", () => {
    expect(refusal(() => markSent(paid(), t1)).message).to.match(/awaiting payment/);
    expect(refusal(() => markDelivered(paid(), t1)).message).to.match(/not been sent/);
    const p = paymentOutcome(paid(), charged, t1).order;
    const s = markSent(p, t1);
    expect([s.order.status, s.order.paymentStatus]).to.deep.equal(["SENT", "CHARGED"]);
  });

  it("cancelling a PAID order owes exactly one refund, requested with the cancellation", () => {
    const p = paymentOutcome(paid(), charged, t1).order;
    const c = cancel(p, t1);
    expect([c.order.status, c.order.paymentStatus]).to.deep.equal(["CANCELLED", "REFUND_PENDING"]);
    expect(c.refundRequest).to.deep.equal({ orderId: "01ORDER", amountCents: 12_000, currency: "EUR" });
    const again = cancel(c.order, t1);
    expect([again.changed, again.refundRequest]).to.deep.equal([false, undefined]);
    const r = paymentOutcome(c.order, refunded, t1);
    expect([r.order.status, r.order.paymentStatus, r.order.refundedAt]).to.deep.equal(["CANCELLED", "REFUNDED", t1]);
    expect(paymentOutcome(r.order, refunded, t1).changed).to.equal(false);
    // A late replay of the charge changes nothing either.
    expect(paymentOutcome(r.order, charged, t1).changed).to.equal(false);
  });

  it("cancelling while the charge is undecided requests no refund; the refund is requested when CHARGED arrives", () => {
    const c = cancel(paid(), t1);
    expect([c.order.status, c.order.paymentStatus, c.refundRequest]).to.deep.equal(["CANCELLED", "AWAITING", undefined]);
    const late = paymentOutcome(c.order, charged, t1);
    expect([late.order.status, late.order.paymentStatus]).to.deep.equal(["CANCELLED", "REFUND_PENDING"]);
    expect(late.refundRequest).to.deep.equal({ orderId: "01ORDER", amountCents: 12_000, currency: "EUR" });
    // Refused instead: nothing to refund.
    const r = paymentOutcome(c.order, refused, t1);
    expect([r.order.status, r.order.paymentStatus, r.refundRequest]).to.deep.equal(["CANCELLED", "REFUSED", undefined]);
  });

  it("refuses outcomes that are not the order's: another amount or currency, an order without payment, a refund never asked for", () => {
    expect(refusal(() => paymentOutcome(paid(), { ...charged, amountCents: 11_999 }, t1)).message).to.match(/names 11999 EUR, but the order is 12000 EUR/);
    expect(refusal(() => paymentOutcome(paid(), { ...charged, currency: "USD" }, t1)).message).to.match(/names 12000 USD/);
    const plain = newOrder({ customerId: "alice", totalCents: 12_000, currency: "EUR", requestId: "k-2" }, "02ORDER", t0);
    expect(refusal(() => paymentOutcome(plain, charged, t1)).message).to.match(/created without payment/);
    expect(refusal(() => paymentOutcome(paid(), refunded, t1)).message).to.match(/contradicts its payment status AWAITING/);
    const p = paymentOutcome(paid(), charged, t1).order;
    expect(refusal(() => paymentOutcome(p, refused, t1)).message).to.match(/contradicts its payment status CHARGED/);
  });

  it("RequeuePayment: an undecided charge or an owed refund is put back on its way; anything else is refused", () => {
    expect(paymentRequeueAction(paid(), null)).to.deep.equal({
      kind: "insert-charge",
      request: { orderId: "01ORDER", customerId: "alice", amountCents: 12_000, currency: "EUR" },
    });
    expect(paymentRequeueAction(paid(), { status: "dead" })).to.deep.equal({ kind: "revive", table: "charge" });
    expect(paymentRequeueAction(paid(), { status: "pending" })).to.deep.equal({ kind: "none", table: "charge" });
    expect(paymentRequeueAction(paid(), { status: "delivered" })).to.deep.equal({ kind: "none", table: "charge" });
    const owed = cancel(paymentOutcome(paid(), charged, t1).order, t1).order;
    expect(paymentRequeueAction(owed, null)).to.deep.equal({ kind: "insert-refund", request: { orderId: "01ORDER", amountCents: 12_000, currency: "EUR" } });
    expect(paymentRequeueAction(owed, { status: "dead" })).to.deep.equal({ kind: "revive", table: "refund" });
    expect(refusal(() => paymentRequeueAction(paymentOutcome(paid(), charged, t1).order, null)).message).to.match(/payment is CHARGED/);
    const plain = newOrder({ customerId: "alice", totalCents: 12_000, currency: "EUR", requestId: "k-2" }, "02ORDER", t0);
    expect(refusal(() => paymentRequeueAction(plain, null)).message).to.match(/has no payment/);
  });
});
