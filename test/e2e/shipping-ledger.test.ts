import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { expect } from "chai";
import { createPool, type Pool } from "@shop/platform/db";
import { createLogger } from "@shop/platform/logger";
import { migrateOrderDatabase } from "@shop/order-service/db/migrate";
import { migrateVoucherDatabase } from "@shop/voucher-service/db/migrate";
import { migrateDeliveryDatabase } from "@shop/delivery-service/db/migrate";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { checkLedger, type LedgerOptions, type LedgerResult } from "../../scripts/check-ledger.js";

const root = path.resolve(import.meta.dirname, "../..");
const shippingVerdicts = (r: LedgerResult) => Object.fromEntries(r.results.filter((x) => x.id.startsWith("S")).map((x) => [x.id, x.verdict]));
const of = (r: LedgerResult, id: string) => r.results.find((x) => x.id === id)!;
const ALL_PASS = { S1: "PASS", S2: "PASS", S3: "PASS", S4: "PASS", S5: "PASS", S6: "PASS", S7: "PASS" };

type ShipmentStatus = "CREATED" | "CONFIRMED" | "SHIPPED" | "DELIVERED" | "DECLINED";
const PATHS: Record<ShipmentStatus, ShipmentStatus[]> = {
  CREATED: ["CREATED"],
  CONFIRMED: ["CREATED", "CONFIRMED"],
  SHIPPED: ["CREATED", "CONFIRMED", "SHIPPED"],
  DELIVERED: ["CREATED", "CONFIRMED", "SHIPPED", "DELIVERED"],
  DECLINED: ["CREATED", "DECLINED"],
};
const AT: Partial<Record<ShipmentStatus, string>> = { CONFIRMED: "confirmed_at", SHIPPED: "shipped_at", DELIVERED: "delivered_at", DECLINED: "declined_at" };
const ORDER_OF: Record<ShipmentStatus, { status: string; shipping: string }> = {
  CREATED: { status: "PAID", shipping: "REQUESTED" },
  CONFIRMED: { status: "PENDING", shipping: "REQUESTED" },
  SHIPPED: { status: "SENT", shipping: "SHIPPED" },
  DELIVERED: { status: "DELIVERED", shipping: "DELIVERED" },
  DECLINED: { status: "CANCELLED", shipping: "DECLINED" },
};

/**
 * check:ledger's shipping invariants (S1–S7) on databases with the real
 * schemas (the order and delivery services' migrations), filled by hand with
 * a sound history and then broken one way at a time: each break is found by
 * the invariant meant to find it, naming the order, and a live system's
 * requests and events in flight are not violations.
 */
