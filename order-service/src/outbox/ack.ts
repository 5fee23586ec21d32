import { ack } from "@shop/engine/ack";
import type { Pool } from "@shop/platform/db";
import { voucherOutbox } from "./voucher-flow.js";

export interface Delivery {
  id: number;
  voucherId: string;
}

/**
 * Marks delivered voucher_outbox rows with their voucher ids, fenced on the
 * claim token (the engine's ack; the voucher service is idempotent per order,
 * so a fenced-off claimer's rows are acked by their new owner with the same
 * voucher). Returns the ids whose fence did not match.
 */
export function ackDelivered(pool: Pool, token: string, deliveries: Delivery[]): Promise<number[]> {
  return ack(pool, voucherOutbox, token, deliveries.map((d) => ({ id: d.id, values: [d.voucherId] })));
}
