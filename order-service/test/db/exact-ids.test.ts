import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { drizzle } from "drizzle-orm/mysql2";
import { migrate } from "drizzle-orm/mysql2/migrator";
import type { RowDataPacket } from "mysql2/promise";
import { createPool, type Pool } from "@shop/platform/db";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { migrateOrderDatabase } from "../../src/db/migrate.js";
import { OrderStore } from "../../src/db/order-store.js";
import { migratedOrderDatabase, silentLogger } from "./helpers.js";

/**
 * Ids in the order database are compared exactly, case included: `alice` and
 * `ALICE` are different customers and `k-1` and `K-1` different idempotency
 * keys, in SQL as in code. Migration 0003 moves the id columns of a database
 * made before it to a binary collation without losing a row.
 */
const MIGRATIONS = path.resolve(import.meta.dirname, "../../drizzle");
const ID_COLUMNS: Record<string, string[]> = {
  orders: ["id", "customer_id", "currency", "request_id", "voucher_id"],
  voucher_outbox: ["order_id", "customer_id", "currency", "locked_by", "voucher_id"],
};

/** A copy of the migrations folder holding only the first `count` migrations, to build a database as it was before. */
function migrationsUpTo(count: number): string {
  const dir = mkdtempSync(path.join(tmpdir(), "order-migrations-"));
  mkdirSync(path.join(dir, "meta"));
  const journal = JSON.parse(readFileSync(path.join(MIGRATIONS, "meta/_journal.json"), "utf8"));
  journal.entries = journal.entries.slice(0, count);
  writeFileSync(path.join(dir, "meta/_journal.json"), JSON.stringify(journal));
  for (const e of journal.entries) copyFileSync(path.join(MIGRATIONS, `${e.tag}.sql`), path.join(dir, `${e.tag}.sql`));
  return dir;
}

async function rows(pool: Pool, sql: string, params: unknown[] = []): Promise<RowDataPacket[]> {
  const [r] = await pool.query<RowDataPacket[]>(sql, params);
  return r;
}

/** Every column's declaration and every index of both tables, to show the migration changed only collations. */
async function shape(pool: Pool) {
  const columns = await rows(
    pool,
    `SELECT table_name AS t, column_name AS c, column_type AS type, is_nullable AS nullable, column_default AS dflt, extra
       FROM information_schema.columns WHERE table_schema = DATABASE() ORDER BY table_name, ordinal_position`,
  );
  const indexes = await rows(
    pool,
    `SELECT table_name AS t, index_name AS i, non_unique AS nonUnique, seq_in_index AS seq, column_name AS c, sub_part AS sub
       FROM information_schema.statistics WHERE table_schema = DATABASE() ORDER BY table_name, index_name, seq_in_index`,
  );
  return { columns, indexes };
}

async function collations(pool: Pool): Promise<Record<string, string>> {
  const r = await rows(
    pool,
    `SELECT CONCAT(table_name, '.', column_name) AS col, collation_name AS coll
       FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name IN ('orders', 'voucher_outbox')`,
  );
  return Object.fromEntries(r.map((x) => [String(x.col), String(x.coll)]));
}

const insertOrder = (pool: Pool, id: string, customerId: string, requestId: string) =>
  pool.query(
    `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, sent_at)
     VALUES (?, ?, 12000, 'EUR', 'SENT', ?, NOW(3), NOW(3), NOW(3))`,
    [id, customerId, requestId],
  );

