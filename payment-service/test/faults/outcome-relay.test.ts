import path from "node:path";
import { expect } from "chai";
import type { RowDataPacket } from "mysql2";
import { roleToken } from "@shop/testkit/auth";
import { ServiceProcess } from "@shop/testkit/service-process";
import { startTestService, uniqueId, type TestService } from "../helpers.js";
import { eventually, OutcomeReceiver } from "../outcome-receiver.js";

const RELAY_MAIN = path.resolve(import.meta.dirname, "../../src/relay-main.ts");

/**
 * The payment relay's failpoints, each armed in a real standalone relay
 * (relay-main.ts) against a real PaymentOutcomeService: a relay that dies
 * (kill -9) or fails (throw) after its claim or before its ack loses no
 * outcome, and the order service records each once. Killed before the ack,
 * the next relay delivers again after the lease and the receiver replays.
 */
describe("payment relay failpoints (a standalone relay killed -9 or failing around its delivery)", function () {
  this.timeout(120_000);
  let t: TestService;
  let receiver: OutcomeReceiver;
  let proc: ServiceProcess | undefined;
  before(async () => {
    t = await startTestService();
    receiver = await OutcomeReceiver.start();
  });
  afterEach(async () => {
    await proc?.kill();
    proc = undefined;
  });
  after(async () => {
    await receiver?.stop();
    await t?.stop();
  });

  const env = () => ({
    PAYMENT_DATABASE_URL: t.db.url,
    ORDER_SERVICE_URL: receiver.url,
    PAYMENT_RELAY_TOKEN: roleToken("payment-relay"),
    PAYMENT_RELAY_LEASE_MS: "1500",
    PAYMENT_RELAY_CALL_TIMEOUT_MS: "500",
    PAYMENT_RELAY_BATCH_SIZE: "16",
    PAYMENT_RELAY_POLL_INTERVAL_MS: "50",
    PAYMENT_RELAY_RETRY_BASE_MS: "20",
  });
  async function status(key: string): Promise<string | undefined> {
    const [rows] = await t.pool.query<RowDataPacket[]>("SELECT status FROM payment_outbox WHERE message_key = ?", [key]);
    return rows[0]?.status;
  }

  for (const action of ["kill", "throw"] as const) {
    for (const where of ["after-claim", "before-ack"] as const) {
      it(`payment-relay.${where}=${action}: the outcome is delivered and recorded once`, async () => {
        const customerId = uniqueId("c");
        await t.client().openAccount({ customerId, currency: "EUR" });
        await t.client().topUp({ customerId, amountCents: 1_000n, currency: "EUR", requestId: uniqueId("r") });
        const orderId = uniqueId(`o-${where}-${action}`);
        await t.client().chargeOrder({ orderId, customerId, amountCents: 250n, currency: "EUR" });
        const key = `charge:${orderId}`;

        proc = new ServiceProcess({ name: "payment-relay-failpoints", entry: RELAY_MAIN, env: { ...env(), FAILPOINTS: `payment-relay.${where}=${action}` } });
        await proc.start();
        if (action === "kill") {
          expect(await proc.exited()).to.not.equal(0);
          expect(await status(key), "nothing acked by the dead relay").to.equal("pending");
          proc = new ServiceProcess({ name: "payment-relay-failpoints-after", entry: RELAY_MAIN, env: env() });
          await proc.start();
        }
        // A thrown failpoint fails one round; the same relay goes on and delivers after the lease.
        await eventually("delivered", async () => (await status(key)) === "delivered", 30_000);
        expect(await proc.stop("SIGTERM")).to.equal(0);

        const calls = receiver.callsFor(key).map((c) => c.changed);
        // Before the ack, the call was made: the redelivery is a replay. After the claim, none was.
        expect(calls).to.deep.equal(where === "before-ack" ? [true, false] : [true]);
        expect(receiver.recorded.filter((k) => k === key)).to.have.length(1);
      });
    }
  }
});
