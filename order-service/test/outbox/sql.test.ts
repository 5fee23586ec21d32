import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import { createPool } from "@shop/platform/db";
import { ackDelivered } from "../../src/outbox/ack.js";
import { CLAIM_SELECT_SQL, claimDueRows } from "../../src/outbox/claim.js";
import { LAST_ERROR_MAX, markDead, scheduleRetries } from "../../src/outbox/fail.js";
import { freshOutboxDb, insertOutboxRows, outboxRow, outboxRows, type OutboxDb } from "./outbox-db.js";

describe("outbox SQL operations", () => {
  let o: OutboxDb;
  beforeEach(async () => {
    o = await freshOutboxDb();
  });
  afterEach(async () => {
    await o.close();
  });

  for (const shape of ["every row is pending and due", "most rows are already delivered"]) {
    it(`claims through the claim index, without a filesort, when ${shape}`, async () => {
      await insertOutboxRows(o.pool, 300);
      if (shape !== "every row is pending and due") await o.pool.query("UPDATE voucher_outbox SET status = 'delivered' WHERE id % 10 <> 0");
      await o.pool.query("ANALYZE TABLE voucher_outbox");
      const [plan] = await o.pool.query<RowDataPacket[]>(`EXPLAIN ${CLAIM_SELECT_SQL}`, [100]);
      expect(plan).to.have.length(1);
      expect(plan[0]!.key).to.equal("voucher_outbox_claim_idx");
      expect(String(plan[0]!.Extra ?? "")).not.to.match(/filesort/i);
    });
  }

  it("leases due rows to the claim token, oldest first, and counts the attempt", async () => {
    const orders = await insertOutboxRows(o.pool, 5);
    const claimed = await claimDueRows(o.pool, { limit: 3, leaseMs: 60_000, token: "r:1" });
    expect(claimed.map((r) => r.orderId)).to.deep.equal(orders.slice(0, 3));
    expect(claimed.every((r) => r.attempts === 1 && r.totalCents === 12_345 && r.currency === "EUR")).to.equal(true);
    const rows = await outboxRows(o.pool);
    expect(rows.map((r) => r.lockedBy)).to.deep.equal(["r:1", "r:1", "r:1", null, null]);
    expect(rows.map((r) => r.attempts)).to.deep.equal([1, 1, 1, 0, 0]);
  });

  it("does not claim a leased row again until its lease expires", async () => {
    await insertOutboxRows(o.pool, 1);
    expect(await claimDueRows(o.pool, { limit: 10, leaseMs: 300, token: "a:1" })).to.have.length(1);
    expect(await claimDueRows(o.pool, { limit: 10, leaseMs: 300, token: "b:1" })).to.have.length(0);
    await new Promise((r) => setTimeout(r, 350));
    const reclaimed = await claimDueRows(o.pool, { limit: 10, leaseMs: 300, token: "b:2" });
    expect(reclaimed.map((r) => r.attempts)).to.deep.equal([2]);
  });

  it("skips rows another open claim has locked instead of waiting for them", async () => {
    await insertOutboxRows(o.pool, 10);
    const conn = await o.pool.getConnection();
    try {
      await conn.beginTransaction();
      // An in-progress claim holding the first four rows.
      const [held] = await conn.query<RowDataPacket[]>(CLAIM_SELECT_SQL, [4]);
      expect(held).to.have.length(4);
      const started = Date.now();
      const other = await claimDueRows(o.pool, { limit: 10, leaseMs: 60_000, token: "b:1" });
      expect(Date.now() - started).to.be.below(1000);
      expect(held.map((r) => Number(r.id))).to.deep.equal([1, 2, 3, 4]);
      expect(other.map((r) => r.id)).to.deep.equal([5, 6, 7, 8, 9, 10]);
    } finally {
      await conn.rollback();
      conn.release();
    }
  });

  it("never claims delivered or dead rows, nor rows whose retry is not yet due", async () => {
    await insertOutboxRows(o.pool, 3);
    await o.pool.query("UPDATE voucher_outbox SET status = 'delivered' WHERE id = 1");
    await o.pool.query("UPDATE voucher_outbox SET status = 'dead' WHERE id = 2");
    await o.pool.query("UPDATE voucher_outbox SET next_attempt_at = NOW(3) + INTERVAL 1 HOUR WHERE id = 3");
    expect(await claimDueRows(o.pool, { limit: 10, leaseMs: 1000, token: "a:1" })).to.deep.equal([]);
  });

  it("acks rows of its own claim and fences off a claimer whose lease was taken over", async () => {
    const [order] = await insertOutboxRows(o.pool, 1);
    const [row] = await claimDueRows(o.pool, { limit: 1, leaseMs: 100, token: "stale:1" });
    await new Promise((r) => setTimeout(r, 150));
    await claimDueRows(o.pool, { limit: 1, leaseMs: 60_000, token: "fresh:1" });

    expect(await ackDelivered(o.pool, "stale:1", [{ id: row!.id, voucherId: "V-STALE" }])).to.deep.equal([row!.id]);
    expect(await scheduleRetries(o.pool, "stale:1", [{ id: row!.id, delayMs: 1000, error: "x" }])).to.deep.equal([row!.id]);
    expect(await markDead(o.pool, "stale:1", [{ id: row!.id, error: "x" }])).to.deep.equal([row!.id]);
    expect((await outboxRow(o.pool, order!)).status).to.equal("pending");

    expect(await ackDelivered(o.pool, "fresh:1", [{ id: row!.id, voucherId: "V-FRESH" }])).to.deep.equal([]);
    const acked = await outboxRow(o.pool, order!);
    expect(acked).to.include({ status: "delivered", voucherId: "V-FRESH", lockedBy: null, lastError: null });
    expect(acked.deliveredAt).to.be.instanceOf(Date);
  });

  it("acks a whole batch in one go, each row with its own voucher, and names only the rows whose fence failed", async () => {
    await insertOutboxRows(o.pool, 3);
    const rows = await claimDueRows(o.pool, { limit: 3, leaseMs: 60_000, token: "mine:1" });
    await o.pool.query("UPDATE voucher_outbox SET locked_by = 'other:1' WHERE id = ?", [rows[1]!.id]);

    const stale = await ackDelivered(o.pool, "mine:1", rows.map((r) => ({ id: r.id, voucherId: `V-${r.id}` })));

    expect(stale).to.deep.equal([rows[1]!.id]);
    const after = await outboxRows(o.pool);
    expect(after.map((r) => [r.status, r.voucherId])).to.deep.equal([
      ["delivered", `V-${rows[0]!.id}`],
      ["pending", null],
      ["delivered", `V-${rows[2]!.id}`],
    ]);
  });

  it("schedules a retry on the database clock and releases the lease", async () => {
    const [order] = await insertOutboxRows(o.pool, 1);
    const [row] = await claimDueRows(o.pool, { limit: 1, leaseMs: 60_000, token: "a:1" });
    await scheduleRetries(o.pool, "a:1", [{ id: row!.id, delayMs: 5_000, error: "UNAVAILABLE: down" }]);
    const [[due]] = await o.pool.query<RowDataPacket[]>(
      "SELECT TIMESTAMPDIFF(MICROSECOND, NOW(3), next_attempt_at) / 1000 AS inMs FROM voucher_outbox",
    );
    expect(Number(due!.inMs)).to.be.within(4_000, 5_001);
    expect(await outboxRow(o.pool, order!)).to.include({ status: "pending", lockedBy: null, lastError: "UNAVAILABLE: down" });
  });

  it("marks a row dead with its error cut to the column's length", async () => {
    const [order] = await insertOutboxRows(o.pool, 1);
    const [row] = await claimDueRows(o.pool, { limit: 1, leaseMs: 60_000, token: "a:1" });
    await markDead(o.pool, "a:1", [{ id: row!.id, error: "E".repeat(5000) }]);
    const dead = await outboxRow(o.pool, order!);
    expect(dead).to.include({ status: "dead", lockedBy: null });
    expect(dead.lastError).to.have.length(LAST_ERROR_MAX);
    expect(await claimDueRows(o.pool, { limit: 1, leaseMs: 1000, token: "a:2" })).to.deep.equal([]);
  });

  it("tells which claimed rows last failed on their own, also once parked and requeued", async () => {
    await insertOutboxRows(o.pool, 4);
    const errors = [
      "failed on its own: BatchIssueVouchers: INTERNAL: internal error",
      "gave up after 20 attempts: failed on its own: BatchIssueVouchers: INTERNAL: internal error",
      "BatchIssueVouchers: UNAVAILABLE: down",
      null,
    ];
    for (const [i, e] of errors.entries()) await o.pool.query("UPDATE voucher_outbox SET last_error = ? WHERE id = ?", [e, i + 1]);
    const rows = await claimDueRows(o.pool, { limit: 10, leaseMs: 60_000, token: "a:1" });
    expect(rows.map((r) => r.failedOnItsOwn)).to.deep.equal([true, true, false, false]);
  });

  describe("retries and dead-marking are batched like the ack", () => {
    /** Statements of each kind a call runs, counted by the server on a pool of one connection. */
    async function statements(run: (pool: ReturnType<typeof createPool>) => Promise<unknown>): Promise<{ select: number; update: number }> {
      const one = createPool({ url: o.db.url, connectionLimit: 1 });
      try {
        const count = async () => {
          const [rows] = await one.query<RowDataPacket[]>("SHOW SESSION STATUS WHERE Variable_name IN ('Com_select', 'Com_update')");
          return Object.fromEntries(rows.map((r) => [String(r.Variable_name), Number(r.Value)]));
        };
        const before = await count();
        await run(one);
        const after = await count();
        return { select: after.Com_select! - before.Com_select!, update: after.Com_update! - before.Com_update! };
      } finally {
        await one.end();
      }
    }

    it("schedules the retries of a whole batch with one locking read and one UPDATE, each row with its own delay and error", async () => {
      await insertOutboxRows(o.pool, 4);
      const rows = await claimDueRows(o.pool, { limit: 4, leaseMs: 60_000, token: "mine:1" });
      await o.pool.query("UPDATE voucher_outbox SET locked_by = 'other:1' WHERE id = ?", [rows[2]!.id]);

      let stale: number[] = [];
      const n = await statements(async (pool) => {
        stale = await scheduleRetries(pool, "mine:1", rows.map((r, i) => ({ id: r.id, delayMs: 10_000 * (i + 1), error: `E${i}` })));
      });
      expect(n).to.deep.equal({ select: 1, update: 1 });
      expect(stale).to.deep.equal([rows[2]!.id]);
      const [after] = await o.pool.query<RowDataPacket[]>(
        "SELECT locked_by, last_error, ROUND(TIMESTAMPDIFF(MICROSECOND, NOW(3), next_attempt_at) / 10000000) AS tens FROM voucher_outbox ORDER BY id",
      );
      expect(after.map((r) => [r.locked_by, r.last_error])).to.deep.equal([[null, "E0"], [null, "E1"], ["other:1", null], [null, "E3"]]);
      expect([0, 1, 3].map((i) => Number(after[i]!.tens))).to.deep.equal([1, 2, 4]);
    });

    it("marks a whole batch dead with one locking read and one UPDATE, each row with its own error", async () => {
      await insertOutboxRows(o.pool, 3);
      const rows = await claimDueRows(o.pool, { limit: 3, leaseMs: 60_000, token: "mine:1" });
      await o.pool.query("UPDATE voucher_outbox SET locked_by = 'other:1' WHERE id = ?", [rows[0]!.id]);

      let stale: number[] = [];
      const n = await statements(async (pool) => {
        stale = await markDead(pool, "mine:1", rows.map((r) => ({ id: r.id, error: `refused ${r.id}` })));
      });
      expect(n).to.deep.equal({ select: 1, update: 1 });
      expect(stale).to.deep.equal([rows[0]!.id]);
      const after = await outboxRows(o.pool);
      expect(after.map((r) => [r.status, r.lastError])).to.deep.equal([
        ["pending", null],
        ["dead", `refused ${rows[1]!.id}`],
        ["dead", `refused ${rows[2]!.id}`],
      ]);
    });
  });
});
