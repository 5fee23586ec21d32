import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { expect } from "chai";
import { OrderStatus, PaymentEvent, PaymentStatus, type Order } from "@shop/sdk/order";
import { PaymentOutcome, RefusalReason } from "@shop/sdk/payment";
import { roleToken } from "@shop/testkit/auth";
import { ReconcilerMetrics, runRecorded } from "../src/metrics.js";
import { formatSummary } from "../src/report.js";
import { PaymentSystem } from "./payment-system.js";

const RICH = "cust-pay-rich";
const MAIN = path.resolve(import.meta.dirname, "../src/main.ts");

/** `npm run reconcile -- <args>` as its own process: exit code and output. */
function reconcileCommand(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", createRequire(import.meta.url).resolve("tsx"), MAIN, ...args],
      { env: { ...process.env, LOG_LEVEL: "warn", RECONCILE_TOKEN_FILE: "", ...env }, timeout: 30_000 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
    );
  });
}

/** An order id as the order service makes them (26 characters), for rows written straight into the database. */
const rowId = (tag: string) => `01PAY${tag.toUpperCase().padEnd(8, "X").slice(0, 8)}${randomUUID().replace(/-/g, "").slice(0, 13).toUpperCase()}`;

async function metric(metrics: ReconcilerMetrics, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const { values } = await metrics.registry.getSingleMetric(name)!.get();
  return values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value;
}

/** An order awaiting its charge written straight into the order database, as a lost charge request leaves it: no charge_outbox row. */
async function insertAwaitingOrder(sys: PaymentSystem, id: string, totalCents: number, customerId = RICH): Promise<void> {
  await sys.orderDb.sql(
    `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, payment_method, payment_status)
     VALUES ('${id}', '${customerId}', ${totalCents}, 'EUR', 'AWAITING_PAYMENT', 'req-${id}', NOW(3) - INTERVAL 1 MINUTE, NOW(3) - INTERVAL 1 MINUTE, 'ACCOUNT', 'AWAITING')`,
  );
}

/** Delivers the payment service's decision as the payment relay would (for setting up paid orders while that relay is off). */
async function deliverCharge(sys: PaymentSystem, order: Order): Promise<Order> {
  await sys.decided([order.id]);
  const res = await sys.outcomes.recordPaymentOutcome({
    messageKey: `charge:${order.id}`,
    orderId: order.id,
    event: PaymentEvent.CHARGED,
    amountCents: order.totalCents,
    currency: "EUR",
  });
  expect(res.order!.status).to.equal(OrderStatus.PAID);
  return res.order!;
}

