import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import type { RowDataPacket } from "mysql2";
import { pino } from "pino";
import { AUDIENCES, SCOPES } from "@shop/platform/auth";
import { RELAY_DEFAULTS, type RelayConfig } from "@shop/engine/relay";
import { createMetrics } from "@shop/platform/metrics";
import { createPaymentOutcomeClient } from "@shop/sdk/clients";
import { PaymentEvent } from "@shop/sdk/order";
import { roleToken, testAuthEnv, testToken } from "@shop/testkit/auth";
import { makeTestCerts } from "@shop/testkit/certs";
import { ServiceProcess } from "@shop/testkit/service-process";
import { loadPaymentServiceConfig } from "../src/config.js";
import { createPaymentRelayMetrics } from "../src/metrics.js";
import { paymentOutbox } from "../src/outbox/outcome-flow.js";
import { OUTBOX_CLEANUP_DEFAULTS, PaymentOutboxCleanup, PaymentRelay } from "../src/outbox/relay.js";
import { captureLogger, startTestService, uniqueId, type TestService } from "./helpers.js";
import { eventually, OutcomeReceiver } from "./outcome-receiver.js";

const RELAY_MAIN = path.resolve(import.meta.dirname, "../src/relay-main.ts");
const relayToken = roleToken("payment-relay");
const TRACEPARENT = `00-${"ab".repeat(16)}-${"cd".repeat(8)}-01`;

/** Fast enough for tests: retries within tens of milliseconds, a lease that runs out in a second. */
const FAST: RelayConfig = { ...RELAY_DEFAULTS, batchSize: 16, concurrency: 2, pollIntervalMs: 20, retryBaseMs: 20, retryMaxMs: 200, leaseMs: 1_500, callTimeoutMs: 500 };

interface OutboxRow {
  messageKey: string;
  status: string;
  attempts: number;
  lastError: string | null;
}

