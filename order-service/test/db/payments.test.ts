import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import { drizzle } from "drizzle-orm/mysql2";
import { migrate } from "drizzle-orm/mysql2/migrator";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createPool, type Pool } from "@shop/platform/db";
import { DomainError, type ErrorKind } from "@shop/platform/errors";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { OrderStore, type PaymentOutcomeMessage } from "../../src/db/order-store.js";
import { migrateOrderDatabase } from "../../src/db/migrate.js";
import { count, migratedOrderDatabase, silentLogger } from "./helpers.js";

async function refusedWith(kind: ErrorKind, p: Promise<unknown>): Promise<DomainError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof DomainError && err.kind === kind) return err;
    throw err;
  }
  throw new Error(`expected ${kind}`);
}

async function rows(pool: Pool, sql: string, params: unknown[] = []): Promise<RowDataPacket[]> {
  const [r] = await pool.query<RowDataPacket[]>(sql, params);
  return r;
}

/** Everything the payment side of an order touches, to show a refused call wrote nothing. */
async function paymentSnapshot(pool: Pool): Promise<unknown> {
  return {
    orders: await rows(pool, "SELECT * FROM orders ORDER BY id"),
    charges: await rows(pool, "SELECT * FROM charge_outbox ORDER BY id"),
    refunds: await rows(pool, "SELECT * FROM refund_outbox ORDER BY id"),
    inbox: await rows(pool, "SELECT * FROM inbox ORDER BY message_key"),
  };
}

