import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { createCarrierClient, createDeliveryClient } from "@shop/sdk/clients";
import { ShipmentStatus } from "@shop/sdk/delivery";
import { ShipmentEvent } from "@shop/sdk/order";
import { roleToken, testAuthEnv } from "@shop/testkit/auth";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { EventReceiver } from "./event-receiver.js";
import { eventually } from "./helpers.js";

const ENTRY = path.resolve(import.meta.dirname, "../src/main.ts");

/** The lines a process wrote to its log file since `from` (the file is appended to across runs). */
function logSince(p: ServiceProcess, from: number): string {
  return readFileSync(p.logFile).subarray(from).toString("utf8");
}
const logSize = (p: ServiceProcess) => (existsSync(p.logFile) ? statSync(p.logFile).size : 0);

describe("delivery service as a process (main.ts)", function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let receiver: EventReceiver;
  let proc: ServiceProcess | undefined;
  before(async () => {
    db = await freshDatabase("voucher");
    receiver = await EventReceiver.start();
  });
  afterEach(async () => {
    await proc?.kill();
    proc = undefined;
  });
  after(async () => {
    await receiver?.stop();
    await db?.drop();
  });

  it("migrates, serves gRPC and Connect with the roles' tokens, carries a shipment with the delayed carrier and tells the order service, answers /readyz, exits 0 on SIGTERM", async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    proc = new ServiceProcess({
      name: "delivery-service-main",
      entry: ENTRY,
      env: {
        DELIVERY_DATABASE_URL: db.url,
        DELIVERY_GRPC_PORT: String(grpcPort),
        DELIVERY_HTTP_PORT: String(httpPort),
        AUTH_PUBLIC_KEYS: testAuthEnv.AUTH_PUBLIC_KEYS!,
        ORDER_SERVICE_URL: receiver.url,
        DELIVERY_RELAY_TOKEN: roleToken("delivery-relay"),
        DELAYED_CARRIER_CONFIRM_MS: "100",
        DELAYED_CARRIER_SHIP_MS: "200",
        DELAYED_CARRIER_DELIVER_MS: "300",
        CARRIER_POLL_INTERVAL_MS: "50",
        LOG_LEVEL: "info",
      },
      readyUrl: `http://127.0.0.1:${httpPort}/readyz`,
    });
    await proc.start();
    expect((await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status).to.equal(200);

    const relay = createDeliveryClient({ token: roleToken("relay"), baseUrl: `http://127.0.0.1:${grpcPort}` });
    const shop = createDeliveryClient({ token: roleToken("shop"), baseUrl: `http://127.0.0.1:${httpPort}`, protocol: "connect" });
    const carrier = createCarrierClient({ token: roleToken("carrier"), baseUrl: `http://127.0.0.1:${grpcPort}` });
    try {
      const created = await relay.client.createShipment({ orderId: "main-o1", customerId: "main-c1", totalCents: 12_000n, currency: "EUR", carrier: "" });
      expect([created.created, created.shipment!.carrier]).to.deep.equal([true, "delayed"]);
      await eventually("the order service is told the shipment was delivered", () => receiver.callsFor("shipment:main-o1:DELIVERED").length > 0);
      expect(receiver.callsFor("shipment:main-o1:SHIPPED").map((c) => [c.event, c.carrier, c.shipmentId, c.changed])).to.deep.equal([
        [ShipmentEvent.SHIPPED, "delayed", created.shipment!.id, true],
      ]);
      const got = (await shop.client.getShipment({ orderId: "main-o1" })).shipment!;
      expect(got.status).to.equal(ShipmentStatus.DELIVERED);
      expect(got.trackingNumber).to.not.equal("");
      expect(got.transitions.map((t) => [t.to, t.source])).to.deep.equal([
        [ShipmentStatus.CREATED, "delivery-service"],
        [ShipmentStatus.CONFIRMED, "carrier:delayed"],
        [ShipmentStatus.SHIPPED, "carrier:delayed"],
        [ShipmentStatus.DELIVERED, "carrier:delayed"],
      ]);

      await relay.client.createShipment({ orderId: "main-o2", customerId: "main-c1", totalCents: 500n, currency: "EUR", carrier: "manual" });
      await carrier.client.markShipmentShipped({ orderId: "main-o2", trackingNumber: "M-2" });
      await eventually("the manual shipment's SHIPPED reaches the order service", () => receiver.callsFor("shipment:main-o2:SHIPPED").length > 0);
      expect(receiver.callsFor("shipment:main-o2:SHIPPED").map((c) => [c.carrier, c.changed])).to.deep.equal([["manual", true]]);
    } finally {
      relay.close();
      shop.close();
      carrier.close();
    }
    expect(await proc.stop("SIGTERM")).to.equal(0);
  });

  it("refuses to start without its database URL, exits 1", async () => {
    proc = new ServiceProcess({ name: "delivery-service-bad-config", entry: ENTRY, env: { AUTH_PUBLIC_KEYS: testAuthEnv.AUTH_PUBLIC_KEYS!, DELIVERY_RELAY_ENABLED: "false" } });
    const from = logSize(proc);
    await proc.start();
    expect(await proc.exited()).to.equal(1);
    expect(logSince(proc, from)).to.include("DELIVERY_DATABASE_URL is required");
  });

  it("refuses to start with a carrier it does not have, or its relay without DELIVERY_RELAY_TOKEN, naming them; starts with DELIVERY_RELAY_ENABLED=false and CARRIER_ENABLED=false", async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const env = {
      DELIVERY_DATABASE_URL: db.url,
      DELIVERY_GRPC_PORT: String(grpcPort),
      DELIVERY_HTTP_PORT: String(httpPort),
      ORDER_SERVICE_URL: receiver.url,
      DELIVERY_RELAY_TOKEN: "",
      DELIVERY_RELAY_TOKEN_FILE: "",
    };
    proc = new ServiceProcess({ name: "delivery-service-no-relay-token", entry: ENTRY, env: { ...env, CARRIERS: "delayed,owl" } });
    const from = logSize(proc);
    await proc.start();
    expect(await proc.exited()).to.equal(1);
    const log = logSince(proc, from);
    expect(log).to.include("DELIVERY_RELAY_TOKEN (or DELIVERY_RELAY_TOKEN_FILE) is required");
    expect(log).to.include('CARRIERS names \\"owl\\"');

    proc = new ServiceProcess({
      name: "delivery-service-relay-off",
      entry: ENTRY,
      env: { ...env, DELIVERY_RELAY_ENABLED: "false", CARRIER_ENABLED: "false" },
      readyUrl: `http://127.0.0.1:${httpPort}/readyz`,
    });
    const started = logSize(proc);
    await proc.start();
    expect(await proc.stop("SIGTERM")).to.equal(0);
    expect(logSince(proc, started)).to.include("delivery service started without its event relay and without its carrier worker");
  });
});