describe("reconciler: payment drift, against the order, voucher and payment services", function () {
  this.timeout(90_000);
  const sys = new PaymentSystem();
  before(async () => {
    await sys.start({ paymentRelay: false });
    await sys.fund(RICH, 10_000_000n);
  });
  after(() => sys.stop());

  afterEach(async function () {
    if (this.currentTest?.state !== "passed") return;
    // Each test leaves no payment drift behind for the next one to find.
    const { report } = await sys.reconcile({ maxPaymentRepairs: 1000 });
    expect(report.totals.found, JSON.stringify(report.drift)).to.equal(0);
  });

  it("delivers charges and refusals the orders never learned of (a dry run changes nothing); the payment relay's own later delivery is a replay", async () => {
    const a = await sys.paidOrder(RICH, 12_000n);
    const b = await sys.paidOrder(RICH, 3_000n);
    const c = await sys.paidOrder("cust-pay-no-account", 5_000n);
    const decided = await sys.decided([a.id, b.id, c.id]);
    expect(decided.get(c.id)).to.deep.include({ chargeOutcome: PaymentOutcome.REFUSED, refusalReason: RefusalReason.NO_ACCOUNT });
    expect((await sys.order(a.id)).payment!.status).to.equal(PaymentStatus.AWAITING);

    const before = await sys.dump();
    const dry = await sys.reconcile({ dryRun: true });
    expect(dry.report.counts.charge_undelivered).to.deep.equal({ found: 3, repaired: 0 });
    expect(dry.report.ids.charge_undelivered).to.have.members([a.id, b.id, c.id]);
    expect(dry.report.payments).to.include({ checked: true, repairs: 3, delivered: 0 });
    expect(await sys.dump()).to.equal(before);

    const run = await sys.reconcile();
    expect(run.report.exitCode, JSON.stringify(run.report.drift)).to.equal(1);
    expect(run.report.counts.charge_undelivered).to.deep.equal({ found: 3, repaired: 3 });
    expect(run.report.payments).to.include({ delivered: 3, requeued: 0, capReached: false });
    expect(run.report.totals.found).to.equal(3);
    const [pa, pb, pc] = await Promise.all([sys.order(a.id), sys.order(b.id), sys.order(c.id)]);
    expect([pa.status, pb.status, pc.status]).to.deep.equal([OrderStatus.PAID, OrderStatus.PAID, OrderStatus.PAYMENT_FAILED]);
    expect(pa.payment!.chargedAt).to.not.equal(undefined);
    expect(pc.payment).to.deep.include({ status: PaymentStatus.REFUSED, refusalReason: "NO_ACCOUNT" });
    // Taken in through the order's inbox under the payment relay's own keys.
    expect(await sys.count(sys.orderDb, "inbox", `message_key IN ('payment:charge:${a.id}', 'payment:charge:${b.id}', 'payment:charge:${c.id}')`)).to.equal(3);

    // The payment relay comes back and delivers the same three outcomes: replays, the orders do not change.
    const orders = await sys.orderDb.sql("SELECT * FROM orders ORDER BY id");
    await sys.setPaymentRelay(true);
    await sys.until("the payment relay to deliver its outbox", () => sys.count(sys.paymentDb, "payment_outbox", "status <> 'delivered'"), (n) => n === 0);
    await sys.setPaymentRelay(false);
    expect(await sys.orderDb.sql("SELECT * FROM orders ORDER BY id")).to.equal(orders);
  });

  it("requeues a charge request that went missing or died, and delivers its decision on the next run", async () => {
    const lost = rowId("lost");
    const dead = rowId("dead");
    await insertAwaitingOrder(sys, lost, 2_500);
    await insertAwaitingOrder(sys, dead, 4_000);
    await sys.orderDb.sql(
      `INSERT INTO charge_outbox (order_id, customer_id, amount_cents, currency, status, attempts, next_attempt_at, last_error, created_at)
       VALUES ('${dead}', '${RICH}', 4000, 'EUR', 'dead', 7, NOW(3), 'UNAVAILABLE: injected', NOW(3) - INTERVAL 1 MINUTE)`,
    );

    const first = await sys.reconcile();
    expect(first.report.exitCode, JSON.stringify(first.report.drift)).to.equal(1);
    expect(first.report.counts.charge_undecided).to.deep.equal({ found: 2, repaired: 2 });
    expect(first.report.payments).to.include({ requeued: 2, delivered: 0 });
    expect(await sys.count(sys.orderDb, "charge_outbox", `order_id IN ('${lost}', '${dead}')`)).to.equal(2);

    // The order service's relay charges them now; the payment relay is off, so the next run delivers the outcomes.
    await sys.decided([lost, dead]);
    const second = await sys.reconcile();
    expect(second.report.counts.charge_undelivered).to.deep.equal({ found: 2, repaired: 2 });
    expect((await sys.order(lost)).status).to.equal(OrderStatus.PAID);
    expect((await sys.order(dead)).status).to.equal(OrderStatus.PAID);
  });

  it("says so when the charge request it would requeue is still on its way (pending, the relay retrying it)", async () => {
    const waiting = rowId("waiting");
    await insertAwaitingOrder(sys, waiting, 3_300);
    await sys.orderDb.sql(
      `INSERT INTO charge_outbox (order_id, customer_id, amount_cents, currency, status, attempts, next_attempt_at, last_error, created_at)
       VALUES ('${waiting}', '${RICH}', 3300, 'EUR', 'pending', 4, NOW(3) + INTERVAL 1 DAY, 'UNAVAILABLE: injected', NOW(3) - INTERVAL 1 MINUTE)`,
    );
    const { report } = await sys.reconcile();
    expect(report.counts.charge_undecided).to.deep.equal({ found: 1, repaired: 1 });
    expect(report.payments).to.include({ requeued: 0 });
    expect(report.drift[0]!.detail).to.contain("already on its way (pending), the relay is still trying");

    // The retry comes due: the relay charges, and the decision is delivered like any other.
    await sys.orderDb.sql(`UPDATE charge_outbox SET next_attempt_at = NOW(3) WHERE order_id = '${waiting}'`);
    await sys.decided([waiting]);
    expect((await sys.reconcile()).report.counts.charge_undelivered).to.deep.equal({ found: 1, repaired: 1 });
  });

  it("delivers a refund made but never delivered, and requeues a refund request that went missing", async () => {
    const undelivered = await deliverCharge(sys, await sys.paidOrder(RICH, 6_000n));
    const lost = await deliverCharge(sys, await sys.paidOrder(RICH, 7_000n));
    await sys.orders.cancelOrder({ orderId: undelivered.id });
    // A cancellation whose refund request was lost (no refund_outbox row).
    await sys.orderDb.sql(`UPDATE orders SET status = 'CANCELLED', payment_status = 'REFUND_PENDING', cancelled_at = NOW(3) - INTERVAL 1 SECOND WHERE id = '${lost.id}'`);
    await sys.decided([undelivered.id], { refunded: true });

    const first = await sys.reconcile();
    expect(first.report.exitCode, JSON.stringify(first.report.drift)).to.equal(1);
    expect(first.report.counts.refund_undelivered).to.deep.equal({ found: 1, repaired: 1 });
    expect(first.report.counts.refund_undecided).to.deep.equal({ found: 1, repaired: 1 });
    expect(first.report.ids.refund_undecided).to.deep.equal([lost.id]);
    expect((await sys.order(undelivered.id)).payment!.status).to.equal(PaymentStatus.REFUNDED);

    await sys.decided([lost.id], { refunded: true });
    const second = await sys.reconcile();
    expect(second.report.counts.refund_undelivered).to.deep.equal({ found: 1, repaired: 1 });
    expect(second.report.ids.refund_undelivered).to.deep.equal([lost.id]);
    expect((await sys.order(lost.id)).payment!.status).to.equal(PaymentStatus.REFUNDED);
  });

  it("has a cancelled order that never learned of its charge request its refund, and the customer gets the money back", async () => {
    const { account: start } = await sys.payments.getAccount({ customerId: RICH });
    const order = await sys.paidOrder(RICH, 9_900n);
    await sys.decided([order.id]);
    await sys.orders.cancelOrder({ orderId: order.id });
    expect((await sys.order(order.id)).payment!.status).to.equal(PaymentStatus.AWAITING);

    const first = await sys.reconcile();
    expect(first.report.exitCode, JSON.stringify(first.report.drift)).to.equal(1);
    expect(first.report.counts.refund_missing).to.deep.equal({ found: 1, repaired: 1 });
    const cancelled = await sys.order(order.id);
    expect([cancelled.status, cancelled.payment!.status]).to.deep.equal([OrderStatus.CANCELLED, PaymentStatus.REFUND_PENDING]);

    await sys.decided([order.id], { refunded: true });
    const second = await sys.reconcile();
    expect(second.report.counts.refund_undelivered).to.deep.equal({ found: 1, repaired: 1 });
    expect((await sys.order(order.id)).payment!.status).to.equal(PaymentStatus.REFUNDED);
    const { account: end } = await sys.payments.getAccount({ customerId: RICH });
    expect(end!.balanceCents).to.equal(start!.balanceCents);
  });

  it("runs as the reconcile command with RECONCILE_PAYMENTS on: --max-payment-repairs caps the run and exits 2, the next run exits 1", async () => {
    const a = await sys.paidOrder(RICH, 2_100n);
    const b = await sys.paidOrder(RICH, 2_200n);
    await sys.decided([a.id, b.id]);
    const env = {
      ORDER_SERVICE_URL: sys.orderUrl,
      VOUCHER_SERVICE_URL: sys.config.voucherServiceUrl,
      PAYMENT_SERVICE_URL: sys.paymentUrl,
      RECONCILE_PAYMENTS: "true",
      RECONCILE_GRACE_MS: "0",
      RECONCILE_STATE_FILE: path.join(sys.dir, "cli-state.json"),
      RECONCILE_REPORT_DIR: path.join(sys.dir, "cli-reports"),
      RECONCILE_TOKEN: roleToken("reconciler"),
    };
    const capped = await reconcileCommand(["--once", "--json", "--full", "--max-payment-repairs", "1"], env);
    expect(capped.code, capped.stderr).to.equal(2);
    const report = JSON.parse(capped.stdout);
    expect(report.payments).to.include({ checked: true, cap: 1, repairs: 1, delivered: 1, skippedByCap: 1, capReached: true });
    expect(report.counts.charge_undelivered).to.deep.equal({ found: 2, repaired: 1 });

    const rest = await reconcileCommand(["--once", "--full"], env);
    expect(rest.code, rest.stderr).to.equal(1);
    expect(rest.stdout).to.contain("charge_undelivered").and.contain("payment repairs: 1 of at most 10: 1 outcome(s) delivered");
    expect((await sys.order(a.id)).status).to.equal(OrderStatus.PAID);
    expect((await sys.order(b.id)).status).to.equal(OrderStatus.PAID);
  });

  it("stops repairing payments at RECONCILE_MAX_PAYMENT_REPAIRS, exits 2 and says so; the next run repairs the rest", async () => {
    const orders: Order[] = [];
    for (let i = 0; i < 5; i++) orders.push(await sys.paidOrder(RICH, 1_000n + BigInt(i)));
    await sys.decided(orders.map((o) => o.id));
    const stateFile = path.join(sys.dir, `cap-state-${randomUUID()}.json`);
    const paid = () => sys.count(sys.orderDb, "orders", `status = 'PAID' AND id IN (${orders.map((o) => `'${o.id}'`).join(",")})`);

    const none = await sys.reconcile({}, { maxPaymentRepairs: 0 });
    expect(none.report.payments).to.include({ repairs: 0, skippedByCap: 5, capReached: true });
    expect(await paid()).to.equal(0);

    const metrics = new ReconcilerMetrics({ processMetrics: false });
    const capped = await runRecorded(metrics, () => sys.reconcile({}, { maxPaymentRepairs: 2, stateFile }));
    expect(capped.report.exitCode).to.equal(2);
    expect(capped.report.outcome).to.equal("unrepaired");
    expect(capped.report.payments).to.include({ cap: 2, repairs: 2, delivered: 2, skippedByCap: 3, capReached: true });
    expect(capped.report.counts.charge_undelivered).to.deep.equal({ found: 5, repaired: 2 });
    expect(capped.report.totals.needsPerson).to.equal(3);
    expect(capped.report.drift.filter((d) => !d.repaired).every((d) => d.error!.includes("RECONCILE_MAX_PAYMENT_REPAIRS"))).to.equal(true);
    expect(formatSummary(capped.report)).to.contain("PAYMENT REPAIR CAP REACHED: 2 order(s) repaired, 3 more left alone (cap 2, RECONCILE_MAX_PAYMENT_REPAIRS)");
    expect(await paid()).to.equal(2);
    expect(await metric(metrics, "reconciler_payment_repair_cap_reached")).to.equal(1);
    expect(await metric(metrics, "reconciler_payment_repairs_total", { result: "delivered" })).to.equal(2);
    expect(await metric(metrics, "reconciler_payment_repairs_total", { result: "skipped_cap" })).to.equal(3);
    expect(await metric(metrics, "reconciler_drift_found", { kind: "charge_undelivered" })).to.equal(5);

    // The next run (same state: it looks at what the last one left open) with room for the rest.
    const rest = await runRecorded(metrics, () => sys.reconcile({ maxPaymentRepairs: 3 }, { maxPaymentRepairs: 2, stateFile }));
    expect(rest.report.exitCode, JSON.stringify(rest.report.drift)).to.equal(1);
    expect(rest.report.payments).to.include({ repairs: 3, delivered: 3, capReached: false });
    expect(await paid()).to.equal(5);
    expect(await metric(metrics, "reconciler_payment_repair_cap_reached")).to.equal(0);
  });
});

