import type { RowDataPacket } from "mysql2/promise";
import { listDead } from "@shop/engine/dead";
import type { Pool } from "@shop/platform/db";
import type { OutboxRequestRow } from "./claim.js";
import { voucherOutbox } from "./voucher-flow.js";

/** A dead outbox row as the admin API shows it; its id is the keyset position for paging. */
export interface DeadDelivery extends OutboxRequestRow {
  lastError: string | null;
  createdAt: Date;
}

/** Dead voucher_outbox rows after outbox id `afterId`, oldest first (the engine's listDead). */
export function listDeadDeliveries(pool: Pool, afterId: number, limit: number): Promise<DeadDelivery[]> {
  return listDead(pool, voucherOutbox, afterId, limit);
}

/** The outbox status of each given order that has a row; orders without one are absent. */
export async function outboxStatusOf(pool: Pool, orderIds: string[]): Promise<Map<string, string>> {
  if (orderIds.length === 0) return new Map();
  const [rows] = await pool.query<RowDataPacket[]>(`SELECT order_id, status FROM voucher_outbox WHERE order_id IN (?)`, [orderIds]);
  return new Map(rows.map((r) => [String(r.order_id), String(r.status)]));
}
