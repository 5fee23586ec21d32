import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { OrderStatus, PaymentMethod, PaymentStatus, VoucherStatus } from "@shop/sdk/order";
import { roleToken } from "@shop/testkit/auth";
import { accountState, orderEntries, orderPayments } from "@shop/testkit/payments";
import { checkLedger, formatLedger, type LedgerResult } from "../../scripts/check-ledger.js";
import { inParallel, Stack } from "./stack.js";

/**
 * Paid orders end to end, every part a real process on its own database: the
 * order service with its relay (voucher, charge and refund flows), the
 * voucher service, and the payment service with its relay delivering each
 * outcome back to the order service.
 */
describe("paid orders across the order, payment and voucher services", function () {
  this.timeout(120_000);
  const stack = new Stack("payments", {}, { payment: true });
  let seq = 0;
  const rid = (what: string) => `pay-e2e-${what}-${++seq}`;

  before(() => stack.start());
  after(() => stack.stop());

  async function fund(customerId: string, amountCents: bigint): Promise<void> {
    await stack.payments.openAccount({ customerId, currency: "EUR" });
    if (amountCents > 0n) await stack.payments.topUp({ customerId, amountCents, currency: "EUR", requestId: rid("fund") });
  }
  async function paidOrder(customerId: string, totalCents: bigint): Promise<string> {
    const { order } = await stack.orders.createOrder({ customerId, totalCents, currency: "EUR", requestId: rid("order"), paymentMethod: PaymentMethod.ACCOUNT });
    expect(order!.status).to.equal(OrderStatus.AWAITING_PAYMENT);
    expect(order!.payment).to.include({ method: PaymentMethod.ACCOUNT, status: PaymentStatus.AWAITING });
    return order!.id;
  }
  /** Polls until the order's payment has reached `status` (bounded; every step here takes well under a second when healthy). */
  async function payment(orderId: string, status: PaymentStatus, timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { order } = await stack.orders.getOrder({ orderId });
      if (order!.payment!.status === status) return order!;
      if (Date.now() > deadline) throw new Error(`${orderId}: payment ${PaymentStatus[order!.payment!.status]}, order ${OrderStatus[order!.status]}; waited for ${PaymentStatus[status]}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const balance = async (customerId: string) => (await stack.payments.getAccount({ customerId })).account!.balanceCents;
  async function code(p: Promise<unknown>): Promise<Code> {
    try {
      await p;
    } catch (err) {
      return ConnectError.from(err).code;
    }
    return expect.fail("the call succeeded") as never;
  }
  async function expectLedgerClean(): Promise<void> {
    await stack.settled();
    const r = await checkLedger({
      orderDatabaseUrl: stack.orderDb.url,
      voucherDatabaseUrl: stack.voucherDb.url,
      paymentDatabaseUrl: stack.paymentDb!.url,
      voucherServiceUrl: stack.voucherServiceUrl,
      token: roleToken("reconciler"),
    });
    expect(r.ok, formatLedger(r)).to.equal(true);
    expect(r.results.filter((x) => x.id.startsWith("P")).map((x) => x.verdict)).to.not.include("SKIP");
  }

  it("200 concurrent paid orders of one customer funded for exactly 50: 50 PAID, 150 PAYMENT_FAILED, balance 0; check:ledger --live finds nothing while they are decided", async () => {
    const customerId = "pay-e2e-many";
    const price = 2_000n;
    await fund(customerId, 50n * price);
    // The ledger check as an operator runs it on a live system, over and over while the orders are decided: outcomes in flight are not drift.
    let watching = true;
    const liveRuns: LedgerResult[] = [];
    const watcher = (async () => {
      while (watching) {
        liveRuns.push(await checkLedger({ orderDatabaseUrl: stack.orderDb.url, voucherDatabaseUrl: stack.voucherDb.url, paymentDatabaseUrl: stack.paymentDb!.url, drained: false }));
      }
    })();
    const ids = await Promise.all(Array.from({ length: 200 }, () => paidOrder(customerId, price)));
    expect(new Set(ids).size).to.equal(200);
    await stack.settled(60_000);
    watching = false;
    await watcher;
    expect(liveRuns.length).to.be.greaterThan(0);
    for (const r of liveRuns) expect(r.ok, formatLedger(r)).to.equal(true);

    const rows = await orderPayments(stack.orderDb);
    const mine = ids.map((id) => rows.get(id)!);
    const paid = mine.filter((o) => o.status === "PAID" && o.paymentStatus === "CHARGED");
    const failed = mine.filter((o) => o.status === "PAYMENT_FAILED" && o.paymentStatus === "REFUSED");
    expect(paid.length, JSON.stringify(mine.filter((o) => !paid.includes(o) && !failed.includes(o)).slice(0, 3))).to.equal(50);
    expect(failed.length).to.equal(150);
    expect(new Set(failed.map((o) => o.paymentReason))).to.deep.equal(new Set(["INSUFFICIENT_FUNDS"]));
    // The API says the same as the database.
    const { orders } = await stack.orders.batchGetOrders({ orderIds: ids.slice(0, 100) });
    expect(orders.filter((o) => o.status === OrderStatus.PAID).length).to.equal(mine.slice(0, 100).filter((o) => o.status === "PAID").length);

    // Exactly the PAID orders were debited, once each.
    const entries = await orderEntries(stack.paymentDb!);
    for (const o of mine) {
      const debits = (entries.get(o.id) ?? []).filter((e) => e.kind === "CHARGE");
      expect(debits.map((e) => e.amountCents), o.id).to.deep.equal(o.status === "PAID" ? [-price] : []);
    }
    expect(await balance(customerId)).to.equal(0n);
    expect(await accountState(stack.paymentDb!, customerId)).to.deep.include({ balance: 0n, entriesSum: 0n, entries: 51 });
    await expectLedgerClean();
  });

  it("50 concurrent top-ups with one request id apply once", async () => {
    const customerId = "pay-e2e-topup";
    await fund(customerId, 0n);
    const requestId = rid("topup");
    const answers = await inParallel(Array.from({ length: 50 }, (_, i) => i), 50, () =>
      stack.payments.topUp({ customerId, amountCents: 1_234n, currency: "EUR", requestId }),
    );
    expect(answers.filter((a) => a.applied).length).to.equal(1);
    expect(new Set(answers.map((a) => a.movement!.id)).size).to.equal(1);
    expect(answers.every((a) => a.account!.balanceCents === 1_234n)).to.equal(true);
    expect(await accountState(stack.paymentDb!, customerId)).to.deep.include({ balance: 1_234n, entriesSum: 1_234n, entries: 1 });
    await expectLedgerClean();
  });

  it("the happy path: paid, PAID, sent, and a voucher for an order over 100 EUR", async () => {
    const customerId = "pay-e2e-happy";
    await fund(customerId, 20_000n);
    const id = await paidOrder(customerId, 15_000n);
    const paid = await payment(id, PaymentStatus.CHARGED);
    expect(paid.status).to.equal(OrderStatus.PAID);
    expect(paid.payment!.chargedAt).to.not.equal(undefined);
    expect(await balance(customerId)).to.equal(5_000n);
    const sent = await stack.orders.markOrderSent({ orderId: id });
    expect(sent.changed).to.equal(true);
    expect(sent.order!.status).to.equal(OrderStatus.SENT);
    await stack.settled();
    const { order } = await stack.orders.getOrder({ orderId: id });
    expect(order!.voucher!.status).to.equal(VoucherStatus.ISSUED);
    const { vouchers } = await stack.vouchers.batchGetVouchersByOrder({ orderIds: [id] });
    expect(vouchers.map((v) => [v.id, v.customerId])).to.deep.equal([[order!.voucher!.voucherId, customerId]]);
    // Sent orders stay charged: a cancel is refused and nothing is refunded.
    expect(Code[await code(stack.orders.cancelOrder({ orderId: id }))]).to.equal(Code[Code.FailedPrecondition]);
    await expectLedgerClean();
    expect(await balance(customerId)).to.equal(5_000n);
  });

  it("a refused order cannot be marked sent (FAILED_PRECONDITION), and nothing was debited", async () => {
    const customerId = "pay-e2e-poor";
    await fund(customerId, 500n);
    const id = await paidOrder(customerId, 501n);
    const failed = await payment(id, PaymentStatus.REFUSED);
    expect(failed.status).to.equal(OrderStatus.PAYMENT_FAILED);
    expect(failed.payment!.refusalReason).to.equal("INSUFFICIENT_FUNDS");
    expect(Code[await code(stack.orders.markOrderSent({ orderId: id }))]).to.equal(Code[Code.FailedPrecondition]);
    expect((await stack.orders.getOrder({ orderId: id })).order!.status).to.equal(OrderStatus.PAYMENT_FAILED);
    // A customer without an account is refused too, for that reason.
    const orphan = await paidOrder("pay-e2e-no-account", 100n);
    expect((await payment(orphan, PaymentStatus.REFUSED)).payment!.refusalReason).to.equal("NO_ACCOUNT");
    expect(await balance(customerId)).to.equal(500n);
    await expectLedgerClean();
  });

  it("cancelling a PAID order refunds it once and restores the balance", async () => {
    const customerId = "pay-e2e-cancel";
    await fund(customerId, 10_000n);
    const id = await paidOrder(customerId, 7_000n);
    await payment(id, PaymentStatus.CHARGED);
    expect(await balance(customerId)).to.equal(3_000n);
    const cancelled = await stack.orders.cancelOrder({ orderId: id });
    expect(cancelled.changed).to.equal(true);
    expect(cancelled.order!.status).to.equal(OrderStatus.CANCELLED);
    expect([PaymentStatus.REFUND_PENDING, PaymentStatus.REFUNDED]).to.include(cancelled.order!.payment!.status);
    const refunded = await payment(id, PaymentStatus.REFUNDED);
    expect(refunded.payment!.refundedAt).to.not.equal(undefined);
    // Cancelled again: a replay, no second refund.
    expect((await stack.orders.cancelOrder({ orderId: id })).changed).to.equal(false);
    await stack.settled();
    expect(await balance(customerId)).to.equal(10_000n);
    const entries = (await orderEntries(stack.paymentDb!)).get(id)!;
    expect(entries.map((e) => `${e.kind} ${e.amountCents}`).sort()).to.deep.equal(["CHARGE -7000", "REFUND 7000"]);
    await expectLedgerClean();
  });

  it("cancelling while AWAITING_PAYMENT: the charge still decides, and a charged order is refunded", async () => {
    const customerId = "pay-e2e-early";
    await fund(customerId, 4_000n);
    // The payment service is down: the charge waits in the order service's outbox.
    await stack.killPayment();
    try {
      const charged = await paidOrder(customerId, 3_000n);
      const refused = await paidOrder(customerId, 9_000n);
      for (const id of [charged, refused]) {
        const r = await stack.orders.cancelOrder({ orderId: id });
        expect(r.order!.status).to.equal(OrderStatus.CANCELLED);
        expect(r.order!.payment!.status).to.equal(PaymentStatus.AWAITING);
      }
      await stack.restartPayment();
      const a = await payment(charged, PaymentStatus.REFUNDED);
      const b = await payment(refused, PaymentStatus.REFUSED);
      expect([a.status, b.status]).to.deep.equal([OrderStatus.CANCELLED, OrderStatus.CANCELLED]);
      await stack.settled();
      const entries = await orderEntries(stack.paymentDb!);
      expect((entries.get(charged) ?? []).map((e) => `${e.kind} ${e.amountCents}`).sort()).to.deep.equal(["CHARGE -3000", "REFUND 3000"]);
      expect(entries.get(refused) ?? []).to.deep.equal([]);
      expect(await balance(customerId)).to.equal(4_000n);
      await expectLedgerClean();
    } finally {
      if (!stack.payment!.running) await stack.restartPayment();
    }
  });
});