describe("check:ledger's shipping invariants on hand-made histories", function () {
  this.timeout(60_000);
  let orderDb: TestDatabase;
  let voucherDb: TestDatabase;
  let deliveryDb: TestDatabase;
  let pools: Pool[] = [];
  let ledger: LedgerOptions;
  let seq = 0;

  before(async () => {
    [orderDb, voucherDb, deliveryDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher"), freshDatabase("voucher")]);
    const logger = createLogger("shipping-ledger-test");
    logger.level = "warn";
    const [o, v, d] = [orderDb, voucherDb, deliveryDb].map((db) => createPool({ url: db.url, connectionLimit: 2 }));
    pools = [o!, v!, d!];
    await Promise.all([migrateOrderDatabase(o!, logger), migrateVoucherDatabase(v!, logger), migrateDeliveryDatabase(d!, logger)]);
    ledger = { orderDatabaseUrl: orderDb.url, voucherDatabaseUrl: voucherDb.url, deliveryDatabaseUrl: deliveryDb.url };
  });
  after(async () => {
    await Promise.allSettled(pools.map((p) => p.end()));
    await Promise.allSettled([orderDb?.drop(), voucherDb?.drop(), deliveryDb?.drop()]);
  });
  beforeEach(async () => {
    await orderDb.sql("DELETE FROM orders; DELETE FROM shipment_outbox; DELETE FROM inbox; DELETE FROM voucher_outbox");
    await deliveryDb.sql("DELETE FROM shipments; DELETE FROM shipment_transitions; DELETE FROM shipment_event_outbox");
  });

  const id = (p: string) => `${p}${String(++seq).padStart(25 - p.length, "0")}`.slice(0, 26);

  /** An order without payment (so no voucher or payment invariant is involved: totals stay under the voucher threshold). */
  async function order(o: { id: string; status: string; shipping: string; sentBy?: string | null; total?: number; customer?: string; payment?: string }): Promise<void> {
    const sent = ["SENT", "DELIVERED"].includes(o.status);
    const sentBy = o.sentBy === undefined ? (sent ? (o.shipping === "NONE" ? "HAND" : "SHIPMENT") : null) : o.sentBy;
    await orderDb.sql(
      `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, sent_at, payment_method, payment_status,
                           shipping_status, shipping_requested_at, sent_by)
       VALUES ('${o.id}', '${o.customer ?? "sl-c1"}', ${o.total ?? 2_000}, 'EUR', '${o.status}', '${o.id}', NOW(3) - INTERVAL 10 MINUTE, NOW(3),
               ${sent ? "NOW(3)" : "NULL"}, '${o.payment ? "ACCOUNT" : "NONE"}', '${o.payment ?? "NONE"}', '${o.shipping}',
               ${o.shipping === "NONE" ? "NULL" : "NOW(3) - INTERVAL 9 MINUTE"}, ${sentBy ? `'${sentBy}'` : "NULL"})`,
    );
  }
  async function request(orderId: string, status = "delivered", ageSeconds = 540): Promise<void> {
    await orderDb.sql(
      `INSERT INTO shipment_outbox (message_key, order_id, customer_id, total_cents, currency, carrier, status, next_attempt_at, created_at)
       VALUES ('shipment:${orderId}', '${orderId}', 'sl-c1', 2000, 'EUR', '', '${status}', NOW(3), NOW(3) - INTERVAL ${ageSeconds} SECOND)`,
    );
  }
  async function takenIn(orderId: string, event: string): Promise<void> {
    await orderDb.sql(`INSERT INTO inbox (message_key, facts, outcome, received_at) VALUES ('shipment-event:shipment:${orderId}:${event}', '{}', '{}', NOW(3))`);
  }
  /** The shipment with its transitions along `path`, its times, and one event row per event reached (delivered unless told). */
  async function shipment(
    orderId: string,
    status: ShipmentStatus,
    o: { path?: ShipmentStatus[]; total?: number; customer?: string; eventStatus?: string; eventAgeSeconds?: number } = {},
  ): Promise<string> {
    const sid = id("S");
    const path = o.path ?? PATHS[status];
    const times = path.filter((s) => AT[s]).map((s) => `${AT[s]} = NOW(3)`);
    await deliveryDb.sql(
      `INSERT INTO shipments (id, order_id, customer_id, total_cents, currency, carrier, status, created_at, updated_at, carrier_work)
       VALUES ('${sid}', '${orderId}', '${o.customer ?? "sl-c1"}', ${o.total ?? 2_000}, 'EUR', 'delayed', '${status}', NOW(3), NOW(3),
               '${["DELIVERED", "DECLINED"].includes(status) ? "DONE" : "TRACKING"}')`,
    );
    if (times.length) await deliveryDb.sql(`UPDATE shipments SET ${times.join(", ")} WHERE id = '${sid}'`);
    let from: string | null = null;
    for (const to of path) {
      await deliveryDb.sql(
        `INSERT INTO shipment_transitions (shipment_id, order_id, from_status, to_status, at, source) VALUES ('${sid}', '${orderId}', ${from ? `'${from}'` : "NULL"}, '${to}', NOW(3), 'test')`,
      );
      from = to;
    }
    for (const event of path.filter((s) => s === "SHIPPED" || s === "DELIVERED" || s === "DECLINED")) await eventRow(orderId, sid, event, o.eventStatus, o.eventAgeSeconds);
    return sid;
  }
  async function eventRow(orderId: string, sid: string, event: string, status = "delivered", ageSeconds = 300): Promise<void> {
    await deliveryDb.sql(
      `INSERT INTO shipment_event_outbox (message_key, order_id, shipment_id, event, carrier, occurred_at, status, next_attempt_at, created_at, delivered_at)
       VALUES ('shipment:${orderId}:${event}', '${orderId}', '${sid}', '${event}', 'delayed', NOW(3), '${status}', NOW(3), NOW(3) - INTERVAL ${ageSeconds} SECOND,
               ${status === "delivered" ? "NOW(3)" : "NULL"})`,
    );
  }
  /** An order in shipping agreeing with its shipment in `status`, its request delivered and its events taken in. */
  async function shippedOrder(status: ShipmentStatus, extra: { payment?: string } = {}): Promise<{ orderId: string; shipmentId: string }> {
    const orderId = id("O");
    await order({ id: orderId, ...ORDER_OF[status], ...extra });
    await request(orderId);
    const shipmentId = await shipment(orderId, status);
    for (const e of PATHS[status].filter((s) => s === "SHIPPED" || s === "DELIVERED" || s === "DECLINED")) await takenIn(orderId, e);
    return { orderId, shipmentId };
  }

  /**
   * A sound history: an order at every stage of shipping (a declined one
   * confirmed first, a charged declined one refunded), one delivered whose
   * SHIPPED event row retention removed, and orders the shop ships by hand
   * (one sent before sent_by existed).
   */
  async function soundHistory(): Promise<Record<string, string>> {
    const ids: Record<string, string> = {};
    for (const s of ["CREATED", "CONFIRMED", "SHIPPED", "DELIVERED", "DECLINED"] as const) ids[s] = (await shippedOrder(s)).orderId;
    const confirmedDecline = id("O");
    await order({ id: confirmedDecline, status: "CANCELLED", shipping: "DECLINED", payment: "REFUNDED" });
    await request(confirmedDecline);
    await shipment(confirmedDecline, "DECLINED", { path: ["CREATED", "CONFIRMED", "DECLINED"] });
    await takenIn(confirmedDecline, "DECLINED");
    await deliveryDb.sql(`DELETE FROM shipment_event_outbox WHERE message_key = 'shipment:${ids.DELIVERED}:SHIPPED'`);
    const [hand, handOld, pending] = [id("O"), id("O"), id("O")];
    await order({ id: hand, status: "SENT", shipping: "NONE" });
    await order({ id: handOld, status: "DELIVERED", shipping: "NONE", sentBy: null });
    await order({ id: pending, status: "PENDING", shipping: "NONE" });
    return { ...ids, hand };
  }

  it("passes S1–S7 on a sound history, live or drained, and skips them (saying why) without the delivery database", async () => {
    await soundHistory();
    const r = await checkLedger(ledger);
    expect(shippingVerdicts(r), JSON.stringify(r.results.filter((x) => x.id.startsWith("S")))).to.deep.equal(ALL_PASS);
    expect(of(r, "S1").counts).to.include({ "orders in shipping": 6, shipments: 6 });
    expect(of(r, "S4").counts).to.include({ "sent by shipment": 2, "sent by hand": 2 });
    expect(of(r, "S6").counts).to.include({ "events reached": 5, "event rows": 4, "delivered and cleaned up": 1 });
    expect(shippingVerdicts(await checkLedger({ ...ledger, drained: false }))).to.deep.equal(ALL_PASS);

    const without = await checkLedger({ ...ledger, deliveryDatabaseUrl: undefined });
    expect(shippingVerdicts(without)).to.deep.equal({ S1: "SKIP", S2: "SKIP", S3: "SKIP", S4: "SKIP", S5: "SKIP", S6: "SKIP", S7: "SKIP" });
    expect(of(without, "S1").detail).to.equal("no delivery database given (--delivery-db, DELIVERY_DATABASE_URL); 6 orders in shipping unchecked");
  });

  it("S1: an order in shipping without its shipment (request lost, or still pending after drain) or with a shipment of other facts; a pending request is in flight live, a dead one is S7's", async () => {
    await soundHistory();
    const [lost, pending, dead, wrongTotal, wrongCustomer] = [id("O"), id("O"), id("O"), id("O"), id("O")];
    for (const o of [lost, pending, dead, wrongTotal, wrongCustomer]) await order({ id: o, status: "PAID", shipping: "REQUESTED" });
    await request(pending, "pending", 1);
    await request(dead, "dead");
    await request(wrongTotal);
    await shipment(wrongTotal, "CREATED", { total: 2_001 });
    await request(wrongCustomer);
    await shipment(wrongCustomer, "CREATED", { customer: "sl-other" });

    const settled = await checkLedger(ledger);
    expect(shippingVerdicts(settled)).to.deep.equal({ ...ALL_PASS, S1: "FAIL" });
    const detail = of(settled, "S1").detail!;
    expect(detail).to.contain(`order ${lost}: shipping REQUESTED, no shipment, its request row is missing`);
    expect(detail).to.contain(`order ${pending}: shipping REQUESTED, no shipment, its request still pending after drain`);
    expect(detail).to.contain(`order ${wrongTotal}: its shipment`).and.contain("total 2001 EUR, the order's 2000 EUR");
    expect(detail).to.contain(`order ${wrongCustomer}: its shipment`).and.contain('customer "sl-other", the order\'s "sl-c1"');
    expect(detail).to.not.contain(dead);
    expect(of(settled, "S1").counts).to.include({ "request dead (S7)": 1, violations: 4 });
    expect(of(settled, "S7").detail).to.contain(`order ${dead}: shipment request dead`);

    const live = await checkLedger({ ...ledger, drained: false });
    expect(of(live, "S1").detail).to.not.contain(pending);
    expect(of(live, "S1").counts).to.include({ "request in flight": 1, violations: 3 });

    // Found and put right: the check passes again.
    await deliveryDb.sql(`DELETE FROM shipments WHERE order_id IN ('${wrongTotal}', '${wrongCustomer}')`);
    await deliveryDb.sql(`DELETE FROM shipment_transitions WHERE order_id IN ('${wrongTotal}', '${wrongCustomer}')`);
    await orderDb.sql(`UPDATE orders SET shipping_status = 'NONE', shipping_requested_at = NULL WHERE id IN ('${lost}', '${pending}', '${wrongTotal}', '${wrongCustomer}')`);
    await orderDb.sql(`DELETE FROM shipment_outbox WHERE order_id IN ('${pending}', '${wrongTotal}', '${wrongCustomer}')`);
    expect(shippingVerdicts(await checkLedger(ledger))).to.deep.equal(ALL_PASS);
  });

  it("S2: a shipment of an order not in shipping, or of an order that does not exist", async () => {
    await soundHistory();
    const notInShipping = id("O");
    await order({ id: notInShipping, status: "PAID", shipping: "NONE" });
    await shipment(notInShipping, "CREATED");
    const ghost = id("O");
    await shipment(ghost, "CONFIRMED");
    const r = await checkLedger(ledger);
    expect(shippingVerdicts(r)).to.deep.equal({ ...ALL_PASS, S2: "FAIL" });
    expect(of(r, "S2").detail).to.contain(`order ${notInShipping}: shipment`).and.contain("but the order is not in shipping (PAID, sent by nobody)");
    expect(of(r, "S2").detail).to.contain(`order ${ghost}: shipment`).and.contain("of an order the order database does not have");
    expect(of(r, "S2").counts).to.include({ "without an order in shipping": 2 });
  });

  it("S3: an order behind its shipment fails once drained and is in flight live; one ahead of it, or whose status contradicts its shipping, fails live too", async () => {
    await soundHistory();
    // Behind: the shipment shipped, the order has not taken SHIPPED in.
    const behind = id("O");
    await order({ id: behind, status: "PAID", shipping: "REQUESTED" });
    await request(behind);
    await shipment(behind, "SHIPPED");
    const settled = await checkLedger(ledger);
    expect(shippingVerdicts(settled)).to.deep.equal({ ...ALL_PASS, S3: "FAIL" });
    expect(of(settled, "S3").detail).to.equal(`order ${behind}: PAID, shipping REQUESTED, its shipment ${await shipmentId(behind)} is SHIPPED (an event not taken in after drain)`);
    const live = await checkLedger({ ...ledger, drained: false });
    expect(shippingVerdicts(live)).to.deep.equal(ALL_PASS);
    expect(of(live, "S3").counts).to.include({ "behind (event in flight)": 1 });

    // Ahead: the order says shipped, its shipment is only confirmed; and a declined order still charged.
    const ahead = id("O");
    await order({ id: ahead, status: "SENT", shipping: "SHIPPED" });
    await request(ahead);
    await shipment(ahead, "CONFIRMED");
    const charged = (await shippedOrder("DECLINED", { payment: "CHARGED" })).orderId;
    const r = await checkLedger({ ...ledger, drained: false });
    // The order ahead was sent by a shipment that never shipped: S4 says so too.
    expect(shippingVerdicts(r)).to.deep.equal({ ...ALL_PASS, S3: "FAIL", S4: "FAIL" });
    expect(of(r, "S4").detail).to.contain(`order ${ahead}: SENT by its shipment`);
    expect(of(r, "S3").detail).to.contain(`order ${ahead}: SENT, shipping SHIPPED, its shipment`).and.contain("is CONFIRMED");
    expect(of(r, "S3").detail).to.contain(`order ${charged}: CANCELLED with shipping DECLINED and its charge neither refunded nor refund pending`);
    expect(of(r, "S3").detail).to.not.contain(behind);
  });

  it("S4: an order in shipping sent by hand, an order not in shipping sent by a shipment, or a sent_by on an order never sent", async () => {
    await soundHistory();
    const byHand = (await shippedOrder("SHIPPED")).orderId;
    await orderDb.sql(`UPDATE orders SET sent_by = 'HAND' WHERE id = '${byHand}'`);
    const [noShipment, unsent] = [id("O"), id("O")];
    await order({ id: noShipment, status: "SENT", shipping: "NONE", sentBy: "SHIPMENT" });
    await order({ id: unsent, status: "PENDING", shipping: "NONE", sentBy: "HAND" });
    const r = await checkLedger(ledger);
    expect(shippingVerdicts(r)).to.deep.equal({ ...ALL_PASS, S4: "FAIL" });
    const detail = of(r, "S4").detail!;
    expect(detail).to.contain(`order ${byHand}: SENT, shipping SHIPPED, sent_by HAND`);
    expect(detail).to.contain(`order ${noShipment}: SENT, shipping NONE, sent_by SHIPMENT`);
    expect(detail).to.contain(`order ${unsent}: PENDING, shipping NONE, sent_by HAND`);
  });

  it("S4: a sent order in shipping whose shipment never shipped (shipped_at unset)", async () => {
    await soundHistory();
    const { orderId } = await shippedOrder("DELIVERED");
    await deliveryDb.sql(`UPDATE shipments SET shipped_at = NULL WHERE order_id = '${orderId}'`);
    const r = await checkLedger(ledger);
    expect(of(r, "S4").verdict).to.equal("FAIL");
    expect(of(r, "S4").detail).to.contain(`order ${orderId}: DELIVERED by its shipment, but shipment`).and.contain("never shipped");
    // The time and the transitions disagree too.
    expect(of(r, "S5").detail).to.contain(`order ${orderId}: status times disagree with the transitions`);
  });

  it("S5: a path that skips a status, a transition not from the status before it, a status time without its transition, a transition of another shipment", async () => {
    await soundHistory();
    const skipped = id("O");
    await order({ id: skipped, status: "SENT", shipping: "SHIPPED" });
    await request(skipped);
    await shipment(skipped, "SHIPPED", { path: ["CREATED", "SHIPPED"] });
    await takenIn(skipped, "SHIPPED");
    const chain = (await shippedOrder("CONFIRMED")).orderId;
    await deliveryDb.sql(`UPDATE shipment_transitions SET from_status = NULL WHERE order_id = '${chain}' AND to_status = 'CONFIRMED'`);
    const timed = (await shippedOrder("CREATED")).orderId;
    await deliveryDb.sql(`UPDATE shipments SET confirmed_at = NOW(3) WHERE order_id = '${timed}'`);
    const foreign = (await shippedOrder("CREATED")).orderId;
    await deliveryDb.sql(`UPDATE shipment_transitions SET shipment_id = 'S-OTHER' WHERE order_id = '${foreign}'`);
    const r = await checkLedger(ledger);
    expect(shippingVerdicts(r)).to.deep.equal({ ...ALL_PASS, S5: "FAIL" });
    const detail = of(r, "S5").detail!;
    expect(detail).to.contain(`order ${skipped}: status SHIPPED but transitions CREATED>SHIPPED`);
    expect(detail).to.contain(`order ${chain}: transition`).and.contain("to CONFIRMED is recorded from (nothing), the status before it was CREATED");
    expect(detail).to.contain(`order ${timed}: status times disagree with the transitions: confirmed_at set`);
    expect(detail).to.contain(`order ${foreign}: transition`).and.contain("belongs to shipment S-OTHER");
  });

  it("S6: a status reached without its event row (and never taken in), an event row of a status not reached, an event taken in that the shipment never reached", async () => {
    await soundHistory();
    const noRow = (await shippedOrder("SHIPPED")).orderId;
    await deliveryDb.sql(`DELETE FROM shipment_event_outbox WHERE order_id = '${noRow}'`);
    await orderDb.sql(`DELETE FROM inbox WHERE message_key = 'shipment-event:shipment:${noRow}:SHIPPED'`);
    const extra = await shippedOrder("SHIPPED");
    await eventRow(extra.orderId, extra.shipmentId, "DECLINED");
    const phantom = (await shippedOrder("CONFIRMED")).orderId;
    await takenIn(phantom, "SHIPPED");
    const r = await checkLedger(ledger);
    // The phantom order also learned an event its shipment never reached (S6), though its own row says REQUESTED.
    expect(shippingVerdicts(r)).to.deep.equal({ ...ALL_PASS, S6: "FAIL" });
    const detail = of(r, "S6").detail!;
    expect(detail).to.contain(`order ${noRow}: shipment`).and.contain("reached SHIPPED but has no event row and the order never took it in");
    expect(detail).to.contain(`order ${extra.orderId}: event row shipment:${extra.orderId}:DECLINED (DECLINED, delivered) but the shipment is SHIPPED`);
    expect(detail).to.contain(`order ${phantom}: the order took in shipment:${phantom}:SHIPPED, which its shipment never reached`);
  });

  it("S7: a shipment request or event pending past the lag target fails, naming the order; dead ones are listed without failing", async () => {
    await soundHistory();
    const slow = id("O");
    await order({ id: slow, status: "PAID", shipping: "REQUESTED" });
    await request(slow, "pending", 120);
    const late = id("O");
    await order({ id: late, status: "PAID", shipping: "REQUESTED" });
    await request(late);
    await shipment(late, "SHIPPED", { eventStatus: "pending", eventAgeSeconds: 120 });
    const stuck = id("O");
    await order({ id: stuck, status: "SENT", shipping: "SHIPPED" });
    await request(stuck);
    await shipment(stuck, "SHIPPED", { eventStatus: "dead" });
    await takenIn(stuck, "SHIPPED");

    const live = await checkLedger({ ...ledger, drained: false, lagTargetMs: 60_000 });
    expect(shippingVerdicts(live)).to.deep.equal({ ...ALL_PASS, S7: "FAIL" });
    const s7 = of(live, "S7");
    expect(s7.detail).to.contain(`order ${slow}: shipment request pending for`);
    expect(s7.detail).to.contain(`order ${late}: shipment event pending for`);
    expect(s7.detail).to.contain(`dead: order ${stuck}: shipment event dead`);
    expect(s7.counts).to.include({ "request pending": 1, "event pending": 1, "event dead": 1 });
    expect(s7.counts["oldest ms"]).to.be.at.least(120_000);

    // A target above their age: pending rows pass (they are in flight on a live system), the dead one is still listed.
    const patient = of(await checkLedger({ ...ledger, drained: false, lagTargetMs: 600_000 }), "S7");
    expect(patient.verdict).to.equal("PASS");
    expect(patient.detail).to.equal(`dead: order ${stuck}: shipment event dead`);
  });

  it("runs as npm run check:ledger with --delivery-db and fails (exit 1) naming the order", async () => {
    await soundHistory();
    const ghost = id("O");
    await shipment(ghost, "CREATED");
    const env = { ORDER_DATABASE_URL: orderDb.url, VOUCHER_DATABASE_URL: voucherDb.url };
    const run = await runCheckLedger(["--delivery-db", deliveryDb.url], env);
    expect(run.code, run.stderr).to.equal(1);
    expect(run.stdout).to.match(/^S1 PASS /m).and.match(/^S2 FAIL /m).and.contain(`order ${ghost}: shipment`);
    expect(run.stdout).to.contain("ledger: FAIL (S2)");
    const skipped = await runCheckLedger([], env);
    expect(skipped.code, skipped.stderr).to.equal(0);
    expect(skipped.stdout).to.match(/^S2 SKIP .*no delivery database given/m);
  });

  async function shipmentId(orderId: string): Promise<string> {
    return (await deliveryDb.sql(`SELECT id FROM shipments WHERE order_id = '${orderId}'`)).trim();
  }
});

/** Runs `check-ledger` as an operator would: its own process, no service URLs or tokens from the test process. */
function runCheckLedger(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  const tsx = createRequire(import.meta.url).resolve("tsx");
  const clean = { ...process.env };
  for (const k of ["RECONCILE_TOKEN", "RECONCILE_TOKEN_FILE", "LOCAL_DATA_DIR", "ORDER_SERVICE_URL", "VOUCHER_SERVICE_URL", "PAYMENT_SERVICE_URL", "PAYMENT_DATABASE_URL", "DELIVERY_DATABASE_URL", "DELIVERY_SERVICE_URL"]) {
    delete clean[k];
  }
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", tsx, path.join(root, "scripts/check-ledger.ts"), ...args],
      { cwd: root, env: { ...clean, LOG_LEVEL: "warn", ...env }, timeout: 90_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}
