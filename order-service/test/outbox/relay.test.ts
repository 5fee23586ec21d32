import { Code } from "@connectrpc/connect";
import { expect } from "chai";
import { createPool } from "@shop/platform/db";
import { Registry } from "@shop/platform/metrics";
import type { VoucherClient } from "@shop/sdk/clients";
import { freePort } from "@shop/testkit/ports";
import { ackDelivered } from "../../src/outbox/ack.js";
import { claimDueRows } from "../../src/outbox/claim.js";
import { createRelayMetrics, type RelayMetrics } from "../../src/metrics.js";
import { largestBatchBytes } from "../../src/outbox/deliver.js";
import { Relay, relayConfigProblems, type RelayConfig } from "../../src/outbox/relay.js";
import { sampleValue } from "../ops/metrics-text.js";
import { FakeVoucherService, quietLogger, startFakeVoucherServer, type FakeVoucherServer } from "./fake-voucher-service.js";
import {
  allDelivered,
  eventually,
  freshOutboxDb,
  insertOutboxRows,
  outboxRow,
  outboxRows,
  recordingLogger,
  type OutboxDb,
} from "./outbox-db.js";

/** Small timings so failure paths play out in milliseconds. */
const FAST: RelayConfig = {
  batchSize: 50,
  concurrency: 2,
  leaseMs: 2_000,
  pollIntervalMs: 50,
  callTimeoutMs: 500,
  retryBaseMs: 20,
  retryMaxMs: 100,
  maxAttempts: 20,
  maxRequestBytes: 1024 * 1024,
};

