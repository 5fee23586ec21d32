import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import type { RowDataPacket } from "mysql2";
import { pino } from "pino";
import { AUDIENCES, SCOPES } from "@shop/platform/auth";
import { RELAY_DEFAULTS, type RelayConfig } from "@shop/engine/relay";
import { createMetrics } from "@shop/platform/metrics";
import { createShipmentEventClient } from "@shop/sdk/clients";
import { ShipmentEvent } from "@shop/sdk/order";
import { roleToken, testToken } from "@shop/testkit/auth";
import { ServiceProcess } from "@shop/testkit/service-process";
import { createDeliveryRelayMetrics } from "../src/metrics.js";
import { shipmentEventOutbox } from "../src/outbox/event-flow.js";
import { DeliveryRelay, OUTBOX_CLEANUP_DEFAULTS, ShipmentEventOutboxCleanup } from "../src/outbox/relay.js";
import { EventReceiver } from "./event-receiver.js";
import { captureLogger, eventually, metricValue, startTestService, uniqueId, type TestService } from "./helpers.js";

const RELAY_MAIN = path.resolve(import.meta.dirname, "../src/relay-main.ts");
const relayToken = roleToken("delivery-relay");
const TRACEPARENT = `00-${"ab".repeat(16)}-${"cd".repeat(8)}-01`;

/** Fast enough for tests: retries within tens of milliseconds, a lease that runs out in a second and a half. */
const FAST: RelayConfig = { ...RELAY_DEFAULTS, batchSize: 16, concurrency: 2, pollIntervalMs: 20, retryBaseMs: 20, retryMaxMs: 200, leaseMs: 1_500, callTimeoutMs: 500 };

interface OutboxRow {
  messageKey: string;
  status: string;
  attempts: number;
  lastError: string | null;
}

