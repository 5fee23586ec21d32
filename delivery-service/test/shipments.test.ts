import { expect } from "chai";
import { pino } from "pino";
import type { RowDataPacket } from "mysql2/promise";
import { createPool, type Pool } from "@shop/platform/db";
import { DomainError } from "@shop/platform/errors";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { migrateDeliveryDatabase } from "../src/db/migrate.js";
import { pathTo, ShipmentStore, UNKNOWN_CARRIER, type ReportedStatus, type ShipmentStatus } from "../src/shipments.js";

const logger = pino({ level: "silent" });
const carriers = { isKnown: (n: string) => n === "delayed" || n === "manual", defaultCarrier: "delayed" };

describe("shipment lifecycle (pathTo)", () => {
  const all: ShipmentStatus[] = ["CREATED", "CONFIRMED", "SHIPPED", "DELIVERED", "DECLINED"];
  const reported: ReportedStatus[] = ["CONFIRMED", "SHIPPED", "DELIVERED", "DECLINED"];
  // The rule, stated independently: forward along CREATED < CONFIRMED <
  // SHIPPED < DELIVERED; DECLINED only before SHIPPED; nothing after DECLINED.
  const rank = (s: ShipmentStatus) => ["CREATED", "CONFIRMED", "SHIPPED", "DELIVERED"].indexOf(s);
  for (const from of all) {
    for (const to of reported) {
      it(`${from} + ${to}`, () => {
        const got = pathTo(from, to);
        if (from === to) return expect(got).to.equal("already");
        if (from === "DECLINED") return expect(got).to.equal("forbidden");
        if (to === "DECLINED") return expect(got).to.deep.equal(rank(from) <= 1 ? ["DECLINED"] : "forbidden");
        if (rank(to) <= rank(from)) return expect(got).to.equal("already");
        expect(got).to.be.an("array");
        const path = got as ShipmentStatus[];
        expect(path[path.length - 1]).to.equal(to);
        expect(path.map(rank)).to.deep.equal(Array.from({ length: rank(to) - rank(from) }, (_, i) => rank(from) + 1 + i));
      });
    }
  }
});

