import path from "node:path";
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { createPool, type Pool } from "@shop/platform/db";
import { createPaymentClient } from "@shop/sdk/clients";
import { PaymentOutcome } from "@shop/sdk/payment";
import { roleToken } from "@shop/testkit/auth";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { checkPaymentLedger } from "../../src/ledger-check.js";

const ENTRY = path.resolve(import.meta.dirname, "../../src/main.ts");

/**
 * The payment service's failpoints, each armed in a real process: a charge,
 * refund or top-up that dies (kill -9) or fails (throw) anywhere around its
 * commit is, once the caller retries, applied exactly once.
 */
describe("payment service failpoints (a process killed -9 or failing around the commit)", function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let pool: Pool;
  let proc: ServiceProcess | undefined;
  let ports: [number, number];
  before(async () => {
    db = await freshDatabase("voucher");
    pool = createPool({ url: db.url, connectionLimit: 2 });
    ports = [await freePort(), await freePort()];
  });
  afterEach(async () => {
    await proc?.kill();
    proc = undefined;
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  async function serve(failpoints = ""): Promise<void> {
    await proc?.kill();
    proc = new ServiceProcess({
      name: "payment-service-failpoints",
      entry: ENTRY,
      // The outcome relay is not what is tested here (outcome-relay.test.ts in this folder is).
      env: { PAYMENT_DATABASE_URL: db.url, PAYMENT_GRPC_PORT: String(ports[0]), PAYMENT_HTTP_PORT: String(ports[1]), PAYMENT_RELAY_ENABLED: "false", FAILPOINTS: failpoints },
      readyUrl: `http://127.0.0.1:${ports[1]}/readyz`,
    });
    await proc.start();
  }

  /** Calls as the relay and the shop would, on a fresh connection each time (the process may have died under the last). */
  async function call<T>(fn: (c: ReturnType<typeof createPaymentClient>["client"]) => Promise<T>): Promise<T> {
    const { client, close } = createPaymentClient({ token: roleToken("relay"), baseUrl: `http://127.0.0.1:${ports[0]}`, defaultTimeoutMs: 10_000 });
    try {
      return await fn(client);
    } finally {
      close();
    }
  }
  async function shop<T>(fn: (c: ReturnType<typeof createPaymentClient>["client"]) => Promise<T>): Promise<T> {
    const { client, close } = createPaymentClient({ token: roleToken("shop"), baseUrl: `http://127.0.0.1:${ports[0]}`, defaultTimeoutMs: 10_000 });
    try {
      return await fn(client);
    } finally {
      close();
    }
  }
  const balance = (customerId: string) => shop((c) => c.getAccount({ customerId })).then((r) => r.account!.balanceCents);

  async function fails(p: Promise<unknown>): Promise<Code> {
    try {
      await p;
    } catch (err) {
      return ConnectError.from(err).code;
    }
    expect.fail("the call succeeded through an armed failpoint");
  }

  const CASES: Array<{ failpoint: string; action: "kill" | "throw"; step: "charge" | "refund" | "top-up" }> = [];
  for (const action of ["kill", "throw"] as const) {
    for (const where of ["before-commit", "after-commit", "before-reply"]) CASES.push({ failpoint: `payment.charge.${where}`, action, step: "charge" });
    for (const where of ["before-commit", "after-commit", "before-reply"]) CASES.push({ failpoint: `payment.refund.${where}`, action, step: "refund" });
    for (const where of ["before-commit", "after-commit"]) CASES.push({ failpoint: `payment.topup.${where}`, action, step: "top-up" });
  }

  const fixture = (i: number, action: string) => ({ customerId: `c-fp${i}-${action}`, orderId: `o-fp${i}-${action}`, id: `fp${i}-${action}` });

  // Every case's account (1000 funded) and, for refunds, its charged order, set up once on an unarmed process.
  before(async () => {
    await serve();
    for (const [i, { action, step }] of CASES.entries()) {
      const { customerId, orderId, id } = fixture(i, action);
      await shop((c) => c.openAccount({ customerId, currency: "EUR" }));
      await shop((c) => c.topUp({ customerId, amountCents: 1_000n, currency: "EUR", requestId: `fund-${id}` }));
      if (step === "refund") await call((c) => c.chargeOrder({ orderId, customerId, amountCents: 600n, currency: "EUR" }));
    }
  });

  for (const [i, { failpoint, action, step }] of CASES.entries()) {
    it(`${failpoint}=${action}: the retried ${step} applies once`, async () => {
      const { customerId, orderId, id } = fixture(i, action);
      const doIt = () =>
        step === "charge"
          ? call((c) => c.chargeOrder({ orderId, customerId, amountCents: 600n, currency: "EUR" }))
          : step === "refund"
            ? call((c) => c.refundOrder({ orderId }))
            : shop((c) => c.topUp({ customerId, amountCents: 250n, currency: "EUR", requestId: `again-${id}` }));

      await serve(`${failpoint}=${action}`);
      const code = await fails(doIt());
      expect([Code.Unavailable, Code.Internal, Code.Unknown, Code.Canceled]).to.include(code);
      if (action === "kill") {
        expect(await proc!.exited()).to.not.equal(0);
        await serve();
      }
      // The retry: as the relay's outbox (or the shop) would send it again.
      const retried = await doIt();
      if (step === "top-up") {
        expect(await balance(customerId)).to.equal(1_250n);
      } else {
        const r = retried as { outcome: PaymentOutcome };
        expect(r.outcome).to.equal(step === "charge" ? PaymentOutcome.CHARGED : PaymentOutcome.REFUNDED);
        expect(await balance(customerId)).to.equal(step === "charge" ? 400n : 1_000n);
      }
      // Once more, after all: a replay, nothing moves.
      await doIt();
      expect(await balance(customerId)).to.equal(step === "top-up" ? 1_250n : step === "charge" ? 400n : 1_000n);
      expect(await checkPaymentLedger(pool)).to.deep.equal([]);
    });
  }
});
