import type { PoolConnection, ResultSetHeader, RowDataPacket } from "mysql2/promise";
import { inTransaction, retryTransient, type Pool } from "@shop/platform/db";
import { failpoint } from "@shop/platform/failpoints";
import { alreadyExists, notFound } from "@shop/platform/errors";
import { newId } from "@shop/platform/ids";
import type { Logger } from "@shop/platform/logger";
import { currentTraceparent } from "@shop/platform/tracing";
import {
  cancel,
  isSameCreateRequest,
  markDelivered,
  markSent,
  newOrder,
  requeueAction,
  type NewOrder,
  type Order,
  type SentTransition,
  type VoucherRequest,
} from "../domain/order.js";
import { entryOrArchived, voucherStateOf, type OutboxEntry, type VoucherState } from "../domain/voucher-state.js";
import type { TimePosition, TimeWindow } from "@shop/platform/paging";

/** An order with the state of its voucher, as the API shows it. */
export type OrderView = Order & { voucher: VoucherState };

export interface ChangeResult {
  order: OrderView;
  changed: boolean;
}

export interface RequeueResult {
  order: OrderView;
  requeued: boolean;
}

export interface ListSentQuery extends TimeWindow {
  from?: TimePosition;
  limit: number;
}

export interface OrderStoreOptions {
  pool: Pool;
  logger: Logger;
  /**
   * Called after a commit that wrote (or revived) a voucher_outbox row, never
   * before: the relay's wake-up, so a new request is delivered at once rather
   * than at the next poll. Default: nothing (the relay still finds the row by polling).
   */
  onVoucherRequested?: () => void;
  /** Clock for new orders (created_at and the id's time part). Default Date.now. */
  now?: () => number;
}

const ORDER_COLUMNS = `o.id, o.customer_id AS customerId, o.total_cents AS totalCents, o.currency, o.status,
  o.request_id AS requestId, o.created_at AS createdAt, o.updated_at AS updatedAt, o.sent_at AS sentAt,
  o.delivered_at AS deliveredAt, o.cancelled_at AS cancelledAt`;

const OUTBOX_COLUMNS = `o.voucher_id AS archivedVoucherId, v.status AS outboxStatus, v.attempts AS outboxAttempts, v.last_error AS outboxLastError,
  v.voucher_id AS outboxVoucherId`;

// The voucher state is read through the outbox's UNIQUE(order_id), one probe per order.
const SELECT_VIEW = `SELECT ${ORDER_COLUMNS}, ${OUTBOX_COLUMNS} FROM orders o LEFT JOIN voucher_outbox v ON v.order_id = o.id`;

type OrderRow = Order & RowDataPacket;
type ViewRow = OrderRow & {
  archivedVoucherId: string | null;
  outboxStatus: string | null;
  outboxAttempts: number | null;
  outboxLastError: string | null;
  outboxVoucherId: string | null;
};

function toOrder(row: OrderRow): Order {
  return {
    id: row.id,
    customerId: row.customerId,
    totalCents: Number(row.totalCents),
    currency: row.currency,
    status: row.status,
    requestId: row.requestId,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    sentAt: row.sentAt ?? null,
    deliveredAt: row.deliveredAt ?? null,
    cancelledAt: row.cancelledAt ?? null,
  };
}

function toView(row: ViewRow): OrderView {
  const entry: OutboxEntry | null =
    row.outboxStatus === null
      ? null
      : {
          status: row.outboxStatus,
          attempts: Number(row.outboxAttempts ?? 0),
          lastError: row.outboxLastError,
          voucherId: row.outboxVoucherId,
        };
  return { ...toOrder(row), voucher: voucherStateOf(entryOrArchived(entry, row.archivedVoucherId ?? null)) };
}

const JUST_QUEUED: OutboxEntry = { status: "pending", attempts: 0, lastError: null, voucherId: null };

function isDuplicateKey(err: unknown): boolean {
  return (err as { errno?: number } | null)?.errno === 1062;
}