describe("OrderStore: paid orders", function () {
  let db: TestDatabase;
  let pool: Pool;
  let store: OrderStore;
  let wakes: string[];
  let n = 0;

  before(async () => {
    ({ db, pool } = await migratedOrderDatabase());
    store = new OrderStore({ pool, logger: silentLogger, onPaymentRequested: (kind) => wakes.push(kind) });
  });
  beforeEach(() => (wakes = []));
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  const createPaid = async (totalCents = 12_000, customerId = "alice") =>
    (await store.create({ customerId, totalCents, currency: "EUR", requestId: `paid-${++n}`, paymentMethod: "ACCOUNT" })).order;
  const outcome = (orderId: string, over: Partial<PaymentOutcomeMessage> = {}): PaymentOutcomeMessage => ({
    messageKey: `charge:${orderId}`,
    orderId,
    event: "CHARGED",
    amountCents: 12_000,
    currency: "EUR",
    ...over,
  });

  it("creates a paid order and its charge request in one transaction, and wakes the charge relay after the commit", async () => {
    const order = await createPaid();
    expect([order.status, order.paymentMethod, order.paymentStatus]).to.deep.equal(["AWAITING_PAYMENT", "ACCOUNT", "AWAITING"]);
    const charge = await rows(pool, "SELECT order_id, customer_id, amount_cents, currency, status FROM charge_outbox WHERE order_id = ?", [order.id]);
    expect(charge.map((r) => ({ ...r }))).to.deep.equal([{ order_id: order.id, customer_id: "alice", amount_cents: 12_000, currency: "EUR", status: "pending" }]);
    expect(wakes).to.deep.equal(["charge"]);
  });

  it("a CreateOrder retry returns the same order and writes no second charge request; the same key without payment is a conflict", async () => {
    const first = await store.create({ customerId: "alice", totalCents: 12_000, currency: "EUR", requestId: "retry-1", paymentMethod: "ACCOUNT" });
    const again = await store.create({ customerId: "alice", totalCents: 12_000, currency: "EUR", requestId: "retry-1", paymentMethod: "ACCOUNT" });
    expect([again.created, again.order.id]).to.deep.equal([false, first.order.id]);
    expect(await count(pool, "SELECT COUNT(*) FROM charge_outbox WHERE order_id = ?", [first.order.id])).to.equal(1);
    const err = await refusedWith("already_exists", store.create({ customerId: "alice", totalCents: 12_000, currency: "EUR", requestId: "retry-1" }));
    expect(err.message).to.match(/payment_method/);
  });

  it("an order without payment writes no charge request and stays as before", async () => {
    const { order } = await store.create({ customerId: "alice", totalCents: 12_000, currency: "EUR", requestId: `plain-${++n}` });
    expect([order.status, order.paymentStatus]).to.deep.equal(["PENDING", "NONE"]);
    expect(await count(pool, "SELECT COUNT(*) FROM charge_outbox WHERE order_id = ?", [order.id])).to.equal(0);
    expect(wakes).to.deep.equal([]);
  });

  it("CHARGED makes the order PAID once; a replay answers changed=false; the inbox holds one row", async () => {
    const order = await createPaid();
    const first = await store.recordPaymentOutcome(outcome(order.id));
    expect([first.changed, first.order.status, first.order.paymentStatus]).to.deep.equal([true, "PAID", "CHARGED"]);
    expect(first.order.chargedAt).to.be.instanceOf(Date);
    const replay = await store.recordPaymentOutcome(outcome(order.id));
    expect([replay.changed, replay.order.status]).to.deep.equal([false, "PAID"]);
    expect(await count(pool, "SELECT COUNT(*) FROM inbox WHERE message_key = ?", [`payment:charge:${order.id}`])).to.equal(1);
  });

  it("20 concurrent deliveries of one outcome change the order once", async () => {
    const order = await createPaid();
    const results = await Promise.all(Array.from({ length: 20 }, () => store.recordPaymentOutcome(outcome(order.id))));
    expect(results.filter((r) => r.changed)).to.have.length(1);
    expect(new Set(results.map((r) => r.order.status))).to.deep.equal(new Set(["PAID"]));
  });

  it("REFUSED makes it PAYMENT_FAILED; marking it sent is refused and writes nothing", async () => {
    const order = await createPaid();
    const r = await store.recordPaymentOutcome(outcome(order.id, { event: "REFUSED", reason: "INSUFFICIENT_FUNDS" }));
    expect([r.order.status, r.order.paymentStatus, r.order.paymentReason]).to.deep.equal(["PAYMENT_FAILED", "REFUSED", "INSUFFICIENT_FUNDS"]);
    const before = await paymentSnapshot(pool);
    await refusedWith("failed_precondition", store.markSent(order.id));
    expect(await paymentSnapshot(pool)).to.deep.equal(before);
  });

  it("an order awaiting payment cannot be marked sent; once PAID it can, and the voucher rule applies as before", async () => {
    const order = await createPaid(15_000);
    await refusedWith("failed_precondition", store.markSent(order.id));
    await store.recordPaymentOutcome(outcome(order.id, { amountCents: 15_000 }));
    const sent = await store.markSent(order.id);
    expect([sent.order.status, sent.order.paymentStatus, sent.order.voucher.status]).to.deep.equal(["SENT", "CHARGED", "PENDING"]);
    expect(await count(pool, "SELECT COUNT(*) FROM voucher_outbox WHERE order_id = ?", [order.id])).to.equal(1);
  });

  it("refuses a contradicting outcome, another amount, or a message key that is not the event's, and writes nothing", async () => {
    const order = await createPaid();
    await store.recordPaymentOutcome(outcome(order.id));
    const before = await paymentSnapshot(pool);
    // Same key, other facts: the inbox tells it from a replay.
    const conflict = await refusedWith("failed_precondition", store.recordPaymentOutcome(outcome(order.id, { event: "REFUSED", reason: "NO_ACCOUNT" })));
    expect(conflict.message).to.match(/taken in before with other facts/);
    const other = await createPaid();
    const amount = await refusedWith("failed_precondition", store.recordPaymentOutcome(outcome(other.id, { amountCents: 1 })));
    expect(amount.message).to.match(/names 1 EUR, but the order is 12000 EUR/);
    const key = await refusedWith("invalid_argument", store.recordPaymentOutcome(outcome(other.id, { messageKey: `refund:${other.id}` })));
    expect(key.message).to.match(/expected "charge:/);
    await refusedWith("not_found", store.recordPaymentOutcome(outcome("01NOSUCHORDER000000000000X")));
    const refusedRefund = await refusedWith(
      "failed_precondition",
      store.recordPaymentOutcome(outcome(order.id, { messageKey: `refund:${order.id}`, event: "REFUSED", reason: "NOT_CHARGED" })),
    );
    expect(refusedRefund.message).to.match(/refused the refund .* \(NOT_CHARGED\).*a person must look/);
    const after = (await paymentSnapshot(pool)) as { orders: RowDataPacket[] };
    const beforeOrders = (before as { orders: RowDataPacket[] }).orders;
    // Only `other` was added (before the refusals); nothing else moved.
    expect(after.orders.filter((o) => o.id !== other.id)).to.deep.equal(beforeOrders);
    expect(await count(pool, "SELECT COUNT(*) FROM inbox WHERE message_key = ?", [`payment:charge:${other.id}`])).to.equal(0);
  });

  it("cancelling a PAID order requests exactly one refund in the same transaction; REFUNDED completes it", async () => {
    const order = await createPaid();
    await store.recordPaymentOutcome(outcome(order.id));
    wakes = [];
    const c = await store.cancel(order.id);
    expect([c.order.status, c.order.paymentStatus]).to.deep.equal(["CANCELLED", "REFUND_PENDING"]);
    expect(wakes).to.deep.equal(["refund"]);
    await store.cancel(order.id);
    expect(await count(pool, "SELECT COUNT(*) FROM refund_outbox WHERE order_id = ?", [order.id])).to.equal(1);
    const r = await store.recordPaymentOutcome(outcome(order.id, { messageKey: `refund:${order.id}`, event: "REFUNDED" }));
    expect([r.changed, r.order.status, r.order.paymentStatus]).to.deep.equal([true, "CANCELLED", "REFUNDED"]);
  });

  it("an order cancelled while its charge is undecided gets its refund requested when CHARGED arrives, and not before", async () => {
    const order = await createPaid();
    await store.cancel(order.id);
    expect(await count(pool, "SELECT COUNT(*) FROM refund_outbox WHERE order_id = ?", [order.id])).to.equal(0);
    wakes = [];
    const r = await store.recordPaymentOutcome(outcome(order.id));
    expect([r.order.status, r.order.paymentStatus]).to.deep.equal(["CANCELLED", "REFUND_PENDING"]);
    expect(await count(pool, "SELECT COUNT(*) FROM refund_outbox WHERE order_id = ?", [order.id])).to.equal(1);
    expect(wakes).to.deep.equal(["refund"]);
    await store.recordPaymentOutcome(outcome(order.id));
    expect(await count(pool, "SELECT COUNT(*) FROM refund_outbox WHERE order_id = ?", [order.id])).to.equal(1);
  });

  it("RequeuePayment revives a dead charge request, records a missing one, leaves a pending one, refuses a decided payment", async () => {
    const order = await createPaid();
    expect((await store.requeuePayment(order.id)).requeued).to.equal(false);
    await pool.query("UPDATE charge_outbox SET status = 'dead', last_error = 'gave up' WHERE order_id = ?", [order.id]);
    wakes = [];
    expect((await store.requeuePayment(order.id)).requeued).to.equal(true);
    expect(wakes).to.deep.equal(["charge"]);
    expect((await rows(pool, "SELECT status, last_error FROM charge_outbox WHERE order_id = ?", [order.id]))[0]).to.deep.include({ status: "pending", last_error: "gave up" });
    await pool.query("DELETE FROM charge_outbox WHERE order_id = ?", [order.id]);
    expect((await store.requeuePayment(order.id)).requeued).to.equal(true);
    expect(await count(pool, "SELECT COUNT(*) FROM charge_outbox WHERE order_id = ? AND status = 'pending'", [order.id])).to.equal(1);
    await store.recordPaymentOutcome(outcome(order.id));
    await refusedWith("failed_precondition", store.requeuePayment(order.id));
    // An owed refund whose request died.
    await store.cancel(order.id);
    await pool.query("UPDATE refund_outbox SET status = 'dead' WHERE order_id = ?", [order.id]);
    expect((await store.requeuePayment(order.id)).requeued).to.equal(true);
    expect(await count(pool, "SELECT COUNT(*) FROM refund_outbox WHERE order_id = ? AND status = 'pending'", [order.id])).to.equal(1);
  });

  it("lists orders by payment status, oldest first, in pages, before a time", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await createPaid(12_000, "lister")).id);
    const awaiting = await store.listByPaymentStatus({ paymentStatus: "AWAITING", limit: 1000 });
    const listed = awaiting.filter((o) => o.customerId === "lister");
    // Oldest first: by created_at, then id (orders created in the same millisecond come in id order, not creation order).
    expect(listed.map((o) => o.id).sort()).to.deep.equal([...ids].sort());
    const position = (o: (typeof listed)[number]) => `${String(o.createdAt.getTime()).padStart(15, "0")} ${o.id}`;
    expect(listed.map(position)).to.deep.equal(listed.map(position).sort());
    const page1 = await store.listByPaymentStatus({ paymentStatus: "AWAITING", limit: 2 });
    const last = page1[1]!;
    const page2 = await store.listByPaymentStatus({ paymentStatus: "AWAITING", limit: 2, from: { at: last.createdAt, id: last.id } });
    const seen = new Set(page1.map((o) => o.id));
    expect(page2).to.have.length(2);
    expect(page2.filter((o) => seen.has(o.id))).to.deep.equal([]);
    expect(page2[0]!.createdAt.getTime()).to.be.at.least(last.createdAt.getTime());
    expect(await store.listByPaymentStatus({ paymentStatus: "AWAITING", createdBefore: new Date(0), limit: 10 })).to.deep.equal([]);
  });
});

