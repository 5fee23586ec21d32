import type { RowDataPacket } from "mysql2/promise";
import { inTransaction, type Pool } from "@shop/platform/db";

/** An outbox row's voucher request: what the voucher service needs, and how often delivery was tried. */
export interface OutboxRequestRow {
  id: number;
  orderId: string;
  customerId: string;
  totalCents: number;
  currency: string;
  attempts: number;
}

/** A claimed outbox row; `attempts` includes the one this claim starts (1 on the first delivery). */
export interface ClaimedRow extends OutboxRequestRow {
  /**
   * How old the request was at the claim (NOW(3) − created_at, both on the
   * database clock, so app-host clock skew does not enter the commit → voucher
   * latency metric).
   */
  ageAtClaimMs?: number;
  /**
   * W3C traceparent stored by the call that wrote the row (MarkOrderSent), if
   * it had a span; sent on in IssueVoucherRequest.traceparent and linked from
   * the relay's delivery span.
   */
  traceparent?: string;
  /**
   * The previous attempt failed on the row's own account (its last_error
   * carries OWN_FAILURE_MARK): it is sent apart from its neighbours, so it
   * does not fail their batch again.
   */
  failedOnItsOwn?: boolean;
}

/**
 * Starts the last_error of a failure that was the row's own: its own item
 * failed in an answered batch, or it failed alone while the voucher service
 * answered its neighbours. Also kept inside "gave up after N attempts: …", so
 * a parked row that is requeued is sent apart at once.
 */
export const OWN_FAILURE_MARK = "failed on its own: ";

export interface ClaimOptions {
  /** Most rows to take. */
  limit: number;
  /** How long the rows stay ours; after that any relay may claim them again. */
  leaseMs: number;
  /** Unique per claim; later acks and failures are fenced on it. */
  token: string;
}

/**
 * The SELECT orders by exactly the claim index (status, next_attempt_at, id),
 * so InnoDB walks the index and stops after LIMIT unlocked rows. With a
 * filesort it would read and lock every matching row before sorting, and
 * competing relays would find nothing left to skip to.
 *
 * FORCE INDEX because the optimizer does not always choose it: on MariaDB
 * 10.11, while most of the table is pending and due (a young outbox, or a
 * backlog after an outage, exactly when relays compete), EXPLAIN showed a
 * full scan with "Using filesort" at 10 and 300 rows; it only picked the
 * index once most rows were delivered. MySQL 8 accepts the same hint.
 * A test EXPLAINs this text in both table shapes.
 */
export const CLAIM_SELECT_SQL = `SELECT id, order_id, customer_id, total_cents, currency, attempts, traceparent,
       COALESCE(last_error LIKE '%${OWN_FAILURE_MARK}%', 0) AS own_failure,
       TIMESTAMPDIFF(MICROSECOND, created_at, NOW(3)) AS age_us
  FROM voucher_outbox FORCE INDEX (voucher_outbox_claim_idx)
 WHERE status = 'pending' AND next_attempt_at <= NOW(3)
 ORDER BY status, next_attempt_at, id
 LIMIT ?
 FOR UPDATE SKIP LOCKED`;

/**
 * Leases up to `limit` due rows to one claim token.
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
export async function claimDueRows(pool: Pool, { limit, leaseMs, token }: ClaimOptions): Promise<ClaimedRow[]> {
  return inTransaction(pool, async (conn) => {
    const [rows] = await conn.query<RowDataPacket[]>(CLAIM_SELECT_SQL, [limit]);
    if (rows.length === 0) return [];
    await conn.query(
      `UPDATE voucher_outbox
          SET locked_by = ?, next_attempt_at = DATE_ADD(NOW(3), INTERVAL ? MICROSECOND), attempts = attempts + 1
        WHERE id IN (?)`,
      [token, leaseMs * 1000, rows.map((r) => r.id)],
    );
    return rows.map((r) => ({
      id: Number(r.id),
      orderId: String(r.order_id),
      customerId: String(r.customer_id),
      totalCents: Number(r.total_cents),
      currency: String(r.currency),
      attempts: Number(r.attempts) + 1,
      ageAtClaimMs: Number(r.age_us) / 1000,
      traceparent: r.traceparent == null ? undefined : String(r.traceparent),
      failedOnItsOwn: Number(r.own_failure) === 1,
    }));
  });
}
