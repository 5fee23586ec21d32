import type { RowDataPacket, ResultSetHeader } from "mysql2/promise";
import { inTransaction, type Pool } from "@shop/platform/db";
import { failpoint } from "@shop/platform/failpoints";
import { VOUCHER_AMOUNT_CENTS, type Voucher, type VoucherCandidate } from "../domain/voucher.js";
import type { TimePosition } from "@shop/platform/paging";

const COLUMNS = `id, code, order_id AS orderId, customer_id AS customerId, order_total_cents AS orderTotalCents,
  amount_cents AS amountCents, currency, status, issued_at AS issuedAt, voided_at AS voidedAt, void_reason AS voidReason`;

type VoucherRow = Voucher & RowDataPacket;

function toVoucher(row: VoucherRow): Voucher {
  return {
    id: row.id,
    code: row.code,
    orderId: row.orderId,
    customerId: row.customerId,
    orderTotalCents: Number(row.orderTotalCents),
    amountCents: Number(row.amountCents),
    currency: row.currency,
    status: row.status,
    issuedAt: row.issuedAt,
    voidedAt: row.voidedAt ?? null,
    voidReason: row.voidReason ?? null,
  };
}

export interface ListIssuedQuery {
  after?: Date;
  before?: Date;
  from?: TimePosition;
  limit: number;
}

/**
 * The SQL of the voucher database. Every statement runs on its own
 * (autocommit): issuing needs no transaction because the single upsert is
 * atomic and UNIQUE(live_order_id) decides which of racing writers wins.
 * The id columns use a binary collation, so every comparison here is exact.
 */
export class VoucherStore {
  constructor(private readonly pool: Pool) {}

  /**
   * Inserts the candidates in one statement; a candidate whose order already
   * has a live (ISSUED) voucher, or whose code (rarely) is taken, changes
   * nothing. A voided voucher does not stand in the way: its live_order_id is
   * NULL. `id = id` rather than INSERT IGNORE, which would also turn other
   * errors (bad data, truncation) into silent warnings. Which rows went in is
   * learnt by reading them back by order_id. Candidates are sorted by order_id
   * so overlapping batches take their unique-key locks in the same order,
   * which keeps deadlocks rare.
   */
  async insertIgnoringDuplicates(candidates: VoucherCandidate[]): Promise<void> {
    if (candidates.length === 0) return;
    const sorted = [...candidates].sort((a, b) => (a.orderId < b.orderId ? -1 : a.orderId > b.orderId ? 1 : 0));
    const values = sorted.map(() => "(?, ?, ?, ?, ?, ?, ?, 'ISSUED', NOW(3))").join(", ");
    const params = sorted.flatMap((c) => [c.id, c.code, c.orderId, c.customerId, c.orderTotalCents, VOUCHER_AMOUNT_CENTS, c.currency]);
    // An explicit transaction only so a fault test can crash between the
    // insert and its commit; the statement alone would be just as atomic.
    await inTransaction(this.pool, async (conn) => {
      await conn.query(
        `INSERT INTO vouchers (id, code, order_id, customer_id, order_total_cents, amount_cents, currency, status, issued_at)
         VALUES ${values}
         ON DUPLICATE KEY UPDATE id = id`,
        params,
      );
      failpoint("voucher.issue.before-commit");
    });
    failpoint("voucher.issue.after-commit");
  }

  /** Every voucher of the given orders, live and voided (an order may have many voided ones). */
  async findByOrderIds(orderIds: string[]): Promise<Voucher[]> {
    if (orderIds.length === 0) return [];
    const [rows] = await this.pool.query<VoucherRow[]>(`SELECT ${COLUMNS} FROM vouchers WHERE order_id IN (?) ORDER BY id`, [orderIds]);
    return rows.map(toVoucher);
  }

  /** Vouchers holding any of these ids or codes: tells a candidate that lost on its own keys from one that lost on its order's. */
  async findByIdsOrCodes(ids: string[], codes: string[]): Promise<Voucher[]> {
    if (ids.length === 0 && codes.length === 0) return [];
    const [rows] = await this.pool.query<VoucherRow[]>(
      `SELECT ${COLUMNS} FROM vouchers WHERE id IN (?) UNION SELECT ${COLUMNS} FROM vouchers WHERE code IN (?)`,
      [ids.length > 0 ? ids : [""], codes.length > 0 ? codes : [""]],
    );
    return rows.map(toVoucher);
  }

  async findById(id: string): Promise<Voucher | undefined> {
    const [rows] = await this.pool.query<VoucherRow[]>(`SELECT ${COLUMNS} FROM vouchers WHERE id = ?`, [id]);
    return rows[0] ? toVoucher(rows[0]) : undefined;
  }

  /** Newest first, served by the (customer_id, id) index; `beforeId` is the last id of the previous page. */
  async listByCustomer(customerId: string, beforeId: string | undefined, limit: number): Promise<Voucher[]> {
    const [rows] = await this.pool.query<VoucherRow[]>(
      `SELECT ${COLUMNS} FROM vouchers
       WHERE customer_id = ? ${beforeId === undefined ? "" : "AND id < ?"}
       ORDER BY id DESC LIMIT ?`,
      beforeId === undefined ? [customerId, limit] : [customerId, beforeId, limit],
    );
    return rows.map(toVoucher);
  }

  /**
   * Ascending (issued_at, id) from the (issued_at, id) index. The keyset
   * condition is spelt `issued_at >= ? AND (issued_at > ? OR id > ?)` rather
   * than a row comparison, which MariaDB does not turn into an index range.
   * An open upper bound is the database's clock, the same clock that stamped
   * issued_at.
   */
  async listIssued(q: ListIssuedQuery): Promise<Voucher[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.after) {
      where.push("issued_at >= ?");
      params.push(q.after);
    }
    if (q.before) {
      where.push("issued_at < ?");
      params.push(q.before);
    } else {
      where.push("issued_at < NOW(3)");
    }
    if (q.from) {
      where.push("issued_at >= ? AND (issued_at > ? OR id > ?)");
      params.push(q.from.at, q.from.at, q.from.id);
    }
    params.push(q.limit);
    const [rows] = await this.pool.query<VoucherRow[]>(
      `SELECT ${COLUMNS} FROM vouchers WHERE ${where.join(" AND ")} ORDER BY issued_at, id LIMIT ?`,
      params,
    );
    return rows.map(toVoucher);
  }

  /** Voids an ISSUED voucher; false when there was nothing to change (already voided, or no such voucher). */
  async void(id: string, reason: string): Promise<boolean> {
    const [res] = await this.pool.query<ResultSetHeader>(
      `UPDATE vouchers SET status = 'VOIDED', voided_at = NOW(3), void_reason = ? WHERE id = ? AND status = 'ISSUED'`,
      [reason, id],
    );
    return res.affectedRows === 1;
  }

  async ping(): Promise<void> {
    await this.pool.query("SELECT 1");
  }
}