describe("outbox relay", () => {
  let o: OutboxDb;
  let srv: FakeVoucherServer;
  let fake: FakeVoucherService;
  const relays: Relay[] = [];

  function relay(
    config: Partial<RelayConfig> = {},
    extra: { voucher?: VoucherClient; logger?: typeof quietLogger; relayId?: string; metrics?: RelayMetrics } = {},
  ) {
    const r = new Relay({
      pool: o.pool,
      voucher: extra.voucher ?? srv.client,
      logger: extra.logger ?? quietLogger,
      config: { ...FAST, ...config },
      relayId: extra.relayId,
      metrics: extra.metrics,
    });
    relays.push(r);
    return r;
  }

  beforeEach(async () => {
    o = await freshOutboxDb();
    srv = await startFakeVoucherServer();
    fake = srv.fake;
  });

  afterEach(async () => {
    await Promise.all(relays.splice(0).map((r) => r.stop()));
    await srv.close();
    await o.close();
  });

  it("delivers pending rows and acks each with its voucher id", async () => {
    const orders = await insertOutboxRows(o.pool, 3);
    relay({ concurrency: 1 }).start(); // one loop, so one claim takes all three rows
    await eventually("all rows are delivered", () => allDelivered(o.pool));
    for (const orderId of orders) {
      const row = await outboxRow(o.pool, orderId);
      expect(row).to.include({ status: "delivered", attempts: 1, lockedBy: null, lastError: null });
      expect(row.voucherId).to.equal(fake.vouchers.get(orderId)!.id);
      expect(row.deliveredAt).to.be.instanceOf(Date);
    }
    expect(fake.batchCalls).to.deep.equal([orders]);
  });

  it("retries after UNAVAILABLE and delivers once the voucher service answers", async () => {
    fake.failBatches = [Code.Unavailable, Code.Unavailable];
    const { logger, records } = recordingLogger();
    const [order] = await insertOutboxRows(o.pool, 1);
    relay({}, { logger }).start();
    await eventually("the row is delivered", () => allDelivered(o.pool));
    expect(fake.batchCalls).to.have.length(3);
    expect(await outboxRow(o.pool, order!)).to.include({ status: "delivered", attempts: 3, lastError: null });
    const retries = records.filter((r) => r.msg.includes("retry scheduled"));
    expect(retries).to.have.length(2);
    expect(retries[0]!.level).to.equal(30);
    expect(JSON.stringify(retries[0]!.errors)).to.include("UNAVAILABLE");
  });

  it("keeps the last error on a row while it waits for its next attempt", async () => {
    fake.failBatches = Array(1000).fill(Code.ResourceExhausted);
    const [order] = await insertOutboxRows(o.pool, 1);
    relay().start();
    await eventually("the row has failed twice", async () => (await outboxRow(o.pool, order!)).attempts >= 2);
    const row = await outboxRow(o.pool, order!);
    expect(row.status).to.equal("pending");
    expect(row.lastError).to.include("RESOURCE_EXHAUSTED");
  });

  it("marks only the row refused for good as dead and delivers the others", async () => {
    const orders = await insertOutboxRows(o.pool, 3);
    fake.refuse.set(orders[1]!, Code.InvalidArgument);
    const { logger, records } = recordingLogger();
    relay({}, { logger }).start();
    await eventually("no row is pending", async () => (await outboxRows(o.pool)).every((r) => r.status !== "pending"));
    expect((await outboxRow(o.pool, orders[0]!)).status).to.equal("delivered");
    expect((await outboxRow(o.pool, orders[2]!)).status).to.equal("delivered");
    const dead = await outboxRow(o.pool, orders[1]!);
    expect(dead).to.include({ status: "dead", lockedBy: null, voucherId: null });
    expect(dead.lastError).to.include("INVALID_ARGUMENT");
    expect(fake.requests.get(orders[1]!)).to.equal(1);
    const alert = records.find((r) => r.level === 50 && r.orderId === orders[1]);
    expect(alert, "an error log naming the order").to.exist;
  });

  it("falls back to one call per row when the whole batch is refused, so only the bad row goes dead", async () => {
    const orders = await insertOutboxRows(o.pool, 4);
    fake.failBatches = [Code.InvalidArgument];
    fake.refuse.set(orders[2]!, Code.AlreadyExists);
    relay({ concurrency: 1 }).start(); // one loop, so the refused batch holds all four rows
    await eventually("no row is pending", async () => (await outboxRows(o.pool)).every((r) => r.status !== "pending"));
    expect(fake.batchCalls).to.have.length(1);
    expect([...fake.singleCalls].sort()).to.deep.equal([...orders].sort());
    const rows = await outboxRows(o.pool);
    expect(rows.map((r) => r.status)).to.deep.equal(["delivered", "delivered", "dead", "delivered"]);
    expect(rows[2]!.lastError).to.include("ALREADY_EXISTS");
    expect(rows[0]!.voucherId).to.equal(fake.vouchers.get(orders[0]!)!.id);
  });

  it("lets two relays drain one outbox of 500 rows with every order issued exactly once", async () => {
    const orders = await insertOutboxRows(o.pool, 500);
    const callsBy = [0, 0];
    const counting = (i: number): VoucherClient =>
      ({
        ...srv.client,
        batchIssueVouchers: (...args: Parameters<VoucherClient["batchIssueVouchers"]>) => {
          callsBy[i]!++;
          return srv.client.batchIssueVouchers(...args);
        },
      }) as VoucherClient;
    const config = { batchSize: 20, concurrency: 3 };
    relay(config, { voucher: counting(0), relayId: "relay-a" }).start();
    relay(config, { voucher: counting(1), relayId: "relay-b" }).start();
    await eventually("all rows are delivered", () => allDelivered(o.pool), 20_000);

    // Exactly once is one voucher per order, whatever the number of requests: under load a call may
    // outlive its deadline or a lease, and the retry is legitimate (the service replays, created=false).
    // The vouchers were issued for exactly the outbox's order ids, as sent (the idempotency key is
    // the order id, never a value made up per attempt), each to its order's customer,
    expect(new Set(fake.vouchers.keys())).to.deep.equal(new Set(orders));
    const rows = await outboxRows(o.pool);
    for (const r of rows) expect(fake.vouchers.get(r.orderId)!.customerId).to.equal(`cust-${r.orderId.slice(-6)}`);
    // and every row is acked with its own order's voucher, so 500 distinct vouchers in all.
    expect(rows.filter((r) => r.voucherId === fake.vouchers.get(r.orderId)!.id)).to.have.length(500);
    expect(new Set(rows.map((r) => r.voucherId)).size).to.equal(500);
    expect(rows.every((r) => r.attempts >= 1 && fake.requests.get(r.orderId)! >= 1)).to.equal(true);
    expect(callsBy[0], "relay a took part").to.be.above(0);
    expect(callsBy[1], "relay b took part").to.be.above(0);
  });

  it("reclaims a row whose lease expired, and fences off the stale claimer's ack", async () => {
    const [order] = await insertOutboxRows(o.pool, 1);
    // A relay that claimed the row and then stalled past its lease.
    const [claimed] = await claimDueRows(o.pool, { limit: 10, leaseMs: 800, token: "stalled:1" });
    relay().start();
    await new Promise((r) => setTimeout(r, 150));
    expect(fake.requests.size, "no delivery while the lease holds").to.equal(0);

    await eventually("the row is delivered by the other relay", () => allDelivered(o.pool));
    const delivered = await outboxRow(o.pool, order!);
    expect(delivered.attempts).to.equal(2);

    const stale = await ackDelivered(o.pool, "stalled:1", [{ id: claimed!.id, voucherId: "VOUCHER-OF-STALE-CLAIM" }]);
    expect(stale, "the stale ack updated nothing").to.deep.equal([claimed!.id]);
    expect((await outboxRow(o.pool, order!)).voucherId).to.equal(delivered.voucherId);
  });

  it("delivers a new row at once after wake(), without waiting for the poll interval", async () => {
    const r = relay({ pollIntervalMs: 10_000 });
    r.start();
    await new Promise((res) => setTimeout(res, 100)); // the first, empty claims are done; the loops are pausing
    await insertOutboxRows(o.pool, 1);
    await new Promise((res) => setTimeout(res, 300));
    expect(await allDelivered(o.pool), "nothing happens before wake()").to.equal(false);

    r.wake();
    // Well inside the 10 s poll interval, without asserting how fast a loaded machine is.
    await eventually("the row is delivered", () => allDelivered(o.pool), 5_000);
  });

  it("does not lose a wake() that arrives while every loop is busy", async () => {
    const r = relay({ pollIntervalMs: 10_000, concurrency: 1 });
    fake.delayMs = 200;
    await insertOutboxRows(o.pool, 1);
    r.start();
    await fake.nextCall();
    await insertOutboxRows(o.pool, 1); // committed while the only loop is mid-call
    r.wake();
    await eventually("both rows are delivered", () => allDelivered(o.pool), 2_000);
  });

  it("keeps retrying while the voucher service is down and delivers each row once when it is back", async () => {
    await srv.down();
    const orders = await insertOutboxRows(o.pool, 5);
    relay().start();
    await eventually("every row has failed at least twice", async () => (await outboxRows(o.pool)).every((r) => r.attempts >= 2));
    expect((await outboxRows(o.pool)).every((r) => r.status === "pending" && /UNAVAILABLE/.test(r.lastError ?? ""))).to.equal(true);

    await srv.up();
    await eventually("all rows are delivered", () => allDelivered(o.pool));
    expect(orders.map((id) => fake.requests.get(id))).to.deep.equal([1, 1, 1, 1, 1]);
  });

  it("retries after a call that outlives its deadline, and the replay acks the same voucher", async () => {
    const [order] = await insertOutboxRows(o.pool, 1);
    fake.delayMs = 300;
    relay({ callTimeoutMs: 100 }).start();
    await eventually("the first call has been answered late", () => fake.vouchers.size === 1);
    fake.delayMs = 0;
    await eventually("the row is delivered", () => allDelivered(o.pool));
    const row = await outboxRow(o.pool, order!);
    expect(row.attempts).to.be.at.least(2);
    expect(row.voucherId).to.equal(fake.vouchers.get(order!)!.id);
  });

  it("stop() waits for a call in flight and acks its row", async () => {
    fake.delayMs = 300;
    const [order] = await insertOutboxRows(o.pool, 1);
    const r = relay();
    r.start();
    await fake.nextCall();
    const first = r.stop();
    const second = r.stop();
    expect(second).to.equal(first);
    await first;
    expect(await outboxRow(o.pool, order!)).to.include({ status: "delivered", lockedBy: null });

    await insertOutboxRows(o.pool, 1);
    await new Promise((res) => setTimeout(res, 150));
    expect(fake.batchCalls, "no claim after stop()").to.have.length(1);
  });

  it("survives an unreachable database, logging each failure, and stops cleanly", async () => {
    const deadPool = createPool({ url: `mysql://nobody:pw@127.0.0.1:${await freePort()}/nothing`, connectionLimit: 2 });
    const { logger, records } = recordingLogger();
    const r = new Relay({ pool: deadPool, voucher: srv.client, logger, config: { ...FAST, pollIntervalMs: 20, retryBaseMs: 10 } });
    r.start();
    try {
      await eventually("a few failures are logged", () => records.filter((x) => x.level === 50).length >= 3, 5_000);
      expect(records.find((x) => x.level === 50)!.msg).to.include("retrying");
    } finally {
      await r.stop();
      await deadPool.end();
    }
  });

  /** A relay's own metrics registry, read as text. */
  function metered() {
    const registry = new Registry();
    const metrics = createRelayMetrics(registry);
    return { metrics, value: async (name: string, labels: Record<string, string> = {}) => sampleValue(await registry.metrics(), name, labels) };
  }

  it("splits a batch that fails as a whole so a poison row cannot block its neighbours, and parks it after maxAttempts", async () => {
    const orders = await insertOutboxRows(o.pool, 8);
    const poison = orders[5]!;
    fake.poison.set(poison, Code.Internal);
    const { logger, records } = recordingLogger();
    const m = metered();
    relay({ concurrency: 1, maxAttempts: 3 }, { logger, metrics: m.metrics }).start(); // one loop: the first claim holds all eight

    // The relay counts a row after the UPDATE that settles it commits: wait for the count too, not the row alone.
    await eventually(
      "the poison row is dead, and counted",
      async () => (await outboxRow(o.pool, poison)).status === "dead" && ((await m.value("relay_deliveries_total", { result: "dead" })) ?? 0) >= 1,
    );
    const rows = await outboxRows(o.pool);
    for (const r of rows.filter((x) => x.orderId !== poison)) {
      // Delivered in the first round, by the split: never retried behind the poison row.
      expect(r).to.include({ status: "delivered", attempts: 1 });
      expect(r.voucherId).to.equal(fake.vouchers.get(r.orderId)!.id);
    }
    const dead = await outboxRow(o.pool, poison);
    expect(dead).to.include({ attempts: 3, lockedBy: null, voucherId: null });
    expect(dead.lastError).to.match(/^gave up after 3 attempts: failed on its own: BatchIssueVouchers: INTERNAL: /);
    // Halved 8 → 4 → 2 → 1 in the first round; afterwards the row, known to fail on its own, went alone.
    expect(fake.batchCalls.slice(0, 7).map((c) => c.length)).to.deep.equal([8, 4, 4, 2, 2, 1, 1]);
    expect(fake.batchCalls.slice(7)).to.deep.equal([[poison], [poison]]);
    expect(fake.vouchers.has(poison)).to.equal(false);
    expect(await m.value("relay_deliveries_total", { result: "dead" })).to.equal(1);
    expect(await m.value("relay_deliveries_total", { result: "delivered" })).to.equal(7);
    expect(await m.value("relay_batch_split_rows_total")).to.equal(8 + 4 + 2);
    expect(await m.value("relay_call_failures_total", { code: "INTERNAL", cause: "suspect" })).to.equal(6);
    const gaveUp = records.find((r) => r.level === 50 && r.orderId === poison);
    expect(gaveUp?.msg).to.include("gave up after 3 attempts");
  });

  it("parks a row whose own item keeps failing with a retryable code after maxAttempts, naming the last error", async () => {
    const [order, other] = await insertOutboxRows(o.pool, 2);
    fake.refuse.set(order!, Code.Internal);
    relay({ maxAttempts: 4 }).start();
    await eventually("the row is dead", async () => (await outboxRow(o.pool, order!)).status === "dead");
    const dead = await outboxRow(o.pool, order!);
    expect(dead.attempts).to.equal(4);
    expect(dead.lastError).to.match(/^gave up after 4 attempts: failed on its own: BatchIssueVouchers item: INTERNAL: order .* refused by the test$/);
    expect(fake.requests.get(order!)).to.equal(4);
    expect((await outboxRow(o.pool, other!)).status).to.equal("delivered");
  });

  it("never parks a row for an outage, however many attempts it has had, and does not split a batch that fails for everyone", async () => {
    const orders = await insertOutboxRows(o.pool, 4);
    fake.failBatches = [Code.Internal, Code.Internal, Code.Internal]; // the first three calls, then an outage
    fake.failAll = Code.Unavailable;
    const m = metered();
    relay({ concurrency: 1, maxAttempts: 2 }, { metrics: m.metrics }).start();
    // Attempts are counted when a row is claimed, before its call: wait for the third outage call to have failed
    // too, so lifting the outage cannot let that claim's call through.
    const outageFailures = () => m.value("relay_call_failures_total", { code: "UNAVAILABLE", cause: "unavailable" });
    await eventually(
      "every row has failed more often than maxAttempts, three times for the outage",
      async () => (await outboxRows(o.pool)).every((r) => r.attempts >= 4) && ((await outageFailures()) ?? 0) >= 3,
    );
    expect((await outboxRows(o.pool)).every((r) => r.status === "pending" && /UNAVAILABLE/.test(r.lastError!))).to.equal(true);
    fake.failAll = undefined;
    await eventually("every row is delivered", () => allDelivered(o.pool));

    // The batch and both its halves failed: no row was blamed, and nothing was split further.
    expect(fake.batchCalls.slice(0, 3).map((c) => c.length)).to.deep.equal([4, 2, 2]);
    expect(await m.value("relay_batch_split_rows_total")).to.equal(4);
    const rows = await outboxRows(o.pool);
    expect(rows.every((r) => r.status === "delivered" && r.lastError === null)).to.equal(true);
    expect(new Set(rows.map((r) => r.orderId))).to.deep.equal(new Set(orders));
    expect(await m.value("relay_deliveries_total", { result: "dead" })).to.equal(0);
    expect(await m.value("relay_call_failures_total", { code: "UNAVAILABLE", cause: "unavailable" })).to.be.at.least(3);
  });

  for (const code of [Code.PermissionDenied, Code.Unauthenticated]) {
    it(`keeps every row pending with backoff while the voucher service refuses the relay with ${Code[code]}, logs and counts it`, async () => {
      const orders = await insertOutboxRows(o.pool, 5);
      fake.failAll = code;
      const { logger, records } = recordingLogger();
      const m = metered();
      relay({ maxAttempts: 2 }, { logger, metrics: m.metrics }).start();
      await eventually("every row has been refused more often than maxAttempts", async () => (await outboxRows(o.pool)).every((r) => r.attempts >= 3));
      const rows = await outboxRows(o.pool);
      const name = code === Code.PermissionDenied ? "PERMISSION_DENIED" : "UNAUTHENTICATED";
      expect(rows.every((r) => r.status === "pending" && r.lastError!.startsWith(`BatchIssueVouchers: ${name}`))).to.equal(true);
      expect(fake.singleCalls, "no per-row fallback: the refusal is the relay's, not a row's").to.deep.equal([]);
      const loud = records.filter((r) => r.level === 50 && r.code === name);
      expect(loud.length).to.be.above(0);
      expect(loud[0]!.msg).to.include(code === Code.PermissionDenied ? "lacks the scope" : "does not accept the relay's token");
      // A row's third claim follows the settle, and so the count, of its second call.
      expect(await m.value("relay_call_failures_total", { code: name, cause: "misconfigured" })).to.be.at.least(2);
      expect(await m.value("relay_deliveries_total", { result: "dead" })).to.equal(0);

      fake.failAll = undefined;
      await eventually("every row is delivered once the relay is let in", () => allDelivered(o.pool));
      expect(new Set(fake.vouchers.keys())).to.deep.equal(new Set(orders));
    });
  }

  it("fences off an ack replayed after the lease was lost: no row changes, and it is counted stale", async () => {
    const [order] = await insertOutboxRows(o.pool, 1);
    // Relay A gets its answer, then stalls (a long GC pause, a frozen VM) before it acks.
    let answered!: () => void;
    const hasAnswer = new Promise<void>((r) => (answered = r));
    let resume!: () => void;
    const resumed = new Promise<void>((r) => (resume = r));
    const stalling = {
      ...srv.client,
      batchIssueVouchers: async (...args: Parameters<VoucherClient["batchIssueVouchers"]>) => {
        const res = await srv.client.batchIssueVouchers(...args);
        answered();
        await resumed;
        return res;
      },
    } as VoucherClient;
    const { logger, records } = recordingLogger();
    const a = metered();
    relay({ concurrency: 1, pollIntervalMs: 10_000 }, { voucher: stalling, metrics: a.metrics, logger, relayId: "relay-a" }).start();
    await hasAnswer;

    // Its lease runs out (moved to the past rather than waited for); relay B claims the row and acks it.
    await o.pool.query("UPDATE voucher_outbox SET next_attempt_at = NOW(3) - INTERVAL 1 SECOND");
    const b = relay({ concurrency: 1 }, { relayId: "relay-b" });
    b.start();
    await eventually("relay B delivered the row", () => allDelivered(o.pool));
    await b.stop();
    const before = await outboxRow(o.pool, order!);
    expect(before.attempts).to.equal(2);

    resume();
    await eventually("relay A's late ack is counted stale", async () => (await a.value("relay_deliveries_total", { result: "stale" })) === 1);
    expect(await outboxRow(o.pool, order!)).to.deep.equal(before);
    expect(await a.value("relay_deliveries_total", { result: "delivered" })).to.equal(0);
    expect(records.find((r) => r.level === 40 && r.op === "ack")?.msg).to.include("lease lost before settling");
    expect(fake.vouchers.size).to.equal(1);
  });

  it("stops splitting a failing batch when the next level could not end within the lease", async () => {
    const orders = await insertOutboxRows(o.pool, 8);
    fake.poison.set(orders[0]!, Code.Internal);
    // A clock on which every call takes a full call timeout (calls made together end together).
    let now = 1_000_000;
    const ticking: VoucherClient = {
      ...srv.client,
      batchIssueVouchers: async (...args: Parameters<VoucherClient["batchIssueVouchers"]>) => {
        const start = now;
        try {
          return await srv.client.batchIssueVouchers(...args);
        } finally {
          now = Math.max(now, start + FAST.callTimeoutMs);
        }
      },
    } as VoucherClient;
    const r = new Relay({
      pool: o.pool,
      voucher: ticking,
      logger: quietLogger,
      // Lease 2000, call timeout 500: calls must end by 2000 - 500 = 1500 ms after the claim.
      config: { ...FAST, concurrency: 1, pollIntervalMs: 10_000 },
      now: () => now,
    });
    relays.push(r);
    r.start();
    await eventually("the first round is settled", async () =>
      (await outboxRows(o.pool)).every((x) => x.status === "delivered" || x.lastError !== null),
    );
    await r.stop();
    // Whole batch (ends at 500), halves (start at 500, end at 1000), quarters (1000 → 1500); no room for pairs.
    expect(fake.batchCalls.map((c) => c.length)).to.deep.equal([8, 4, 4, 2, 2]);
    const rows = await outboxRows(o.pool);
    expect(rows.filter((x) => x.status === "delivered")).to.have.length(6);
    const left = rows.filter((x) => x.status === "pending");
    expect(left.map((x) => x.orderId)).to.deep.equal([orders[0], orders[1]]);
    expect(left.every((x) => x.lastError!.endsWith("(its batch failed as a whole; not split further within the lease)"))).to.equal(true);
  });

  it("never sends a batch larger than the receiver accepts: the widest rows in the largest batch that passes the start check go through", async () => {
    const limit = 16 * 1024;
    const small = await startFakeVoucherServer(undefined, 0, { maxMessageBytes: limit });
    try {
      const fits = Math.floor(limit / largestBatchBytes(1));
      expect(relayConfigProblems({ ...FAST, batchSize: fits, maxRequestBytes: limit })).to.deep.equal([]);
      expect(relayConfigProblems({ ...FAST, batchSize: fits + 1, maxRequestBytes: limit })).to.have.length(1);
      // Every column at its longest, in 4-byte characters, and the longest varint for the total.
      const wide = (n: number, last: number) => "\u{10FFFF}".repeat(n - 1) + String.fromCodePoint(0x1f600 + last);
      const traceparent = `00-${"f".repeat(32)}-${"f".repeat(16)}-01`;
      for (let i = 0; i < fits; i++) {
        await o.pool.query(
          `INSERT INTO voucher_outbox (order_id, customer_id, total_cents, currency, status, next_attempt_at, created_at, traceparent)
           VALUES (?, ?, -9223372036854775808, ?, 'pending', NOW(3), NOW(3), ?)`,
          [wide(26, i), wide(64, i), wide(3, 0), traceparent],
        );
      }
      relay({ concurrency: 1, batchSize: fits, maxRequestBytes: limit }, { voucher: small.client }).start();
      await eventually("all rows are delivered", () => allDelivered(o.pool));
      expect(small.fake.batchCalls.map((c) => c.length)).to.deep.equal([fits]);

      // The limit is real: twice as many such items are refused as too large.
      const items = Array.from({ length: 2 * fits }, (_, i) => ({
        orderId: wide(26, i),
        customerId: wide(64, i),
        orderTotalCents: -(2n ** 63n),
        currency: wide(3, 0),
        traceparent,
      }));
      const refused = await small.client.batchIssueVouchers({ items }).then(
        () => undefined,
        (err: unknown) => err as { code: Code },
      );
      expect(refused?.code).to.equal(Code.ResourceExhausted);
    } finally {
      await small.close();
    }
  });

  it("refuses a lease that a call and its fallback could outlive", () => {
    expect(() => relay({ leaseMs: 1_000, callTimeoutMs: 500 })).to.throw(/RELAY_LEASE_MS/);
  });
});
