import { expect } from "chai";
import { DomainError } from "@shop/platform/errors";
import { VoucherRule, type VoucherRuleVersion } from "@shop/rules/voucher-rule";
import {
  cancel,
  isSameCreateRequest,
  markDelivered,
  markSent,
  newOrder,
  orderQualifies,
  requeueAction,
  type Order,
  type OrderStatus,
} from "../../src/domain/order.js";
import { voucherStateOf } from "../../src/domain/voucher-state.js";

const T0 = new Date("2030-01-01T00:00:00.000Z");
const T1 = new Date("2030-01-02T00:00:00.000Z");

function order(status: OrderStatus, totalCents = 10_001, sentAt: Date | null = status === "SENT" || status === "DELIVERED" ? T0 : null): Order {
  return { ...newOrder({ customerId: "c1", totalCents, currency: "EUR", requestId: "r1" }, "01J0000000000000000000000A", T0), status, sentAt };
}

/** Today's version, then a threshold raised to 200.00 EUR from CHANGE on. */
const CHANGE = new Date("2030-06-01T00:00:00.000Z");
const raised = new VoucherRule([
  { version: 1, effectiveFrom: new Date(0), thresholdCents: 10_000, currency: "EUR", voucherAmountCents: 500 },
  { version: 2, effectiveFrom: CHANGE, thresholdCents: 20_000, currency: "EUR", voucherAmountCents: 500 },
] satisfies VoucherRuleVersion[]);
const justBefore = new Date(CHANGE.getTime() - 1);

function refusal(fn: () => unknown): DomainError {
  try {
    fn();
  } catch (err) {
    if (err instanceof DomainError) return err;
    throw err;
  }
  throw new Error("expected a refusal");
}

describe("orderQualifies", () => {
  it("holds only for EUR totals above 10000 cents under today's rule", () => {
    const sent = (currency: string, totalCents: number) => ({ id: "o1", currency, totalCents, sentAt: T0 });
    expect(orderQualifies(sent("EUR", 9_999))).to.equal(false);
    expect(orderQualifies(sent("EUR", 10_000))).to.equal(false);
    expect(orderQualifies(sent("EUR", 10_001))).to.equal(true);
    expect(orderQualifies(sent("USD", 1_000_000))).to.equal(false);
  });

  it("judges an order by the rule version in force at its sent_at, not by today's", () => {
    const o = (sentAt: Date) => ({ id: "o1", currency: "EUR", totalCents: 15_000, sentAt });
    expect(orderQualifies(o(justBefore), raised)).to.equal(true);
    expect(orderQualifies(o(CHANGE), raised)).to.equal(false);
  });

  it("refuses to judge an order that has no sent_at", () => {
    expect(() => orderQualifies({ id: "o1", currency: "EUR", totalCents: 15_000, sentAt: null })).to.throw(/no sent_at/);
  });
});

describe("markSent", () => {
  it("moves a pending order to SENT, stamps sent_at and requests the voucher of a qualifying order", () => {
    const t = markSent(order("PENDING"), T1);
    expect(t.changed).to.equal(true);
    expect(t.order).to.include({ status: "SENT", sentAt: T1, updatedAt: T1 });
    expect(t.voucherRequest).to.deep.equal({ orderId: t.order.id, customerId: "c1", totalCents: 10_001, currency: "EUR" });
  });

  it("applies the rule version in force at the moment it stamps as sent_at", () => {
    expect(markSent(order("PENDING", 15_000), justBefore, raised).voucherRequest).to.not.equal(undefined);
    expect(markSent(order("PENDING", 15_000), CHANGE, raised).voucherRequest).to.equal(undefined);
    expect(markSent(order("PENDING", 20_001), CHANGE, raised).voucherRequest).to.not.equal(undefined);
  });

  it("requests no voucher for an order of exactly 100.00 EUR", () => {
    const t = markSent(order("PENDING", 10_000), T1);
    expect(t.changed).to.equal(true);
    expect(t.voucherRequest).to.equal(undefined);
  });

  it("leaves a sent or delivered order unchanged and requests nothing", () => {
    for (const status of ["SENT", "DELIVERED"] as const) {
      const before = order(status);
      const t = markSent(before, T1);
      expect(t).to.deep.equal({ order: before, changed: false });
    }
  });

  it("refuses a cancelled order with FAILED_PRECONDITION naming it", () => {
    const err = refusal(() => markSent(order("CANCELLED"), T1));
    expect(err.kind).to.equal("failed_precondition");
    expect(err.message).to.contain("01J0000000000000000000000A");
  });
});

