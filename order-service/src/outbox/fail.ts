import type { ResultSetHeader } from "mysql2/promise";
import { inTransaction, type Pool } from "@shop/platform/db";

/** last_error is VARCHAR(1024); a longer message would fail the whole update in strict mode. */
export const LAST_ERROR_MAX = 1024;

export interface Retry {
  id: number;
  delayMs: number;
  error: string;
}

export interface Death {
  id: number;
  error: string;
}

export function truncateError(message: string): string {
  return message.length <= LAST_ERROR_MAX ? message : `${message.slice(0, LAST_ERROR_MAX - 1)}…`;
}

/**
 * Releases rows for a later attempt: next_attempt_at moves to now + delay
 * (computed per row by the backoff policy) and the lease is dropped.
 * Fenced on the claim token like the ack: a claimer that lost its lease must
 * not push back a row another relay now owns. The delay is added on the
 * database clock (NOW(3)), the same clock the claim compares against, so
 * relays with skewed clocks still agree on when a row is due.
 *
 * Returns the ids whose fence did not match.
 */
export async function scheduleRetries(pool: Pool, token: string, retries: Retry[]): Promise<number[]> {
  if (retries.length === 0) return [];
  const sorted = [...retries].sort((a, b) => a.id - b.id);
  return inTransaction(pool, async (conn) => {
    const stale: number[] = [];
    for (const r of sorted) {
      const [res] = await conn.query<ResultSetHeader>(
        `UPDATE voucher_outbox
            SET next_attempt_at = DATE_ADD(NOW(3), INTERVAL ? MICROSECOND), last_error = ?, locked_by = NULL
          WHERE id = ? AND locked_by = ?`,
        [Math.max(0, Math.round(r.delayMs)) * 1000, truncateError(r.error), r.id, token],
      );
      if (res.affectedRows === 0) stale.push(r.id);
    }
    return stale;
  });
}

/**
 * Parks rows the voucher service refused for good (status 'dead'): they are
 * no longer claimed, stay visible with last_error, and are requeued by an
 * admin or the reconciler once the cause is fixed. Fenced like the ack.
 *
 * Returns the ids whose fence did not match.
 */
export async function markDead(pool: Pool, token: string, deaths: Death[]): Promise<number[]> {
  if (deaths.length === 0) return [];
  const sorted = [...deaths].sort((a, b) => a.id - b.id);
  return inTransaction(pool, async (conn) => {
    const stale: number[] = [];
    for (const d of sorted) {
      const [res] = await conn.query<ResultSetHeader>(
        `UPDATE voucher_outbox
            SET status = 'dead', last_error = ?, locked_by = NULL
          WHERE id = ? AND locked_by = ?`,
        [truncateError(d.error), d.id, token],
      );
      if (res.affectedRows === 0) stale.push(d.id);
    }
    return stale;
  });
}
