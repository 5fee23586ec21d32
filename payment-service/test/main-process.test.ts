import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { PaymentEvent } from "@shop/sdk/order";
import { PaymentOutcome } from "@shop/sdk/payment";
import { createPaymentClient } from "@shop/sdk/clients";
import { roleToken } from "@shop/testkit/auth";
import { testAuthEnv } from "@shop/testkit/auth";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { eventually, OutcomeReceiver } from "./outcome-receiver.js";

const ENTRY = path.resolve(import.meta.dirname, "../src/main.ts");

describe("payment service as a process (main.ts)", () => {
  let db: TestDatabase;
  let receiver: OutcomeReceiver;
  let proc: ServiceProcess | undefined;
  before(async () => {
    db = await freshDatabase("voucher");
    receiver = await OutcomeReceiver.start();
  });
  afterEach(async () => {
    await proc?.kill();
    proc = undefined;
  });
  after(async () => {
    await receiver?.stop();
    await db?.drop();
  });

  it("migrates, serves gRPC and Connect with the roles' tokens, delivers the outcome with its relay, answers /readyz, and exits 0 on SIGTERM", async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    proc = new ServiceProcess({
      name: "payment-service-main",
      entry: ENTRY,
      env: {
        PAYMENT_DATABASE_URL: db.url,
        PAYMENT_GRPC_PORT: String(grpcPort),
        PAYMENT_HTTP_PORT: String(httpPort),
        AUTH_PUBLIC_KEYS: testAuthEnv.AUTH_PUBLIC_KEYS!,
        ORDER_SERVICE_URL: receiver.url,
        PAYMENT_RELAY_TOKEN: roleToken("payment-relay"),
        LOG_LEVEL: "info",
      },
      readyUrl: `http://127.0.0.1:${httpPort}/readyz`,
    });
    await proc.start();
    expect((await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status).to.equal(200);

    const shop = createPaymentClient({ token: roleToken("shop"), baseUrl: `http://127.0.0.1:${httpPort}`, protocol: "connect" });
    const relay = createPaymentClient({ token: roleToken("relay"), baseUrl: `http://127.0.0.1:${grpcPort}` });
    try {
      await shop.client.openAccount({ customerId: "main-c1", currency: "EUR" });
      await shop.client.topUp({ customerId: "main-c1", amountCents: 1_000n, currency: "EUR", requestId: "main-r1" });
      const charged = await relay.client.chargeOrder({ orderId: "main-o1", customerId: "main-c1", amountCents: 600n, currency: "EUR" });
      expect(charged.outcome).to.equal(PaymentOutcome.CHARGED);
      expect((await shop.client.getAccount({ customerId: "main-c1" })).account!.balanceCents).to.equal(400n);
      await eventually("the order service is told", () => receiver.callsFor("charge:main-o1").length > 0);
      expect(receiver.callsFor("charge:main-o1").map((c) => [c.event, c.amountCents, c.changed])).to.deep.equal([[PaymentEvent.CHARGED, 600n, true]]);
    } finally {
      shop.close();
      relay.close();
    }
    expect(await proc.stop("SIGTERM")).to.equal(0);
  });

  it("refuses to start without its database URL, exits 1", async () => {
    proc = new ServiceProcess({ name: "payment-service-bad-config", entry: ENTRY, env: { AUTH_PUBLIC_KEYS: testAuthEnv.AUTH_PUBLIC_KEYS!, PAYMENT_RELAY_ENABLED: "false" } });
    await proc.start();
    expect(await proc.exited()).to.equal(1);
  });

  it("refuses to start its relay without PAYMENT_RELAY_TOKEN, exits 1 naming it; starts without one when PAYMENT_RELAY_ENABLED=false", async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const env = {
      PAYMENT_DATABASE_URL: db.url,
      PAYMENT_GRPC_PORT: String(grpcPort),
      PAYMENT_HTTP_PORT: String(httpPort),
      ORDER_SERVICE_URL: receiver.url,
      PAYMENT_RELAY_TOKEN: "",
      PAYMENT_RELAY_TOKEN_FILE: "",
    };
    proc = new ServiceProcess({ name: "payment-service-no-relay-token", entry: ENTRY, env });
    // The log file is appended to across runs: only this run's lines count.
    const from = existsSync(proc.logFile) ? statSync(proc.logFile).size : 0;
    await proc.start();
    expect(await proc.exited()).to.equal(1);
    expect(readFileSync(proc.logFile).subarray(from).toString("utf8")).to.include("PAYMENT_RELAY_TOKEN (or PAYMENT_RELAY_TOKEN_FILE) is required");

    proc = new ServiceProcess({
      name: "payment-service-relay-off",
      entry: ENTRY,
      env: { ...env, PAYMENT_RELAY_ENABLED: "false" },
      readyUrl: `http://127.0.0.1:${httpPort}/readyz`,
    });
    await proc.start();
    expect(await proc.stop("SIGTERM")).to.equal(0);
  });
});
