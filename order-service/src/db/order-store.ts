import type { PoolConnection, ResultSetHeader, RowDataPacket } from "mysql2/promise";
import { inTransaction, retryTransient, type Pool } from "@shop/platform/db";
import { failpoint } from "@shop/platform/failpoints";
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "@shop/platform/errors";
import { newId } from "@shop/platform/ids";
import type { Logger } from "@shop/platform/logger";
import { currentTraceparent } from "@shop/platform/tracing";
import { handleOnce } from "@shop/engine/inbox";
import {
  cancel,
  chargeRequestFor,
  isSameCreateRequest,
  markDelivered,
  markSent,
  newOrder,
  paymentOutcome,
  paymentRequeueAction,
  releaseForShipping,
  requeueAction,
  shipmentEvent,
  shipmentMessageKey,
  shipmentRequeueAction,
  type ChargeRequest,
  type NewOrder,
  type Order,
  type PaymentOutcome,
  type PaymentStatus,
  type RefundRequest,
  type SentTransition,
  type ShipmentEventFacts,
  type ShipmentRequest,
  type ShippingStatus,
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
  /** Likewise after a commit that wrote (or revived) a charge_outbox or refund_outbox row: the charge or refund relay's wake-up. */
  onPaymentRequested?: (kind: "charge" | "refund") => void;
  /** Likewise after a commit that wrote (or revived) a shipment_outbox row: the shipment relay's wake-up. */
  onShipmentRequested?: () => void;
  /**
   * SHIP_PAID_ORDERS: the CHARGED outcome that makes an order PAID also
   * releases it for shipping, in the same transaction. Default false: PAID
   * orders wait for ReleaseOrderForShipping (or MarkOrderSent by hand).
   */
  shipPaidOrders?: boolean;
  /** Clock for new orders (created_at and the id's time part). Default Date.now. */
  now?: () => number;
}

const ORDER_COLUMNS = `o.id, o.customer_id AS customerId, o.total_cents AS totalCents, o.currency, o.status,
  o.request_id AS requestId, o.created_at AS createdAt, o.updated_at AS updatedAt, o.sent_at AS sentAt,
  o.delivered_at AS deliveredAt, o.cancelled_at AS cancelledAt, o.payment_method AS paymentMethod,
  o.payment_status AS paymentStatus, o.payment_reason AS paymentReason, o.charged_at AS chargedAt, o.refunded_at AS refundedAt,
  o.shipping_status AS shippingStatus, o.carrier, o.shipping_requested_at AS shippingRequestedAt,
  o.shipping_decline_reason AS shippingDeclineReason, o.sent_by AS sentBy`;

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
    paymentMethod: row.paymentMethod,
    paymentStatus: row.paymentStatus,
    paymentReason: row.paymentReason ?? null,
    chargedAt: row.chargedAt ?? null,
    refundedAt: row.refundedAt ?? null,
    shippingStatus: row.shippingStatus,
    carrier: row.carrier ?? null,
    shippingRequestedAt: row.shippingRequestedAt ?? null,
    shippingDeclineReason: row.shippingDeclineReason ?? null,
    sentBy: row.sentBy ?? null,
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
    `UPDATE orders SET status = ?, updated_at = ?, sent_at = ?, delivered_at = ?, cancelled_at = ?,
       payment_status = ?, payment_reason = ?, charged_at = ?, refunded_at = ?,
       shipping_status = ?, carrier = ?, shipping_requested_at = ?, shipping_decline_reason = ?, sent_by = ? WHERE id = ?`,
    [
      order.status,
      order.updatedAt,
      order.sentAt,
      order.deliveredAt,
      order.cancelledAt,
      order.paymentStatus,
      order.paymentReason,
      order.chargedAt,
      order.refundedAt,
      order.shippingStatus,
      order.carrier,
      order.shippingRequestedAt,
      order.shippingDeclineReason,
      order.sentBy,
      order.id,
    ],
  );
}

/**
 * A charge request, due at once on the database's clock (which the relay's claim reads too), carrying the
 * writer's traceparent (CreateOrder's span).
 */
async function insertCharge(conn: PoolConnection, request: ChargeRequest): Promise<void> {
  await conn.query(
    `INSERT INTO charge_outbox (order_id, customer_id, amount_cents, currency, status, attempts, next_attempt_at, created_at, traceparent)
     VALUES (?, ?, ?, ?, 'pending', 0, NOW(3), NOW(3), ?)`,
    [request.orderId, request.customerId, request.amountCents, request.currency, currentTraceparent() ?? null],
  );
}