describe("exact ids in the order database", function () {
  describe("migrating a database made before migration 0003", () => {
    let db: TestDatabase;
    let pool: Pool;
    let oldMigrations: string;
    let throughIdMigration: string;

    before(async () => {
      db = await freshDatabase("order");
      pool = createPool({ url: db.url, connectionLimit: 4 });
      oldMigrations = migrationsUpTo(3);
      await migrate(drizzle(pool), { migrationsFolder: oldMigrations });
    });

    after(async () => {
      await pool?.end();
      await db?.drop();
      if (oldMigrations) rmSync(oldMigrations, { recursive: true, force: true });
      if (throughIdMigration) rmSync(throughIdMigration, { recursive: true, force: true });
    });

    it("keeps every row, type, NOT NULL and index, and makes the id columns binary", async () => {
      await insertOrder(pool, "01ORDERALICE0000000000000A", "alice", "k-1");
      await insertOrder(pool, "01ORDERBOB000000000000000B", "bob", "k-2");
      await pool.query(
        `INSERT INTO voucher_outbox (order_id, customer_id, total_cents, currency, status, attempts, next_attempt_at, locked_by, voucher_id, created_at)
         VALUES ('01ORDERALICE0000000000000A', 'alice', 12000, 'EUR', 'delivered', 1, NOW(3), 'relay-1:abc', '01VOUCHER00000000000000001', NOW(3)),
                ('01ORDERBOB000000000000000B', 'bob', 12000, 'EUR', 'pending', 0, NOW(3), NULL, NULL, NOW(3))`,
      );
      // What the old schema did: a key differing only in case was the same key.
      const refused = await insertOrder(pool, "01ORDERALICE0000000000000C", "ALICE", "K-1").catch((e: { code?: string }) => e);
      expect((refused as { code?: string }).code).to.equal("ER_DUP_ENTRY");

      const before = {
        orders: await rows(pool, "SELECT * FROM orders ORDER BY id"),
        outbox: await rows(pool, "SELECT * FROM voucher_outbox ORDER BY id"),
        shape: await shape(pool),
      };
      // Migration 0003 alone (later ones add columns; payments.test.ts migrates such a database to the end).
      throughIdMigration = migrationsUpTo(4);
      await migrate(drizzle(pool), { migrationsFolder: throughIdMigration });

      expect(await rows(pool, "SELECT * FROM orders ORDER BY id")).to.deep.equal(before.orders);
      expect(await rows(pool, "SELECT * FROM voucher_outbox ORDER BY id")).to.deep.equal(before.outbox);
      expect(await shape(pool)).to.deep.equal(before.shape);
      const after = await collations(pool);
      for (const [table, cols] of Object.entries(ID_COLUMNS)) {
        for (const col of cols) expect(after[`${table}.${col}`], `${table}.${col}`).to.equal("utf8mb4_bin");
      }
      // Columns that are no ids keep the collation they had.
      expect(after["orders.status"]).to.not.equal("utf8mb4_bin");

      await insertOrder(pool, "01ORDERALICE0000000000000C", "ALICE", "K-1");
      // The rest of the migrations, so the store (which reads every column) can run.
      await migrateOrderDatabase(pool, silentLogger);
      const store = new OrderStore({ pool, logger: silentLogger });
      expect((await store.listByCustomer("alice", undefined, 10)).map((o) => o.id)).to.deep.equal(["01ORDERALICE0000000000000A"]);
      expect((await store.listByCustomer("ALICE", undefined, 10)).map((o) => o.id)).to.deep.equal(["01ORDERALICE0000000000000C"]);
      expect((await store.findByRequestId("k-1"))?.id).to.equal("01ORDERALICE0000000000000A");
      expect((await store.findByRequestId("K-1"))?.id).to.equal("01ORDERALICE0000000000000C");
    });

    it("leaves binary defaults for columns and tables that later migrations add", async () => {
      const schema = await rows(pool, "SELECT default_collation_name AS coll FROM information_schema.schemata WHERE schema_name = DATABASE()");
      expect(schema[0]?.coll).to.equal("utf8mb4_bin");
      const tables = await rows(
        pool,
        `SELECT table_name AS t, table_collation AS coll FROM information_schema.tables
          WHERE table_schema = DATABASE() AND table_name IN ('orders', 'voucher_outbox') ORDER BY table_name`,
      );
      expect(tables.map((t) => [t.t, t.coll])).to.deep.equal([
        ["orders", "utf8mb4_bin"],
        ["voucher_outbox", "utf8mb4_bin"],
      ]);
    });
  });

  describe("OrderStore on a migrated database", () => {
    let db: TestDatabase;
    let pool: Pool;
    let store: OrderStore;

    before(async () => {
      ({ db, pool } = await migratedOrderDatabase());
      store = new OrderStore({ pool, logger: silentLogger });
    });

    after(async () => {
      await pool?.end();
      await db?.drop();
    });

    it("treats request ids differing only in case as different requests, same customer and total or not", async () => {
      const a = await store.create({ customerId: "carol", totalCents: 12_000, currency: "EUR", requestId: "k-1" });
      const b = await store.create({ customerId: "carol", totalCents: 12_000, currency: "EUR", requestId: "K-1" });
      const c = await store.create({ customerId: "dave", totalCents: 9_000, currency: "EUR", requestId: "k-2" });
      const d = await store.create({ customerId: "erin", totalCents: 15_000, currency: "EUR", requestId: "K-2" });
      for (const r of [a, b, c, d]) expect(r.created).to.equal(true);
      expect(new Set([a, b, c, d].map((r) => r.order.id)).size).to.equal(4);
      // A true replay is still one request.
      const again = await store.create({ customerId: "carol", totalCents: 12_000, currency: "EUR", requestId: "K-1" });
      expect(again).to.deep.include({ created: false });
      expect(again.order.id).to.equal(b.order.id);
    });

    it("lists and finds a customer's orders by the exact customer id only", async () => {
      const ids: Record<string, string> = {};
      for (const [i, customerId] of ["frank", "FRANK", "Frank"].entries()) {
        ids[customerId] = (await store.create({ customerId, totalCents: 12_000, currency: "EUR", requestId: `list-${i}` })).order.id;
      }
      for (const customerId of ["frank", "FRANK", "Frank"]) {
        expect((await store.listByCustomer(customerId, undefined, 10)).map((o) => o.id), customerId).to.deep.equal([ids[customerId]]);
      }
      expect(await store.listByCustomer("fRANK", undefined, 10)).to.deep.equal([]);
    });

    it("finds an order by its exact id only", async () => {
      const { order } = await store.create({ customerId: "gina", totalCents: 12_000, currency: "EUR", requestId: "exact-id" });
      expect((await store.get(order.id))?.id).to.equal(order.id);
      expect(await store.get(order.id.toLowerCase())).to.equal(undefined);
      expect(await store.getMany([order.id.toLowerCase()])).to.deep.equal([]);
    });
  });
});
