import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import type { RowDataPacket } from "mysql2/promise";
import type { RelayConfig } from "@shop/engine/relay";
import { createMetrics } from "@shop/platform/metrics";
import { roleToken, testAuth } from "@shop/testkit/auth";
import { OrderStore } from "../../src/db/order-store.js";
import { createShipmentRelayMetrics } from "../../src/metrics.js";
import { startShipmentRelay, type ShipmentRelay } from "../../src/outbox/shipment-relay.js";
import { startOrderService } from "../../src/service.js";
import { quietLogger } from "../outbox/fake-voucher-service.js";
import { eventually, freshOutboxDb, recordingLogger, type OutboxDb } from "../outbox/outbox-db.js";
import { sampleValue, scrape } from "../ops/metrics-text.js";
import { DeliveryReceiver } from "./delivery-receiver.js";

/** Small timings so failure paths play out in milliseconds. */
const FAST: RelayConfig = {
  batchSize: 50,
  concurrency: 2,
  leaseMs: 5_000,
  pollIntervalMs: 50,
  callTimeoutMs: 2_000,
  retryBaseMs: 20,
  retryMaxMs: 100,
  maxAttempts: 20,
  maxRequestBytes: 1024 * 1024,
};

/**
 * The shipment flow against a small real gRPC DeliveryService (one shipment
 * per order, like the delivery service) and a real order database: the rows
 * a release writes reach CreateShipment, once each; outages are retried; a
 * request refused for good is parked until RequeueShipment; a relay the
 * delivery service refuses keeps its rows pending and names the settings.
 */
