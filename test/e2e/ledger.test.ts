import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { roleToken } from "@shop/testkit/auth";
import { OrderStatus, PaymentMethod, VoucherStatus } from "@shop/sdk/order";
import { checkLedger, type LedgerOptions, type LedgerResult } from "../../scripts/check-ledger.js";
import { Cluster } from "../faults/cluster.js";
import { awaitPayment, newTraffic, type Traffic } from "../faults/traffic.js";

const root = path.resolve(import.meta.dirname, "../..");

const verdicts = (r: LedgerResult) => Object.fromEntries(r.results.map((x) => [x.id, x.verdict]));
const counts = (r: LedgerResult, id: string) => r.results.find((x) => x.id === id)!.counts;

/** Runs `check-ledger` as an operator would: its own process, settings from the environment only. */
function runCheckLedger(env: Record<string, string | undefined>): Promise<{ code: number; stdout: string; stderr: string }> {
  const tsx = createRequire(import.meta.url).resolve("tsx");
  const clean = { ...process.env };
  // Only what the test gives: no token may leak in from the test process.
  for (const k of ["RECONCILE_TOKEN", "RECONCILE_TOKEN_FILE", "LOCAL_DATA_DIR", "ORDER_SERVICE_URL", "VOUCHER_SERVICE_URL", "PAYMENT_SERVICE_URL", "PAYMENT_DATABASE_URL"]) delete clean[k];
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", tsx, path.join(root, "scripts/check-ledger.ts")],
      { cwd: root, env: { ...clean, LOG_LEVEL: "warn", ...env }, timeout: 90_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

describe("the ledger check (check:ledger) on a running system", function () {
  this.timeout(120_000);
  const cluster = new Cluster({ name: "ledger", reconciler: false });
  let ledger: LedgerOptions;
  const traffic: Traffic = newTraffic();

  before(async () => {
    await cluster.start();
    ledger = {
      orderDatabaseUrl: cluster.orderDb.url,
      voucherDatabaseUrl: cluster.voucherDb.url,
      orderServiceUrl: cluster.orderServiceUrl,
      voucherServiceUrl: cluster.voucherServiceUrl,
      paymentDatabaseUrl: cluster.paymentDb!.url,
      paymentServiceUrl: cluster.paymentServiceUrl,
      token: roleToken("reconciler"),
    };
    // Two owed orders, one under the line, one exactly on it, one over it but never sent.
    for (const [i, totalCents, send] of [[0, 12_000n, true], [1, 8_000n, true], [2, 15_000n, true], [3, 10_000n, true], [4, 20_000n, false]] as const) {
      const customerId = `ledger-${i}`;
      const { order } = await cluster.orders.createOrder({ customerId, totalCents, currency: "EUR", requestId: `ledger-${i}` });
      traffic.orderIds.push(order!.id);
      traffic.facts.set(order!.id, { customerId, totalCents });
      if (send) {
        await cluster.orders.markOrderSent({ orderId: order!.id });
        traffic.acknowledgedSent.push(order!.id);
      }
    }
    // One paid order, charged and sent (under the voucher line, so the voucher counts above stay as they are).
    await cluster.payments.openAccount({ customerId: "ledger-payer", currency: "EUR" });
    await cluster.payments.topUp({ customerId: "ledger-payer", amountCents: 6_000n, currency: "EUR", requestId: "ledger-fund" });
    const { order } = await cluster.orders.createOrder({ customerId: "ledger-payer", totalCents: 5_000n, currency: "EUR", requestId: "ledger-paid", paymentMethod: PaymentMethod.ACCOUNT });
    expect(await awaitPayment(cluster.orders, order!.id, 20_000)).to.equal(OrderStatus.PAID);
    await cluster.orders.markOrderSent({ orderId: order!.id });
    traffic.orderIds.push(order!.id);
    traffic.facts.set(order!.id, { customerId: "ledger-payer", totalCents: 5_000n });
    traffic.acknowledgedSent.push(order!.id);
    await cluster.drained();
  });
  after(() => cluster.stop());

  it("passes on a clean system, and its replays leave the conflict counter that the tampering alert watches unchanged", async () => {
    const conflictsBefore = await cluster.voucherMetric("vouchers_issued_total", { result: "conflict" });
    const replaysBefore = await cluster.voucherMetric("vouchers_issued_total", { result: "replayed" });
    const r = await checkLedger(ledger);
    // The replays did reach the service (counted as replays), and none was a conflict.
    expect(await cluster.voucherMetric("vouchers_issued_total", { result: "conflict" })).to.equal(conflictsBefore);
    expect(await cluster.voucherMetric("vouchers_issued_total", { result: "replayed" })).to.equal(replaysBefore + 2);
    expect(r.ok, JSON.stringify(r.results)).to.equal(true);
    expect(counts(r, "I5")).to.include({ "unique key": 1, replayed: 2, "same voucher": 2 });
    // The payment invariants ran (not skipped) over the paid order.
    expect(Object.entries(verdicts(r)).filter(([id]) => id.startsWith("P")).map(([, v]) => v)).to.deep.equal(Array(8).fill("PASS"));
    expect(counts(r, "P1")).to.include({ "charged orders": 1, debits: 1 });
  });

  it("finds npm start's token in $LOCAL_DATA_DIR/auth, as the reconciler does, and says what is missing without one", async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "ledger-data-"));
    try {
      mkdirSync(path.join(dataDir, "auth"));
      writeFileSync(path.join(dataDir, "auth/reconciler.token"), `${roleToken("reconciler")}\n`);
      const env = {
        ORDER_DATABASE_URL: cluster.orderDb.url,
        VOUCHER_DATABASE_URL: cluster.voucherDb.url,
        ORDER_SERVICE_URL: cluster.orderServiceUrl,
        VOUCHER_SERVICE_URL: cluster.voucherServiceUrl,
        PAYMENT_DATABASE_URL: cluster.paymentDb!.url,
        PAYMENT_SERVICE_URL: cluster.paymentServiceUrl,
      };
      const found = await runCheckLedger({ ...env, LOCAL_DATA_DIR: dataDir });
      expect(found.code, found.stdout + found.stderr).to.equal(0);
      expect(found.stdout).to.match(/^I5 PASS /m).and.match(/^I9 PASS /m).and.match(/^ledger: PASS$/m);
      for (const id of ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8"]) expect(found.stdout).to.match(new RegExp(`^${id} PASS `, "m"));

      const none = await runCheckLedger({ ...env, LOCAL_DATA_DIR: path.join(dataDir, "nothing-here") });
      expect(none.code, none.stdout + none.stderr).to.equal(2);
      expect(none.stderr).to.include("need a token").and.include("auth/reconciler.token");
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("counts only ISSUED vouchers: a voided voucher of an owed order fails I2, I3 and I7; redelivered, the order has one live voucher and one voided, and passes", async () => {
    const victim = traffic.orderIds[0]!;
    const { vouchers: [first] } = await cluster.vouchers.batchGetVouchersByOrder({ orderIds: [victim] });
    await cluster.vouchers.voidVoucher({ voucherId: first!.id, reason: "voided by mistake" });

    const broken = await checkLedger(ledger);
    expect(verdicts(broken)).to.include({ I2: "FAIL", I3: "FAIL", I4: "PASS", I5: "PASS", I7: "FAIL" });
    expect(counts(broken, "I2")).to.include({ missing: 1, "of them only voided": 1 });
    expect(counts(broken, "I3")).to.include({ voided: 1, "recorded id voided": 1 });

    // Sent again: the relay asks for the order's voucher once more and the voucher service issues a new live one.
    await cluster.orders.requeueVoucher({ orderId: victim, redeliver: true });
    await cluster.drained();
    const rows = (await cluster.voucherRows()).filter((v) => v.orderId === victim);
    expect(rows.map((v) => v.status).sort()).to.deep.equal(["ISSUED", "VOIDED"]);
    const live = rows.find((v) => v.status === "ISSUED")!;
    expect(live.id).to.not.equal(first!.id);
    const { order } = await cluster.orders.getOrder({ orderId: victim });
    expect(order!.status).to.equal(OrderStatus.SENT);
    expect(order!.voucher!.status).to.equal(VoucherStatus.ISSUED);
    expect(order!.voucher!.voucherId).to.equal(live.id);

    await cluster.expectLiveVouchers(traffic, [victim]);
    const healed = await checkLedger(ledger);
    expect(healed.ok, JSON.stringify(healed.results)).to.equal(true);
    expect(counts(healed, "I3")).to.include({ issued: 2, voided: 1, "orders with two or more issued": 0 });
  });

  it("fails I3 on two ISSUED vouchers for one order, and I5 when no unique key forbids them", async () => {
    // What a lost unique key would let through: the keys limiting an order's vouchers are dropped (the code's stays).
    const keys = (await cluster.voucherDb.sql(
      `SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'vouchers' AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY' AND COLUMN_NAME <> 'code'`,
    )).split("\n").filter(Boolean);
    expect(keys).to.not.be.empty;
    for (const k of keys) await cluster.voucherDb.sql(`ALTER TABLE vouchers DROP INDEX \`${k}\``);
    const owed = traffic.orderIds[2]!;
    await cluster.voucherDb.sql(
      `INSERT INTO vouchers (id, code, order_id, customer_id, order_total_cents, amount_cents, currency, status, issued_at)
       VALUES ('01LEDGERSECONDLIVEVOUCHER0', 'LEDGER-SECOND-1', '${owed}', 'ledger-2', 15000, 500, 'EUR', 'ISSUED', NOW(3))`,
    );
    const r = await checkLedger({ ...ledger, orderServiceUrl: undefined });
    expect(verdicts(r)).to.include({ I3: "FAIL", I5: "FAIL" });
    expect(counts(r, "I3")).to.include({ "orders with two or more issued": 1 });
    expect(counts(r, "I5")).to.include({ "unique key": 0 });
  });
});
