import { existsSync, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { VoucherStatus as DeliveryStatus } from "@shop/sdk/order";
import { VoucherStatus } from "@shop/sdk/voucher";
import { System } from "./system.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("reconciler against both services", function () {
  this.timeout(60_000);
  const sys = new System();
  before(() => sys.start());
  after(() => sys.stop());

  /** Waits until the order service records the voucher (the relay ran after a requeue). */
  async function orderVoucherState(orderId: string, want: DeliveryStatus, timeoutMs = 10_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { order } = await sys.orders.getOrder({ orderId });
      if (order!.voucher?.status === want || Date.now() > deadline) return order!.voucher!;
      await sleep(50);
    }
  }

  describe("on a clean system", () => {
    it("reports zero drift, exits 0, writes a report and moves the window forward", async () => {
      await Promise.all([sys.sentOrder(12_000n), sys.sentOrder(10_000n), sys.sentOrder(10_001n), sys.createOrder(50_000n)]);
      await sys.drained();
      const { report, reportFile } = await sys.reconcile();
      expect(report.error).to.equal(null);
      expect(report).to.deep.include({ outcome: "clean", exitCode: 0, totals: { found: 0, repaired: 0, unrepaired: 0, needsPerson: 0 } });
      expect(report.scanned.sentOrders).to.equal(3);
      expect(report.scanned.vouchers).to.equal(2);
      expect(JSON.parse(readFileSync(reportFile!, "utf8"))).to.deep.equal(report);
      const state = JSON.parse(readFileSync(sys.config.stateFile, "utf8"));
      expect(state).to.deep.equal({ windowEnd: report.window.until, runId: report.runId, unresolvedOrderIds: [] });
    });
  });

  describe("each kind of drift, injected straight into a database", () => {
    afterEach(async () => {
      // Whatever a test left, the next one starts from a system with no drift.
      const { report } = await sys.reconcile();
      expect(report.totals.unrepaired, JSON.stringify(report.drift)).to.equal(0);
    });

    it("issues the voucher again when its row was deleted, once, and finds nothing the next time", async () => {
      const order = await sys.sentOrder(15_000n);
      await sys.drained();
      const [before] = await sys.voucherRows(order.id);
      await sys.voucherDb.sql(`DELETE FROM vouchers WHERE order_id = '${order.id}'`);

      const { report } = await sys.reconcile();
      expect(report).to.deep.include({ exitCode: 1, outcome: "repaired" });
      expect(report.counts.missing_voucher).to.deep.equal({ found: 1, repaired: 1 });
      expect(report.ids.missing_voucher).to.deep.equal([order.id]);
      const rows = await sys.voucherRows(order.id);
      expect(rows).to.have.length(1);
      expect(rows[0]).to.include({ status: "ISSUED", customerId: "cust-1" });
      expect(rows[0]!.id).to.not.equal(before!.id);
      expect(report.drift[0]!.voucherId).to.equal(rows[0]!.id);
      // The order stops pointing at the deleted voucher: the redelivery records the new one.
      const state = await orderVoucherState(order.id, DeliveryStatus.ISSUED);
      expect(state.voucherId).to.equal(rows[0]!.id);

      expect((await sys.reconcile()).report.exitCode).to.equal(0);
    });

    it("corrects an order that records the wrong voucher id", async () => {
      const order = await sys.sentOrder(15_000n);
      await sys.drained();
      const [voucher] = await sys.voucherRows(order.id);
      await sys.orderDb.sql(`UPDATE voucher_outbox SET voucher_id = '01J00000000000000000000000' WHERE order_id = '${order.id}'`);

      const { report } = await sys.reconcile();
      expect(report.exitCode).to.equal(1);
      expect(report.counts.missing_delivery).to.deep.equal({ found: 1, repaired: 1 });
      expect(report.drift[0]!.detail).to.contain("01J00000000000000000000000");
      const state = await orderVoucherState(order.id, DeliveryStatus.ISSUED);
      expect(state.voucherId).to.equal(voucher!.id);
      expect(await sys.voucherRows(order.id)).to.have.length(1);
      expect((await sys.reconcile()).report.exitCode).to.equal(0);
    });

    it("delivers a dead outbox row again and reports why it had died", async () => {
      const lost = await sys.sentOrder(20_000n);
      const kept = await sys.sentOrder(20_000n);
      await sys.drained();
      // One died before its voucher was issued, one after (the voucher exists).
      await sys.voucherDb.sql(`DELETE FROM vouchers WHERE order_id = '${lost.id}'`);
      await sys.orderDb.sql(
        `UPDATE voucher_outbox SET status = 'dead', voucher_id = NULL, delivered_at = NULL, attempts = 7,
           last_error = 'FAILED_PRECONDITION: injected by the test' WHERE order_id IN ('${lost.id}', '${kept.id}')`,
      );

      const { report } = await sys.reconcile();
      expect(report.exitCode).to.equal(1);
      expect(report.counts.dead_delivery).to.deep.equal({ found: 2, repaired: 2 });
      expect(report.ids.dead_delivery).to.have.members([lost.id, kept.id]);
      for (const d of report.drift) expect(d.detail).to.contain("7 attempt(s): FAILED_PRECONDITION: injected by the test");
      expect(report.drift.find((d) => d.orderId === lost.id)!.detail).to.contain("no voucher was issued");

      for (const o of [lost, kept]) {
        const rows = await sys.voucherRows(o.id);
        expect(rows).to.have.length(1);
        const state = await orderVoucherState(o.id, DeliveryStatus.ISSUED);
        expect(state.status).to.equal(DeliveryStatus.ISSUED);
        expect(state.voucherId).to.equal(rows[0]!.id);
      }
    });

    it("records a missing outbox row again so the order service learns of the voucher", async () => {
      const order = await sys.sentOrder(30_000n);
      await sys.drained();
      await sys.orderDb.sql(`DELETE FROM voucher_outbox WHERE order_id = '${order.id}'`);
      expect((await sys.orders.getOrder({ orderId: order.id })).order!.voucher!.status).to.equal(DeliveryStatus.NOT_ELIGIBLE);

      const { report } = await sys.reconcile();
      expect(report.exitCode).to.equal(1);
      expect(report.counts.missing_delivery).to.deep.equal({ found: 1, repaired: 1 });
      const state = await orderVoucherState(order.id, DeliveryStatus.ISSUED);
      const rows = await sys.voucherRows(order.id);
      expect(rows).to.have.length(1);
      expect(state.voucherId).to.equal(rows[0]!.id);
    });

    it("issues the voucher when both the outbox row and the voucher are gone", async () => {
      const order = await sys.sentOrder(30_000n);
      await sys.drained();
      await sys.orderDb.sql(`DELETE FROM voucher_outbox WHERE order_id = '${order.id}'`);
      await sys.voucherDb.sql(`DELETE FROM vouchers WHERE order_id = '${order.id}'`);

      const { report } = await sys.reconcile();
      expect(report.counts.missing_voucher).to.deep.equal({ found: 1, repaired: 1 });
      const state = await orderVoucherState(order.id, DeliveryStatus.ISSUED);
      expect(state.voucherId).to.equal((await sys.voucherRows(order.id))[0]!.id);
    });

    it("voids vouchers for an order that does not exist, one that is not sent and one that does not qualify", async () => {
      const pending = await sys.createOrder(50_000n);
      const cheap = await sys.sentOrder(10_000n);
      await sys.drained();
      const ghostVoucher = await sys.insertVoucher("01NOSUCHORDER0000000000000");
      const pendingVoucher = await sys.insertVoucher(pending.id, "cust-1", 50_000);
      const cheapVoucher = await sys.insertVoucher(cheap.id, "cust-1", 10_000);

      const { report } = await sys.reconcile();
      expect(report.exitCode).to.equal(1);
      expect(report.counts.voucher_without_order).to.deep.equal({ found: 1, repaired: 1 });
      expect(report.counts.voucher_for_unsent_order).to.deep.equal({ found: 1, repaired: 1 });
      expect(report.counts.voucher_for_unqualified_order).to.deep.equal({ found: 1, repaired: 1 });
      expect(report.drift.map((d) => d.voucherId)).to.have.members([ghostVoucher, pendingVoucher, cheapVoucher]);

      // Voided with a reason, never deleted.
      const ghost = await sys.vouchers.getVoucher({ voucherId: ghostVoucher });
      expect(ghost.voucher!.status).to.equal(VoucherStatus.VOIDED);
      expect(ghost.voucher!.voidReason).to.equal("reconciler: order 01NOSUCHORDER0000000000000 does not exist");
      expect((await sys.voucherRows(pending.id))[0]).to.include({ status: "VOIDED" });
      expect((await sys.voucherRows(pending.id))[0]!.voidReason).to.contain("is not sent (status PENDING)");
      expect((await sys.voucherRows(cheap.id))[0]!.voidReason).to.contain("does not qualify (total 100.00 EUR)");

      // A voided voucher is settled: the next run finds nothing.
      expect((await sys.reconcile()).report.exitCode).to.equal(0);
    });

    it("reports a voucher whose customer or amount disagrees with its order, leaves it unchanged and exits 2", async () => {
      const order = await sys.sentOrder(25_000n);
      const other = await sys.sentOrder(25_000n);
      await sys.drained();
      await sys.voucherDb.sql(`UPDATE vouchers SET customer_id = 'mallory' WHERE order_id = '${order.id}'`);
      await sys.voucherDb.sql(`UPDATE vouchers SET order_total_cents = 99999 WHERE order_id = '${other.id}'`);
      const before = await sys.dump();

      const { report } = await sys.reconcile();
      expect(report).to.deep.include({ exitCode: 2, outcome: "unrepaired" });
      expect(report.counts.customer_mismatch).to.deep.equal({ found: 1, repaired: 0 });
      expect(report.counts.amount_mismatch).to.deep.equal({ found: 1, repaired: 0 });
      expect(report.drift.find((d) => d.kind === "customer_mismatch")!.detail).to.equal(
        'voucher is for customer "mallory", the order for "cust-1"',
      );
      expect(await sys.dump()).to.equal(before);

      // Still open: the next run looks at them again even when its window no longer covers them.
      const state = JSON.parse(readFileSync(sys.config.stateFile, "utf8"));
      expect(state.unresolvedOrderIds).to.have.members([order.id, other.id]);
      const later = await sys.reconcile({ since: new Date(Date.now() + 1000), until: new Date(Date.now() + 2000) });
      expect(later.report.scanned.rechecked).to.equal(2);
      expect(later.report.totals.found).to.equal(2);

      // A person settles them by voiding the vouchers; then the system is clean again.
      for (const o of [order, other]) {
        const [row] = await sys.voucherRows(o.id);
        await sys.vouchers.voidVoucher({ voucherId: row!.id, reason: "test: settled by hand" });
      }
    });
  });

  describe("a dry run", () => {
    it("reports every drift and changes nothing in either database nor in the state", async () => {
      const missing = await sys.sentOrder(40_000n);
      const dead = await sys.sentOrder(40_000n);
      const cheap = await sys.sentOrder(4_000n);
      await sys.drained();
      await sys.voucherDb.sql(`DELETE FROM vouchers WHERE order_id = '${missing.id}'`);
      await sys.orderDb.sql(`UPDATE voucher_outbox SET status = 'dead', last_error = 'test' WHERE order_id = '${dead.id}'`);
      await sys.insertVoucher(cheap.id, "cust-1", 4_000);
      await sys.insertVoucher("01NOSUCHORDER0000000000001");
      const stateBefore = readFileSync(sys.config.stateFile, "utf8");
      const before = await sys.dump();

      const { report, reportFile } = await sys.reconcile({ dryRun: true });
      expect(report).to.deep.include({ dryRun: true, exitCode: 2, outcome: "unrepaired" });
      expect(report.totals).to.deep.equal({ found: 4, repaired: 0, unrepaired: 4, needsPerson: 0 });
      for (const d of report.drift) expect(d.error).to.equal("dry run: not repaired");
      expect(path.basename(reportFile!)).to.match(/-dry-run\.json$/);
      await sleep(300); // anything a dry run had set in motion (a requeue) would reach the databases by now
      expect(await sys.dump()).to.equal(before);
      expect(readFileSync(sys.config.stateFile, "utf8")).to.equal(stateBefore);

      // The real run then repairs all of it.
      const { report: real } = await sys.reconcile();
      expect(real).to.deep.include({ exitCode: 1, totals: { found: 4, repaired: 4, unrepaired: 0, needsPerson: 0 } });
    });
  });

  describe("with a service down", () => {
    it("fails with exit code 2 and a clear message, and does not move the window", async () => {
      const stateBefore = readFileSync(sys.config.stateFile, "utf8");
      const reportsBefore = readdirSync(sys.config.reportDir).length;
      await sys.voucherService!.stop();
      const { report, reportFile } = await sys.reconcile();
      expect(report).to.deep.include({ outcome: "failed", exitCode: 2 });
      expect(report.error).to.match(
        new RegExp(`on the voucher service at ${sys.config.voucherServiceUrl.replace(/[.]/g, "\\.")} failed: Unavailable: .*is it running and reachable\\?`),
      );
      expect(readFileSync(sys.config.stateFile, "utf8")).to.equal(stateBefore);
      expect(existsSync(reportFile!)).to.equal(true);
      expect(readdirSync(sys.config.reportDir).length).to.equal(reportsBefore + 1);
    });
  });
  describe("concurrent with the relay under load", () => {
    // The relay reaches the voucher service through a slow link, so reconciliations (grace 0)
    // see orders whose delivery is in flight and issue their vouchers themselves: a real race.
    const sys = new System({ relayDelayMs: 150 });
    before(() => sys.start());
    after(() => sys.stop());

    it("never gives an order a second voucher and leaves no drift", async () => {
      const totals = Array.from({ length: 600 }, (_, i) => BigInt(9_000 + ((i * 37) % 4_000)));
      const created = [];
      for (let i = 0; i < totals.length; i += 50) {
        created.push(...(await Promise.all(totals.slice(i, i + 50).map((t, j) => sys.createOrder(t, `cust-${(i + j) % 5}`)))));
      }
      // Mark sent in waves while reconciliations (grace 0: they see orders the relay has not delivered yet) run back to back.
      let marking = true;
      const runs: Array<{ exitCode: number; error: string | null; raced: number; issued: number }> = [];
      const reconciling = (async () => {
        while (marking) {
          const { report } = await sys.reconcile();
          runs.push({
            exitCode: report.exitCode,
            error: report.error,
            raced: report.racedWithRelay,
            issued: report.counts.missing_voucher.repaired,
          });
        }
      })();
      for (let i = 0; i < created.length; i += 40) {
        await Promise.all(created.slice(i, i + 40).map((o) => sys.orders.markOrderSent({ orderId: o.id })));
      }
      marking = false;
      await reconciling;
      await sys.drained();

      expect(runs.length).to.be.at.least(2);
      for (const r of runs) expect(r.error).to.equal(null);
      // Both sides issued vouchers while the other was delivering the same orders; the relay acked every row anyway.
      const qualifyingCount = created.filter((o) => o.totalCents > 10_000n).length;
      const byReconciler = runs.reduce((n, r) => n + r.issued, 0);
      expect(byReconciler, "vouchers issued by the reconciler").to.be.within(1, qualifyingCount - 1);
      const outbox = await sys.orderDb.sql("SELECT status, COUNT(*) FROM voucher_outbox GROUP BY status");
      expect(outbox.trim()).to.equal(`delivered\t${qualifyingCount}`);
      // The invariant is one live voucher per order; voided ones (none are expected here) are history.
      const live = await sys.voucherDb.sql("SELECT order_id, COUNT(*) FROM vouchers WHERE status = 'ISSUED' GROUP BY order_id ORDER BY order_id");
      expect(live.trim().split("\n").map((l) => l.split("\t")), "one live voucher per qualifying order").to.deep.equal(
        created.filter((o) => o.totalCents > 10_000n).map((o) => [o.id, "1"]).sort((a, b) => (a[0]! < b[0]! ? -1 : 1)),
      );
      const qualifying = created.filter((o) => o.totalCents > 10_000n).map((o) => o.id);
      const { vouchers } = await sys.vouchers.batchGetVouchersByOrder({ orderIds: created.map((o) => o.id) });
      expect(vouchers.map((v) => v.orderId).sort()).to.deep.equal(qualifying.sort());
      expect(vouchers.every((v) => v.status === VoucherStatus.ISSUED)).to.equal(true);
      const { report } = await sys.reconcile();
      expect(report.exitCode, JSON.stringify(report.drift.slice(0, 3))).to.equal(0);
    });
  });
});
