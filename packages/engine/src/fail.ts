import type { PoolConnection, RowDataPacket } from "mysql2/promise";
import { inTransaction, type Pool } from "@shop/platform/db";
import type { AnyFlow } from "./flow.js";

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
 * The rows among `ids` still leased to `token`, locked. Walks the primary key
 * in id order, the order every relay's ack, retry and dead-marking lock in,
 * so two of them over overlapping rows cannot deadlock.
 */
async function lockOwned(conn: PoolConnection, flow: AnyFlow, ids: number[], token: string): Promise<Set<number>> {
  const [owned] = await conn.query<RowDataPacket[]>(flow.sql.lockOwned, [ids, token]);
  return new Set(owned.map((r) => Number(r.id)));
}

/**
 * Releases rows for a later attempt: next_attempt_at moves to now + delay
 * (computed per row by the backoff policy) and the lease is dropped.
 * Fenced on the claim token like the ack: a claimer that lost its lease must
 * not push back a row another relay now owns. The delay is added on the
 * database clock (NOW(3)), the same clock the claim compares against, so
 * relays with skewed clocks still agree on when a row is due.
 *
 * Two statements for the whole batch, like the ack: a locking read of the rows
 * still fenced to this token, then one UPDATE with a CASE per row for the
 * delay and the error, fenced again. A batch that failed as a whole is as
 * large as a claim, and one statement per row cost a round trip each.
 *
 * Returns the ids whose fence did not match.
 */
export async function scheduleRetries(pool: Pool, flow: AnyFlow, token: string, retries: Retry[]): Promise<number[]> {
  if (retries.length === 0) return [];
  const ids = retries.map((r) => r.id);
  return inTransaction(pool, async (conn) => {
    const mine = await lockOwned(conn, flow, ids, token);
    const owned = retries.filter((r) => mine.has(r.id));
    if (owned.length > 0) {
      const whens = owned.map(() => "WHEN ? THEN ?").join(" ");
      await conn.query(
        `UPDATE ${flow.table}
            SET next_attempt_at = DATE_ADD(NOW(3), INTERVAL (CASE id ${whens} END) MICROSECOND),
                last_error = CASE id ${whens} END,
                locked_by = NULL
          WHERE id IN (?) AND locked_by = ?`,
        [
          ...owned.flatMap((r) => [r.id, Math.max(0, Math.round(r.delayMs)) * 1000]),
          ...owned.flatMap((r) => [r.id, truncateError(r.error)]),
          owned.map((r) => r.id),
          token,
        ],
      );
    }
    return ids.filter((id) => !mine.has(id)).sort((a, b) => a - b);
  });
}

/**
 * Parks rows that were refused for good, or that kept failing on their own
 * (status 'dead'): they are no longer claimed, stay visible with last_error,
 * and are requeued by an admin or the reconciler once the cause is fixed.
 * Fenced and batched like the retry.
 *
 * Returns the ids whose fence did not match.
 */
export async function markDead(pool: Pool, flow: AnyFlow, token: string, deaths: Death[]): Promise<number[]> {
  if (deaths.length === 0) return [];
  const ids = deaths.map((d) => d.id);
  return inTransaction(pool, async (conn) => {
    const mine = await lockOwned(conn, flow, ids, token);
    const owned = deaths.filter((d) => mine.has(d.id));
    if (owned.length > 0) {
      await conn.query(
        `UPDATE ${flow.table}
            SET status = 'dead', last_error = CASE id ${owned.map(() => "WHEN ? THEN ?").join(" ")} END, locked_by = NULL
          WHERE id IN (?) AND locked_by = ?`,
        [...owned.flatMap((d) => [d.id, truncateError(d.error)]), owned.map((d) => d.id), token],
      );
    }
    return ids.filter((id) => !mine.has(id)).sort((a, b) => a - b);
  });
}
