import { pino } from "pino";
import type { RowDataPacket } from "mysql2/promise";
import { createPool, type Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { migrateOrderDatabase } from "../../src/db/migrate.js";

export const silentLogger: Logger = pino({ level: "silent" });

/** A fresh, migrated order database and a pool on it. */
export async function migratedOrderDatabase(): Promise<{ db: TestDatabase; pool: Pool }> {
  const db = await freshDatabase("order");
  const pool = createPool({ url: db.url, connectionLimit: 10 });
  await migrateOrderDatabase(pool, silentLogger);
  return { db, pool };
}

export async function count(pool: Pool, sql: string, params: unknown[] = []): Promise<number> {
  const [rows] = await pool.query<RowDataPacket[]>(sql, params);
  return Number(Object.values(rows[0]!)[0]);
}

/** Everything in both tables, to show that a refused request wrote nothing. */
export async function snapshot(pool: Pool): Promise<unknown> {
  const [orders] = await pool.query("SELECT * FROM orders ORDER BY id");
  const [outbox] = await pool.query("SELECT * FROM voucher_outbox ORDER BY id");
  return { orders, outbox };
}