describe("ShipmentStore (real MariaDB)", function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let pool: Pool;
  let store: ShipmentStore;
  let events = 0;
  let created = 0;

  before(async () => {
    db = await freshDatabase("order");
    pool = createPool({ url: db.url });
    await migrateDeliveryDatabase(pool, logger);
    store = new ShipmentStore({ pool, logger, carriers, onEvent: () => events++, onCreated: () => created++ });
  });
  after(async () => {
    await pool.end();
    await db.drop();
  });

  const outbox = async (orderId: string) => {
    const [rows] = await pool.query<RowDataPacket[]>("SELECT message_key AS k, event, reason FROM shipment_event_outbox WHERE order_id = ? ORDER BY id", [orderId]);
    return rows.map((r) => `${r.k}${r.reason ? ` ${r.reason}` : ""}`);
  };
  const input = (orderId: string, carrier = "") => ({ orderId, customerId: "c-1", totalCents: 12_000, currency: "EUR", carrier });

  it("creates one shipment per order; a replay returns it; another customer or total is ALREADY_EXISTS", async () => {
    const first = await store.create(input("o-1"));
    expect(first.created).to.equal(true);
    expect(first.shipment).to.include({ orderId: "o-1", carrier: "delayed", status: "CREATED", carrierWork: "HANDOFF" });
    expect(first.shipment.nextCheckAt).to.be.instanceOf(Date);
    const again = await store.create(input("o-1", "manual"));
    expect(again).to.deep.include({ created: false });
    expect(again.shipment.id).to.equal(first.shipment.id);
    expect(again.shipment.carrier).to.equal("delayed");
    for (const bad of [{ ...input("o-1"), customerId: "c-2" }, { ...input("o-1"), totalCents: 12_001 }]) {
      const err = await store.create(bad).then(() => undefined, (e: unknown) => e);
      expect(err).to.be.instanceOf(DomainError);
      expect((err as DomainError).kind).to.equal("already_exists");
    }
    // A case variant is another order.
    expect((await store.create(input("O-1"))).created).to.equal(true);
    expect((await store.transitions("o-1")).map((t) => [t.fromStatus, t.toStatus, t.source])).to.deep.equal([[null, "CREATED", "delivery-service"]]);
  });

  it("concurrent first requests for one order make one shipment", async () => {
    const results = await Promise.all(Array.from({ length: 8 }, () => store.create(input("race-1"))));
    expect(results.filter((r) => r.created)).to.have.length(1);
    expect(new Set(results.map((r) => r.shipment.id)).size).to.equal(1);
    const [rows] = await pool.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM shipments WHERE order_id = 'race-1'");
    expect(Number(rows[0]!.n)).to.equal(1);
  });

  it("an unknown carrier declines the shipment at once, with its event", async () => {
    const before = events;
    const { shipment } = await store.create(input("o-unknown", "pigeon"));
    expect(shipment).to.include({ status: "DECLINED", declineReason: UNKNOWN_CARRIER, carrierWork: "DONE", nextCheckAt: null, carrier: "pigeon" });
    expect(await outbox("o-unknown")).to.deep.equal([`shipment:o-unknown:DECLINED ${UNKNOWN_CARRIER}`]);
    expect(events).to.equal(before + 1);
  });

  it("walks the lifecycle, one transition and one event per status, repeats change nothing", async () => {
    await store.create(input("o-2", "manual"));
    expect((await store.report("o-2", { status: "CONFIRMED" }, "carrier:manual")).changed).to.equal(true);
    expect((await store.report("o-2", { status: "CONFIRMED" }, "carrier:manual")).changed).to.equal(false);
    const shipped = await store.report("o-2", { status: "SHIPPED", trackingNumber: "T-2" }, "carrier:manual");
    expect(shipped.shipment).to.include({ status: "SHIPPED", trackingNumber: "T-2" });
    expect(shipped.shipment.shippedAt).to.be.instanceOf(Date);
    // A late CONFIRMED or a repeated SHIPPED is harmless.
    expect((await store.report("o-2", { status: "CONFIRMED" }, "carrier:manual")).changed).to.equal(false);
    expect((await store.report("o-2", { status: "SHIPPED" }, "carrier:manual")).changed).to.equal(false);
    const delivered = await store.report("o-2", { status: "DELIVERED" }, "operator:alice");
    expect(delivered.shipment).to.include({ status: "DELIVERED", carrierWork: "DONE", nextCheckAt: null });
    expect((await store.transitions("o-2")).map((t) => `${t.fromStatus}>${t.toStatus}@${t.source}`)).to.deep.equal([
      "null>CREATED@delivery-service",
      "CREATED>CONFIRMED@carrier:manual",
      "CONFIRMED>SHIPPED@carrier:manual",
      "SHIPPED>DELIVERED@operator:alice",
    ]);
    expect(await outbox("o-2")).to.deep.equal(["shipment:o-2:SHIPPED", "shipment:o-2:DELIVERED"]);
  });

  it("a jump ahead records the skipped steps and their events", async () => {
    await store.create(input("o-3"));
    const { shipment } = await store.report("o-3", { status: "DELIVERED" }, "carrier:delayed");
    expect(shipment.status).to.equal("DELIVERED");
    for (const at of [shipment.confirmedAt, shipment.shippedAt, shipment.deliveredAt]) expect(at).to.be.instanceOf(Date);
    const t = await store.transitions("o-3");
    expect(t.map((x) => x.toStatus)).to.deep.equal(["CREATED", "CONFIRMED", "SHIPPED", "DELIVERED"]);
    expect(t[1]!.detail).to.equal("implied by DELIVERED");
    expect(await outbox("o-3")).to.deep.equal(["shipment:o-3:SHIPPED", "shipment:o-3:DELIVERED"]);
  });

  it("refuses what the lifecycle forbids and reports for carriers that do not take them over RPC", async () => {
    await store.create(input("o-4", "manual"));
    await store.report("o-4", { status: "SHIPPED" }, "carrier:manual");
    const declined = await store.report("o-4", { status: "DECLINED", declineReason: "NO" }, "carrier:manual").catch((e: DomainError) => e);
    expect((declined as DomainError).kind).to.equal("failed_precondition");
    await store.create(input("o-5", "manual"));
    expect((await store.report("o-5", { status: "DECLINED", declineReason: "NO_CAPACITY" }, "operator:bob")).shipment).to.include({
      status: "DECLINED",
      declineReason: "NO_CAPACITY",
      carrierWork: "DONE",
    });
    for (const s of ["CONFIRMED", "SHIPPED", "DELIVERED"] as const) {
      const err = await store.report("o-5", { status: s }, "operator:bob").catch((e: DomainError) => e);
      expect((err as DomainError).kind, s).to.equal("failed_precondition");
    }
    expect(await outbox("o-5")).to.deep.equal(["shipment:o-5:DECLINED NO_CAPACITY"]);
    const viaRpc = await store
      .report("o-1", { status: "CONFIRMED" }, "operator:bob", { carrierMustTakeRpcReports: (c) => c === "manual" })
      .catch((e: DomainError) => e);
    expect((viaRpc as DomainError).kind).to.equal("failed_precondition");
    expect((viaRpc as DomainError).message).to.match(/"delayed", which does not take reports over RPC/);
    const missing = await store.report("nope", { status: "CONFIRMED" }, "operator:bob").catch((e: DomainError) => e);
    expect((missing as DomainError).kind).to.equal("not_found");
  });

  it("concurrent reports of one status record it once", async () => {
    await store.create(input("o-6"));
    const results = await Promise.all(Array.from({ length: 6 }, () => store.report("o-6", { status: "SHIPPED" }, "carrier:delayed")));
    expect(results.filter((r) => r.changed)).to.have.length(1);
    expect(await outbox("o-6")).to.deep.equal(["shipment:o-6:SHIPPED"]);
  });

  it("lists by status and change time with keyset paging, and batch-gets", async () => {
    for (let i = 0; i < 5; i++) await store.create(input(`list-${i}`, "manual"));
    for (let i = 0; i < 5; i++) await store.report(`list-${i}`, { status: "CONFIRMED" }, "operator:x");
    const seen: string[] = [];
    let token = "";
    do {
      const page = await store.list({ status: "CONFIRMED", pageSize: 2, pageToken: token });
      seen.push(...page.shipments.map((s) => s.orderId));
      token = page.nextPageToken;
    } while (token);
    expect(seen.filter((id) => id.startsWith("list-")).sort()).to.deep.equal(["list-0", "list-1", "list-2", "list-3", "list-4"]);
    expect(new Set(seen).size).to.equal(seen.length);
    const bad = await store.list({ status: "CONFIRMED", pageSize: 2, pageToken: "!!" }).catch((e: DomainError) => e);
    expect((bad as DomainError).kind).to.equal("invalid_argument");
    const batch = await store.batchGet(["list-0", "list-0", "none", "o-2"]);
    expect(batch.map((s) => s.orderId).sort()).to.deep.equal(["list-0", "o-2"]);
  });

  it("resumes a parked shipment to its handoff or its tracking", async () => {
    await store.create(input("p-1"));
    await pool.query("UPDATE shipments SET carrier_work = 'PARKED', carrier_attempts = 10, next_check_at = NULL WHERE order_id = 'p-1'");
    const before = created;
    const r = await store.resume("p-1");
    expect(r.resumed).to.equal(true);
    expect(r.shipment).to.include({ carrierWork: "HANDOFF", carrierAttempts: 0 });
    expect(created).to.equal(before + 1);
    expect((await store.resume("p-1")).resumed).to.equal(false);
    await store.report("p-1", { status: "CONFIRMED" }, "carrier:delayed");
    await pool.query("UPDATE shipments SET carrier_work = 'PARKED', next_check_at = NULL WHERE order_id = 'p-1'");
    expect((await store.resume("p-1")).shipment.carrierWork).to.equal("TRACKING");
  });
});