describe("delivery relay: shipment_event_outbox delivered to a real ShipmentEventService", function () {
  this.timeout(60_000);
  let receiver: EventReceiver;
  before(async () => {
    receiver = await EventReceiver.start();
  });
  after(async () => {
    await receiver?.stop();
  });
  afterEach(() => receiver.heal());

  async function outbox(t: TestService, key: string): Promise<OutboxRow | undefined> {
    const [rows] = await t.pool.query<RowDataPacket[]>("SELECT message_key, status, attempts, last_error FROM shipment_event_outbox WHERE message_key = ?", [key]);
    const r = rows[0];
    return r && { messageKey: r.message_key, status: r.status, attempts: r.attempts, lastError: r.last_error };
  }
  const delivered = (t: TestService, key: string) => async () => (await outbox(t, key))?.status === "delivered";

  /** A manual shipment marked shipped over CarrierService: one SHIPPED row in the outbox. Returns its message key. */
  async function shipped(t: TestService, traceparent = ""): Promise<string> {
    const orderId = uniqueId("o");
    await t.client().createShipment({ orderId, customerId: uniqueId("c"), totalCents: 100n, currency: "EUR", carrier: "manual", traceparent });
    await t.carrier().markShipmentShipped({ orderId, trackingNumber: "TRK" });
    return `shipment:${orderId}:SHIPPED`;
  }

  describe("inside the delivery service (a poll of a minute: only the commit's wake-up delivers in time)", () => {
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

    it("delivers each event once, woken by the commit: SHIPPED and DELIVERED with shipment, carrier, time and the traceparent; DECLINED with its reason", async () => {
      const orderId = uniqueId("o-manual");
      const created = await t.client().createShipment({ orderId, customerId: "c1", totalCents: 2_500n, currency: "EUR", carrier: "manual", traceparent: TRACEPARENT });
      const shipmentId = created.shipment!.id;
      const before = Date.now();
      await t.carrier().markShipmentShipped({ orderId, trackingNumber: "TRK-9" });
      await eventually("SHIPPED is delivered", delivered(t, `shipment:${orderId}:SHIPPED`));
      await t.carrier().markShipmentDelivered({ orderId });
      await eventually("DELIVERED is delivered", delivered(t, `shipment:${orderId}:DELIVERED`));
      // Repeated reports record nothing and write no row: nothing more is delivered.
      await t.carrier().markShipmentDelivered({ orderId });

      const unknown = uniqueId("o-unknown");
      await t.client().createShipment({ orderId: unknown, customerId: "c2", totalCents: 100n, currency: "EUR", carrier: "pigeon" });
      await eventually("the unknown carrier's decline is delivered", delivered(t, `shipment:${unknown}:DECLINED`));
      const declined = uniqueId("o-declined");
      await t.client().createShipment({ orderId: declined, customerId: "c3", totalCents: 100n, currency: "EUR", carrier: "manual" });
      await t.carrier().declineShipment({ orderId: declined, reason: "NO CAPACITY" });
      await eventually("the carrier's decline is delivered", delivered(t, `shipment:${declined}:DECLINED`));

      const strip = ({ messageKey, orderId, event, shipmentId, carrier, declineReason, traceparent, changed }: (typeof receiver.calls)[number]) => ({
        messageKey,
        orderId,
        event,
        shipmentId,
        carrier,
        declineReason,
        traceparent,
        changed,
      });
      const base = { orderId, shipmentId, carrier: "manual", declineReason: "", traceparent: TRACEPARENT, changed: true };
      expect(receiver.callsFor(`shipment:${orderId}:SHIPPED`).map(strip)).to.deep.equal([{ ...base, messageKey: `shipment:${orderId}:SHIPPED`, event: ShipmentEvent.SHIPPED }]);
      expect(receiver.callsFor(`shipment:${orderId}:DELIVERED`).map(strip)).to.deep.equal([
        { ...base, messageKey: `shipment:${orderId}:DELIVERED`, event: ShipmentEvent.DELIVERED },
      ]);
      const at = receiver.callsFor(`shipment:${orderId}:SHIPPED`)[0]!.occurredAt!.getTime();
      expect(at).to.be.within(before - 1_000, Date.now() + 1_000);
      expect(receiver.callsFor(`shipment:${unknown}:DECLINED`).map((c) => [c.event, c.carrier, c.declineReason, c.traceparent, c.changed])).to.deep.equal([
        [ShipmentEvent.DECLINED, "pigeon", "UNKNOWN_CARRIER", "", true],
      ]);
      expect(receiver.callsFor(`shipment:${declined}:DECLINED`).map((c) => [c.event, c.declineReason])).to.deep.equal([[ShipmentEvent.DECLINED, "NO CAPACITY"]]);
    });

    it("sends a stored traceparent it cannot read as none, rather than have the row refused", async () => {
      const key = await shipped(t, TRACEPARENT);
      await eventually("delivered", delivered(t, key));
      // The row requeued by hand with a traceparent of another version (ff is invalid), then woken by the next commit.
      await t.pool.query("UPDATE shipment_event_outbox SET status = 'pending', traceparent = 'ff-zz', next_attempt_at = NOW(3) WHERE message_key = ?", [key]);
      const waker = await shipped(t);
      // Both rows, so the next test's gauges see nothing pending: the two may go in different claims.
      await eventually("delivered again", async () => receiver.callsFor(key).length === 2 && (await delivered(t, key)()) && (await delivered(t, waker)()));
      expect(receiver.callsFor(key).map((c) => [c.traceparent, c.changed])).to.deep.equal([
        [TRACEPARENT, true],
        ["", false],
      ]);
    });

    it("shows its deliveries and the outbox on the delivery service's /metrics", async () => {
      const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
      expect(metricValue(text, 'delivery_relay_deliveries_total{result="delivered"}')).to.be.greaterThan(0);
      expect(text).to.match(/^delivery_relay_call_failures_total\{code="PERMISSION_DENIED",cause="misconfigured"\} 0$/m);
      expect(metricValue(text, "shipment_event_outbox_pending")).to.equal(0);
      expect(metricValue(text, "shipment_event_outbox_dead")).to.equal(0);
      expect(metricValue(text, "shipment_event_outbox_oldest_pending_age_seconds")).to.equal(0);
      expect(text).to.match(/^shipment_event_commit_to_ack_seconds_count [1-9]/m);
    });
  });

  describe("the relay's handling of the receiver's answers", () => {
    let t: TestService;
    const relays: DeliveryRelay[] = [];
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
      const orders = createShipmentEventClient({ baseUrl: receiver.url, token: opts.token ?? relayToken, defaultTimeoutMs: 2_000 });
      closers.push(orders.close);
      const metrics = createDeliveryRelayMetrics(createMetrics().registry);
      const r = new DeliveryRelay({ pool: t.pool, orders: orders.client, logger, config: { ...FAST, ...opts.config }, metrics });
      relays.push(r);
      return { relay: r, lines, metrics };
    }

    it("retries UNAVAILABLE with backoff, never parking the row however many attempts, and delivers once the receiver is back", async () => {
      const key = await shipped(t);
      receiver.fail(Code.Unavailable, { times: 4, keys: [key] });
      const { relay: r, lines, metrics } = relay({ config: { maxAttempts: 1 } });
      r.start();
      await eventually("delivered after the outage", delivered(t, key));
      expect((await outbox(t, key))!.attempts).to.equal(5);
      expect(receiver.callsFor(key).map((c) => c.failedWith ?? c.changed)).to.deep.equal([Code.Unavailable, Code.Unavailable, Code.Unavailable, Code.Unavailable, true]);
      const retries = lines.filter((l) => l.msg === "shipment event delivery failed; retry scheduled");
      expect(retries).to.have.length(4);
      expect(String(retries[0]!.errors)).to.match(/RecordShipmentEvent: UNAVAILABLE/);
      expect((await metrics.deliveries.get()).values.find((v) => v.labels.result === "dead")?.value).to.equal(0);
      expect((await metrics.callFailures.get()).values.find((v) => v.labels.code === "UNAVAILABLE")?.value).to.equal(4);
    });

    it("parks a row the receiver refuses with FAILED_PRECONDITION dead, naming the refusal, and delivers its neighbours", async () => {
      const bad = await shipped(t);
      const good = await shipped(t);
      receiver.fail(Code.FailedPrecondition, { keys: [bad] });
      const { relay: r, lines, metrics } = relay();
      r.start();
      await eventually("the refused row is dead and its neighbour delivered", async () => (await outbox(t, bad))?.status === "dead" && (await delivered(t, good)()));
      const row = await outbox(t, bad);
      expect(row!.attempts).to.equal(1);
      expect(row!.lastError).to.match(/^RecordShipmentEvent item: FAILED_PRECONDITION: told to fail/);
      expect(receiver.callsFor(bad)).to.have.length(1);
      expect(lines.some((l) => l.msg === "shipment event refused for good by the order service; outbox row is dead until requeued" && l.messageKey === bad)).to.equal(true);
      expect((await metrics.deliveries.get()).values.find((v) => v.labels.result === "dead")?.value).to.equal(1);
    });

    it("never parks rows while the order service refuses the relay's token (PERMISSION_DENIED), says which settings to check, and delivers once it is fixed", async () => {
      const key = await shipped(t);
      // A token the order service accepts, without orders:shipment-event: refused by its access rules, as a wrong role would be.
      const noScope = testToken({ subject: "wrong-role", scopes: [SCOPES.ordersPaymentOutcome], audience: AUDIENCES.orders, ttlSeconds: 3_600 });
      let token = noScope;
      const { relay: r, lines, metrics } = relay({ config: { maxAttempts: 1 }, token: () => token });
      r.start();
      await eventually("three refused rounds", async () => ((await outbox(t, key))?.attempts ?? 0) >= 3);
      expect((await outbox(t, key))!.status).to.equal("pending");
      expect(receiver.callsFor(key), "refused before the handler").to.have.length(0);
      const hint = lines.find((l) => l.level === 50 && String(l.msg).startsWith("the order service refused the delivery relay itself (PERMISSION_DENIED)"));
      expect(hint?.msg).to.include("orders:shipment-event").and.include("DELIVERY_RELAY_TOKEN").and.include("--role delivery-relay");
      expect(JSON.stringify(lines)).not.to.include(noScope);
      expect((await metrics.callFailures.get()).values.find((v) => v.labels.code === "PERMISSION_DENIED")?.value).to.be.greaterThan(0);
      token = relayToken;
      await eventually("delivered with the right token", delivered(t, key));
      expect(receiver.callsFor(key).map((c) => c.changed)).to.deep.equal([true]);
    });

    it("keeps rows pending while the token is addressed to another service (UNAUTHENTICATED), naming DELIVERY_RELAY_TOKEN and the order service's keys", async () => {
      const key = await shipped(t);
      const wrongAudience = testToken({ subject: "delivery-relay", scopes: [SCOPES.ordersShipmentEvent], audience: AUDIENCES.deliveries, ttlSeconds: 3_600 });
      const { relay: r, lines } = relay({ config: { maxAttempts: 1 }, token: wrongAudience });
      r.start();
      await eventually("two refused rounds", async () => ((await outbox(t, key))?.attempts ?? 0) >= 2);
      expect((await outbox(t, key))!.status).to.equal("pending");
      const hint = lines.find((l) => String(l.msg).startsWith("the order service refused the delivery relay itself (UNAUTHENTICATED)"));
      expect(hint?.msg).to.include("DELIVERY_RELAY_TOKEN").and.include("AUTH_AUDIENCE");
    });

    it("delivers again after a lost reply, and the receiver answers the replay changed=false", async () => {
      const key = await shipped(t);
      receiver.fail(Code.Unavailable, { times: 1, after: "apply", keys: [key] });
      relay().relay.start();
      await eventually("delivered", delivered(t, key));
      expect(receiver.callsFor(key).map((c) => c.failedWith ?? c.changed)).to.deep.equal([Code.Unavailable, false]);
      expect(receiver.recorded.filter((k) => k === key)).to.have.length(1);
    });

    it("parks a row whose event is not one the order knows (edited by hand): the receiver's rules refuse it INVALID_ARGUMENT, the others go on", async () => {
      const bad = await shipped(t);
      const good = await shipped(t);
      await t.pool.query("UPDATE shipment_event_outbox SET event = 'LOST' WHERE message_key = ?", [bad]);
      relay().relay.start();
      await eventually("settled", async () => (await outbox(t, bad))?.status === "dead" && (await delivered(t, good)()));
      expect((await outbox(t, bad))!.lastError).to.match(/INVALID_ARGUMENT/);
      expect(receiver.callsFor(bad), "refused before the handler").to.have.length(0);
    });

    it("delivers again after a lost ack (the standalone relay killed before its ack): the receiver sees a replay, the row ends delivered", async () => {
      const key = await shipped(t);
      const env = {
        DELIVERY_DATABASE_URL: t.db.url,
        ORDER_SERVICE_URL: receiver.url,
        DELIVERY_RELAY_TOKEN: relayToken,
        DELIVERY_RELAY_LEASE_MS: "1500",
        DELIVERY_RELAY_CALL_TIMEOUT_MS: "500",
        DELIVERY_RELAY_BATCH_SIZE: "16",
        DELIVERY_RELAY_POLL_INTERVAL_MS: "50",
      };
      const killed = new ServiceProcess({ name: "delivery-relay-lost-ack", entry: RELAY_MAIN, env: { ...env, FAILPOINTS: "delivery-relay.before-ack=kill" } });
      await killed.start();
      try {
        expect(await killed.exited()).to.not.equal(0);
      } finally {
        await killed.kill();
      }
      expect(receiver.callsFor(key).map((c) => c.changed)).to.deep.equal([true]);
      expect((await outbox(t, key))!.status).to.equal("pending");
      const again = new ServiceProcess({ name: "delivery-relay-after-lost-ack", entry: RELAY_MAIN, env });
      await again.start();
      try {
        await eventually("delivered by the next relay after the lease", delivered(t, key));
      } finally {
        expect(await again.stop("SIGTERM")).to.equal(0);
      }
      expect(receiver.callsFor(key).map((c) => c.changed)).to.deep.equal([true, false]);
      expect((await outbox(t, key))!.attempts).to.equal(2);
    });

    it("the standalone relay refuses to start without DELIVERY_RELAY_TOKEN, or with a lease too short for its calls, naming the settings, and exits 1", async () => {
      const p = new ServiceProcess({
        name: "delivery-relay-bad-config",
        entry: RELAY_MAIN,
        env: { DELIVERY_DATABASE_URL: t.db.url, ORDER_SERVICE_URL: receiver.url, DELIVERY_RELAY_TOKEN: "", DELIVERY_RELAY_LEASE_MS: "1000", DELIVERY_RELAY_CALL_TIMEOUT_MS: "800" },
      });
      const from = existsSync(p.logFile) ? statSync(p.logFile).size : 0;
      await p.start();
      try {
        expect(await p.exited()).to.equal(1);
      } finally {
        await p.kill();
      }
      const log = readFileSync(p.logFile).subarray(from).toString("utf8");
      expect(log).to.include("DELIVERY_RELAY_TOKEN (or DELIVERY_RELAY_TOKEN_FILE) is required");
      expect(log).to.include("DELIVERY_RELAY_LEASE_MS=1000 must exceed twice DELIVERY_RELAY_CALL_TIMEOUT_MS=800");
    });

    it("claims through shipment_event_outbox_claim_idx without a sort, whatever the connection's collation, and reads its gauges from it", async () => {
      const now = new Date();
      await t.pool.query(
        "INSERT INTO shipment_event_outbox (message_key, order_id, shipment_id, event, carrier, occurred_at, status, next_attempt_at, created_at) VALUES ?",
        [Array.from({ length: 300 }, (_, i) => [`shipment:explain-${i}:SHIPPED`, `explain-${i}`, `s-${i}`, "SHIPPED", "manual", now, "pending", now, now])],
      );
      const conn = await t.pool.getConnection();
      try {
        await conn.query("ANALYZE TABLE shipment_event_outbox");
        for (const collation of ["utf8mb4_unicode_ci", "utf8mb4_bin", "utf8mb4_general_ci"]) {
          await conn.query(`SET NAMES utf8mb4 COLLATE ${collation}`);
          const [plan] = await conn.query<RowDataPacket[]>(`EXPLAIN ${shipmentEventOutbox.sql.claimSelect}`, [50]);
          expect(plan[0]!.key, collation).to.equal("shipment_event_outbox_claim_idx");
          expect(String(plan[0]!.Extra ?? ""), collation).not.to.match(/filesort/i);
        }
        const [stats] = await conn.query<RowDataPacket[]>(`EXPLAIN ${shipmentEventOutbox.sql.stats}`);
        expect(stats.some((r) => r.key === "shipment_event_outbox_claim_idx" && /Using index/.test(String(r.Extra)))).to.equal(true);
      } finally {
        conn.release();
        await t.pool.query("DELETE FROM shipment_event_outbox WHERE message_key LIKE 'shipment:explain-%'");
      }
    });

    it("removes delivered rows past retention, keeps pending and dead ones, and the shipment still shows what happened", async () => {
      const done = await shipped(t);
      const dead = await shipped(t);
      receiver.fail(Code.FailedPrecondition, { keys: [dead] });
      relay().relay.start();
      await eventually("settled", async () => (await delivered(t, done)()) && (await outbox(t, dead))?.status === "dead");
      await Promise.all(relays.splice(0).map((r) => r.stop()));
      const pending = await shipped(t);
      const keep = new ShipmentEventOutboxCleanup({ pool: t.pool, logger: pino({ level: "silent" }), config: { ...OUTBOX_CLEANUP_DEFAULTS, retentionMs: 3_600_000 } });
      expect(await keep.sweep(), "nothing is past an hour's retention").to.equal(0);
      await new Promise((r) => setTimeout(r, 5));
      const cleanup = new ShipmentEventOutboxCleanup({ pool: t.pool, logger: pino({ level: "silent" }), config: { ...OUTBOX_CLEANUP_DEFAULTS, retentionMs: 1 } });
      expect(await cleanup.sweep()).to.be.greaterThan(0);
      expect(await outbox(t, done)).to.equal(undefined);
      expect((await outbox(t, dead))!.status).to.equal("dead");
      expect((await outbox(t, pending))!.status).to.equal("pending");
      expect(await t.count("shipment_event_outbox", "status = 'delivered'")).to.equal(0);
      const orderId = done.slice("shipment:".length, -":SHIPPED".length);
      expect((await t.client().getShipment({ orderId })).shipment!.transitions.map((tr) => tr.source)).to.include("operator:test-harness");
    });
  });

  it("runs the retention cleanup inside the delivery service (DELIVERY_OUTBOX_*)", async () => {
    const t = await startTestService({
      relay: { orderServiceUrl: receiver.url, token: relayToken, config: FAST },
      outboxCleanup: { ...OUTBOX_CLEANUP_DEFAULTS, retentionMs: 1, intervalMs: 50 },
    });
    try {
      const key = await shipped(t);
      await eventually("delivered", () => receiver.callsFor(key).length === 1);
      await eventually("removed after retention", async () => (await outbox(t, key)) === undefined);
    } finally {
      await t.stop();
    }
  });
});
