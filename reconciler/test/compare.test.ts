import { expect } from "chai";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { OrderSchema, OrderStatus, VoucherStateSchema, VoucherStatus as DeliveryStatus, type Order } from "@shop/sdk/order";
import { VoucherSchema, VoucherStatus, type Voucher } from "@shop/sdk/voucher";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { checkSentOrders, checkVouchers, formatCents } from "../src/compare.js";
import { qualifies } from "../src/rule.js";

const SENT_AT = new Date("2030-01-01T00:00:00.000Z");

function order(id: string, totalCents: bigint, status = OrderStatus.SENT, delivery = DeliveryStatus.ISSUED, extra: MessageInitShape<typeof OrderSchema> = {}): Order {
  return create(OrderSchema, {
    id,
    customerId: "cust-1",
    totalCents,
    currency: "EUR",
    status,
    voucher: create(VoucherStateSchema, { status: delivery, voucherId: delivery === DeliveryStatus.ISSUED ? `v-${id}` : "" }),
    sentAt: status === OrderStatus.SENT || status === OrderStatus.DELIVERED ? timestampFromDate(SENT_AT) : undefined,
    ...extra,
  });
}

function voucher(orderId: string, extra: MessageInitShape<typeof VoucherSchema> = {}): Voucher {
  return create(VoucherSchema, {
    id: `v-${orderId}`,
    orderId,
    customerId: "cust-1",
    orderTotalCents: 12_000n,
    amountCents: 500n,
    currency: "EUR",
    status: VoucherStatus.ISSUED,
    ...extra,
  });
}

const byOrder = (...vs: Voucher[]) => new Map(vs.map((v) => [v.orderId, v]));

describe("compare: sent orders against their vouchers", () => {
  it("finds nothing when every qualifying order has its voucher and the others have none", () => {
    const orders = [order("a", 12_000n), order("b", 10_000n, OrderStatus.SENT, DeliveryStatus.NOT_ELIGIBLE), order("c", 12_000n, OrderStatus.DELIVERED)];
    expect(checkSentOrders(orders, byOrder(voucher("a"), voucher("c")), qualifies)).to.deep.equal([]);
  });

  it("asks to issue and requeue a qualifying order without a voucher", () => {
    const [f] = checkSentOrders([order("a", 12_000n, OrderStatus.SENT, DeliveryStatus.NOT_ELIGIBLE)], new Map(), qualifies);
    expect(f).to.include({ kind: "missing_voucher", orderId: "a", requeue: true });
    expect(f!.issue).to.deep.equal({ orderId: "a", customerId: "cust-1", orderTotalCents: 12_000n, currency: "EUR" });
  });

  it("issues a voucher the order records but that no longer exists, and has it redelivered so the order records the new one", () => {
    const [f] = checkSentOrders([order("a", 12_000n)], new Map(), qualifies);
    expect(f).to.include({ kind: "missing_voucher", requeue: true, redeliver: true });
    expect(f!.issue).to.include({ orderId: "a" });
    expect(f!.detail).to.contain("records voucher v-a");
  });

  it("has a delivery redelivered when the order records another voucher than the order's", () => {
    const [f, ...rest] = checkSentOrders([order("a", 12_000n)], byOrder(voucher("a", { id: "v-other" })), qualifies);
    expect(rest).to.deep.equal([]);
    expect(f).to.include({ kind: "missing_delivery", voucherId: "v-other", requeue: true, redeliver: true });
    expect(f!.issue).to.equal(undefined);
  });

  it("remembers that a missing voucher's delivery was still pending, so a relay that wins the race is not counted as drift", () => {
    const [f] = checkSentOrders([order("a", 12_000n, OrderStatus.SENT, DeliveryStatus.PENDING)], new Map(), qualifies);
    expect(f).to.include({ kind: "missing_voucher", deliveryWasPending: true });
  });

  it("reports a dead delivery with its last error, issuing only when no voucher exists", () => {
    const dead = (id: string) =>
      order(id, 12_000n, OrderStatus.SENT, DeliveryStatus.DEAD, {
        voucher: create(VoucherStateSchema, { status: DeliveryStatus.DEAD, lastError: "INVALID_ARGUMENT: bad customer", attempts: 3 }),
      });
    const findings = checkSentOrders([dead("a"), dead("b")], byOrder(voucher("b")), qualifies);
    expect(findings.map((f) => [f.kind, f.orderId, !!f.issue, f.requeue])).to.deep.equal([
      ["dead_delivery", "a", true, true],
      ["dead_delivery", "b", false, true],
    ]);
    expect(findings[0]!.detail).to.contain("INVALID_ARGUMENT: bad customer").and.contain("3 attempt");
  });

  it("asks to requeue when the voucher exists but the order service tracks no delivery", () => {
    const [f] = checkSentOrders([order("a", 12_000n, OrderStatus.SENT, DeliveryStatus.NOT_ELIGIBLE)], byOrder(voucher("a")), qualifies);
    expect(f).to.include({ kind: "missing_delivery", voucherId: "v-a", requeue: true });
    expect(f!.issue).to.equal(undefined);
  });

  it("voids the voucher of a sent order that does not qualify, exactly 100.00 EUR included", () => {
    const [f] = checkSentOrders([order("a", 10_000n, OrderStatus.SENT, DeliveryStatus.NOT_ELIGIBLE)], byOrder(voucher("a")), qualifies);
    expect(f).to.include({ kind: "voucher_for_unqualified_order", voucherId: "v-a" });
    expect(f!.void!.reason).to.match(/^reconciler: order a does not qualify \(total 100\.00 EUR\)/);
  });

  it("counts only a live voucher as the order's: an owed order whose voucher is voided gets a new one, redelivered so the order records it", () => {
    const voided = voucher("a", { status: VoucherStatus.VOIDED, voidReason: "voided by mistake" });
    const [f, ...rest] = checkSentOrders([order("a", 12_000n)], byOrder(voided), qualifies);
    expect(rest).to.deep.equal([]);
    expect(f).to.include({ kind: "missing_voucher", orderId: "a", voucherId: "v-a", requeue: true, redeliver: true });
    expect(f!.issue).to.deep.equal({ orderId: "a", customerId: "cust-1", orderTotalCents: 12_000n, currency: "EUR" });
    expect(f!.detail).to.equal("sent order over the threshold (120.00 EUR) has no live voucher: its voucher v-a is voided (voided by mistake)");
  });

  it("issues a new voucher for a dead delivery whose only voucher is voided, and revives the delivery", () => {
    const voided = voucher("a", { status: VoucherStatus.VOIDED, voidReason: "oops" });
    const [f] = checkSentOrders([order("a", 12_000n, OrderStatus.SENT, DeliveryStatus.DEAD)], byOrder(voided), qualifies);
    expect(f).to.include({ kind: "dead_delivery", requeue: true });
    expect(f!.issue).to.include({ orderId: "a" });
    expect(f!.detail).to.contain("its voucher v-a is voided (oops)");
  });

  it("leaves a voided voucher of an order that is not owed one alone", () => {
    const voided = voucher("b", { status: VoucherStatus.VOIDED });
    expect(checkSentOrders([order("b", 5_000n, OrderStatus.SENT, DeliveryStatus.NOT_ELIGIBLE)], byOrder(voided), qualifies)).to.deep.equal([]);
  });

  it("reports a dead delivery whose order's voucher was issued for another request as needing a person, not as a requeue", () => {
    const o = order("a", 12_000n, OrderStatus.SENT, DeliveryStatus.DEAD, {
      voucher: create(VoucherStateSchema, { status: DeliveryStatus.DEAD, attempts: 1, lastError: "ALREADY_EXISTS: order a has a voucher for another request" }),
    });
    const findings = checkSentOrders([o], byOrder(voucher("a", { customerId: "cust-2" })), qualifies);
    expect(findings.map((f) => f.kind)).to.deep.equal(["dead_delivery_conflict", "customer_mismatch"]);
    const [conflict] = findings;
    expect(conflict!.issue ?? conflict!.requeue ?? conflict!.void).to.equal(undefined);
    expect(conflict!.detail).to.equal(
      'delivery died after 1 attempt(s) (ALREADY_EXISTS: order a has a voucher for another request) and cannot succeed: ' +
        'the order\'s voucher v-a was issued for another request (voucher is for customer "cust-2", the order for "cust-1")',
    );
  });

  it("reports a customer and an amount that disagree with the order, without repairing them", () => {
    const findings = checkSentOrders([order("a", 12_000n)], byOrder(voucher("a", { customerId: "cust-2", orderTotalCents: 15_000n })), qualifies);
    expect(findings.map((f) => f.kind)).to.deep.equal(["customer_mismatch", "amount_mismatch"]);
    for (const f of findings) expect(f.issue ?? f.requeue ?? f.void).to.equal(undefined);
  });

  it("ignores orders that are not sent", () => {
    expect(checkSentOrders([order("a", 12_000n, OrderStatus.PENDING, DeliveryStatus.NOT_ELIGIBLE)], new Map(), qualifies)).to.deep.equal([]);
  });
});

