import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { expect } from "chai";
import { OrderStatus, SentBy, ShippingStatus, type Order } from "@shop/sdk/order";
import { ShipmentStatus } from "@shop/sdk/delivery";
import { roleToken } from "@shop/testkit/auth";
import { checkLedger } from "../../scripts/check-ledger.js";
import { ReconcilerMetrics, runRecorded } from "../src/metrics.js";
import { formatSummary } from "../src/report.js";
import { ShippingSystem } from "./shipping-system.js";

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

/** An order id as the order service makes them (26 characters), for rows written straight into a database. */
const rowId = (tag: string) => `01SHP${tag.toUpperCase().padEnd(8, "X").slice(0, 8)}${randomUUID().replace(/-/g, "").slice(0, 13).toUpperCase()}`;

async function metric(metrics: ReconcilerMetrics, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const { values } = await metrics.registry.getSingleMetric(name)!.get();
  return values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value;
}

/** An order awaiting its shipment written straight into the order database, as a lost shipment request leaves it: no shipment_outbox row. */
async function insertRequestedOrder(sys: ShippingSystem, id: string, totalCents = 2_500): Promise<void> {
  await sys.orderDb.sql(
    `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, shipping_status, shipping_requested_at)
     VALUES ('${id}', 'cust-ship', ${totalCents}, 'EUR', 'PENDING', 'req-${id}', NOW(3) - INTERVAL 1 MINUTE, NOW(3) - INTERVAL 1 MINUTE,
             'REQUESTED', NOW(3) - INTERVAL 1 MINUTE)`,
  );
}

const state = (o: Order) => [OrderStatus[o.status], ShippingStatus[o.shipping!.status], SentBy[o.sentBy]];