/** A refund request, due at once on the database's clock. */
async function insertRefund(conn: PoolConnection, request: RefundRequest): Promise<void> {
  await conn.query(
    `INSERT INTO refund_outbox (order_id, amount_cents, currency, status, attempts, next_attempt_at, created_at, traceparent)
     VALUES (?, ?, ?, 'pending', 0, NOW(3), NOW(3), ?)`,
    [request.orderId, request.amountCents, request.currency, currentTraceparent() ?? null],
  );
}

/**
 * A shipment request keyed "shipment:<order id>", due at once on the database's clock, carrying the writer's
 * traceparent (ReleaseOrderForShipping's span, or RecordPaymentOutcome's when SHIP_PAID_ORDERS releases the order).
 */
async function insertShipment(conn: PoolConnection, request: ShipmentRequest): Promise<void> {
  await conn.query(
    `INSERT INTO shipment_outbox (message_key, order_id, customer_id, total_cents, currency, carrier, status, attempts, next_attempt_at, created_at, traceparent)
     VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, NOW(3), NOW(3), ?)`,
    [
      shipmentMessageKey(request.orderId),
      request.orderId,
      request.customerId,
      request.totalCents,
      request.currency,
      request.carrier,
      currentTraceparent() ?? null,
    ],
  );
}

/** The inbox key of a payment decision must be the one its event implies: one charge outcome and one refund outcome per order, ever. */
export function expectedPaymentMessageKey(orderId: string, event: PaymentOutcome["event"]): string {
  return `${event === "REFUNDED" ? "refund" : "charge"}:${orderId}`;
}

export interface PaymentOutcomeMessage extends PaymentOutcome {
  /** The payment service's key of the decision: "charge:<order id>" or "refund:<order id>". */
  messageKey: string;
  orderId: string;
}

/** The delivery service's key of a shipment event: "shipment:<order id>:<EVENT>", one per event and order, ever. */
export function expectedShipmentEventKey(orderId: string, event: ShipmentEventFacts["event"]): string {
  return `shipment:${orderId}:${event}`;
}

export interface ShipmentEventMessage extends ShipmentEventFacts {
  /** The delivery service's key of the event: "shipment:<order id>:<EVENT>". */
  messageKey: string;
  orderId: string;
  /** The shipment's id in the delivery service. */
  shipmentId: string;
  /** The carrier that reported it (for logs). */
  carrier?: string;
  /** When the delivery service recorded it (for logs: the order is stamped with its own database's clock). */
  occurredAt?: Date;
}

export interface ListByShippingQuery {
  shippingStatus: Exclude<ShippingStatus, "NONE">;
  requestedBefore?: Date;
  /** The last (shipping_requested_at, id) of the previous page. */
  from?: TimePosition;
  limit: number;
}

export interface ListByPaymentQuery {
  paymentStatus: PaymentStatus;
  createdBefore?: Date;
  /** The last (created_at, id) of the previous page. */
  from?: TimePosition;
  limit: number;
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
  private readonly onPaymentRequested: (kind: "charge" | "refund") => void;
  private readonly onShipmentRequested: () => void;
  private readonly shipPaidOrders: boolean;
  private readonly now: () => number;

