import { randomUUID } from "node:crypto";
import { expect } from "chai";
import { OrderStatus, VoucherStatus } from "@shop/sdk/order";
import { recordedVoucherIds, voucherRows } from "@shop/testkit/ledger";
import { inParallel, Stack } from "./stack.js";

// The business rule, restated independently of the order service's code so
// the test checks the service rather than trusting it.
const qualifies = (totalCents: bigint) => totalCents > 10_000n;

/**
 * Read from the databases, not through the services: the voucher rows are
 * exactly one ISSUED voucher for each owed order and nothing else (a
 * duplicate, a voided first try or a stray shows up as an extra row), and the
 * voucher id each order's outbox row recorded is that voucher.
 */
async function expectOneLiveVoucherEach(stack: Stack, owed: string[]): Promise<void> {
  const rows = await voucherRows(stack.voucherDb);
  const recorded = await recordedVoucherIds(stack.orderDb);
  expect(rows.map((v) => v.orderId).sort()).to.deep.equal([...owed].sort());
  expect(rows.filter((v) => v.status !== "ISSUED")).to.deep.equal([]);
  const mismatched = rows.filter((v) => recorded.get(v.orderId) !== v.id).map((v) => `${v.orderId}: recorded ${recorded.get(v.orderId)}, voucher ${v.id}`);
  expect(mismatched).to.deep.equal([]);
}

describe("end to end: the order service, relay and voucher service as processes", function () {
  this.timeout(120_000);

  describe("200 orders with random totals marked sent concurrently", () => {
    const stack = new Stack("e2e-200");
    before(() => stack.start());
    after(() => stack.stop());

    it("gives exactly one voucher to each qualifying order and none to the others", async () => {
      // Totals spread across the boundary, the boundary cents themselves included.
      const totals = Array.from({ length: 200 }, (_, i) =>
        i < 3 ? [9_999n, 10_000n, 10_001n][i]! : BigInt(1 + Math.floor(Math.random() * 20_000)),
      );
      const orders = await inParallel(totals, 16, async (totalCents, i) => {
        const res = await stack.orders.createOrder({
          customerId: `cust-${i % 7}`,
          totalCents,
          currency: "EUR",
          requestId: randomUUID(),
        });
        return res.order!;
      });

      // Every order is marked sent twice, concurrently: duplicates must change nothing.
      const marks = await inParallel([...orders, ...orders], 32, (o) => stack.orders.markOrderSent({ orderId: o.id }));
      expect(marks.filter((m) => m.changed)).to.have.length(200);

      const counts = await stack.drained();
      const expected = orders.filter((o) => qualifies(o.totalCents));
      expect(counts).to.deep.equal({ pending: 0, delivered: expected.length, dead: 0 });

      const { vouchers } = await stack.vouchers.batchGetVouchersByOrder({ orderIds: orders.map((o) => o.id) });
      expect(vouchers.map((v) => v.orderId).sort()).to.deep.equal(expected.map((o) => o.id).sort());
      for (const v of vouchers) {
        const o = orders.find((x) => x.id === v.orderId)!;
        expect(v.customerId).to.equal(o.customerId);
        expect(v.amountCents).to.equal(500n);
        expect(v.currency).to.equal("EUR");
      }
      // Straight from both databases: each qualifying order has exactly one voucher row, ISSUED, and it is the
      // one its outbox row recorded; no other order has any.
      await expectOneLiveVoucherEach(stack, expected.map((o) => o.id));

      // What the order service reports agrees with the voucher service.
      for (const o of orders.slice(0, 40)) {
        const { order } = await stack.orders.getOrder({ orderId: o.id });
        expect(order!.status).to.equal(OrderStatus.SENT);
        if (qualifies(o.totalCents)) {
          expect(order!.voucher!.status).to.equal(VoucherStatus.ISSUED);
          expect(order!.voucher!.voucherId).to.equal(vouchers.find((v) => v.orderId === o.id)!.id);
        } else {
          expect(order!.voucher!.status).to.equal(VoucherStatus.NOT_ELIGIBLE);
        }
      }
      const boundary = orders.slice(0, 3).map((o) => vouchers.some((v) => v.orderId === o.id));
      expect(boundary).to.deep.equal([false, false, true]);
    });
  });

  describe("a voucher right after MarkOrderSent", () => {
    // A poll interval of a minute: only the in-process wake-up can deliver in time.
    const stack = new Stack("e2e-wake", { RELAY_POLL_INTERVAL_MS: "60000" });
    before(() => stack.start());
    after(() => stack.stop());

    it("arrives without waiting for the relay's poll interval", async () => {
      const { order } = await stack.orders.createOrder({
        customerId: "cust-wake",
        totalCents: 12_000n,
        currency: "EUR",
        requestId: randomUUID(),
      });
      // Let the relay settle into its long sleep first.
      await new Promise((r) => setTimeout(r, 300));
      const sentAt = Date.now();
      await stack.orders.markOrderSent({ orderId: order!.id });
      for (;;) {
        const { vouchers } = await stack.vouchers.batchGetVouchersByOrder({ orderIds: [order!.id] });
        if (vouchers.length === 1) break;
        expect(Date.now() - sentAt, "voucher not issued within 5 s of MarkOrderSent").to.be.below(5_000);
        await new Promise((r) => setTimeout(r, 10));
      }
    });
  });

  describe("the voucher service down for a while", () => {
    const stack = new Stack("e2e-outage");
    before(() => stack.start());
    after(() => stack.stop());

    it("delivers every voucher once it is back, none twice", async () => {
      await stack.voucher.stop();
      const orders = await inParallel(Array.from({ length: 40 }, (_, i) => i), 8, async (i) => {
        const { order } = await stack.orders.createOrder({
          customerId: `cust-out-${i % 3}`,
          totalCents: 10_001n + BigInt(i),
          currency: "EUR",
          requestId: randomUUID(),
        });
        await stack.orders.markOrderSent({ orderId: order!.id });
        return order!;
      });
      // While it is down the orders are sent and their vouchers wait, retried with backoff.
      await new Promise((r) => setTimeout(r, 1_500));
      const waiting = await stack.outboxCounts();
      expect(waiting.pending).to.equal(40);
      const attempts = await stack.orderDb.sql("SELECT MIN(attempts) FROM voucher_outbox");
      expect(Number(attempts.trim())).to.be.at.least(1);
      const { order: one } = await stack.orders.getOrder({ orderId: orders[0]!.id });
      expect(one!.voucher!.status).to.equal(VoucherStatus.PENDING);

      await stack.voucher.start();
      const counts = await stack.drained();
      expect(counts).to.deep.equal({ pending: 0, delivered: 40, dead: 0 });
      const { vouchers } = await stack.vouchers.batchGetVouchersByOrder({ orderIds: orders.map((o) => o.id) });
      expect(vouchers).to.have.length(40);
      await expectOneLiveVoucherEach(stack, orders.map((o) => o.id));
    });
  });
});
