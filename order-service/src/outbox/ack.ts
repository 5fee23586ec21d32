import type { ResultSetHeader } from "mysql2/promise";
import { inTransaction, type Pool } from "@shop/platform/db";

export interface Delivery {
  id: number;
  voucherId: string;
}

/**
 * Marks delivered rows, fenced on the claim token: `AND locked_by = ?` makes
 * the ack of a claimer whose lease expired (and whose rows another relay has
 * since claimed) change nothing. That is harmless: the voucher service is
 * idempotent per order, so the new claimer gets the same voucher back with
 * created=false and acks it itself.
 *
 * One statement per row so each row's fence is checked on its own and the
 * stale ones can be named; one transaction so the batch costs one commit.
 * Rows are updated in id order, the same order every relay locks in, so two
 * acks over overlapping rows cannot deadlock each other.
 *
 * Returns the ids whose fence did not match.
 */
export async function ackDelivered(pool: Pool, token: string, deliveries: Delivery[]): Promise<number[]> {
  if (deliveries.length === 0) return [];
  const sorted = [...deliveries].sort((a, b) => a.id - b.id);
  return inTransaction(pool, async (conn) => {
    const stale: number[] = [];
    for (const d of sorted) {
      const [res] = await conn.query<ResultSetHeader>(
        `UPDATE voucher_outbox
            SET status = 'delivered', voucher_id = ?, delivered_at = NOW(3), locked_by = NULL, last_error = NULL
          WHERE id = ? AND locked_by = ?`,
        [d.voucherId, d.id, token],
      );
      if (res.affectedRows === 0) stale.push(d.id);
    }
    return stale;
  });
}