describe("reconciler: shipping drift, against the order, voucher and delivery services", function () {
  this.timeout(90_000);
  const sys = new ShippingSystem();
  before(() => sys.start({ deliveryRelay: false }));
  after(() => sys.stop());

  afterEach(async function () {
    if (this.currentTest?.state !== "passed") return;
    // Each test leaves no shipping drift behind for the next one to find.
    const { report } = await sys.reconcile({ maxShippingRepairs: 1000 });
    expect(report.totals.found, JSON.stringify(report.drift)).to.equal(0);
  });

  it("delivers shipped, delivered and declined shipments the orders never learned of (a dry run changes nothing); the delivery relay's own later delivery is a replay; the ledger agrees", async () => {
    const [a, b, c] = [await sys.releasedOrder(2_100n), await sys.releasedOrder(2_200n), await sys.releasedOrder(2_300n)];
    await sys.shipments([a.id, b.id, c.id]);
    await sys.carrier.markShipmentShipped({ orderId: a.id, trackingNumber: "TRK-A" });
    await sys.carrier.markShipmentDelivered({ orderId: b.id });
    await sys.carrier.declineShipment({ orderId: c.id, reason: "NO_CAPACITY" });
    expect(state(await sys.order(a.id))).to.deep.equal(["PENDING", "REQUESTED", "UNSPECIFIED"]);

    const before = await sys.dump();
    const dry = await sys.reconcile({ dryRun: true });
    expect(dry.report.counts.shipment_event_undelivered).to.deep.equal({ found: 3, repaired: 0 });
    expect(dry.report.ids.shipment_event_undelivered).to.have.members([a.id, b.id, c.id]);
    expect(dry.report.shipping).to.include({ checked: true, repairs: 3, delivered: 0 });
    expect(await sys.dump()).to.equal(before);

    const run = await sys.reconcile();
    expect(run.report.exitCode, JSON.stringify(run.report.drift)).to.equal(1);
    expect(run.report.counts.shipment_event_undelivered).to.deep.equal({ found: 3, repaired: 3 });
    expect(run.report.shipping).to.include({ delivered: 3, requeued: 0, capReached: false });
    expect(run.report.totals.found).to.equal(3);
    expect(state(await sys.order(a.id))).to.deep.equal(["SENT", "SHIPPED", "SHIPMENT"]);
    expect(state(await sys.order(b.id))).to.deep.equal(["DELIVERED", "DELIVERED", "SHIPMENT"]);
    expect(state(await sys.order(c.id))).to.deep.equal(["CANCELLED", "DECLINED", "UNSPECIFIED"]);
    expect((await sys.order(c.id)).shipping!.declineReason).to.equal("NO_CAPACITY");
    // Taken in through the order's inbox under the delivery service's own keys, SHIPPED before DELIVERED.
    const keys = (await sys.orderDb.sql("SELECT message_key FROM inbox WHERE message_key LIKE 'shipment-event:%' ORDER BY message_key")).trim().split("\n");
    expect(keys).to.have.members([
      `shipment-event:shipment:${a.id}:SHIPPED`,
      `shipment-event:shipment:${b.id}:SHIPPED`,
      `shipment-event:shipment:${b.id}:DELIVERED`,
      `shipment-event:shipment:${c.id}:DECLINED`,
    ]);

    // The delivery relay comes back and delivers the same four events: replays, the orders do not change.
    const orders = await sys.orderDb.sql("SELECT * FROM orders ORDER BY id");
    await sys.setDeliveryRelay(true);
    await sys.until("the delivery relay to deliver its outbox", () => sys.count(sys.deliveryDb, "shipment_event_outbox", "status <> 'delivered'"), (n) => n === 0);
    await sys.setDeliveryRelay(false);
    expect(await sys.orderDb.sql("SELECT * FROM orders ORDER BY id")).to.equal(orders);

    const ledger = await checkLedger({ orderDatabaseUrl: sys.orderDb.url, voucherDatabaseUrl: sys.voucherDb.url, deliveryDatabaseUrl: sys.deliveryDb.url });
    const s = ledger.results.filter((r) => r.id.startsWith("S"));
    expect(s.map((r) => r.verdict), JSON.stringify(s)).to.deep.equal(["PASS", "PASS", "PASS", "PASS", "PASS", "PASS", "PASS"]);
  });

  it("delivers DELIVERED to an order that learned only that its shipment shipped", async () => {
    const o = await sys.releasedOrder();
    await sys.shipments([o.id]);
    await sys.carrier.markShipmentShipped({ orderId: o.id });
    expect((await sys.reconcile()).report.counts.shipment_event_undelivered).to.deep.equal({ found: 1, repaired: 1 });
    expect(state(await sys.order(o.id))).to.deep.equal(["SENT", "SHIPPED", "SHIPMENT"]);
    await sys.carrier.markShipmentDelivered({ orderId: o.id });
    const run = await sys.reconcile();
    expect(run.report.counts.shipment_event_undelivered).to.deep.equal({ found: 1, repaired: 1 });
    expect(run.report.drift[0]!.detail).to.contain("has not learned it arrived");
    expect(state(await sys.order(o.id))).to.deep.equal(["DELIVERED", "DELIVERED", "SHIPMENT"]);
  });

  it("requeues a shipment request that went missing or died, and the order relay creates the shipment", async () => {
    const lost = rowId("lost");
    const dead = rowId("dead");
    await insertRequestedOrder(sys, lost, 2_600);
    await insertRequestedOrder(sys, dead, 2_700);
    await sys.orderDb.sql(
      `INSERT INTO shipment_outbox (message_key, order_id, customer_id, total_cents, currency, carrier, status, attempts, next_attempt_at, last_error, created_at)
       VALUES ('shipment:${dead}', '${dead}', 'cust-ship', 2700, 'EUR', '', 'dead', 7, NOW(3), 'UNAVAILABLE: injected', NOW(3) - INTERVAL 1 MINUTE)`,
    );

    const dry = await sys.reconcile({ dryRun: true });
    expect(dry.report.counts.shipment_missing).to.deep.equal({ found: 2, repaired: 0 });
    const run = await sys.reconcile();
    expect(run.report.exitCode, JSON.stringify(run.report.drift)).to.equal(1);
    expect(run.report.counts.shipment_missing).to.deep.equal({ found: 2, repaired: 2 });
    expect(run.report.ids.shipment_missing).to.have.members([lost, dead]);
    expect(run.report.shipping).to.include({ requeued: 2, delivered: 0 });
    const shipments = await sys.shipments([lost, dead]);
    expect(shipments.get(lost)).to.deep.include({ customerId: "cust-ship", totalCents: 2_600n, status: ShipmentStatus.CREATED, carrier: "manual" });
    expect(shipments.get(dead)!.totalCents).to.equal(2_700n);
  });

  it("says so when the shipment request it would requeue is still on its way (pending, the relay retrying it)", async () => {
    const waiting = rowId("waiting");
    await insertRequestedOrder(sys, waiting, 2_800);
    await sys.orderDb.sql(
      `INSERT INTO shipment_outbox (message_key, order_id, customer_id, total_cents, currency, carrier, status, attempts, next_attempt_at, last_error, created_at)
       VALUES ('shipment:${waiting}', '${waiting}', 'cust-ship', 2800, 'EUR', '', 'pending', 4, NOW(3) + INTERVAL 1 DAY, 'UNAVAILABLE: injected', NOW(3) - INTERVAL 1 MINUTE)`,
    );
    const { report } = await sys.reconcile();
    expect(report.counts.shipment_missing).to.deep.equal({ found: 1, repaired: 1 });
    expect(report.shipping).to.include({ requeued: 0 });
    expect(report.drift[0]!.detail).to.contain("already on its way (pending), the relay is still trying");

    // The retry comes due: the relay creates the shipment, and the next run finds nothing.
    await sys.orderDb.sql(`UPDATE shipment_outbox SET next_attempt_at = NOW(3) WHERE order_id = '${waiting}'`);
    await sys.shipments([waiting]);
  });

  it("runs as the reconcile command with RECONCILE_SHIPPING on: --max-shipping-repairs caps the run and exits 2, the next run exits 1", async () => {
    const [a, b] = [await sys.releasedOrder(), await sys.releasedOrder()];
    await sys.shipments([a.id, b.id]);
    for (const o of [a, b]) await sys.carrier.markShipmentShipped({ orderId: o.id });
    const env = {
      ORDER_SERVICE_URL: sys.orderUrl,
      VOUCHER_SERVICE_URL: sys.config.voucherServiceUrl,
      DELIVERY_SERVICE_URL: sys.deliveryUrl,
      RECONCILE_SHIPPING: "true",
      RECONCILE_GRACE_MS: "0",
      RECONCILE_STATE_FILE: path.join(sys.dir, "cli-state.json"),
      RECONCILE_REPORT_DIR: path.join(sys.dir, "cli-reports"),
      RECONCILE_TOKEN: roleToken("reconciler"),
    };
    const capped = await reconcileCommand(["--once", "--json", "--full", "--max-shipping-repairs", "1"], env);
    expect(capped.code, capped.stderr).to.equal(2);
    const report = JSON.parse(capped.stdout);
    expect(report.shipping).to.include({ checked: true, cap: 1, repairs: 1, delivered: 1, skippedByCap: 1, capReached: true });
    expect(report.counts.shipment_event_undelivered).to.deep.equal({ found: 2, repaired: 1 });

    const rest = await reconcileCommand(["--once", "--full"], env);
    expect(rest.code, rest.stderr).to.equal(1);
    expect(rest.stdout).to.contain("shipment_event_undelivered").and.contain("shipping repairs: 1 of at most 10: 1 order(s) moved by their shipment's events");
    expect((await sys.order(a.id)).status).to.equal(OrderStatus.SENT);
    expect((await sys.order(b.id)).status).to.equal(OrderStatus.SENT);
  });

  it("stops repairing shipping at RECONCILE_MAX_SHIPPING_REPAIRS, exits 2 and says so; the next run repairs the rest", async () => {
    const orders: Order[] = [];
    for (let i = 0; i < 5; i++) orders.push(await sys.releasedOrder(2_000n + BigInt(i)));
    await sys.shipments(orders.map((o) => o.id));
    for (const o of orders) await sys.carrier.markShipmentShipped({ orderId: o.id });
    const stateFile = path.join(sys.dir, `cap-state-${randomUUID()}.json`);
    const sent = () => sys.count(sys.orderDb, "orders", `status = 'SENT' AND id IN (${orders.map((o) => `'${o.id}'`).join(",")})`);

    const none = await sys.reconcile({}, { maxShippingRepairs: 0 });
    expect(none.report.shipping).to.include({ repairs: 0, skippedByCap: 5, capReached: true });
    expect(await sent()).to.equal(0);

    const metrics = new ReconcilerMetrics({ processMetrics: false });
    const capped = await runRecorded(metrics, () => sys.reconcile({}, { maxShippingRepairs: 2, stateFile }));
    expect(capped.report.exitCode).to.equal(2);
    expect(capped.report.outcome).to.equal("unrepaired");
    expect(capped.report.shipping).to.include({ cap: 2, repairs: 2, delivered: 2, skippedByCap: 3, capReached: true });
    expect(capped.report.counts.shipment_event_undelivered).to.deep.equal({ found: 5, repaired: 2 });
    expect(capped.report.totals.needsPerson).to.equal(3);
    expect(capped.report.drift.filter((d) => !d.repaired).every((d) => d.error!.includes("RECONCILE_MAX_SHIPPING_REPAIRS"))).to.equal(true);
    expect(formatSummary(capped.report)).to.contain("SHIPPING REPAIR CAP REACHED: 2 order(s) repaired, 3 more left alone (cap 2, RECONCILE_MAX_SHIPPING_REPAIRS)");
    expect(await sent()).to.equal(2);
    expect(await metric(metrics, "reconciler_shipping_repair_cap_reached")).to.equal(1);
    expect(await metric(metrics, "reconciler_shipping_repairs_total", { result: "delivered" })).to.equal(2);
    expect(await metric(metrics, "reconciler_shipping_repairs_total", { result: "skipped_cap" })).to.equal(3);
    expect(await metric(metrics, "reconciler_drift_found", { kind: "shipment_event_undelivered" })).to.equal(5);

    // The next run (same state: it looks at what the last one left open) with room for the rest.
    const rest = await runRecorded(metrics, () => sys.reconcile({ maxShippingRepairs: 3 }, { maxShippingRepairs: 2, stateFile }));
    expect(rest.report.exitCode, JSON.stringify(rest.report.drift)).to.equal(1);
    expect(rest.report.shipping).to.include({ repairs: 3, delivered: 3, capReached: false });
    expect(await sent()).to.equal(5);
    expect(await metric(metrics, "reconciler_shipping_repair_cap_reached")).to.equal(0);
  });
});

