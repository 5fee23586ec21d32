import { expect } from "chai";
import type { Pool } from "@shop/platform/db";
import type { RowDataPacket } from "mysql2/promise";
import { DomainError, type ErrorKind } from "@shop/platform/errors";
import { randomCrockford } from "@shop/platform/ids";
import type { TestDatabase } from "@shop/testkit/shared-servers";
import { OrderStore } from "../../src/db/order-store.js";
import { count, migratedOrderDatabase, silentLogger, snapshot } from "./helpers.js";

async function refusedWith(kind: ErrorKind, p: Promise<unknown>): Promise<DomainError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof DomainError && err.kind === kind) return err;
    throw err;
  }
  throw new Error(`expected ${kind}`);
}

describe("OrderStore", function () {
  let db: TestDatabase;
  let pool: Pool;
  let store: OrderStore;
  let wakeUps: string[];
  let timeline: string[];

  before(async () => {
    ({ db, pool } = await migratedOrderDatabase());
    // Records when transactions finish, so the test can tell whether a wake-up came after the commit.
    const getConnection = pool.getConnection.bind(pool);
    (pool as any).getConnection = async () => {
      const conn = await getConnection();
      return new Proxy(conn, {
        get(target, prop, receiver) {
          if (prop === "commit") {
            return async () => {
              await target.commit();
              timeline.push("commit");
            };
          }
          const v = Reflect.get(target, prop, receiver);
          return typeof v === "function" ? v.bind(target) : v;
        },
      });
    };
    store = new OrderStore({
      pool,
      logger: silentLogger,
      onVoucherRequested: () => {
        wakeUps.push("wake");
        timeline.push("wake");
      },
    });
  });

  beforeEach(() => {
    wakeUps = [];
    timeline = [];
  });

  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  const create = (totalCents = 10_001, customerId = "cust-1") =>
    store.create({ customerId, totalCents, currency: "EUR", requestId: `req-${randomCrockford(12)}` }).then((r) => r.order);
  const outboxRows = (orderId: string) => count(pool, "SELECT COUNT(*) FROM voucher_outbox WHERE order_id = ?", [orderId]);

  describe("markSent", () => {
    it("writes an outbox row for 10001 cents but none for 10000 or 9999", async () => {
      for (const [cents, rows] of [[9_999, 0], [10_000, 0], [10_001, 1]] as const) {
        const order = await create(cents);
        const { order: sent, changed } = await store.markSent(order.id);
        expect(changed, `${cents} cents`).to.equal(true);
        expect(sent.status).to.equal("SENT");
        expect(await outboxRows(order.id), `${cents} cents`).to.equal(rows);
        expect(sent.voucher.status).to.equal(rows ? "PENDING" : "NOT_ELIGIBLE");
      }
    });

    it("snapshots customer, total and currency into the outbox row, due at once", async () => {
      const order = await create(12_345, "cust-snap");
      await store.markSent(order.id);
      const [rows] = await pool.query<any[]>(
        "SELECT customer_id, total_cents, currency, status, attempts, locked_by, next_attempt_at <= NOW(3) AS due FROM voucher_outbox WHERE order_id = ?",
        [order.id],
      );
      expect(rows[0]).to.include({ customer_id: "cust-snap", total_cents: 12_345, currency: "EUR", status: "pending", attempts: 0, locked_by: null, due: 1 });
    });

    it("is idempotent: a second call changes nothing and writes no second outbox row", async () => {
      const order = await create();
      const first = await store.markSent(order.id);
      const second = await store.markSent(order.id);
      expect(second.changed).to.equal(false);
      expect(second.order.sentAt).to.deep.equal(first.order.sentAt);
      expect(second.order.voucher.status).to.equal("PENDING");
      expect(await outboxRows(order.id)).to.equal(1);
      expect(wakeUps).to.have.length(1);
    });

    it("makes exactly one transition and one outbox row out of 20 concurrent calls", async () => {
      const order = await create();
      const results = await Promise.all(Array.from({ length: 20 }, () => store.markSent(order.id)));
      expect(results.filter((r) => r.changed)).to.have.length(1);
      expect(results.every((r) => r.order.status === "SENT")).to.equal(true);
      expect(await outboxRows(order.id)).to.equal(1);
      expect(wakeUps).to.have.length(1);
    });

    it("leaves a delivered order unchanged", async () => {
      const order = await create();
      await store.markSent(order.id);
      await store.markDelivered(order.id);
      const r = await store.markSent(order.id);
      expect(r).to.deep.include({ changed: false });
      expect(r.order.status).to.equal("DELIVERED");
      expect(await outboxRows(order.id)).to.equal(1);
    });

    it("refuses a cancelled order and writes nothing", async () => {
      const order = await create();
      await store.cancel(order.id);
      const before = await snapshot(pool);
      const err = await refusedWith("failed_precondition", store.markSent(order.id));
      expect(err.message).to.contain(order.id);
      expect(await snapshot(pool)).to.deep.equal(before);
      expect(wakeUps).to.deep.equal([]);
    });

    it("answers NOT_FOUND for an unknown order", async () => {
      const err = await refusedWith("not_found", store.markSent("01J00000000000000000000000"));
      expect(err.message).to.contain("01J00000000000000000000000");
    });
  });

  describe("the relay's wake-up", () => {
    it("comes only after the commit that wrote the outbox row", async () => {
      const order = await create();
      timeline = [];
      await store.markSent(order.id);
      expect(timeline).to.deep.equal(["commit", "wake"]);
    });

    it("does not come for a change that wrote no outbox row", async () => {
      const small = await create(10_000);
      await store.markSent(small.id);
      const big = await create();
      await store.markSent(big.id);
      wakeUps = [];
      await store.markSent(big.id);
      await store.markDelivered(big.id);
      await store.cancel((await create()).id);
      expect(wakeUps).to.deep.equal([]);
    });

    it("failing does not fail the request that was committed", async () => {
      const throwing = new OrderStore({ pool, logger: silentLogger, onVoucherRequested: () => { throw new Error("relay gone"); } });
      const order = await create();
      const r = await throwing.markSent(order.id);
      expect(r.changed).to.equal(true);
      expect(await outboxRows(order.id)).to.equal(1);
    });
  });

  describe("markDelivered", () => {
    it("moves a sent order to DELIVERED once", async () => {
      const order = await create();
      await store.markSent(order.id);
      const first = await store.markDelivered(order.id);
      expect(first.changed).to.equal(true);
      expect(first.order.status).to.equal("DELIVERED");
      expect(first.order.deliveredAt).to.be.instanceOf(Date);
      expect((await store.markDelivered(order.id)).changed).to.equal(false);
    });

    it("refuses pending and cancelled orders and writes nothing", async () => {
      const pending = await create();
      const cancelled = await create();
      await store.cancel(cancelled.id);
      const before = await snapshot(pool);
      await refusedWith("failed_precondition", store.markDelivered(pending.id));
      await refusedWith("failed_precondition", store.markDelivered(cancelled.id));
      expect(await snapshot(pool)).to.deep.equal(before);
    });
  });

  describe("cancel", () => {
    it("cancels a pending order once", async () => {
      const order = await create();
      const first = await store.cancel(order.id);
      expect(first.changed).to.equal(true);
      expect(first.order.status).to.equal("CANCELLED");
      expect((await store.cancel(order.id)).changed).to.equal(false);
    });

    it("refuses sent and delivered orders and writes nothing", async () => {
      const sent = await create();
      await store.markSent(sent.id);
      const delivered = await create();
      await store.markSent(delivered.id);
      await store.markDelivered(delivered.id);
      const before = await snapshot(pool);
      for (const id of [sent.id, delivered.id]) {
        const err = await refusedWith("failed_precondition", store.cancel(id));
        expect(err.message).to.contain("a sent order cannot be cancelled");
      }
      expect(await snapshot(pool)).to.deep.equal(before);
    });
  });

  describe("create", () => {
    const input = (requestId: string) => ({ customerId: "cust-idem", totalCents: 20_000, currency: "EUR" as const, requestId });

    it("returns the first order with created=false when the same request is replayed", async () => {
      const first = await store.create(input("idem-1"));
      const again = await store.create(input("idem-1"));
      expect(first.created).to.equal(true);
      expect(again.created).to.equal(false);
      expect(again.order.id).to.equal(first.order.id);
      expect(again.order.createdAt).to.deep.equal(first.order.createdAt);
      expect(await count(pool, "SELECT COUNT(*) FROM orders WHERE request_id = 'idem-1'")).to.equal(1);
    });

    it("creates one order out of 10 concurrent identical requests", async () => {
      const results = await Promise.all(Array.from({ length: 10 }, () => store.create(input("idem-race"))));
      expect(results.filter((r) => r.created)).to.have.length(1);
      expect(new Set(results.map((r) => r.order.id)).size).to.equal(1);
      expect(await count(pool, "SELECT COUNT(*) FROM orders WHERE request_id = 'idem-race'")).to.equal(1);
    });

    it("refuses a replay with a different customer, total or currency with ALREADY_EXISTS and writes nothing", async () => {
      await store.create(input("idem-conflict"));
      const before = await snapshot(pool);
      await refusedWith("already_exists", store.create({ ...input("idem-conflict"), customerId: "someone-else" }));
      await refusedWith("already_exists", store.create({ ...input("idem-conflict"), totalCents: 20_001 }));
      expect(await snapshot(pool)).to.deep.equal(before);
    });
  });

  describe("voucher state", () => {
    it("is derived from the outbox row for each of its statuses", async () => {
      const order = await create();
      expect((await store.get(order.id))!.voucher.status).to.equal("NOT_ELIGIBLE");
      await store.markSent(order.id);
      await pool.query("UPDATE voucher_outbox SET attempts = 3, last_error = 'voucher service unavailable' WHERE order_id = ?", [order.id]);
      expect((await store.get(order.id))!.voucher).to.deep.equal({
        status: "PENDING",
        attempts: 3,
        lastError: "voucher service unavailable",
        voucherId: null,
      });
      await pool.query("UPDATE voucher_outbox SET status = 'dead', last_error = 'refused: bad customer' WHERE order_id = ?", [order.id]);
      expect((await store.get(order.id))!.voucher).to.include({ status: "DEAD", lastError: "refused: bad customer" });
      await pool.query("UPDATE voucher_outbox SET status = 'delivered', voucher_id = 'VOUCHER0000000000000000001' WHERE order_id = ?", [order.id]);
      expect((await store.get(order.id))!.voucher).to.include({ status: "ISSUED", voucherId: "VOUCHER0000000000000000001" });
    });
  });

  describe("requeueVoucher", () => {
    const sentOrder = async (cents = 10_001) => {
      const o = await create(cents);
      await store.markSent(o.id);
      wakeUps = [];
      return o;
    };

    it("puts a dead delivery back to pending, due now, unleased, keeping last_error", async () => {
      const o = await sentOrder();
      await pool.query(
        "UPDATE voucher_outbox SET status = 'dead', attempts = 4, last_error = 'refused', locked_by = 'old', next_attempt_at = '2100-01-01' WHERE order_id = ?",
        [o.id],
      );
      timeline = [];
      const r = await store.requeueVoucher(o.id);
      expect(r.requeued).to.equal(true);
      expect(r.order.voucher).to.include({ status: "PENDING", lastError: "refused", attempts: 4 });
      const [rows] = await pool.query<any[]>(
        "SELECT status, locked_by, last_error, next_attempt_at <= NOW(3) AS due FROM voucher_outbox WHERE order_id = ?",
        [o.id],
      );
      expect(rows[0]).to.include({ status: "pending", locked_by: null, last_error: "refused", due: 1 });
      expect(timeline).to.deep.equal(["commit", "wake"]);
    });

    it("records a missing delivery of a sent, qualifying order", async () => {
      const o = await sentOrder();
      await pool.query("DELETE FROM voucher_outbox WHERE order_id = ?", [o.id]);
      const r = await store.requeueVoucher(o.id);
      expect(r.requeued).to.equal(true);
      expect(r.order.voucher.status).to.equal("PENDING");
      expect(await outboxRows(o.id)).to.equal(1);
      expect(wakeUps).to.have.length(1);
    });

    it("also works for a delivered order", async () => {
      const o = await sentOrder();
      await store.markDelivered(o.id);
      await pool.query("UPDATE voucher_outbox SET status = 'dead' WHERE order_id = ?", [o.id]);
      expect((await store.requeueVoucher(o.id)).requeued).to.equal(true);
    });

    it("leaves a pending or delivered row alone", async () => {
      const pending = await sentOrder();
      const delivered = await sentOrder();
      await pool.query("UPDATE voucher_outbox SET status = 'delivered', voucher_id = 'V1' WHERE order_id = ?", [delivered.id]);
      const before = await snapshot(pool);
      expect((await store.requeueVoucher(pending.id)).requeued).to.equal(false);
      const d = await store.requeueVoucher(delivered.id);
      expect(d.requeued).to.equal(false);
      expect(d.order.voucher).to.include({ status: "ISSUED", voucherId: "V1" });
      expect(await snapshot(pool)).to.deep.equal(before);
      expect(wakeUps).to.deep.equal([]);
    });

    it("redelivers a delivered row, or an archived delivery, only when asked to", async () => {
      const delivered = await sentOrder();
      const archived = await sentOrder();
      await pool.query("UPDATE voucher_outbox SET status = 'delivered', voucher_id = 'V-GONE' WHERE order_id = ?", [delivered.id]);
      // What the retention cleanup leaves: no outbox row, the voucher id kept on the order.
      await pool.query("UPDATE orders SET voucher_id = 'V-ARCHIVED' WHERE id = ?", [archived.id]);
      await pool.query("DELETE FROM voucher_outbox WHERE order_id = ?", [archived.id]);

      const d = await store.requeueVoucher(delivered.id, true);
      expect(d.requeued).to.equal(true);
      expect(d.order.voucher.status).to.equal("PENDING");
      const a = await store.requeueVoucher(archived.id, true);
      expect(a.requeued).to.equal(true);
      expect(a.order.voucher.status).to.equal("PENDING");
      const [rows] = await pool.query<RowDataPacket[]>(
        "SELECT order_id AS orderId, status, locked_by AS lockedBy FROM voucher_outbox WHERE order_id IN (?, ?) ORDER BY order_id",
        [delivered.id, archived.id],
      );
      expect(rows.map((r) => ({ ...r }))).to.have.deep.members([
        { orderId: delivered.id, status: "pending", lockedBy: null },
        { orderId: archived.id, status: "pending", lockedBy: null },
      ]);
      expect(wakeUps).to.have.length(2);
      // A second call finds them pending: nothing more to do.
      expect((await store.requeueVoucher(delivered.id, true)).requeued).to.equal(false);
    });

    it("refuses pending, cancelled and non-qualifying orders and writes nothing", async () => {
      const pending = await create();
      const cancelled = await create();
      await store.cancel(cancelled.id);
      const small = await sentOrder(10_000);
      const before = await snapshot(pool);
      for (const id of [pending.id, cancelled.id, small.id]) {
        const err = await refusedWith("failed_precondition", store.requeueVoucher(id));
        expect(err.message).to.contain(id);
      }
      await refusedWith("not_found", store.requeueVoucher("01J00000000000000000000000"));
      expect(await snapshot(pool)).to.deep.equal(before);
    });
  });
});