/**
 * Takes the order's row lock for the rest of the transaction, so concurrent
 * changes to one order run one after another and each sees the last one's
 * result. NOW(3) comes along: every state change is stamped with the
 * database's clock, the one clock all replicas (and the relay's claim) share.
 */
interface LockedOrder {
  order: Order;
  now: Date;
  /** orders.voucher_id: set once the cleanup has archived the delivered outbox row. */
  archivedVoucherId: string | null;
}

async function lockOrder(conn: PoolConnection, orderId: string): Promise<LockedOrder | undefined> {
  const [rows] = await conn.query<Array<OrderRow & { dbNow: Date; archivedVoucherId: string | null }>>(
    `SELECT ${ORDER_COLUMNS}, o.voucher_id AS archivedVoucherId, NOW(3) AS dbNow FROM orders o WHERE o.id = ? FOR UPDATE`,
    [orderId],
  );
  const row = rows[0];
  return row ? { order: toOrder(row), now: row.dbNow, archivedVoucherId: row.archivedVoucherId ?? null } : undefined;
}

async function saveOrder(conn: PoolConnection, order: Order): Promise<void> {
  await conn.query(
    `UPDATE orders SET status = ?, updated_at = ?, sent_at = ?, delivered_at = ?, cancelled_at = ? WHERE id = ?`,
    [order.status, order.updatedAt, order.sentAt, order.deliveredAt, order.cancelledAt, order.id],
  );
}

/**
 * Due at once: next_attempt_at is the transaction's database time, which the relay's claim (NOW(3) after our commit) has passed.
 * The row keeps the traceparent of the call writing it (MarkOrderSent's span, or RequeueVoucher's), so the
 * voucher's issue, however much later, joins that call's trace; NULL outside any span.
 */
async function insertOutbox(conn: PoolConnection, request: VoucherRequest, now: Date): Promise<void> {
  await conn.query(
    `INSERT INTO voucher_outbox (order_id, customer_id, total_cents, currency, status, attempts, next_attempt_at, created_at, traceparent)
     VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)`,
    [request.orderId, request.customerId, request.totalCents, request.currency, now, now, currentTraceparent() ?? null],
  );
}

async function readOutbox(conn: PoolConnection, orderId: string, forUpdate = false): Promise<OutboxEntry | null> {
  const [rows] = await conn.query<Array<OutboxEntry & RowDataPacket>>(
    `SELECT status, attempts, last_error AS lastError, voucher_id AS voucherId
       FROM voucher_outbox WHERE order_id = ? ${forUpdate ? "FOR UPDATE" : ""}`,
    [orderId],
  );
  const row = rows[0];
  return row ? { status: row.status, attempts: Number(row.attempts), lastError: row.lastError, voucherId: row.voucherId } : null;
}

/**
 * The SQL of the order database. Every state change is one transaction that
 * locks the order, applies a pure transition from the domain, and writes the
 * order together with the voucher request it implies, so an order is never
 * SENT without its request nor the other way round.
 */
export class OrderStore {
  private readonly pool: Pool;
  private readonly logger: Logger;
  private readonly onVoucherRequested: () => void;
  private readonly now: () => number;

  constructor(opts: OrderStoreOptions) {
    this.pool = opts.pool;
    this.logger = opts.logger;
    this.onVoucherRequested = opts.onVoucherRequested ?? (() => {});
    this.now = opts.now ?? Date.now;
  }