describe("reconciler: shipping with the delivery service unreachable", function () {
  this.timeout(60_000);
  const sys = new ShippingSystem();
  before(() => sys.start({ deliveryRelay: false }));
  after(() => sys.stop());

  it("fails the run naming the delivery service and its address, and keeps the window where it was; off, the same run is clean", async () => {
    const stateFile = path.join(sys.dir, "down-state.json");
    const { report } = await sys.reconcile({ full: false }, { deliveryServiceUrl: "http://127.0.0.1:1", callTimeoutMs: 2_000, stateFile });
    expect(report).to.include({ outcome: "failed", exitCode: 2 });
    expect(report.error).to.match(/^(ListShipments|BatchGetShipments) on the delivery service at http:\/\/127\.0\.0\.1:1 failed: Unavailable: .*\(is it running and reachable\?\)$/);
    expect(existsSync(stateFile)).to.equal(false);
    const off = await sys.reconcile({ full: false }, { shipping: false, deliveryServiceUrl: "http://127.0.0.1:1", stateFile });
    expect(off.report).to.include({ outcome: "clean", exitCode: 0 });
    expect(off.report.shipping.checked).to.equal(false);
    expect(formatSummary(off.report)).to.contain("shipping: not checked (RECONCILE_SHIPPING is off)");
  });
});