describe("order migration 0004 (payments) on a populated database", () => {
  const MIGRATIONS = path.resolve(import.meta.dirname, "../../drizzle");
  let db: TestDatabase;
  let pool: Pool;
  let old: string;

  before(async () => {
    db = await freshDatabase("order");
    pool = createPool({ url: db.url, connectionLimit: 4 });
    old = mkdtempSync(path.join(tmpdir(), "order-migrations-"));
    mkdirSync(path.join(old, "meta"));
    const journal = JSON.parse(readFileSync(path.join(MIGRATIONS, "meta/_journal.json"), "utf8"));
    journal.entries = journal.entries.filter((e: { tag: string }) => e.tag < "0004");
    writeFileSync(path.join(old, "meta/_journal.json"), JSON.stringify(journal));
    for (const e of journal.entries) copyFileSync(path.join(MIGRATIONS, `${e.tag}.sql`), path.join(old, `${e.tag}.sql`));
    await migrate(drizzle(pool), { migrationsFolder: old });
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
    if (old) rmSync(old, { recursive: true, force: true });
  });

  it("keeps every order, which become orders without payment, and they go on as before", async () => {
    await pool.query(
      `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at)
       VALUES ('01OLDORDER0000000000000001', 'alice', 12000, 'EUR', 'PENDING', 'old-1', NOW(3), NOW(3))`,
    );
    const before = await rows(pool, "SELECT * FROM orders");
    await migrateOrderDatabase(pool, silentLogger);
    const after = await rows(pool, "SELECT * FROM orders");
    expect(after).to.have.length(1);
    expect(after[0]).to.deep.include({ ...before[0], payment_method: "NONE", payment_status: "NONE", payment_reason: null, charged_at: null, refunded_at: null });
    const store = new OrderStore({ pool, logger: silentLogger });
    const sent = await store.markSent("01OLDORDER0000000000000001");
    expect([sent.order.status, sent.order.paymentStatus]).to.deep.equal(["SENT", "NONE"]);
  });

  it("gives the new outboxes an ASCII status and binary ids, and the order the payment status index", async () => {
    const cols = await rows(
      pool,
      `SELECT CONCAT(table_name, '.', column_name) AS c, collation_name AS coll FROM information_schema.columns
        WHERE table_schema = DATABASE() AND table_name IN ('charge_outbox', 'refund_outbox', 'inbox')`,
    );
    const coll = Object.fromEntries(cols.map((r) => [String(r.c), r.coll]));
    expect(coll["charge_outbox.status"]).to.equal("ascii_bin");
    expect(coll["refund_outbox.status"]).to.equal("ascii_bin");
    expect(coll["charge_outbox.order_id"]).to.equal("utf8mb4_bin");
    expect(coll["inbox.message_key"]).to.equal("utf8mb4_bin");
    const idx = await rows(pool, "SELECT column_name AS c FROM information_schema.statistics WHERE table_schema = DATABASE() AND index_name = 'orders_payment_status_idx' ORDER BY seq_in_index");
    expect(idx.map((r) => r.c)).to.deep.equal(["payment_status", "created_at", "id"]);
  });
});