describe("markDelivered", () => {
  it("moves a sent order to DELIVERED and leaves a delivered one unchanged", () => {
    const t = markDelivered(order("SENT"), T1);
    expect(t.changed).to.equal(true);
    expect(t.order).to.include({ status: "DELIVERED", deliveredAt: T1 });
    expect(markDelivered(order("DELIVERED"), T1).changed).to.equal(false);
  });

  it("refuses pending and cancelled orders", () => {
    expect(refusal(() => markDelivered(order("PENDING"), T1)).kind).to.equal("failed_precondition");
    expect(refusal(() => markDelivered(order("CANCELLED"), T1)).kind).to.equal("failed_precondition");
  });
});

describe("cancel", () => {
  it("cancels a pending order and leaves a cancelled one unchanged", () => {
    const t = cancel(order("PENDING"), T1);
    expect(t.changed).to.equal(true);
    expect(t.order).to.include({ status: "CANCELLED", cancelledAt: T1 });
    expect(cancel(order("CANCELLED"), T1).changed).to.equal(false);
  });

  it("refuses sent and delivered orders: a sent order cannot be cancelled", () => {
    for (const status of ["SENT", "DELIVERED"] as const) {
      const err = refusal(() => cancel(order(status), T1));
      expect(err.kind).to.equal("failed_precondition");
      expect(err.message).to.contain("a sent order cannot be cancelled");
    }
  });
});

describe("isSameCreateRequest", () => {
  it("is true only when customer, total and currency repeat the first request", () => {
    const o = order("PENDING");
    const same = { customerId: "c1", totalCents: 10_001, currency: "EUR" as const, requestId: "r1" };
    expect(isSameCreateRequest(o, same)).to.equal(true);
    expect(isSameCreateRequest(o, { ...same, customerId: "c2" })).to.equal(false);
    expect(isSameCreateRequest(o, { ...same, totalCents: 10_002 })).to.equal(false);
  });
});

describe("requeueAction", () => {
  const entry = (status: string) => ({ status, attempts: 3, lastError: "boom", voucherId: null });

  it("inserts a missing request, revives a dead one and leaves pending or delivered ones alone", () => {
    expect(requeueAction(order("SENT"), null).kind).to.equal("insert");
    expect(requeueAction(order("DELIVERED"), entry("dead")).kind).to.equal("revive");
    expect(requeueAction(order("SENT"), entry("pending")).kind).to.equal("none");
    expect(requeueAction(order("SENT"), entry("delivered")).kind).to.equal("none");
  });

  it("refuses orders that are not sent or do not qualify", () => {
    expect(refusal(() => requeueAction(order("PENDING"), null)).kind).to.equal("failed_precondition");
    expect(refusal(() => requeueAction(order("CANCELLED"), null)).kind).to.equal("failed_precondition");
    expect(refusal(() => requeueAction(order("SENT", 10_000), null)).kind).to.equal("failed_precondition");
  });

  it("owes a voucher to an order sent under an older, lower threshold, and none to one sent after the change", () => {
    expect(requeueAction(order("SENT", 15_000, justBefore), null, false, raised).kind).to.equal("insert");
    const err = refusal(() => requeueAction(order("DELIVERED", 15_000, CHANGE), entry("dead"), false, raised));
    expect(err.kind).to.equal("failed_precondition");
    expect(err.message).to.contain("sent at 2030-06-01T00:00:00.000Z needs more than 20000 cents EUR (rule version 2");
  });
});

describe("voucherStateOf", () => {
  it("maps no row to NOT_ELIGIBLE and each outbox status to its voucher state", () => {
    expect(voucherStateOf(null).status).to.equal("NOT_ELIGIBLE");
    expect(voucherStateOf({ status: "pending", attempts: 2, lastError: "timeout", voucherId: null })).to.deep.equal({
      status: "PENDING",
      attempts: 2,
      lastError: "timeout",
      voucherId: null,
    });
    expect(voucherStateOf({ status: "delivered", attempts: 1, lastError: null, voucherId: "V1" })).to.include({ status: "ISSUED", voucherId: "V1" });
    expect(voucherStateOf({ status: "dead", attempts: 1, lastError: "refused", voucherId: null })).to.include({ status: "DEAD", lastError: "refused" });
  });

  it("refuses to guess about an unknown status", () => {
    expect(() => voucherStateOf({ status: "weird", attempts: 0, lastError: null, voucherId: null })).to.throw(/unknown status/);
  });
});
