import type { RowDataPacket } from "mysql2/promise";
import type { Pool } from "@shop/platform/db";
import type { OutboxRequestRow } from "./claim.js";

/** A dead outbox row as the admin API shows it; its id is the keyset position for paging. */
export interface DeadDelivery extends OutboxRequestRow {
  lastError: string | null;
  createdAt: Date;
}

/**
 * Dead rows after outbox id `afterId`, oldest first. The claim index's
 * status prefix limits the read to dead rows; sorting them by id is a small
 * filesort over those rows only (dead rows are few, and each one is an alert).
 */
export async function listDeadDeliveries(pool: Pool, afterId: number, limit: number): Promise<DeadDelivery[]> {
  const [rows] = await pool.query<RowDataPacket[]>(
    `SELECT id, order_id, customer_id, total_cents, currency, attempts, last_error, created_at
       FROM voucher_outbox FORCE INDEX (voucher_outbox_claim_idx)
      WHERE status = 'dead' AND id > ?
      ORDER BY id
      LIMIT ?`,
    [afterId, limit],
  );
  return rows.map((r) => ({
    id: Number(r.id),
    orderId: String(r.order_id),
    customerId: String(r.customer_id),
    totalCents: Number(r.total_cents),
    currency: String(r.currency),
    attempts: Number(r.attempts),
    lastError: r.last_error ?? null,
    createdAt: r.created_at,
  }));
}

/** The outbox status of each given order that has a row; orders without one are absent. */
export async function outboxStatusOf(pool: Pool, orderIds: string[]): Promise<Map<string, string>> {
  if (orderIds.length === 0) return new Map();
  const [rows] = await pool.query<RowDataPacket[]>(`SELECT order_id, status FROM voucher_outbox WHERE order_id IN (?)`, [orderIds]);
  return new Map(rows.map((r) => [String(r.order_id), String(r.status)]));
}