describe("reconciler: payments with the payment service unreachable", function () {
  this.timeout(60_000);
  const sys = new PaymentSystem();
  before(() => sys.start({ paymentRelay: false }));
  after(() => sys.stop());

  it("fails the run naming the payment service and its setting, and keeps the window where it was", async () => {
    const stateFile = path.join(sys.dir, "down-state.json");
    const { report } = await sys.reconcile({ full: false }, { paymentServiceUrl: "http://127.0.0.1:1", callTimeoutMs: 2_000, stateFile });
    expect(report).to.include({ outcome: "failed", exitCode: 2 });
    expect(report.error).to.match(/^ListOrderPayments on the payment service at http:\/\/127\.0\.0\.1:1 failed: Unavailable: .*\(is it running and reachable\?\)$/);
    expect(existsSync(stateFile)).to.equal(false);
    // Off, the same run has nothing to say about payments and finishes.
    const off = await sys.reconcile({ full: false }, { payments: false, paymentServiceUrl: "http://127.0.0.1:1", stateFile });
    expect(off.report).to.include({ outcome: "clean", exitCode: 0 });
    expect(off.report.payments.checked).to.equal(false);
  });
});

describe("reconciler: payment drift that needs a person", function () {
  this.timeout(90_000);
  const sys = new PaymentSystem();
  before(async () => {
    await sys.start({ paymentRelay: false });
    await sys.fund(RICH, 10_000_000n);
  });
  after(() => sys.stop());

  it("reports a debit for a failed order, a debit for an unknown order and a debit of another amount, alerts, and changes nothing", async () => {
    // The order's payment says refused, the payment service debited it.
    const failed = await deliverCharge(sys, await sys.paidOrder(RICH, 8_000n));
    await sys.orderDb.sql(`UPDATE orders SET status = 'PAYMENT_FAILED', payment_status = 'REFUSED', payment_reason = 'INSUFFICIENT_FUNDS' WHERE id = '${failed.id}'`);
    // A debit for an order the order service never had.
    const ghost = rowId("ghost");
    await sys.payments.chargeOrder({ orderId: ghost, customerId: RICH, amountCents: 1_500n, currency: "EUR" });
    // A debit of another amount than the order's total.
    const short = rowId("short");
    await insertAwaitingOrder(sys, short, 5_000);
    await sys.payments.chargeOrder({ orderId: short, customerId: RICH, amountCents: 4_000n, currency: "EUR" });

    const before = await sys.dump();
    const metrics = new ReconcilerMetrics({ processMetrics: false });
    const { report } = await runRecorded(metrics, () => sys.reconcile());
    expect(report.exitCode).to.equal(2);
    expect(report.counts.payment_conflict).to.deep.equal({ found: 1, repaired: 0 });
    expect(report.counts.charge_without_order).to.deep.equal({ found: 1, repaired: 0 });
    expect(report.counts.payment_mismatch).to.deep.equal({ found: 1, repaired: 0 });
    expect(report.ids.payment_conflict).to.deep.equal([failed.id]);
    expect(report.ids.charge_without_order).to.deep.equal([ghost]);
    expect(report.ids.payment_mismatch).to.deep.equal([short]);
    expect(report.totals).to.include({ found: 3, repaired: 0, needsPerson: 3 });
    expect(report.payments).to.include({ repairs: 0, delivered: 0, requeued: 0 });
    expect(report.drift.find((d) => d.orderId === failed.id)!.detail).to.contain("debited for a failed order");
    expect(report.drift.find((d) => d.orderId === short)!.detail).to.contain("the charge is 40.00 EUR, the order's total 50.00 EUR");
    expect(await metric(metrics, "reconciler_drift_needs_person")).to.equal(3);
    expect(await sys.dump()).to.equal(before);

    // A later run finds the same, still without touching anything.
    const again = await sys.reconcile();
    expect(again.report.totals).to.include({ found: 3, needsPerson: 3 });
    expect(await sys.dump()).to.equal(before);
  });
});
