import { Code } from "@connectrpc/connect";
import { expect } from "chai";
import { createPool } from "@shop/platform/db";
import type { VoucherClient } from "@shop/sdk/clients";
import { freePort } from "@shop/testkit/ports";
import { ackDelivered } from "../../src/outbox/ack.js";
import { claimDueRows } from "../../src/outbox/claim.js";
import { Relay, type RelayConfig } from "../../src/outbox/relay.js";
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
};

describe("outbox relay", () => {
  let o: OutboxDb;
  let srv: FakeVoucherServer;
  let fake: FakeVoucherService;
  const relays: Relay[] = [];

  function relay(config: Partial<RelayConfig> = {}, extra: { voucher?: VoucherClient; logger?: typeof quietLogger; relayId?: string } = {}) {
    const r = new Relay({
      pool: o.pool,
      voucher: extra.voucher ?? srv.client,
      logger: extra.logger ?? quietLogger,
      config: { ...FAST, ...config },
      relayId: extra.relayId,
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

    expect(fake.requests.size).to.equal(500);
    expect([...fake.requests.values()].every((n) => n === 1), "one request per order").to.equal(true);
    const rows = await outboxRows(o.pool);
    expect(rows.every((r) => r.attempts === 1 && r.voucherId === fake.vouchers.get(r.orderId)!.id)).to.equal(true);
    expect(new Set(rows.map((r) => r.orderId))).to.deep.equal(new Set(orders));
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

    const woken = Date.now();
    r.wake();
    await eventually("the row is delivered", () => allDelivered(o.pool), 1_000);
    expect(Date.now() - woken).to.be.below(500);
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

  it("refuses a lease that a call and its fallback could outlive", () => {
    expect(() => relay({ leaseMs: 1_000, callTimeoutMs: 500 })).to.throw(/RELAY_LEASE_MS/);
  });
});
