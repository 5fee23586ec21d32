import { expect } from "chai";
import { roleToken } from "@shop/testkit/auth";
import { checkLedger, runReconciler } from "../../scripts/check-ledger.js";
import { Cluster } from "./cluster.js";
import { driveTraffic } from "./traffic.js";

describe("reconciler: drift the other mechanisms missed", function () {
  this.timeout(90_000);
  let cluster: Cluster;
  afterEach(() => cluster?.stop());

  it("finds every injected drift, the ledger check fails on it, and one repairing run leaves a clean ledger", async () => {
    cluster = new Cluster({ name: "drift", reconciler: false });
    await cluster.start();
    const t = await driveTraffic(cluster.orders, { count: 40, prefix: "drift" });
    await cluster.drained();

    // A bug that lost the outbox row of a sent order over 100 EUR.
    await cluster.orderDb.sql(
      `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, sent_at)
       VALUES ('01DRIFTLOSTOUTBOXROW000001', 'cust-drift', 25000, 'EUR', 'SENT', 'drift-lost-row', NOW(3), NOW(3), NOW(3))`,
    );
    // A delivery that died (an operator's requeue never came).
    await cluster.orderDb.sql(
      `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, sent_at)
       VALUES ('01DRIFTDEADDELIVERY0000001', 'cust-drift', 30000, 'EUR', 'SENT', 'drift-dead-row', NOW(3), NOW(3), NOW(3));
       INSERT INTO voucher_outbox (order_id, customer_id, total_cents, currency, status, attempts, next_attempt_at, last_error, created_at)
       VALUES ('01DRIFTDEADDELIVERY0000001', 'cust-drift', 30000, 'EUR', 'dead', 1, NOW(3), 'INVALID_ARGUMENT: injected', NOW(3))`,
    );
    // A voucher voided by mistake: its order is owed one and holds nothing usable.
    const voidedOrder = t.acknowledgedSent.find((id) => t.facts.get(id)!.totalCents > 10_000n)!;
    const { vouchers: [mistaken] } = await cluster.vouchers.batchGetVouchersByOrder({ orderIds: [voidedOrder] });
    await cluster.vouchers.voidVoucher({ voucherId: mistaken!.id, reason: "voided by mistake" });
    // A voucher restored from a backup for an order that does not exist.
    await cluster.voucherDb.sql(
      `INSERT INTO vouchers (id, code, order_id, customer_id, order_total_cents, amount_cents, currency, status, issued_at)
       VALUES ('01DRIFTORPHANVOUCHER000001', 'DRIFT-ORPHAN-1', '01DRIFTNOSUCHORDER00000001', 'cust-drift', 20000, 500, 'EUR', 'ISSUED', NOW(3))`,
    );

    const ledger = {
      orderDatabaseUrl: cluster.orderDb.url,
      voucherDatabaseUrl: cluster.voucherDb.url,
      orderServiceUrl: cluster.orderServiceUrl,
      voucherServiceUrl: cluster.voucherServiceUrl,
      token: roleToken("reconciler"),
    };
    const before = await checkLedger(ledger);
    const failed = before.results.filter((r) => r.verdict === "FAIL").map((r) => r.id);
    expect(before.ok).to.equal(false);
    expect(failed).to.include.members(["I1", "I2", "I3", "I4", "I9"]);

    const dry = await runReconciler({ ...ledger, dryRun: true });
    expect(dry.report!.counts.missing_voucher!.found).to.equal(2);
    expect(dry.report!.counts.dead_delivery!.found).to.equal(1);
    expect(dry.report!.counts.voucher_without_order!.found).to.equal(1);
    expect(dry.report!.totals.found).to.equal(4);

    const repair = await runReconciler({ ...ledger, dryRun: false });
    expect(repair.exitCode, repair.stderr).to.equal(1);
    expect(repair.report!.totals.repaired).to.equal(4);

    // The voided voucher stays voided; the order has a new live one and records it (checked by expectLedgerClean too).
    const rows = (await cluster.voucherRows()).filter((v) => v.orderId === voidedOrder);
    expect(rows.map((v) => v.status).sort()).to.deep.equal(["ISSUED", "VOIDED"]);
    await cluster.expectLedgerClean(t, { voidedOnPurpose: [voidedOrder] });
  });

  it("leaves a dead delivery whose order already has a conflicting voucher to a person; once a person voids that voucher and requeues, the ledger is clean", async () => {
    cluster = new Cluster({ name: "drift-conflict", reconciler: false });
    await cluster.start();
    const t = await driveTraffic(cluster.orders, { count: 20, prefix: "drift-conflict" });
    await cluster.drained();
    // A voucher issued for the order under another customer (a bug or tampering), so the delivery died on ALREADY_EXISTS.
    await cluster.orderDb.sql(
      `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, sent_at)
       VALUES ('01DRIFTCONFLICTDEAD0000001', 'cust-right', 30000, 'EUR', 'SENT', 'drift-conflict-row', NOW(3), NOW(3), NOW(3));
       INSERT INTO voucher_outbox (order_id, customer_id, total_cents, currency, status, attempts, next_attempt_at, last_error, created_at)
       VALUES ('01DRIFTCONFLICTDEAD0000001', 'cust-right', 30000, 'EUR', 'dead', 1, NOW(3), 'ALREADY_EXISTS: injected', NOW(3))`,
    );
    await cluster.voucherDb.sql(
      `INSERT INTO vouchers (id, code, order_id, customer_id, order_total_cents, amount_cents, currency, status, issued_at)
       VALUES ('01DRIFTCONFLICTVOUCHER0001', 'DRIFT-CONFLICT-1', '01DRIFTCONFLICTDEAD0000001', 'cust-wrong', 30000, 500, 'EUR', 'ISSUED', NOW(3))`,
    );
    const ledger = {
      orderDatabaseUrl: cluster.orderDb.url,
      voucherDatabaseUrl: cluster.voucherDb.url,
      orderServiceUrl: cluster.orderServiceUrl,
      voucherServiceUrl: cluster.voucherServiceUrl,
      token: roleToken("reconciler"),
    };
    const before = await checkLedger(ledger);
    const i4 = before.results.find((r) => r.id === "I4")!;
    expect(i4.verdict).to.equal("FAIL");
    expect(i4.counts["customer or total differs"]).to.equal(1);

    const run = await runReconciler({ ...ledger, dryRun: false });
    expect(run.exitCode, run.stderr).to.equal(2);
    expect(run.report!.counts.dead_delivery_conflict!.found).to.equal(1);
    // Seen from the voucher's side too, as a customer mismatch; neither is repaired, both wait for a person.
    expect(run.report!.counts.customer_mismatch!.found).to.equal(1);
    expect(run.report!.totals).to.include({ repaired: 0, needsPerson: run.report!.totals.found });
    // Not requeued behind the person's back: the row is still dead.
    expect((await cluster.outboxCounts()).dead).to.equal(1);

    // The person's fix: void the wrong voucher, requeue the dead delivery; the relay issues the right one.
    await cluster.vouchers.voidVoucher({ voucherId: "01DRIFTCONFLICTVOUCHER0001", reason: "issued to the wrong customer" });
    await cluster.orders.requeueVoucher({ orderId: "01DRIFTCONFLICTDEAD0000001" });
    await cluster.drained();
    const rows = (await cluster.voucherRows()).filter((v) => v.orderId === "01DRIFTCONFLICTDEAD0000001");
    expect(rows.map((v) => `${v.status} ${v.customerId}`).sort()).to.deep.equal(["ISSUED cust-right", "VOIDED cust-wrong"]);
    await cluster.expectLedgerClean(t);
  });

  it("finishes the repair on the next run after a run is killed -9 part-way", async () => {
    cluster = new Cluster({ name: "drift-kill", reconciler: false });
    await cluster.start();
    const t = await driveTraffic(cluster.orders, { count: 20, prefix: "drift-kill" });
    await cluster.drained();
    // Three hundred sent orders over 100 EUR whose outbox rows were lost: enough repair work to be caught in the middle of.
    const rows = Array.from({ length: 300 }, (_, i) => {
      const id = `01DRIFTKILL${String(i).padStart(15, "0")}`;
      return `('${id}', 'cust-kill', ${20_000 + i}, 'EUR', 'SENT', 'injected-kill-${i}', NOW(3), NOW(3), NOW(3))`;
    });
    await cluster.orderDb.sql(
      `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, sent_at) VALUES ${rows.join(", ")}`,
    );
    const urls = { orderServiceUrl: cluster.orderServiceUrl, voucherServiceUrl: cluster.voucherServiceUrl, token: roleToken("reconciler") };
    // Killed -9 in the middle of its repairs: the vouchers are issued in one batch, then each order is requeued
    // (an outbox row) one at a time, so the tenth requeue comes long before the three-hundredth on any machine.
    const repairedSoFar = async () =>
      Number((await cluster.orderDb.sql("SELECT COUNT(*) FROM voucher_outbox WHERE order_id LIKE '01DRIFTKILL%'")).trim());
    const killed = await runReconciler({
      ...urls,
      dryRun: false,
      env: { RECONCILE_REPAIR_CONCURRENCY: "1" },
      killWhen: async () => (await repairedSoFar()) >= 10,
      killSignal: "SIGKILL",
    });
    expect(killed.report, "the first run should not have finished").to.equal(undefined);
    expect(await repairedSoFar()).to.be.within(10, 299);
    const next = await runReconciler({ ...urls, dryRun: false });
    expect(next.exitCode, next.stderr).to.be.oneOf([0, 1]);
    await cluster.expectLedgerClean(t);
  });
});