describe("payment outcome relay: payment_outbox delivered to a real PaymentOutcomeService", function () {
  this.timeout(60_000);
  let receiver: OutcomeReceiver;
  before(async () => {
    receiver = await OutcomeReceiver.start();
  });
  after(async () => {
    await receiver?.stop();
  });
  afterEach(() => receiver.heal());

  async function fundedCustomer(t: TestService, cents: bigint): Promise<string> {
    const customerId = uniqueId("cust");
    await t.client().openAccount({ customerId, currency: "EUR" });
    if (cents > 0n) await t.client().topUp({ customerId, amountCents: cents, currency: "EUR", requestId: uniqueId("fund") });
    return customerId;
  }
  async function outbox(t: TestService, key: string): Promise<OutboxRow | undefined> {
    const [rows] = await t.pool.query<RowDataPacket[]>("SELECT message_key, status, attempts, last_error FROM payment_outbox WHERE message_key = ?", [key]);
    const r = rows[0];
    return r && { messageKey: r.message_key, status: r.status, attempts: r.attempts, lastError: r.last_error };
  }
  const delivered = (t: TestService, key: string) => async () => (await outbox(t, key))?.status === "delivered";

  describe("inside the payment service (a poll of a minute: only the commit's wake-up delivers in time)", () => {
    let t: TestService;
    before(async () => {
      t = await startTestService({
        relay: { orderServiceUrl: receiver.url, token: relayToken, config: { ...FAST, pollIntervalMs: 60_000 } },
        outboxMetricsCacheMs: 0,
      });
    });
    after(async () => {
      await t?.stop();
    });

    it("delivers each outcome once, woken by the commit: CHARGED, REFUSED with its reason, REFUNDED, with amount, currency and the normalized traceparent", async () => {
      const c = t.client();
      const rich = await fundedCustomer(t, 10_000n);
      const [charged, refused] = [uniqueId("o-charged"), uniqueId("o-refused")];
      await c.chargeOrder({ orderId: charged, customerId: rich, amountCents: 1_234n, currency: "EUR", traceparent: TRACEPARENT });
      await eventually("the charge's outcome is delivered", delivered(t, `charge:${charged}`));
      await c.chargeOrder({ orderId: refused, customerId: await fundedCustomer(t, 0n), amountCents: 500n, currency: "EUR" });
      await eventually("the refusal is delivered", delivered(t, `charge:${refused}`));
      await c.refundOrder({ orderId: charged });
      await eventually("the refund is delivered", delivered(t, `refund:${charged}`));
      // Replays decide nothing and write no row: nothing more is delivered.
      await c.chargeOrder({ orderId: charged, customerId: rich, amountCents: 1_234n, currency: "EUR" });
      await c.refundOrder({ orderId: charged });

      const strip = ({ messageKey, orderId, event, refusalReason, amountCents, currency, traceparent, changed }: (typeof receiver.calls)[number]) => ({
        messageKey,
        orderId,
        event,
        refusalReason,
        amountCents,
        currency,
        traceparent,
        changed,
      });
      expect(receiver.callsFor(`charge:${charged}`).map(strip)).to.deep.equal([
        { messageKey: `charge:${charged}`, orderId: charged, event: PaymentEvent.CHARGED, refusalReason: "", amountCents: 1_234n, currency: "EUR", traceparent: TRACEPARENT, changed: true },
      ]);
      expect(receiver.callsFor(`charge:${refused}`).map(strip)).to.deep.equal([
        { messageKey: `charge:${refused}`, orderId: refused, event: PaymentEvent.REFUSED, refusalReason: "INSUFFICIENT_FUNDS", amountCents: 500n, currency: "EUR", traceparent: "", changed: true },
      ]);
      expect(receiver.callsFor(`refund:${charged}`).map(strip)).to.deep.equal([
        { messageKey: `refund:${charged}`, orderId: charged, event: PaymentEvent.REFUNDED, refusalReason: "", amountCents: 1_234n, currency: "EUR", traceparent: "", changed: true },
      ]);
    });

    it("sends a stored traceparent it cannot read as none, rather than have the row refused", async () => {
      const orderId = uniqueId("o-trace");
      await t.client().chargeOrder({ orderId, customerId: await fundedCustomer(t, 1_000n), amountCents: 100n, currency: "EUR", traceparent: TRACEPARENT });
      await eventually("delivered", delivered(t, `charge:${orderId}`));
      // A row written with a traceparent of another version (ff is invalid): requeued as the operator would, then woken by the next commit.
      await t.pool.query("UPDATE payment_outbox SET status = 'pending', traceparent = 'ff-zz', next_attempt_at = NOW(3) WHERE message_key = ?", [`charge:${orderId}`]);
      await t.client().chargeOrder({ orderId: uniqueId("o-wake"), customerId: await fundedCustomer(t, 0n), amountCents: 1n, currency: "EUR" });
      await eventually("delivered again", async () => receiver.callsFor(`charge:${orderId}`).length === 2 && (await delivered(t, `charge:${orderId}`)()));
      expect(receiver.callsFor(`charge:${orderId}`).map((c) => [c.traceparent, c.changed])).to.deep.equal([
        [TRACEPARENT, true],
        ["", false],
      ]);
    });

    it("shows its deliveries and the outbox on the payment service's /metrics", async () => {
      const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
      const value = (name: string) => Number(new RegExp(`^${name.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m").exec(text)?.[1]);
      expect(value('payment_relay_deliveries_total{result="delivered"}')).to.be.greaterThan(0);
      expect(text).to.match(/^payment_relay_call_failures_total\{code="PERMISSION_DENIED",cause="misconfigured"\} 0$/m);
      expect(value("payment_outbox_pending")).to.equal(0);
      expect(value("payment_outbox_dead")).to.equal(0);
      expect(value("payment_outbox_oldest_pending_age_seconds")).to.equal(0);
      expect(text).to.match(/^payment_outcome_commit_to_ack_seconds_count [1-9]/m);
    });
  });

  describe("the relay's handling of the receiver's answers", () => {
    let t: TestService;
    const relays: PaymentRelay[] = [];
    const closers: Array<() => void> = [];
    before(async () => {
      t = await startTestService();
    });
    afterEach(async () => {
      await Promise.all(relays.splice(0).map((r) => r.stop()));
      for (const close of closers.splice(0)) close();
    });
    after(async () => {
      await t?.stop();
    });

    function relay(opts: { config?: Partial<RelayConfig>; token?: string | (() => string) } = {}) {
      const { logger, lines } = captureLogger();
      const orders = createPaymentOutcomeClient({ baseUrl: receiver.url, token: opts.token ?? relayToken, defaultTimeoutMs: 2_000 });
      closers.push(orders.close);
      const metrics = createPaymentRelayMetrics(createMetrics().registry);
      const r = new PaymentRelay({ pool: t.pool, orders: orders.client, logger, config: { ...FAST, ...opts.config }, metrics });
      relays.push(r);
      return { relay: r, lines, metrics };
    }
    async function charge(cents = 100n, funded = true): Promise<string> {
      const orderId = uniqueId("o");
      await t.client().chargeOrder({ orderId, customerId: await fundedCustomer(t, funded ? 10_000n : 0n), amountCents: cents, currency: "EUR" });
      return `charge:${orderId}`;
    }

    it("retries UNAVAILABLE with backoff, never parking the row however many attempts, and delivers once the receiver is back", async () => {
      const key = await charge();
      receiver.fail(Code.Unavailable, { times: 4, keys: [key] });
      const { relay: r, lines, metrics } = relay({ config: { maxAttempts: 1 } });
      r.start();
      await eventually("delivered after the outage", delivered(t, key));
      const row = await outbox(t, key);
      expect(row!.attempts).to.equal(5);
      expect(receiver.callsFor(key).map((c) => c.failedWith ?? c.changed)).to.deep.equal([Code.Unavailable, Code.Unavailable, Code.Unavailable, Code.Unavailable, true]);
      const retries = lines.filter((l) => l.msg === "payment outcome delivery failed; retry scheduled");
      expect(retries).to.have.length(4);
      // Full jitter below a doubling ceiling (retryBaseMs 20): the n-th retry waits in [0, 20·2^(n-1)) ms.
      retries.forEach((l, i) => {
        const { min, max } = l.retryInMs as { min: number; max: number };
        expect(min, `retry ${i + 1}`).to.be.at.least(0);
        expect(max, `retry ${i + 1}`).to.be.below(Math.min(FAST.retryMaxMs, FAST.retryBaseMs * 2 ** i));
      });
      expect(String(retries[0]!.errors)).to.match(/RecordPaymentOutcome: UNAVAILABLE/);
      expect((await metrics.deliveries.get()).values.find((v) => v.labels.result === "dead")?.value).to.equal(0);
      expect((await metrics.callFailures.get()).values.find((v) => v.labels.code === "UNAVAILABLE")?.value).to.equal(4);
    });

    it("parks a row the receiver refuses with FAILED_PRECONDITION dead, naming the refusal, and delivers its neighbours", async () => {
      const bad = await charge();
      const good = await charge();
      receiver.fail(Code.FailedPrecondition, { keys: [bad] });
      const { relay: r, lines, metrics } = relay();
      r.start();
      await eventually("the refused row is dead and its neighbour delivered", async () => (await outbox(t, bad))?.status === "dead" && (await delivered(t, good)()));
      const row = await outbox(t, bad);
      expect(row!.attempts).to.equal(1);
      expect(row!.lastError).to.match(/^RecordPaymentOutcome item: FAILED_PRECONDITION: told to fail/);
      expect(receiver.callsFor(bad)).to.have.length(1);
      expect(lines.some((l) => l.msg === "payment outcome refused for good by the order service; outbox row is dead until requeued" && l.messageKey === bad)).to.equal(true);
      expect((await metrics.deliveries.get()).values.find((v) => v.labels.result === "dead")?.value).to.equal(1);
    });

    it("never parks rows while the order service refuses the relay's token (PERMISSION_DENIED), says which settings to check, and delivers once it is fixed", async () => {
      const key = await charge();
      // A token the order service accepts, without orders:payment-outcome: refused by its access rules, as a wrong role would be.
      const noScope = testToken({ subject: "wrong-role", scopes: [SCOPES.ordersRead], audience: AUDIENCES.orders, ttlSeconds: 3_600 });
      let token = noScope;
      const { relay: r, lines, metrics } = relay({ config: { maxAttempts: 1 }, token: () => token });
      r.start();
      await eventually("three refused rounds", async () => ((await outbox(t, key))?.attempts ?? 0) >= 3);
      expect((await outbox(t, key))!.status).to.equal("pending");
      expect(receiver.callsFor(key), "refused before the handler").to.have.length(0);
      const hint = lines.find((l) => l.level === 50 && String(l.msg).startsWith("the order service refused the payment relay itself (PERMISSION_DENIED)"));
      expect(hint?.msg).to.include("orders:payment-outcome").and.include("PAYMENT_RELAY_TOKEN").and.include("--role payment-relay");
      expect(JSON.stringify(lines)).not.to.include(noScope);
      expect((await metrics.callFailures.get()).values.find((v) => v.labels.code === "PERMISSION_DENIED")?.value).to.be.greaterThan(0);
      token = relayToken;
      await eventually("delivered with the right token", delivered(t, key));
      expect(receiver.callsFor(key).map((c) => c.changed)).to.deep.equal([true]);
    });

    it("delivers again after a lost reply, and the receiver answers the replay changed=false", async () => {
      const key = await charge();
      receiver.fail(Code.Unavailable, { times: 1, after: "apply", keys: [key] });
      relay().relay.start();
      await eventually("delivered", delivered(t, key));
      expect(receiver.callsFor(key).map((c) => c.failedWith ?? c.changed)).to.deep.equal([Code.Unavailable, false]);
      expect(receiver.recorded.filter((k) => k === key)).to.have.length(1);
    });

    it("delivers again after a lost ack (the standalone relay killed before its ack): the receiver sees a replay, the row ends delivered", async () => {
      const key = await charge();
      const env = {
        PAYMENT_DATABASE_URL: t.db.url,
        ORDER_SERVICE_URL: receiver.url,
        PAYMENT_RELAY_TOKEN: relayToken,
        PAYMENT_RELAY_LEASE_MS: "1500",
        PAYMENT_RELAY_CALL_TIMEOUT_MS: "500",
        PAYMENT_RELAY_BATCH_SIZE: "16",
        PAYMENT_RELAY_POLL_INTERVAL_MS: "50",
      };
      const killed = new ServiceProcess({ name: "payment-relay-lost-ack", entry: RELAY_MAIN, env: { ...env, FAILPOINTS: "payment-relay.before-ack=kill" } });
      await killed.start();
      try {
        expect(await killed.exited()).to.not.equal(0);
      } finally {
        await killed.kill();
      }
      expect(receiver.callsFor(key).map((c) => c.changed)).to.deep.equal([true]);
      expect((await outbox(t, key))!.status).to.equal("pending");
      const again = new ServiceProcess({ name: "payment-relay-after-lost-ack", entry: RELAY_MAIN, env });
      await again.start();
      try {
        await eventually("delivered by the next relay after the lease", delivered(t, key));
      } finally {
        expect(await again.stop("SIGTERM")).to.equal(0);
      }
      expect(receiver.callsFor(key).map((c) => c.changed)).to.deep.equal([true, false]);
      expect((await outbox(t, key))!.attempts).to.equal(2);
    });

    it("claims through payment_outbox_claim_idx without a sort, whatever the connection's collation, and reads its gauges from it", async () => {
      const now = new Date();
      await t.pool.query(
        "INSERT INTO payment_outbox (message_key, order_id, customer_id, outcome, amount_cents, currency, status, next_attempt_at, created_at) VALUES ?",
        [Array.from({ length: 300 }, (_, i) => [`charge:explain-${i}`, `explain-${i}`, "c", "CHARGED", 1, "EUR", "pending", now, now])],
      );
      const conn = await t.pool.getConnection();
      try {
        await conn.query("ANALYZE TABLE payment_outbox");
        for (const collation of ["utf8mb4_unicode_ci", "utf8mb4_bin", "utf8mb4_general_ci"]) {
          await conn.query(`SET NAMES utf8mb4 COLLATE ${collation}`);
          const [plan] = await conn.query<RowDataPacket[]>(`EXPLAIN ${paymentOutbox.sql.claimSelect}`, [50]);
          expect(plan[0]!.key, collation).to.equal("payment_outbox_claim_idx");
          expect(String(plan[0]!.Extra ?? ""), collation).not.to.match(/filesort/i);
        }
        const [stats] = await conn.query<RowDataPacket[]>(`EXPLAIN ${paymentOutbox.sql.stats}`);
        expect(stats.some((r) => r.key === "payment_outbox_claim_idx" && /Using index/.test(String(r.Extra)))).to.equal(true);
      } finally {
        conn.release();
        await t.pool.query("DELETE FROM payment_outbox WHERE message_key LIKE 'charge:explain-%'");
      }
    });

    it("the standalone relay refuses to start without PAYMENT_RELAY_TOKEN, or with a lease too short for its calls, naming the settings, and exits 1", async () => {
      const p = new ServiceProcess({
        name: "payment-relay-bad-config",
        entry: RELAY_MAIN,
        env: { PAYMENT_DATABASE_URL: t.db.url, ORDER_SERVICE_URL: receiver.url, PAYMENT_RELAY_TOKEN: "", PAYMENT_RELAY_LEASE_MS: "1000", PAYMENT_RELAY_CALL_TIMEOUT_MS: "800" },
      });
      const from = existsSync(p.logFile) ? statSync(p.logFile).size : 0;
      await p.start();
      try {
        expect(await p.exited()).to.equal(1);
      } finally {
        await p.kill();
      }
      const log = readFileSync(p.logFile).subarray(from).toString("utf8");
      expect(log).to.include("PAYMENT_RELAY_TOKEN (or PAYMENT_RELAY_TOKEN_FILE) is required");
      expect(log).to.include("PAYMENT_RELAY_LEASE_MS=1000 must exceed twice PAYMENT_RELAY_CALL_TIMEOUT_MS=800");
    });

    it("removes delivered rows past retention, keeps pending and dead ones, and the inbox still answers for their orders", async () => {
      const done = await charge();
      const dead = await charge();
      receiver.fail(Code.FailedPrecondition, { keys: [dead] });
      relay().relay.start();
      await eventually("settled", async () => (await delivered(t, done)()) && (await outbox(t, dead))?.status === "dead");
      await Promise.all(relays.splice(0).map((r) => r.stop()));
      const pending = await charge();
      const keep = new PaymentOutboxCleanup({ pool: t.pool, logger: pino({ level: "silent" }), config: { ...OUTBOX_CLEANUP_DEFAULTS, retentionMs: 3_600_000 } });
      expect(await keep.sweep(), "nothing is past an hour's retention").to.equal(0);
      await new Promise((r) => setTimeout(r, 5));
      const cleanup = new PaymentOutboxCleanup({ pool: t.pool, logger: pino({ level: "silent" }), config: { ...OUTBOX_CLEANUP_DEFAULTS, retentionMs: 1 } });
      expect(await cleanup.sweep()).to.be.greaterThan(0);
      expect(await outbox(t, done)).to.equal(undefined);
      expect((await outbox(t, dead))!.status).to.equal("dead");
      expect((await outbox(t, pending))!.status).to.equal("pending");
      expect(await t.count("payment_outbox", "status = 'delivered'")).to.equal(0);
      const orderId = done.slice("charge:".length);
      expect((await t.client().batchGetOrderPayments({ orderIds: [orderId] })).payments.map((p) => p.orderId)).to.deep.equal([orderId]);
    });
  });

  it("calls an order service that requires mTLS, with TLS_CA_FILE, TLS_CLIENT_CERT_FILE and TLS_CLIENT_KEY_FILE", async () => {
    const certs = makeTestCerts();
    const secure = await OutcomeReceiver.start({ tls: { cert: certs.server.cert, key: certs.server.key, clientCa: certs.ca.cert } });
    let t: TestService | undefined;
    try {
      const config = loadPaymentServiceConfig({
        PAYMENT_DATABASE_URL: "mysql://u:p@127.0.0.1:1/unused",
        AUTH_PUBLIC_KEYS: testAuthEnv.AUTH_PUBLIC_KEYS!,
        ORDER_SERVICE_URL: secure.url,
        PAYMENT_RELAY_TOKEN: relayToken,
        TLS_CA_FILE: certs.ca.certFile,
        TLS_CLIENT_CERT_FILE: certs.client.certFile,
        TLS_CLIENT_KEY_FILE: certs.client.keyFile,
      });
      if (!config.relay) throw new Error("relay expected");
      expect(config.relay.orderServiceUrl).to.match(/^https:/);
      t = await startTestService({ relay: { ...config.relay, config: FAST } });
      const orderId = uniqueId("o-tls");
      await t.client().chargeOrder({ orderId, customerId: await fundedCustomer(t, 1_000n), amountCents: 100n, currency: "EUR" });
      await eventually("delivered over mTLS", delivered(t, `charge:${orderId}`));
      expect(secure.callsFor(`charge:${orderId}`).map((c) => c.changed)).to.deep.equal([true]);
    } finally {
      await t?.stop();
      await secure.stop();
      certs.cleanup();
    }
  });

  it("runs the retention cleanup inside the payment service (PAYMENT_OUTBOX_*)", async () => {
    const t = await startTestService({
      relay: { orderServiceUrl: receiver.url, token: relayToken, config: FAST },
      outboxCleanup: { ...OUTBOX_CLEANUP_DEFAULTS, retentionMs: 1, intervalMs: 50 },
    });
    try {
      const orderId = uniqueId("o-clean");
      await t.client().chargeOrder({ orderId, customerId: await fundedCustomer(t, 1_000n), amountCents: 100n, currency: "EUR" });
      await eventually("delivered", () => receiver.callsFor(`charge:${orderId}`).length === 1);
      await eventually("removed after retention", async () => (await outbox(t, `charge:${orderId}`)) === undefined);
    } finally {
      await t.stop();
    }
  });
});