describe("the shipment relay against a real gRPC DeliveryService", function () {
  this.timeout(60_000);
  let o: OutboxDb;
  let receiver: DeliveryReceiver;
  let store: OrderStore;
  let running: ShipmentRelay[] = [];
  let n = 0;

  const start = (opts: { token?: string; logger?: typeof quietLogger; metrics?: ReturnType<typeof createShipmentRelayMetrics> } = {}) => {
    const r = startShipmentRelay({
      pool: o.pool,
      logger: opts.logger ?? quietLogger,
      config: FAST,
      deliveryServiceUrl: receiver.url,
      token: opts.token ?? roleToken("relay"),
      metrics: opts.metrics,
    });
    running.push(r);
    r.relay.start();
    return r;
  };
  const row = async (orderId: string) => {
    const [r] = await o.pool.query<RowDataPacket[]>(
      "SELECT status, attempts, last_error AS lastError, delivered_at AS deliveredAt FROM shipment_outbox WHERE order_id = ?",
      [orderId],
    );
    return r[0] as { status: string; attempts: number; lastError: string | null; deliveredAt: Date | null } | undefined;
  };
  const released = async (totalCents = 4_200, carrier?: string) => {
    const { order } = await store.create({ customerId: "relay-cust", totalCents, currency: "EUR", requestId: `relay-${++n}`, carrier });
    await store.releaseForShipping(order.id);
    return order.id;
  };

  before(async () => {
    [o, receiver] = await Promise.all([freshOutboxDb(), DeliveryReceiver.start()]);
    store = new OrderStore({ pool: o.pool, logger: quietLogger });
  });
  afterEach(async () => {
    await Promise.all(running.map((r) => r.relay.stop()));
    running.forEach((r) => r.close());
    running = [];
    receiver.heal();
  });
  after(async () => {
    await Promise.allSettled([o?.close(), receiver?.stop()]);
  });

  it("delivers each shipment request once with the order's snapshot and carrier, and counts it", async () => {
    const ids = [await released(4_200, "manual"), await released(9_999), await released(1)];
    const metrics = createMetrics();
    start({ metrics: createShipmentRelayMetrics(metrics.registry) });
    await eventually("every shipment request is delivered", async () => {
      for (const id of ids) if ((await row(id))?.status !== "delivered") return false;
      return true;
    });
    for (const id of ids) expect(receiver.callsFor(id), id).to.have.length(1);
    expect(receiver.callsFor(ids[0]!)[0]).to.deep.include({ customerId: "relay-cust", totalCents: 4_200n, currency: "EUR", carrier: "manual", created: true });
    expect(receiver.callsFor(ids[1]!)[0]).to.deep.include({ totalCents: 9_999n, carrier: "" });
    const text = await metrics.registry.metrics();
    expect(sampleValue(text, "shipment_relay_deliveries_total", { result: "delivered" })).to.equal(3);
    // The order waits for its shipment's events: delivering the request moves nothing.
    expect((await store.get(ids[0]!))!.shippingStatus).to.equal("REQUESTED");
  });

  it("retries while the delivery service is UNAVAILABLE, then delivers once", async () => {
    receiver.fail(Code.Unavailable, { times: 3 });
    const id = await released();
    start();
    await eventually("the shipment request is delivered", async () => (await row(id))?.status === "delivered");
    const calls = receiver.callsFor(id);
    expect(calls.filter((c) => c.failedWith === Code.Unavailable)).to.have.length(3);
    expect(calls.filter((c) => c.created === true)).to.have.length(1);
    expect((await row(id))!.attempts).to.equal(4);
  });

  it("a lost reply is delivered again and answered with the same shipment (created=false): one shipment per order", async () => {
    const id = await released();
    receiver.fail(Code.Unavailable, { times: 1, after: "apply", orders: [id] });
    start();
    await eventually("the shipment request is delivered", async () => (await row(id))?.status === "delivered");
    expect(receiver.callsFor(id).map((c) => c.created)).to.deep.equal([undefined, false]);
    expect([...receiver.shipments.keys()].filter((k) => k === id)).to.have.length(1);
  });

  it("parks a request refused with INVALID_ARGUMENT (dead, last_error saying why) without holding up the others; RequeueShipment sends it again", async () => {
    const bad = await released();
    const good = await released();
    receiver.fail(Code.InvalidArgument, { orders: [bad] });
    start();
    await eventually("the refused request is dead and the other delivered", async () => (await row(bad))?.status === "dead" && (await row(good))?.status === "delivered");
    expect((await row(bad))!.lastError).to.match(/INVALID_ARGUMENT: told to fail/);
    expect(receiver.callsFor(bad)).to.have.length(1);
    receiver.heal();
    const r = await store.requeueShipment(bad);
    expect(r.requeued).to.equal(true);
    await eventually("the requeued request is delivered", async () => (await row(bad))?.status === "delivered");
    expect(receiver.callsFor(bad).map((c) => c.created)).to.deep.equal([undefined, true]);
  });

  it("keeps requests pending while the delivery service refuses the relay's token, says which setting to check, then delivers", async () => {
    const id = await released();
    const { logger, records } = recordingLogger();
    // The shop's token: addressed to the delivery service, without shipments:create.
    const wrong = start({ token: roleToken("shop"), logger });
    await eventually("the request was refused at least twice", async () => ((await row(id))?.attempts ?? 0) >= 2);
    expect((await row(id))!.status).to.equal("pending");
    expect(records.some((r) => r.level >= 50 && /refused the relay itself \(PERMISSION_DENIED\).*lacks shipments:create/.test(r.msg))).to.equal(true);
    await wrong.relay.stop();
    start();
    await eventually("the request is delivered with the right token", async () => (await row(id))?.status === "delivered");
  });

  it("runs in the order service whenever DELIVERY_SERVICE_URL is set: a release is delivered at once and counted on /metrics", async () => {
    const { logger, records } = recordingLogger();
    const service = await startOrderService({
      config: {
        databaseUrl: o.db.url,
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        poolSize: 10,
        voucherServiceUrl: "http://127.0.0.1:1",
        paymentServiceUrl: "http://127.0.0.1:1",
        deliveryServiceUrl: receiver.url,
        relayEnabled: true,
        relayToken: roleToken("relay"),
        auth: testAuth,
      },
      logger,
      // A long poll: only the release's wake-up delivers within the test's bound.
      relay: { ...FAST, pollIntervalMs: 60_000 },
      shutdownGraceMs: 1_000,
    });
    try {
      expect(records.some((r) => /shipment relay running: shipment requests go to/.test(r.msg))).to.equal(true);
      const { order } = await service.store.create({ customerId: "relay-cust", totalCents: 500, currency: "EUR", requestId: `relay-${++n}` });
      await service.store.releaseForShipping(order.id);
      await eventually("the release is delivered", async () => (await row(order.id))?.status === "delivered", 10_000);
      expect(receiver.callsFor(order.id)).to.have.length(1);
      const text = await scrape(service.httpPort);
      expect(sampleValue(text, "shipment_relay_deliveries_total", { result: "delivered" })).to.be.at.least(1);
      expect(sampleValue(text, "shipment_outbox_dead")).to.be.a("number");
    } finally {
      await service.stop();
    }
  });

  it("without DELIVERY_SERVICE_URL the order service runs no shipment relay and says so; requests wait in shipment_outbox", async () => {
    const { logger, records } = recordingLogger();
    const service = await startOrderService({
      config: {
        databaseUrl: o.db.url,
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        poolSize: 4,
        voucherServiceUrl: "http://127.0.0.1:1",
        paymentServiceUrl: "http://127.0.0.1:1",
        relayEnabled: true,
        relayToken: roleToken("relay"),
        auth: testAuth,
      },
      logger,
      relay: FAST,
      shutdownGraceMs: 1_000,
    });
    try {
      expect(records.some((r) => /no shipment relay in this process: DELIVERY_SERVICE_URL is not set/.test(r.msg))).to.equal(true);
      const { order } = await service.store.create({ customerId: "relay-cust", totalCents: 500, currency: "EUR", requestId: `relay-${++n}` });
      await service.store.releaseForShipping(order.id);
      // A voucher request beside it: the voucher relay (same settings, no voucher service there) tries it again and
      // again meanwhile, as a shipment relay would have tried the shipment request.
      const { order: sent } = await service.store.create({ customerId: "relay-cust", totalCents: 15_000, currency: "EUR", requestId: `relay-${++n}` });
      await service.store.markSent(sent.id);
      await eventually("the voucher relay has tried its request three times", async () => {
        const [v] = await o.pool.query<RowDataPacket[]>("SELECT attempts FROM voucher_outbox WHERE order_id = ?", [sent.id]);
        return Number(v[0]?.attempts ?? 0) >= 3;
      });
      expect((await row(order.id))!).to.deep.include({ status: "pending", attempts: 0 });
      expect(receiver.callsFor(order.id)).to.have.length(0);
    } finally {
      await service.stop();
    }
  });
});