describe("compare: vouchers against their orders", () => {
  const orders = (...os: Order[]) => new Map(os.map((o) => [o.id, o]));

  it("voids a voucher whose order does not exist", () => {
    const [f] = checkVouchers([voucher("ghost")], orders(), qualifies);
    expect(f).to.include({ kind: "voucher_without_order", orderId: "ghost", voucherId: "v-ghost" });
    expect(f!.void).to.deep.include({ voucherId: "v-ghost", reason: "reconciler: order ghost does not exist" });
  });

  it("voids a voucher whose order is not sent", () => {
    const [f] = checkVouchers([voucher("a")], orders(order("a", 12_000n, OrderStatus.CANCELLED, DeliveryStatus.NOT_ELIGIBLE)), qualifies);
    expect(f).to.include({ kind: "voucher_for_unsent_order" });
    expect(f!.detail).to.contain("CANCELLED");
  });

  it("voids a voucher whose order does not qualify", () => {
    const [f] = checkVouchers([voucher("a")], orders(order("a", 9_999n, OrderStatus.DELIVERED)), qualifies);
    expect(f).to.include({ kind: "voucher_for_unqualified_order" });
  });

  it("skips voided vouchers and passes good ones", () => {
    const found = checkVouchers([voucher("ghost", { status: VoucherStatus.VOIDED }), voucher("a")], orders(order("a", 12_000n)), qualifies);
    expect(found).to.deep.equal([]);
  });

  it("reports a customer mismatch from the voucher's side too", () => {
    const [f] = checkVouchers([voucher("a", { customerId: "someone-else" })], orders(order("a", 12_000n)), qualifies);
    expect(f).to.include({ kind: "customer_mismatch", voucherId: "v-a" });
  });
});

describe("formatCents", () => {
  it("prints integer cents as a decimal amount", () => {
    expect([formatCents(10_001n), formatCents(5n), formatCents(-250n)]).to.deep.equal(["100.01 EUR", "0.05 EUR", "-2.50 EUR"]);
  });
});