  constructor(opts: OrderStoreOptions) {
    this.pool = opts.pool;
    this.logger = opts.logger;
    this.onVoucherRequested = opts.onVoucherRequested ?? (() => {});
    this.onPaymentRequested = opts.onPaymentRequested ?? (() => {});
    this.onShipmentRequested = opts.onShipmentRequested ?? (() => {});
    this.shipPaidOrders = opts.shipPaidOrders ?? false;
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
    const paid = order.paymentMethod === "ACCOUNT";
    try {
      // A paid order and its charge request commit together: never one without the other.
      await retryTransient(() =>
        inTransaction(this.pool, async (conn) => {
          await conn.query(
            `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, payment_method, payment_status, carrier)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
            [
              order.id,
              order.customerId,
              order.totalCents,
              order.currency,
              order.status,
              order.requestId,
              order.createdAt,
              order.updatedAt,
              order.paymentMethod,
              order.paymentStatus,
              order.carrier,
            ],
          );
          if (paid) {
            await insertCharge(conn, chargeRequestFor(order));
            failpoint("order.create-paid.before-commit");
          }
        }),
      );
      this.logger.info(
        { orderId: order.id, customerId: order.customerId, totalCents: order.totalCents, paymentMethod: order.paymentMethod },
        `order ${order.id} created${paid ? "; charge requested" : ""}`,
      );
      if (paid) this.paymentRequested(order.id, "charge");
      return { order: { ...order, voucher: voucherStateOf(null) }, created: true };
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
    }
    const existing = await this.findByRequestId(input.requestId);
    if (!existing) throw new Error(`duplicate key inserting an order for request_id ${input.requestId}, yet no order has that request_id`);
    if (!isSameCreateRequest(existing, input)) {
      throw alreadyExists(
        `request_id ${JSON.stringify(input.requestId)} was already used for order ${existing.id} with a different customer_id, total_cents, currency, payment_method or carrier`,
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
        if (t.refundRequest) await insertRefund(conn, t.refundRequest);
        let entry: OutboxEntry | null;
        if (t.voucherRequest) {
          await insertOutbox(conn, t.voucherRequest, locked.now);
          entry = JUST_QUEUED;
        } else {
          entry = entryOrArchived(await readOutbox(conn, orderId), locked.archivedVoucherId);
        }
        if (t.changed && t.order.status === "SENT") failpoint("order.mark-sent.before-commit");
        return {
          order: { ...t.order, voucher: voucherStateOf(entry) },
          changed: t.changed,
          voucherRequested: t.voucherRequest !== undefined,
          refundRequested: t.refundRequest !== undefined,
        };
      }),
    );
    if (result.changed && result.order.status === "SENT") failpoint("order.mark-sent.after-commit");
    if (result.changed) {
      this.logger.info(
        { orderId, status: result.order.status, voucherRequested: result.voucherRequested },
        `order ${orderId} is now ${result.order.status}${result.voucherRequested ? "; voucher requested" : ""}${result.refundRequested ? "; refund requested" : ""}`,
      );
    }
    if (result.voucherRequested) this.voucherRequested(orderId);
    if (result.refundRequested) this.paymentRequested(orderId, "refund");
    return { order: result.order, changed: result.changed };
  }

  /**
   * Takes in a payment decision exactly once per message key: the inbox row
   * "payment:<key>" and the order's change (and a refund request it implies)
   * commit together. A replay answers the order as it is now, changed=false;
   * the same key with other facts is refused. A decision the order cannot
   * take (another amount, a contradicting outcome) is refused and records
   * nothing, so the sender parks it for a person.
   */
  async recordPaymentOutcome(msg: PaymentOutcomeMessage): Promise<ChangeResult> {
    if (msg.event === "REFUSED" && msg.messageKey === `refund:${msg.orderId}`) {
      // The order asks for a refund only once it knows the charge as CHARGED: a refused refund contradicts that.
      throw failedPrecondition(
        `the payment service refused the refund of order ${msg.orderId}${msg.reason ? ` (${msg.reason})` : ""}, although the order knows its charge as charged: a person must look at both sides`,
      );
    }
    const expectedKey = expectedPaymentMessageKey(msg.orderId, msg.event);
    if (msg.messageKey !== expectedKey) {
      throw invalidArgument(`message_key ${JSON.stringify(msg.messageKey)} does not belong to a ${msg.event} outcome of order ${msg.orderId}; expected ${JSON.stringify(expectedKey)}`);
    }
    const facts = JSON.stringify({ event: msg.event, reason: msg.reason ?? "", amountCents: msg.amountCents, currency: msg.currency });
    const result = await retryTransient(() =>
      inTransaction(this.pool, async (conn) => {
        const locked = await lockOrder(conn, msg.orderId);
        if (!locked) throw notFound(`order ${msg.orderId} not found`);
        let refundRequested = false;
        let shipmentRequested = false;
        // The row lock is held throughout: a replay leaves the order as locked, a handled outcome as the effect left it.
        let order = locked.order;
        const answer = await handleOnce(conn, {
          key: `payment:${msg.messageKey}`,
          facts,
          effect: async () => {
            const t = paymentOutcome(locked.order, msg, locked.now);
            let after = t.order;
            if (this.shipPaidOrders && t.changed && after.status === "PAID" && after.shippingStatus === "NONE") {
              // SHIP_PAID_ORDERS: the charge that makes the order PAID releases it, in this same transaction.
              const release = releaseForShipping(after, undefined, locked.now);
              after = release.order;
              await insertShipment(conn, release.shipmentRequest!);
              shipmentRequested = true;
            }
            if (t.changed) await saveOrder(conn, after);
            if (t.refundRequest) {
              await insertRefund(conn, t.refundRequest);
              refundRequested = true;
            }
            order = after;
            return { changed: t.changed, status: t.order.status, paymentStatus: t.order.paymentStatus };
          },
        });
        if (answer.kind === "conflict") {
          throw failedPrecondition(
            `payment message ${msg.messageKey} was taken in before with other facts (${answer.recordedFacts}); this one (${facts}) changes nothing`,
          );
        }
        failpoint("order.payment-outcome.before-commit");
        const entry = entryOrArchived(await readOutbox(conn, msg.orderId), locked.archivedVoucherId);
        return {
          order: { ...order, voucher: voucherStateOf(entry) },
          changed: answer.kind === "handled" && answer.outcome.changed,
          refundRequested,
          shipmentRequested,
        };
      }),
    );
    failpoint("order.payment-outcome.after-commit");
    if (result.changed) {
      this.logger.info(
        { orderId: msg.orderId, event: msg.event, reason: msg.reason, status: result.order.status, paymentStatus: result.order.paymentStatus },
        `order ${msg.orderId}: payment ${msg.event}; now ${result.order.status}, payment ${result.order.paymentStatus}${result.refundRequested ? "; refund requested" : ""}${result.shipmentRequested ? "; released for shipping" : ""}`,
      );
    }
    if (result.refundRequested) this.paymentRequested(msg.orderId, "refund");
    if (result.shipmentRequested) this.shipmentRequested(msg.orderId);
    return { order: result.order, changed: result.changed };
  }

  /**
   * Makes sure an undecided charge or an owed refund is on its way to the
   * payment service: a dead request goes back to pending, a missing one is
   * recorded, a pending or delivered one (awaiting its outcome) is left alone.
   */
  async requeuePayment(orderId: string): Promise<RequeueResult> {
    const result = await retryTransient(() =>
      inTransaction(this.pool, async (conn) => {
        const locked = await lockOrder(conn, orderId);
        if (!locked) throw notFound(`order ${orderId} not found`);
        const table = locked.order.paymentStatus === "REFUND_PENDING" ? "refund_outbox" : "charge_outbox";
        const [rows] = await conn.query<RowDataPacket[]>(`SELECT status FROM ${table} WHERE order_id = ? FOR UPDATE`, [orderId]);
        const row = rows[0] ? { status: String(rows[0].status) } : null;
        const action = paymentRequeueAction(locked.order, row);
        if (action.kind === "insert-charge") await insertCharge(conn, action.request);
        else if (action.kind === "insert-refund") await insertRefund(conn, action.request);
        else if (action.kind === "revive") {
          await conn.query(`UPDATE ${table} SET status = 'pending', next_attempt_at = ?, locked_by = NULL WHERE order_id = ? AND status = 'dead'`, [
            locked.now,
            orderId,
          ]);
        }
        const entry = entryOrArchived(await readOutbox(conn, orderId), locked.archivedVoucherId);
        return {
          order: { ...locked.order, voucher: voucherStateOf(entry) },
          requeued: action.kind !== "none",
          kind: (table === "refund_outbox" ? "refund" : "charge") as "charge" | "refund",
          was: row?.status ?? "missing",
        };
      }),
    );
    if (result.requeued) {
      this.logger.info({ orderId, request: result.kind, previous: result.was }, `${result.kind} request of order ${orderId} requeued (was ${result.was})`);
      this.paymentRequested(orderId, result.kind);
    }
    return { order: result.order, requeued: result.requeued };
  }

  /** Orders in one payment state created before a time, oldest first, on (payment_status, created_at, id). */
  async listByPaymentStatus(q: ListByPaymentQuery): Promise<OrderView[]> {
    const where = ["o.payment_status = ?"];
    const params: unknown[] = [q.paymentStatus];
    if (q.createdBefore) {
      where.push("o.created_at < ?");
      params.push(q.createdBefore);
    }
    if (q.from) {
      where.push("(o.created_at > ? OR (o.created_at = ? AND o.id > ?))");
      params.push(q.from.at, q.from.at, q.from.id);
    }
    params.push(q.limit);
    const [rows] = await this.pool.query<ViewRow[]>(`${SELECT_VIEW} WHERE ${where.join(" AND ")} ORDER BY o.created_at, o.id LIMIT ?`, params);
    return rows.map(toView);
  }

  /**
   * Releases the order for shipping: shipping REQUESTED and its shipment
   * request ("shipment:<order id>", the order's snapshot and the carrier)
   * commit together. Idempotent: an order already in shipping is answered
   * changed=false and nothing is written.
   */
  async releaseForShipping(orderId: string, carrier?: string): Promise<ChangeResult> {
    const result = await retryTransient(() =>
      inTransaction(this.pool, async (conn) => {
        const locked = await lockOrder(conn, orderId);
        if (!locked) throw notFound(`order ${orderId} not found`);
        const t = releaseForShipping(locked.order, carrier, locked.now);
        if (t.changed) {
          await saveOrder(conn, t.order);
          await insertShipment(conn, t.shipmentRequest!);
          failpoint("order.release.before-commit");
        }
        const entry = entryOrArchived(await readOutbox(conn, orderId), locked.archivedVoucherId);
        return { order: { ...t.order, voucher: voucherStateOf(entry) }, changed: t.changed };
      }),
    );
    if (result.changed) {
      this.logger.info(
        { orderId, carrier: result.order.carrier ?? "", status: result.order.status },
        `order ${orderId} released for shipping${result.order.carrier ? ` with carrier ${result.order.carrier}` : " with the delivery service's default carrier"}; shipment requested`,
      );
      this.shipmentRequested(orderId);
    }
    return result;
  }

  /**
   * Takes in a shipment event exactly once per message key: the inbox row
   * "shipment-event:<key>" and the order's change (the voucher request or
   * the refund request it implies) commit together. A replay answers the
   * order as it is now, changed=false; the same key with other facts is
   * refused. An event that contradicts the order is refused and records
   * nothing, so the sender parks it for a person.
   */
  async recordShipmentEvent(msg: ShipmentEventMessage): Promise<ChangeResult> {
    const expectedKey = expectedShipmentEventKey(msg.orderId, msg.event);
    if (msg.messageKey !== expectedKey) {
      throw invalidArgument(
        `message_key ${JSON.stringify(msg.messageKey)} does not belong to a ${msg.event} event of order ${msg.orderId}; expected ${JSON.stringify(expectedKey)}`,
      );
    }
    // The reason is a fact of a decline only: whatever else a SHIPPED or DELIVERED message carries there tells no replay apart.
    const declineReason = msg.event === "DECLINED" ? (msg.declineReason ?? "") : "";
    const facts = JSON.stringify({ event: msg.event, shipmentId: msg.shipmentId, declineReason });
    const result = await retryTransient(() =>
      inTransaction(this.pool, async (conn) => {
        const locked = await lockOrder(conn, msg.orderId);
        if (!locked) throw notFound(`order ${msg.orderId} not found`);
        let voucherRequested = false;
        let refundRequested = false;
        let order = locked.order;
        const answer = await handleOnce(conn, {
          key: `shipment-event:${msg.messageKey}`,
          facts,
          effect: async () => {
            const t = shipmentEvent(locked.order, { event: msg.event, declineReason: declineReason || undefined }, locked.now);
            if (t.changed) await saveOrder(conn, t.order);
            if (t.voucherRequest) {
              await insertOutbox(conn, t.voucherRequest, locked.now);
              voucherRequested = true;
            }
            if (t.refundRequest) {
              await insertRefund(conn, t.refundRequest);
              refundRequested = true;
            }
            order = t.order;
            return { changed: t.changed, status: t.order.status, shippingStatus: t.order.shippingStatus };
          },
        });
        if (answer.kind === "conflict") {
          throw failedPrecondition(
            `shipment event ${msg.messageKey} was taken in before with other facts (${answer.recordedFacts}); this one (${facts}) changes nothing`,
          );
        }
        failpoint("order.shipment-event.before-commit");
        const entry = voucherRequested ? JUST_QUEUED : entryOrArchived(await readOutbox(conn, msg.orderId), locked.archivedVoucherId);
        return {
          order: { ...order, voucher: voucherStateOf(entry) },
          changed: answer.kind === "handled" && answer.outcome.changed,
          voucherRequested,
          refundRequested,
        };
      }),
    );
    failpoint("order.shipment-event.after-commit");
    if (result.changed) {
      this.logger.info(
        {
          orderId: msg.orderId,
          event: msg.event,
          shipmentId: msg.shipmentId,
          carrier: msg.carrier,
          declineReason: msg.declineReason,
          occurredAt: msg.occurredAt,
          status: result.order.status,
          shippingStatus: result.order.shippingStatus,
        },
        `order ${msg.orderId}: shipment ${msg.event}${msg.declineReason ? ` (${msg.declineReason})` : ""}; now ${result.order.status}, shipping ${result.order.shippingStatus}` +
          `${result.voucherRequested ? "; voucher requested" : ""}${result.refundRequested ? "; refund requested" : ""}`,
      );
    }
    if (result.voucherRequested) this.voucherRequested(msg.orderId);
    if (result.refundRequested) this.paymentRequested(msg.orderId, "refund");
    return { order: result.order, changed: result.changed };
  }

  /**
   * Makes sure the shipment request of an order in shipping (REQUESTED)
   * reaches the delivery service: a dead request goes back to pending, a
   * missing one is recorded from the order, a pending or delivered one is
   * left alone. The request row is locked too, so a relay acking it at the
   * same moment is not overwritten.
   */
  async requeueShipment(orderId: string): Promise<RequeueResult> {
    const result = await retryTransient(() =>
      inTransaction(this.pool, async (conn) => {
        const locked = await lockOrder(conn, orderId);
        if (!locked) throw notFound(`order ${orderId} not found`);
        const [rows] = await conn.query<RowDataPacket[]>(`SELECT status FROM shipment_outbox WHERE message_key = ? FOR UPDATE`, [
          shipmentMessageKey(orderId),
        ]);
        const row = rows[0] ? { status: String(rows[0].status) } : null;
        const action = shipmentRequeueAction(locked.order, row);
        if (action.kind === "insert") await insertShipment(conn, action.request);
        else if (action.kind === "revive") {
          await conn.query(`UPDATE shipment_outbox SET status = 'pending', next_attempt_at = ?, locked_by = NULL WHERE message_key = ? AND status = 'dead'`, [
            locked.now,
            shipmentMessageKey(orderId),
          ]);
        }
        const entry = entryOrArchived(await readOutbox(conn, orderId), locked.archivedVoucherId);
        return { order: { ...locked.order, voucher: voucherStateOf(entry) }, requeued: action.kind !== "none", was: row?.status ?? "missing" };
      }),
    );
    if (result.requeued) {
      this.logger.info({ orderId, previous: result.was }, `shipment request of order ${orderId} requeued (was ${result.was})`);
      this.shipmentRequested(orderId);
    }
    return { order: result.order, requeued: result.requeued };
  }

  /** Orders in one shipping state requested before a time, oldest request first, on (shipping_status, shipping_requested_at, id). */
  async listByShippingStatus(q: ListByShippingQuery): Promise<OrderView[]> {
    const where = ["o.shipping_status = ?"];
    const params: unknown[] = [q.shippingStatus];
    if (q.requestedBefore) {
      where.push("o.shipping_requested_at < ?");
      params.push(q.requestedBefore);
    }
    if (q.from) {
      where.push("(o.shipping_requested_at > ? OR (o.shipping_requested_at = ? AND o.id > ?))");
      params.push(q.from.at, q.from.at, q.from.id);
    }
    params.push(q.limit);
    const [rows] = await this.pool.query<ViewRow[]>(
      `${SELECT_VIEW} WHERE ${where.join(" AND ")} ORDER BY o.shipping_requested_at, o.id LIMIT ?`,
      params,
    );
    return rows.map(toView);
  }

  /** As voucherRequested, for the shipment relay. */
  private shipmentRequested(orderId: string): void {
    try {
      this.onShipmentRequested();
    } catch (err) {
      this.logger.error({ orderId, err }, `waking the shipment relay for order ${orderId} failed; it will be picked up by polling`);
    }
  }

  /** As voucherRequested, for the charge and refund relays. */
  private paymentRequested(orderId: string, kind: "charge" | "refund"): void {
    try {
      this.onPaymentRequested(kind);
    } catch (err) {
      this.logger.error({ orderId, err }, `waking the ${kind} relay for order ${orderId} failed; it will be picked up by polling`);
    }
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
