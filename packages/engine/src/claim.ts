import type { RowDataPacket } from "mysql2/promise";
import { inTransaction, type Pool } from "@shop/platform/db";
import type { Claimed, Flow } from "./flow.js";

export interface ClaimOptions {
  /** Most rows to take. */
  limit: number;
  /** How long the rows stay ours; after that any relay may claim them again. */
  leaseMs: number;
  /** Unique per claim; later acks and failures are fenced on it. */
  token: string;
}

/**
 * Leases up to `limit` due rows of the flow's outbox to one claim token
 * (the SELECT is flow.sql.claimSelect; see its comment for the index).
 *
 * - SKIP LOCKED lets N relays claim disjoint batches without waiting on each
 *   other. Sessions are READ COMMITTED (createPool): under REPEATABLE READ
 *   the gap locks of this scan deadlocked against concurrent outbox inserts.
 * - The lease is next_attempt_at pushed out by leaseMs, so an expired lease
 *   needs no separate sweep: the row is simply due again and this same query
 *   finds it. locked_by then changes, which fences the earlier claimer.
 * - attempts is counted at claim time, so a relay that dies mid-call still
 *   counts the attempt and the next failure backs off further.
 * - The row locks last for one SELECT and one UPDATE, never across the
 *   network call.
 */
export async function claimDue<Row extends object>(
  pool: Pool,
  flow: Flow<Row, unknown>,
  { limit, leaseMs, token }: ClaimOptions,
): Promise<Array<Claimed<Row>>> {
  return inTransaction(pool, async (conn) => {
    const [rows] = await conn.query<RowDataPacket[]>(flow.sql.claimSelect, [limit]);
    if (rows.length === 0) return [];
    await conn.query(flow.sql.claimUpdate, [token, leaseMs * 1000, rows.map((r) => r.id)]);
    return rows.map((r) => ({
      ...flow.def.fromRow(r),
      id: Number(r.id),
      attempts: Number(r.attempts) + 1,
      ageAtClaimMs: Number(r.age_us) / 1000,
      traceparent: r.traceparent == null ? undefined : String(r.traceparent),
      failedOnItsOwn: Number(r.own_failure) === 1,
    }));
  });
}