  /**
   * Inserts the order; a request_id seen before returns the first order
   * (created=false) if the request is the same, else ALREADY_EXISTS. The
   * unique index on request_id decides between concurrent creates: the loser
   * gets a duplicate-key error and reads the winner.
   */
  async create(input: NewOrder): Promise<{ order: OrderView; created: boolean }> {
    const now = this.now();
    const order = newOrder(input, newId(now), new Date(now));
    try {
      await retryTransient(() =>
        this.pool.query(
          `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
          [order.id, order.customerId, order.totalCents, order.currency, order.status, order.requestId, order.createdAt, order.updatedAt],
        ),
      );
      this.logger.info({ orderId: order.id, customerId: order.customerId, totalCents: order.totalCents }, `order ${order.id} created`);
      return { order: { ...order, voucher: voucherStateOf(null) }, created: true };
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
    }
    const existing = await this.findByRequestId(input.requestId);
    if (!existing) throw new Error(`duplicate key inserting an order for request_id ${input.requestId}, yet no order has that request_id`);
    if (!isSameCreateRequest(existing, input)) {
      throw alreadyExists(
        `request_id ${JSON.stringify(input.requestId)} was already used for order ${existing.id} with a different customer_id, total_cents or currency`,
      );
    }
    return { order: existing, created: false };
  }

  async get(orderId: string): Promise<OrderView | undefined> {
    const [rows] = await this.pool.query<ViewRow[]>(`${SELECT_VIEW} WHERE o.id = ?`, [orderId]);
    return rows[0] ? toView(rows[0]) : undefined;
  }

  async findByRequestId(requestId: string): Promise<OrderView | undefined> {
    const [rows] = await this.pool.query<ViewRow[]>(`${SELECT_VIEW} WHERE o.request_id = ?`, [requestId]);
    return rows[0] ? toView(rows[0]) : undefined;
  }

  /** Distinct ids in; the orders that exist out, in the order asked for. */
  async getMany(orderIds: string[]): Promise<OrderView[]> {
    if (orderIds.length === 0) return [];
    const [rows] = await this.pool.query<ViewRow[]>(`${SELECT_VIEW} WHERE o.id IN (?)`, [orderIds]);
    const byId = new Map(rows.map((r) => [r.id, toView(r)]));
    return orderIds.flatMap((id) => byId.get(id) ?? []);
  }

  /** Newest first on the (customer_id, id) index; `beforeId` is the last id of the previous page. */
  async listByCustomer(customerId: string, beforeId: string | undefined, limit: number): Promise<OrderView[]> {
    const [rows] = await this.pool.query<ViewRow[]>(
      `${SELECT_VIEW} WHERE o.customer_id = ? ${beforeId === undefined ? "" : "AND o.id < ?"} ORDER BY o.id DESC LIMIT ?`,
      beforeId === undefined ? [customerId, limit] : [customerId, beforeId, limit],
    );
    return rows.map(toView);
  }

  /**
   * Orders whose sent_at is in [after, before), DELIVERED ones included, in
   * (sent_at, id) order on the index of the same columns. The keyset
   * condition is spelled out rather than written as a row comparison so both
   * MariaDB and MySQL use the index range for it.
   */
  async listSent(q: ListSentQuery): Promise<OrderView[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.after) {
      where.push("o.sent_at >= ?");
      params.push(q.after);
    } else {
      where.push("o.sent_at IS NOT NULL");
    }
    if (q.before) {
      where.push("o.sent_at < ?");
      params.push(q.before);
    } else {
      where.push("o.sent_at < NOW(3)");
    }
    if (q.from) {
      where.push("(o.sent_at > ? OR (o.sent_at = ? AND o.id > ?))");
      params.push(q.from.at, q.from.at, q.from.id);
    }
    params.push(q.limit);
    const [rows] = await this.pool.query<ViewRow[]>(
      `${SELECT_VIEW} WHERE ${where.join(" AND ")} ORDER BY o.sent_at, o.id LIMIT ?`,
      params,
    );
    return rows.map(toView);
  }

  /** PENDING → SENT; when the order qualifies, its voucher request is written in the same transaction. */
  markSent(orderId: string): Promise<ChangeResult> {
    return this.change(orderId, markSent);
  }

  markDelivered(orderId: string): Promise<ChangeResult> {
    return this.change(orderId, markDelivered);
  }

  cancel(orderId: string): Promise<ChangeResult> {
    return this.change(orderId, cancel);
  }

  /**
   * Makes sure a sent, qualifying order's voucher is on its way: records a
   * missing request, puts a dead one back to pending (keeping last_error for
   * the record), leaves a pending or delivered one alone (also one whose
   * delivered row the cleanup has archived to orders.voucher_id). The outbox row is
   * locked too, so a relay acking it at the same moment is not overwritten.
   */
  async requeueVoucher(orderId: string, redeliver = false): Promise<RequeueResult> {
    const result = await retryTransient(() =>
      inTransaction(this.pool, async (conn) => {
        const locked = await lockOrder(conn, orderId);
        if (!locked) throw notFound(`order ${orderId} not found`);
        // An archived delivery counts as delivered: nothing to requeue unless asked to redeliver.
        const row = await readOutbox(conn, orderId, true);
        const entry = entryOrArchived(row, locked.archivedVoucherId);
        const action = requeueAction(locked.order, entry, redeliver);
        let after = entry;
        if (action.kind === "insert" || (action.kind === "redeliver" && !row)) {
          // A new row wins over orders.voucher_id (see entryOrArchived) until the cleanup archives it again.
          await insertOutbox(conn, action.request, locked.now);
          after = JUST_QUEUED;
        } else if (action.kind === "redeliver") {
          await conn.query<ResultSetHeader>(
            `UPDATE voucher_outbox SET status = 'pending', next_attempt_at = ?, locked_by = NULL WHERE order_id = ? AND status = 'delivered'`,
            [locked.now, orderId],
          );
          after = { ...entry!, status: "pending" };
        } else if (action.kind === "revive") {
          await conn.query<ResultSetHeader>(
            `UPDATE voucher_outbox SET status = 'pending', next_attempt_at = ?, locked_by = NULL WHERE order_id = ? AND status = 'dead'`,
            [locked.now, orderId],
          );
          after = { ...entry!, status: "pending" };
        }
        return { order: { ...locked.order, voucher: voucherStateOf(after) }, requeued: action.kind !== "none", was: entry };
      }),
    );
    if (result.requeued) {
      this.logger.info(
        { orderId, previous: result.was?.status ?? "missing", lastError: result.was?.lastError ?? undefined },
        `voucher of order ${orderId} requeued (was ${result.was?.status ?? "missing"})`,
      );
      this.voucherRequested(orderId);
    }
    return { order: result.order, requeued: result.requeued };
  }

  private async change(orderId: string, apply: (order: Order, now: Date) => SentTransition): Promise<ChangeResult> {
    const result = await retryTransient(() =>
      inTransaction(this.pool, async (conn) => {
        const locked = await lockOrder(conn, orderId);
        if (!locked) throw notFound(`order ${orderId} not found`);
        const t = apply(locked.order, locked.now);
        if (t.changed) await saveOrder(conn, t.order);
        let entry: OutboxEntry | null;
        if (t.voucherRequest) {
          await insertOutbox(conn, t.voucherRequest, locked.now);
          entry = JUST_QUEUED;
        } else {
          entry = entryOrArchived(await readOutbox(conn, orderId), locked.archivedVoucherId);
        }
        if (t.changed && t.order.status === "SENT") failpoint("order.mark-sent.before-commit");
        return { order: { ...t.order, voucher: voucherStateOf(entry) }, changed: t.changed, voucherRequested: t.voucherRequest !== undefined };
      }),
    );
    if (result.changed && result.order.status === "SENT") failpoint("order.mark-sent.after-commit");
    if (result.changed) {
      this.logger.info(
        { orderId, status: result.order.status, voucherRequested: result.voucherRequested },
        `order ${orderId} is now ${result.order.status}${result.voucherRequested ? "; voucher requested" : ""}`,
      );
    }
    if (result.voucherRequested) this.voucherRequested(orderId);
    return { order: result.order, changed: result.changed };
  }

  /** The request is committed whatever the wake-up does; a failing wake-up only delays delivery to the next poll. */
  private voucherRequested(orderId: string): void {
    try {
      this.onVoucherRequested();
    } catch (err) {
      this.logger.error({ orderId, err }, `waking the relay after the voucher request of order ${orderId} failed; it will be picked up by polling`);
    }
  }
}
