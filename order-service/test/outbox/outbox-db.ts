import type { RowDataPacket } from "mysql2/promise";
import { pino } from "pino";
import { createPool, type Pool } from "@shop/platform/db";
import { newId } from "@shop/platform/ids";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { migrateOrderDatabase } from "../../src/db/migrate.js";
import { quietLogger } from "./fake-voucher-service.js";

export interface OutboxDb {
  db: TestDatabase;
  pool: Pool;
  close(): Promise<void>;
}

/** A migrated order database of its own. */
export async function freshOutboxDb(): Promise<OutboxDb> {
  const db = await freshDatabase("order");
  const pool = createPool({ url: db.url, connectionLimit: 20 });
  await migrateOrderDatabase(pool, quietLogger);
  return {
    db,
    pool,
    async close() {
      await pool.end();
      await db.drop();
    },
  };
}

/** Inserts `count` due outbox rows the way MarkOrderSent would; returns their order ids. */
export async function insertOutboxRows(pool: Pool, count: number): Promise<string[]> {
  const orderIds = Array.from({ length: count }, () => newId());
  for (let i = 0; i < orderIds.length; i += 500) {
    const chunk = orderIds.slice(i, i + 500);
    await pool.query(
      `INSERT INTO voucher_outbox (order_id, customer_id, total_cents, currency, status, next_attempt_at, created_at)
       VALUES ?`,
      [chunk.map((id) => [id, `cust-${id.slice(-6)}`, 12_345, "EUR", "pending", new Date(), new Date()])],
    );
  }
  return orderIds;
}

export interface OutboxRow {
  id: number;
  orderId: string;
  status: string;
  attempts: number;
  lockedBy: string | null;
  lastError: string | null;
  voucherId: string | null;
  deliveredAt: Date | null;
}

export async function outboxRows(pool: Pool): Promise<OutboxRow[]> {
  const [rows] = await pool.query<RowDataPacket[]>(
    "SELECT id, order_id, status, attempts, locked_by, last_error, voucher_id, delivered_at FROM voucher_outbox ORDER BY id",
  );
  return rows.map((r) => ({
    id: Number(r.id),
    orderId: r.order_id,
    status: r.status,
    attempts: r.attempts,
    lockedBy: r.locked_by,
    lastError: r.last_error,
    voucherId: r.voucher_id,
    deliveredAt: r.delivered_at,
  }));
}

export async function outboxRow(pool: Pool, orderId: string): Promise<OutboxRow> {
  const row = (await outboxRows(pool)).find((r) => r.orderId === orderId);
  if (!row) throw new Error(`no outbox row for order ${orderId}`);
  return row;
}

/** Polls until check() is true; fails with `what` after timeoutMs. */
export async function eventually(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export async function allDelivered(pool: Pool): Promise<boolean> {
  return (await outboxRows(pool)).every((r) => r.status === "delivered");
}

/** A logger that keeps its records, for asserting that failures are not silent. */
export function recordingLogger() {
  const records: Array<{ level: number; msg: string; [k: string]: unknown }> = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => void records.push(JSON.parse(line)) });
  return { logger, records };
}