describe("reconciler: shipping drift that needs a person", function () {
  this.timeout(90_000);
  const sys = new ShippingSystem();
  before(() => sys.start({ deliveryRelay: false }));
  after(() => sys.stop());

  it("reports a shipment of an unknown order, of an order sent by hand, and of another total, alerts, and changes nothing", async () => {
    // A shipment for an order the order service never had.
    const ghost = rowId("ghost");
    await sys.deliveries.createShipment({ orderId: ghost, customerId: "cust-ship", totalCents: 1_500n, currency: "EUR" });
    // An order the shop sent by hand, shipped by the carrier too.
    const { order: hand } = await sys.orders.createOrder({ customerId: "cust-ship", totalCents: 1_600n, currency: "EUR", requestId: randomUUID() });
    await sys.orders.markOrderSent({ orderId: hand!.id });
    await sys.deliveries.createShipment({ orderId: hand!.id, customerId: "cust-ship", totalCents: 1_600n, currency: "EUR" });
    await sys.carrier.markShipmentShipped({ orderId: hand!.id });
    // A shipment whose total is not its order's (written by hand into the delivery database).
    const short = await sys.releasedOrder(1_700n);
    await sys.shipments([short.id]);
    await sys.deliveryDb.sql(`UPDATE shipments SET total_cents = 1600 WHERE order_id = '${short.id}'`);
    await sys.carrier.markShipmentShipped({ orderId: short.id });

    const before = await sys.dump();
    const metrics = new ReconcilerMetrics({ processMetrics: false });
    const { report } = await runRecorded(metrics, () => sys.reconcile());
    expect(report.exitCode).to.equal(2);
    expect(report.counts.shipment_without_order).to.deep.equal({ found: 2, repaired: 0 });
    expect(report.counts.shipment_mismatch).to.deep.equal({ found: 1, repaired: 0 });
    expect(report.ids.shipment_without_order).to.have.members([ghost, hand!.id]);
    expect(report.ids.shipment_mismatch).to.deep.equal([short.id]);
    expect(report.totals).to.include({ found: 3, repaired: 0, needsPerson: 3 });
    expect(report.shipping).to.include({ repairs: 0, delivered: 0, requeued: 0 });
    expect(report.drift.find((d) => d.orderId === ghost)!.detail).to.contain("which the order service does not know");
    expect(report.drift.find((d) => d.orderId === hand!.id)!.detail).to.contain("sent by hand and shipped by the carrier too");
    expect(report.drift.find((d) => d.orderId === short.id)!.detail).to.contain("the shipment records a total of 16.00 EUR, the order's is 17.00 EUR");
    expect(await metric(metrics, "reconciler_drift_needs_person")).to.equal(3);
    expect(await metric(metrics, "reconciler_drift_found", { kind: "shipment_without_order" })).to.equal(2);
    expect(await sys.dump()).to.equal(before);

    // A later run finds the same, still without touching anything.
    const again = await sys.reconcile();
    expect(again.report.totals).to.include({ found: 3, needsPerson: 3 });
    expect(await sys.dump()).to.equal(before);
  });
});
