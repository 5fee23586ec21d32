import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AUDIENCES, SCOPES } from "@shop/platform/auth";
import { CarrierWork, ShipmentStatus, type Shipment } from "@shop/sdk/delivery";
import { roleToken, testToken } from "@shop/testkit/auth";
import { expectCode, metricValue, startTestService, uniqueId, type TestService, type Transport } from "./helpers.js";

const TRACEPARENT = `00-${"ab".repeat(16)}-${"cd".repeat(8)}-01`;

describe("delivery service API over gRPC and Connect (real MariaDB, no carrier worker: shipments stay where the calls put them)", function () {
  this.timeout(60_000);
  let t: TestService;
  before(async () => {
    t = await startTestService({ outboxMetricsCacheMs: 0 });
  });
  after(async () => {
    await t?.stop();
  });

  const order = (carrier = "", extra: Partial<{ customerId: string; totalCents: bigint; traceparent: string }> = {}) => ({
    orderId: uniqueId("o"),
    customerId: extra.customerId ?? uniqueId("c"),
    totalCents: extra.totalCents ?? 12_345n,
    currency: "EUR",
    carrier,
    traceparent: extra.traceparent ?? "",
  });

  for (const transport of ["grpc", "connect"] as Transport[]) {
    describe(`over ${transport}`, () => {
      it("CreateShipment records the order's shipment once: created, then the replay answers the same shipment with created=false", async () => {
        const c = t.client(transport);
        const req = order("", { traceparent: TRACEPARENT });
        const first = await c.createShipment(req);
        expect(first.created).to.equal(true);
        const s = first.shipment!;
        expect(s.id).to.match(/^[A-Za-z0-9._:-]{1,64}$/);
        expect([s.orderId, s.customerId, s.totalCents, s.currency]).to.deep.equal([req.orderId, req.customerId, 12_345n, "EUR"]);
        expect(s.carrier, "the default carrier").to.equal("delayed");
        expect(s.status).to.equal(ShipmentStatus.CREATED);
        expect(s.carrierWork).to.equal(CarrierWork.HANDOFF);
        expect(s.carrierAttempts).to.equal(0);
        expect([s.trackingNumber, s.declineReason, s.carrierLastError]).to.deep.equal(["", "", ""]);
        expect(s.createdAt && s.updatedAt).to.not.equal(undefined);
        expect([s.confirmedAt, s.shippedAt, s.deliveredAt, s.declinedAt]).to.deep.equal([undefined, undefined, undefined, undefined]);
        expect(s.transitions, "only GetShipment fills them").to.deep.equal([]);

        const replay = await c.createShipment(req);
        expect(replay.created).to.equal(false);
        expect(replay.shipment!.id).to.equal(s.id);
        expect(await t.count("shipments", "order_id = ?", [req.orderId])).to.equal(1);
        expect(await t.events(req.orderId), "nothing for the order to learn yet").to.deep.equal([]);
      });

      it("CreateShipment of an order already shipped with another customer, total or currency is ALREADY_EXISTS and changes nothing", async () => {
        const c = t.client(transport);
        const req = order("manual");
        await c.createShipment(req);
        const e = await expectCode(c.createShipment({ ...req, totalCents: 1n }), Code.AlreadyExists);
        expect(e.rawMessage).to.include(req.orderId);
        await expectCode(c.createShipment({ ...req, customerId: "someone-else" }), Code.AlreadyExists);
        const got = await c.getShipment({ orderId: req.orderId });
        expect([got.shipment!.customerId, got.shipment!.totalCents]).to.deep.equal([req.customerId, 12_345n]);
      });

      it("CreateShipment for a carrier the service does not run records the shipment DECLINED (UNKNOWN_CARRIER) at once, with its event for the order", async () => {
        const req = order("pigeon-post");
        const res = await t.client(transport).createShipment(req);
        expect(res.created).to.equal(true);
        expect(res.shipment!.status).to.equal(ShipmentStatus.DECLINED);
        expect(res.shipment!.declineReason).to.equal("UNKNOWN_CARRIER");
        expect(res.shipment!.carrier).to.equal("pigeon-post");
        expect(res.shipment!.declinedAt).to.not.equal(undefined);
        expect(await t.events(req.orderId)).to.deep.equal([
          { messageKey: `shipment:${req.orderId}:DECLINED`, event: "DECLINED", status: "pending", reason: "UNKNOWN_CARRIER", carrier: "pigeon-post" },
        ]);
        const got = await t.client(transport).getShipment({ orderId: req.orderId });
        expect(got.shipment!.transitions.map((tr) => [tr.from, tr.to, tr.source])).to.deep.equal([
          [ShipmentStatus.UNSPECIFIED, ShipmentStatus.CREATED, "delivery-service"],
          [ShipmentStatus.CREATED, ShipmentStatus.DECLINED, "delivery-service"],
        ]);
      });

      it("CarrierService drives a manual shipment: confirm, ship with a tracking number, deliver, each once; repeats answer changed=false", async () => {
        const req = order("manual");
        await t.client(transport).createShipment(req);
        const carrier = t.carrier(transport);
        const orderId = req.orderId;
        const confirmed = await carrier.confirmShipment({ orderId });
        expect([confirmed.changed, confirmed.shipment!.status]).to.deep.equal([true, ShipmentStatus.CONFIRMED]);
        expect((await carrier.confirmShipment({ orderId })).changed).to.equal(false);
        const shipped = await carrier.markShipmentShipped({ orderId, trackingNumber: "TRK-1" });
        expect([shipped.changed, shipped.shipment!.status, shipped.shipment!.trackingNumber]).to.deep.equal([true, ShipmentStatus.SHIPPED, "TRK-1"]);
        expect((await carrier.confirmShipment({ orderId })).changed, "a status it has passed").to.equal(false);
        const delivered = await carrier.markShipmentDelivered({ orderId });
        expect([delivered.changed, delivered.shipment!.status]).to.deep.equal([true, ShipmentStatus.DELIVERED]);
        expect((await carrier.markShipmentDelivered({ orderId })).changed).to.equal(false);

        const got = (await t.client(transport).getShipment({ orderId })).shipment!;
        expect(got.transitions.map((tr) => [tr.from, tr.to, tr.source])).to.deep.equal([
          [ShipmentStatus.UNSPECIFIED, ShipmentStatus.CREATED, "delivery-service"],
          [ShipmentStatus.CREATED, ShipmentStatus.CONFIRMED, "operator:test-harness"],
          [ShipmentStatus.CONFIRMED, ShipmentStatus.SHIPPED, "operator:test-harness"],
          [ShipmentStatus.SHIPPED, ShipmentStatus.DELIVERED, "operator:test-harness"],
        ]);
        expect(got.confirmedAt && got.shippedAt && got.deliveredAt).to.not.equal(undefined);
        expect(got.carrierWork).to.equal(CarrierWork.DONE);
        expect((await t.events(orderId)).map((e) => [e.messageKey, e.event])).to.deep.equal([
          [`shipment:${orderId}:SHIPPED`, "SHIPPED"],
          [`shipment:${orderId}:DELIVERED`, "DELIVERED"],
        ]);
      });

      it("CarrierService refuses what the lifecycle forbids (FAILED_PRECONDITION): decline after shipped, anything after declined", async () => {
        const carrier = t.carrier(transport);
        const shippedReq = order("manual");
        await t.client(transport).createShipment(shippedReq);
        await carrier.markShipmentShipped({ orderId: shippedReq.orderId });
        const e = await expectCode(carrier.declineShipment({ orderId: shippedReq.orderId, reason: "NO_CAPACITY" }), Code.FailedPrecondition);
        expect(e.rawMessage).to.include("SHIPPED").and.include("DECLINED");

        const declinedReq = order("manual");
        await t.client(transport).createShipment(declinedReq);
        const declined = await carrier.declineShipment({ orderId: declinedReq.orderId, reason: "NO_CAPACITY" });
        expect([declined.changed, declined.shipment!.status, declined.shipment!.declineReason]).to.deep.equal([true, ShipmentStatus.DECLINED, "NO_CAPACITY"]);
        expect((await carrier.declineShipment({ orderId: declinedReq.orderId, reason: "OTHER" })).changed).to.equal(false);
        await expectCode(carrier.confirmShipment({ orderId: declinedReq.orderId }), Code.FailedPrecondition);
        await expectCode(carrier.markShipmentShipped({ orderId: declinedReq.orderId }), Code.FailedPrecondition);
        await expectCode(carrier.markShipmentDelivered({ orderId: declinedReq.orderId }), Code.FailedPrecondition);
        expect((await t.events(declinedReq.orderId)).map((e) => [e.event, e.reason])).to.deep.equal([["DECLINED", "NO_CAPACITY"]]);
        expect((await t.events(shippedReq.orderId)).map((e) => e.event)).to.deep.equal(["SHIPPED"]);
      });

      it("CarrierService refuses shipments of a carrier that reports by itself (FAILED_PRECONDITION), and orders without one (NOT_FOUND)", async () => {
        const req = order("delayed");
        await t.client(transport).createShipment(req);
        const e = await expectCode(t.carrier(transport).markShipmentShipped({ orderId: req.orderId }), Code.FailedPrecondition);
        expect(e.rawMessage).to.include('"delayed"').and.include("does not take reports over RPC");
        expect((await t.client(transport).getShipment({ orderId: req.orderId })).shipment!.status).to.equal(ShipmentStatus.CREATED);
        await expectCode(t.carrier(transport).confirmShipment({ orderId: uniqueId("nobody") }), Code.NotFound);
        await expectCode(t.client(transport).getShipment({ orderId: uniqueId("nobody") }), Code.NotFound);
      });
    });
  }

  it("a report that skips steps records each one: a manual shipment delivered straight from CREATED passes CONFIRMED and SHIPPED, with both events", async () => {
    const req = order("manual");
    await t.client().createShipment(req);
    const res = await t.carrier("connect").markShipmentDelivered({ orderId: req.orderId });
    expect([res.changed, res.shipment!.status]).to.deep.equal([true, ShipmentStatus.DELIVERED]);
    const got = (await t.client().getShipment({ orderId: req.orderId })).shipment!;
    expect(got.transitions.map((tr) => tr.to)).to.deep.equal([ShipmentStatus.CREATED, ShipmentStatus.CONFIRMED, ShipmentStatus.SHIPPED, ShipmentStatus.DELIVERED]);
    expect(got.shippedAt).to.not.equal(undefined);
    expect((await t.events(req.orderId)).map((e) => e.event)).to.deep.equal(["SHIPPED", "DELIVERED"]);
  });

  it("BatchGetShipments answers the orders that have a shipment, without transitions; the proto's limit of 1000 ids is INVALID_ARGUMENT", async () => {
    const c = t.client("connect");
    const a = order("manual");
    const b = order();
    await c.createShipment(a);
    await c.createShipment(b);
    await t.carrier().confirmShipment({ orderId: a.orderId });
    const res = await c.batchGetShipments({ orderIds: [b.orderId, uniqueId("none"), a.orderId, a.orderId] });
    const byOrder = new Map(res.shipments.map((s) => [s.orderId, s]));
    expect([...byOrder.keys()].sort()).to.deep.equal([a.orderId, b.orderId].sort());
    expect(byOrder.get(a.orderId)!.status).to.equal(ShipmentStatus.CONFIRMED);
    for (const s of res.shipments) expect(s.transitions).to.deep.equal([]);
    expect((await c.batchGetShipments({ orderIds: [] })).shipments).to.deep.equal([]);
    await expectCode(c.batchGetShipments({ orderIds: Array.from({ length: 1001 }, (_, i) => `x${i}`) }), Code.InvalidArgument);
  });

  it("ListShipments pages through one status in a time window, each shipment once, by change time then order id; a bad page token is INVALID_ARGUMENT", async () => {
    const c = t.client();
    const from = new Date(Date.now() - 1);
    const made: string[] = [];
    for (let i = 0; i < 7; i++) {
      const req = order("manual");
      await c.createShipment(req);
      made.push(req.orderId);
    }
    // Two move on to CONFIRMED: they leave the CREATED listing.
    await t.carrier().confirmShipment({ orderId: made[1]! });
    await t.carrier().confirmShipment({ orderId: made[4]! });
    const until = new Date(Date.now() + 1_000);
    const seen: Shipment[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await c.listShipments({ status: ShipmentStatus.CREATED, updatedAfter: timestampFromDate(from), updatedBefore: timestampFromDate(until), pageSize: 2, pageToken });
      expect(page.shipments.length).to.be.at.most(2);
      seen.push(...page.shipments);
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "" && pages < 20);
    const mine = seen.filter((s) => made.includes(s.orderId)).map((s) => s.orderId);
    expect(new Set(mine).size).to.equal(mine.length);
    expect(mine.sort()).to.deep.equal(made.filter((_, i) => i !== 1 && i !== 4).sort());
    for (let i = 1; i < seen.length; i++) {
      const [p, q] = [seen[i - 1]!, seen[i]!];
      const [pt, qt] = [timestampDate(p.updatedAt!).getTime(), timestampDate(q.updatedAt!).getTime()];
      expect(pt < qt || (pt === qt && p.orderId < q.orderId), "ordered by change time, then order id").to.equal(true);
    }
    const confirmed = await c.listShipments({ status: ShipmentStatus.CONFIRMED, updatedAfter: timestampFromDate(from) });
    expect(confirmed.shipments.map((s) => s.orderId).filter((id) => made.includes(id)).sort()).to.deep.equal([made[1]!, made[4]!].sort());
    expect(confirmed.nextPageToken).to.equal("");
    await expectCode(c.listShipments({ status: ShipmentStatus.CREATED, pageToken: "not-a-token" }), Code.InvalidArgument);
    await expectCode(c.listShipments({ status: ShipmentStatus.UNSPECIFIED }), Code.InvalidArgument);
    await expectCode(c.listShipments({ status: ShipmentStatus.CREATED, pageSize: -1 }), Code.InvalidArgument);
  });

  it("ResumeShipment puts a parked shipment back to its carrier (HANDOFF when never accepted), attempts reset; resumed=false when nothing is parked", async () => {
    const req = order();
    await t.client().createShipment(req);
    await t.pool.query(
      "UPDATE shipments SET carrier_work = 'PARKED', carrier_attempts = 10, carrier_last_error = 'carrier down', next_check_at = NULL WHERE order_id = ?",
      [req.orderId],
    );
    const parked = (await t.client().getShipment({ orderId: req.orderId })).shipment!;
    expect([parked.carrierWork, parked.carrierAttempts, parked.carrierLastError]).to.deep.equal([CarrierWork.PARKED, 10, "carrier down"]);
    const admin = t.client("grpc", roleToken("admin"));
    const res = await admin.resumeShipment({ orderId: req.orderId });
    expect([res.resumed, res.shipment!.carrierWork, res.shipment!.carrierAttempts]).to.deep.equal([true, CarrierWork.HANDOFF, 0]);
    expect(await t.count("shipments", "order_id = ? AND next_check_at IS NOT NULL", [req.orderId]), "due again").to.equal(1);
    expect((await admin.resumeShipment({ orderId: req.orderId })).resumed).to.equal(false);
    await expectCode(admin.resumeShipment({ orderId: uniqueId("nobody") }), Code.NotFound);
  });

  it("the proto's rules refuse malformed requests before any handler (INVALID_ARGUMENT naming the field)", async () => {
    const c = t.client();
    const bad = [
      { ...order(), orderId: "" },
      { ...order(), orderId: "has space" },
      { ...order(), totalCents: 0n },
      { ...order(), currency: "USD" },
      { ...order(), carrier: "Upper" },
      { ...order(), traceparent: "01-xyz" },
    ];
    for (const req of bad) await expectCode(c.createShipment(req), Code.InvalidArgument);
    await expectCode(t.carrier().declineShipment({ orderId: "o", reason: "" }), Code.InvalidArgument);
    await expectCode(t.carrier().markShipmentShipped({ orderId: "o", trackingNumber: "bad tracking" }), Code.InvalidArgument);
  });

  describe("access by role", () => {
    let own: { orderId: string; customerId: string };
    before(async () => {
      const req = order("manual", { customerId: uniqueId("cust-a") });
      await t.client().createShipment(req);
      own = req;
    });

    it("the order relay (shipments:create) creates and reads nothing; the shop, the reconciler and the admin read any shipment but create none", async () => {
      const relay = t.client("grpc", roleToken("relay"));
      expect((await relay.createShipment(order())).created).to.equal(true);
      await expectCode(relay.getShipment({ orderId: own.orderId }), Code.PermissionDenied);
      await expectCode(relay.batchGetShipments({ orderIds: [own.orderId] }), Code.PermissionDenied);
      for (const role of ["shop", "reconciler", "admin"] as const) {
        const c = t.client("connect", roleToken(role));
        expect((await c.getShipment({ orderId: own.orderId })).shipment!.customerId, role).to.equal(own.customerId);
        expect((await c.batchGetShipments({ orderIds: [own.orderId] })).shipments, role).to.have.length(1);
        await c.listShipments({ status: ShipmentStatus.CREATED, pageSize: 1 });
        await expectCode(c.createShipment(order()), Code.PermissionDenied);
      }
    });

    it("a customer reads its own shipment only, and neither lists nor batch-reads", async () => {
      const mine = t.client("connect", roleToken("customer", own.customerId));
      expect((await mine.getShipment({ orderId: own.orderId })).shipment!.orderId).to.equal(own.orderId);
      const other = t.client("grpc", roleToken("customer", uniqueId("cust-b")));
      const e = await expectCode(other.getShipment({ orderId: own.orderId }), Code.PermissionDenied);
      expect(e.rawMessage).to.include("may only read its own customer's data");
      expect(t.lines.some((l) => l.rpc === "GetShipment" && l.code === "PermissionDenied" && l.level === 40), "logged at warn").to.equal(true);
      await expectCode(mine.batchGetShipments({ orderIds: [own.orderId] }), Code.PermissionDenied);
      await expectCode(mine.listShipments({ status: ShipmentStatus.CREATED }), Code.PermissionDenied);
      await expectCode(t.carrier("grpc", roleToken("customer", own.customerId)).confirmShipment({ orderId: own.orderId }), Code.PermissionDenied);
    });

    it("only carrier:report reports, recorded as operator:<subject>; only shipments:admin resumes", async () => {
      const carrier = t.carrier("grpc", roleToken("carrier"));
      await carrier.confirmShipment({ orderId: own.orderId });
      const got = (await t.client().getShipment({ orderId: own.orderId })).shipment!;
      expect(got.transitions.at(-1)!.source).to.equal("operator:carrier");
      await expectCode(t.client("grpc", roleToken("carrier")).getShipment({ orderId: own.orderId }), Code.PermissionDenied);
      await expectCode(t.client("grpc", roleToken("carrier")).resumeShipment({ orderId: own.orderId }), Code.PermissionDenied);
      for (const role of ["shop", "relay", "admin", "reconciler"] as const) {
        await expectCode(t.carrier("connect", roleToken(role)).markShipmentShipped({ orderId: own.orderId }), Code.PermissionDenied);
      }
      await expectCode(t.client("grpc", roleToken("shop")).resumeShipment({ orderId: own.orderId }), Code.PermissionDenied);
    });

    it("refuses calls without a token, or with one addressed to another service (UNAUTHENTICATED), logging each refusal", async () => {
      await expectCode(t.client("grpc", "").getShipment({ orderId: own.orderId }), Code.Unauthenticated);
      const forOrders = testToken({ subject: "elsewhere", scopes: [SCOPES.ordersRead], audience: AUDIENCES.orders, ttlSeconds: 600 });
      await expectCode(t.client("connect", forOrders).getShipment({ orderId: own.orderId }), Code.Unauthenticated);
      const refusals = t.lines.filter((l) => l.rpc === "GetShipment" && l.code === "Unauthenticated" && String(l.msg).startsWith("GetShipment refused: "));
      expect(refusals.map((l) => l.protocol).sort()).to.include.members(["connect", "grpc"]);
      expect(JSON.stringify(t.lines)).not.to.include(forOrders);
    });
  });

  it("counts the calls that change shipments by result on /metrics (delivery_requests_total), next to the outbox gauges and the carrier worker's counters", async () => {
    const before = await (await fetch(`${t.httpUrl}/metrics`)).text();
    const req = order("manual");
    await t.client().createShipment(req);
    await t.client().createShipment(req);
    await expectCode(t.client().createShipment({ ...req, totalCents: 2n }), Code.AlreadyExists);
    await t.client().createShipment(order("pigeon"));
    await t.carrier().markShipmentShipped({ orderId: req.orderId });
    await t.carrier().markShipmentShipped({ orderId: req.orderId });
    await expectCode(t.carrier().declineShipment({ orderId: req.orderId, reason: "LATE" }), Code.FailedPrecondition);
    await expectCode(t.carrier().confirmShipment({ orderId: uniqueId("none") }), Code.NotFound);
    const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
    const delta = (call: string, result: string) =>
      metricValue(text, `delivery_requests_total{call="${call}",result="${result}"}`) - metricValue(before, `delivery_requests_total{call="${call}",result="${result}"}`);
    expect({
      created: delta("create", "applied"),
      replayed: delta("create", "replayed"),
      conflict: delta("create", "conflict"),
      declined: delta("create", "declined"),
      shipped: delta("ship", "applied"),
      shipReplayed: delta("ship", "replayed"),
      declineRefused: delta("decline", "refused"),
      confirmRefused: delta("confirm", "refused"),
    }).to.deep.equal({ created: 1, replayed: 1, conflict: 1, declined: 1, shipped: 1, shipReplayed: 1, declineRefused: 1, confirmRefused: 1 });
    expect(metricValue(text, "shipment_event_outbox_pending")).to.be.greaterThan(0);
    expect(metricValue(text, "shipment_event_outbox_dead")).to.equal(0);
    expect(text).to.match(/^delivery_relay_deliveries_total\{result="delivered"\} 0$/m);
    expect(text).to.match(/^# TYPE carrier_/m);
  });
});
