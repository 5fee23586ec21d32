import path from "node:path";
import { expect } from "chai";
import { PaymentOutcome } from "@shop/sdk/payment";
import { createPaymentClient } from "@shop/sdk/clients";
import { roleToken } from "@shop/testkit/auth";
import { testAuthEnv } from "@shop/testkit/auth";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

const ENTRY = path.resolve(import.meta.dirname, "../src/main.ts");

describe("payment service as a process (main.ts)", () => {
  let db: TestDatabase;
  let proc: ServiceProcess | undefined;
  before(async () => {
    db = await freshDatabase("voucher");
  });
  afterEach(async () => {
    await proc?.kill();
    proc = undefined;
  });
  after(async () => {
    await db?.drop();
  });

  it("migrates, serves gRPC and Connect with the roles' tokens, answers /readyz, and exits 0 on SIGTERM", async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    proc = new ServiceProcess({
      name: "payment-service-main",
      entry: ENTRY,
      env: {
        PAYMENT_DATABASE_URL: db.url,
        PAYMENT_GRPC_PORT: String(grpcPort),
        PAYMENT_HTTP_PORT: String(httpPort),
        AUTH_PUBLIC_KEYS: testAuthEnv.AUTH_PUBLIC_KEYS!,
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
    } finally {
      shop.close();
      relay.close();
    }
    expect(await proc.stop("SIGTERM")).to.equal(0);
  });

  it("refuses to start without its database URL, exits 1", async () => {
    proc = new ServiceProcess({ name: "payment-service-bad-config", entry: ENTRY, env: { AUTH_PUBLIC_KEYS: testAuthEnv.AUTH_PUBLIC_KEYS! } });
    await proc.start();
    expect(await proc.exited()).to.equal(1);
  });
});
