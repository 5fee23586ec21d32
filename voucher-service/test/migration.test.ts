import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { drizzle } from "drizzle-orm/mysql2";
import { migrate } from "drizzle-orm/mysql2/migrator";
import { createPool, type Pool } from "@shop/platform/db";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { migrateVoucherDatabase } from "../src/db/migrate.js";
import { VoucherStore } from "../src/db/voucher-store.js";
import { createVouchers } from "../src/vouchers.js";
import { captureLogger } from "./helpers.js";

const MIGRATIONS = path.resolve(import.meta.dirname, "../drizzle");

/**
 * Migration 0001 on a database that has lived under 0000: its rows keep
 * their values, the live index is filled from them, the ids compare exactly
 * from then on, and the service works on the result.
 */
describe("migrating a voucher database with data from UNIQUE(order_id) to one live voucher per order", () => {
  let db: TestDatabase;
  let pool: Pool;
  let onlyFirst: string;

  before(async () => {
    db = await freshDatabase("voucher");
    pool = createPool({ url: db.url, connectionLimit: 3 });
    // The committed migrations cut after 0000_init: the schema as it was.
    onlyFirst = mkdtempSync(path.join(os.tmpdir(), "voucher-migrations-"));
    cpSync(MIGRATIONS, onlyFirst, { recursive: true });
    const journalPath = path.join(onlyFirst, "meta/_journal.json");
    const journal = JSON.parse(readFileSync(journalPath, "utf8")) as { entries: Array<{ tag: string }> };
    expect(journal.entries[0]!.tag).to.equal("0000_init");
    journal.entries = journal.entries.slice(0, 1);
    writeFileSync(journalPath, JSON.stringify(journal));
    await migrate(drizzle(pool), { migrationsFolder: onlyFirst });
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
    if (onlyFirst) rmSync(onlyFirst, { recursive: true, force: true });
  });

  const insert = (id: string, orderId: string, customerId: string, status: string) =>
    db.sql(
      `INSERT INTO vouchers (id, code, order_id, customer_id, order_total_cents, amount_cents, currency, status, issued_at, voided_at, void_reason)
       VALUES ('${id}', 'V5-MIG0-0000-0000-${id.slice(-4)}', '${orderId}', '${customerId}', 15000, 500, 'EUR', '${status}',
               '2025-01-01 00:00:00.000', ${status === "VOIDED" ? "'2025-01-02 00:00:00.000', 'test'" : "NULL, NULL"})`,
    );

  it("keeps every row, fills live_order_id for ISSUED ones only, and gives every id column a binary collation", async () => {
    // Under 0000 a voided voucher blocked its order, and `ord-a`/`ORD-A` were one order.
    await insert("01MIG000000000000000000001", "ord-a", "alice", "ISSUED");
    await insert("01MIG000000000000000000002", "ord-b", "ALICE", "VOIDED");
    let refused: unknown;
    await insert("01MIG000000000000000000003", "ORD-A", "alice", "ISSUED").catch((err) => (refused = err));
    expect(String(refused)).to.match(/Duplicate entry/);
    const before = await db.sql("SELECT id, code, order_id, customer_id, status, issued_at, voided_at FROM vouchers ORDER BY id");

    await migrateVoucherDatabase(pool, captureLogger().logger);

    expect(await db.sql("SELECT id, code, order_id, customer_id, status, issued_at, voided_at FROM vouchers ORDER BY id")).to.equal(before);
    expect(await db.sql("SELECT id, IFNULL(live_order_id, 'NULL') FROM vouchers ORDER BY id")).to.equal(
      "01MIG000000000000000000001\tord-a\n01MIG000000000000000000002\tNULL\n",
    );
    const collations = await db.sql(
      `SELECT column_name, collation_name FROM information_schema.columns
       WHERE table_schema = DATABASE() AND table_name = 'vouchers' AND column_name IN ('id', 'code', 'order_id', 'customer_id', 'live_order_id')
       ORDER BY column_name`,
    );
    expect(collations.trim().split("\n")).to.deep.equal(
      ["code", "customer_id", "id", "live_order_id", "order_id"].map((c) => `${c}\tutf8mb4_bin`),
    );
    const indexes = await db.sql(
      `SELECT index_name, non_unique, GROUP_CONCAT(column_name ORDER BY seq_in_index) FROM information_schema.statistics
       WHERE table_schema = DATABASE() AND table_name = 'vouchers' GROUP BY index_name, non_unique ORDER BY index_name`,
    );
    expect(indexes.trim().split("\n")).to.deep.equal([
      "PRIMARY\t0\tid",
      "vouchers_code_uq\t0\tcode",
      "vouchers_customer_id_idx\t1\tcustomer_id,id",
      "vouchers_issued_at_idx\t1\tissued_at,id",
      "vouchers_live_order_id_uq\t0\tlive_order_id",
      "vouchers_order_id_idx\t1\torder_id",
    ]);
  });

  it("leaves the service issuing on the migrated rows: the voided order gets a live voucher, a case variant its own", async () => {
    const vouchers = createVouchers({ store: new VoucherStore(pool), logger: captureLogger().logger });
    const req = (orderId: string, customerId: string) => ({ orderId, customerId, orderTotalCents: 15_000n, currency: "EUR" });
    expect(await vouchers.issueOne(req("ord-a", "alice"))).to.include({ created: false });
    expect(await vouchers.issueOne(req("ord-b", "ALICE"))).to.include({ created: true, reissued: true });
    expect(await vouchers.issueOne(req("ORD-A", "alice"))).to.include({ created: true, reissued: false });
    expect((await vouchers.listByCustomer("alice", 0, "")).items.map((v) => v.orderId).sort()).to.deep.equal(["ORD-A", "ord-a"]);
  });

  it("is a no-op when run again", async () => {
    const before = await db.sql("SHOW CREATE TABLE vouchers");
    await migrateVoucherDatabase(pool, captureLogger().logger);
    expect(await db.sql("SHOW CREATE TABLE vouchers")).to.equal(before);
  });
});
