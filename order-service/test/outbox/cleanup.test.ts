import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import { newId } from "@shop/platform/ids";
import { OrderStore } from "../../src/db/order-store.js";
import { ackDelivered } from "../../src/outbox/ack.js";
import { claimDueRows } from "../../src/outbox/claim.js";
import { CLEANUP_SELECT_SQL, OutboxCleanup, OUTBOX_CLEANUP_DEFAULTS, removeDeliveredBatch } from "../../src/outbox/cleanup.js";
import { quietLogger } from "./fake-voucher-service.js";
import { freshOutboxDb, type OutboxDb } from "./outbox-db.js";

const DAY_MS = 24 * 3_600_000;

describe("outbox cleanup", function () {
  let o: OutboxDb;
  let store: OrderStore;

  beforeEach(async () => {
    o = await freshOutboxDb();
    store = new OrderStore({ pool: o.pool, logger: quietLogger });
  });

  afterEach(async () => {
    await o.close();
  });

  /** A sent, qualifying order whose voucher request is in the state given; delivered ones `ageDays` ago. */
  async function sentOrder(state: "pending" | "delivered" | "dead", ageDays = 10): Promise<{ id: string; voucherId: string }> {
    const { order } = await store.create({ customerId: "c-1", totalCents: 12_345, currency: "EUR", requestId: newId() });
    await store.markSent(order.id);
    const voucherId = newId();
    if (state === "delivered") {
      await o.pool.query(
        `UPDATE voucher_outbox SET status = 'delivered', voucher_id = ?, delivered_at = NOW(3) - INTERVAL ? DAY WHERE order_id = ?`,
        [voucherId, ageDays, order.id],
      );
    } else if (state === "dead") {
      await o.pool.query(`UPDATE voucher_outbox SET status = 'dead', last_error = 'refused' WHERE order_id = ?`, [order.id]);
    }
    return { id: order.id, voucherId };
  }

  async function outboxStatuses(): Promise<string[]> {
    const [rows] = await o.pool.query<RowDataPacket[]>("SELECT status FROM voucher_outbox ORDER BY status");
    return rows.map((r) => r.status);
  }

  it("removes delivered rows past retention and keeps their voucher id on the order", async () => {
    const old = await sentOrder("delivered", 10);
    const young = await sentOrder("delivered", 1);
    await sentOrder("pending");
    await sentOrder("dead");

    expect(await removeDeliveredBatch(o.pool, 7 * DAY_MS, 500)).to.equal(1);

    expect(await outboxStatuses()).to.deep.equal(["dead", "delivered", "pending"]);
    const [orders] = await o.pool.query<RowDataPacket[]>("SELECT id, voucher_id FROM orders WHERE voucher_id IS NOT NULL");
    expect(orders.map((r) => ({ id: r.id, voucherId: r.voucher_id }))).to.deep.equal([{ id: old.id, voucherId: old.voucherId }]);
    expect((await store.get(young.id))!.voucher).to.include({ status: "ISSUED", voucherId: young.voucherId });
  });

  it("works in batches of the configured size, oldest first, and a sweep takes them all", async () => {
    for (let i = 0; i < 5; i++) await sentOrder("delivered", 10 + i);
    expect(await removeDeliveredBatch(o.pool, DAY_MS, 2)).to.equal(2);
    const [left] = await o.pool.query<RowDataPacket[]>("SELECT DATEDIFF(NOW(), delivered_at) AS age FROM voucher_outbox ORDER BY age");
    expect(left.map((r) => Number(r.age))).to.deep.equal([10, 11, 12]);
    const cleanup = new OutboxCleanup({ pool: o.pool, logger: quietLogger, config: { ...OUTBOX_CLEANUP_DEFAULTS, retentionMs: DAY_MS, batchSize: 2, batchPauseMs: 1 } });
    expect(await cleanup.sweep()).to.equal(3);
    expect(await outboxStatuses()).to.deep.equal([]);
  });

  it("reads the delivered index, never a filesort over the table", async () => {
    for (let i = 0; i < 20; i++) await sentOrder(i % 2 ? "delivered" : "pending", 10);
    const [plan] = await o.pool.query<RowDataPacket[]>(`EXPLAIN ${CLEANUP_SELECT_SQL}`, [DAY_MS * 1000, 500]);
    expect(plan[0]!.key).to.equal("voucher_outbox_delivered_idx");
    expect(String(plan[0]!.Extra)).not.to.contain("filesort");
  });

  it("holds no lock the relay's claim waits on", async () => {
    await sentOrder("delivered", 10);
    await sentOrder("pending");
    // A cleanup batch left open: its orders and delivered rows stay locked.
    const conn = await o.pool.getConnection();
    try {
      await conn.beginTransaction();
      const [rows] = await conn.query<RowDataPacket[]>(CLEANUP_SELECT_SQL, [DAY_MS * 1000, 500]);
      await conn.query("UPDATE orders SET voucher_id = ? WHERE id = ?", [rows[0]!.voucher_id, rows[0]!.order_id]);
      await conn.query("DELETE FROM voucher_outbox WHERE id = ?", [rows[0]!.id]);
      await conn.query("SET SESSION innodb_lock_wait_timeout = 1");
      const started = Date.now();
      const claimed = await claimDueRows(o.pool, { limit: 10, leaseMs: 30_000, token: "t:1" });
      expect(claimed).to.have.length(1);
      expect(Date.now() - started).to.be.below(500);
    } finally {
      await conn.rollback();
      conn.release();
    }
  });

  it("after archiving: the order shows its voucher, RequeueVoucher has nothing to do, MarkOrderSent stays a no-op", async () => {
    const old = await sentOrder("delivered", 10);
    await removeDeliveredBatch(o.pool, DAY_MS, 500);
    expect(await outboxStatuses()).to.deep.equal([]);

    expect((await store.get(old.id))!.voucher).to.include({ status: "ISSUED", voucherId: old.voucherId });
    const requeue = await store.requeueVoucher(old.id);
    expect(requeue.requeued).to.equal(false);
    expect(requeue.order.voucher).to.include({ status: "ISSUED", voucherId: old.voucherId });
    const again = await store.markSent(old.id);
    expect(again.changed).to.equal(false);
    expect(again.order.voucher).to.include({ status: "ISSUED", voucherId: old.voucherId });
    await store.markDelivered(old.id);
    expect((await store.getMany([old.id]))[0]!.voucher.status).to.equal("ISSUED");
    expect(await outboxStatuses()).to.deep.equal([]);
  });

  it("does not archive a row that was requeued and delivered again with another voucher between its read and its removal", async () => {
    const old = await sentOrder("delivered", 10);
    const untouched = await sentOrder("delivered", 10);
    const redelivered = newId();
    const removed = await removeDeliveredBatch(o.pool, DAY_MS, 500, {
      afterRead: async () => {
        // After the cleanup read both rows: an operator redelivers the first order (its voucher was voided),
        // and a relay claims the row and acks the new voucher.
        await store.requeueVoucher(old.id, true);
        const [claimed] = await claimDueRows(o.pool, { limit: 10, leaseMs: 30_000, token: "relay:1" });
        expect(claimed!.orderId).to.equal(old.id);
        expect(await ackDelivered(o.pool, "relay:1", [{ id: claimed!.id, voucherId: redelivered }])).to.deep.equal([]);
      },
    });

    expect(removed, "only the row that did not change").to.equal(1);
    expect((await store.get(old.id))!.voucher).to.include({ status: "ISSUED", voucherId: redelivered });
    const [rows] = await o.pool.query<RowDataPacket[]>("SELECT order_id, status, voucher_id FROM voucher_outbox");
    expect(rows.map((r) => ({ ...r }))).to.deep.equal([{ order_id: old.id, status: "delivered", voucher_id: redelivered }]);
    const [archived] = await o.pool.query<RowDataPacket[]>("SELECT id, voucher_id FROM orders WHERE voucher_id IS NOT NULL");
    expect(archived.map((r) => ({ ...r }))).to.deep.equal([{ id: untouched.id, voucher_id: untouched.voucherId }]);
  });

  it("runs on its interval once started, stops promptly, and never runs with retention 0", async () => {
    await sentOrder("delivered", 10);
    const off = new OutboxCleanup({ pool: o.pool, logger: quietLogger, config: { ...OUTBOX_CLEANUP_DEFAULTS, retentionMs: 0, intervalMs: 10 } });
    off.start();
    await new Promise((r) => setTimeout(r, 100));
    await off.stop();
    expect(await outboxStatuses()).to.deep.equal(["delivered"]);

    const on = new OutboxCleanup({ pool: o.pool, logger: quietLogger, config: { ...OUTBOX_CLEANUP_DEFAULTS, retentionMs: DAY_MS, intervalMs: 60_000 } });
    on.start();
    const deadline = Date.now() + 5_000;
    while ((await outboxStatuses()).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const stopping = Date.now();
    await on.stop();
    expect(Date.now() - stopping).to.be.below(1_000);
    expect(on.removed).to.equal(1);
  });
});
