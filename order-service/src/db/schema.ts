import { bigint, char, datetime, index, int, mysqlTable, text, uniqueIndex, varchar } from "drizzle-orm/mysql-core";

// Ids are compared exactly, case included, in SQL as in code: every id column
// (and currency) has the binary collation utf8mb4_bin, and so have both tables
// and the database by default. drizzle-orm cannot declare a column's
// collation, so migration 0003_ids_binary_collation sets it, and tables and
// columns that later migrations add inherit it from those defaults.

/**
 * Orders and their lifecycle: PENDING → SENT → DELIVERED, or PENDING →
 * CANCELLED; a paid order starts AWAITING_PAYMENT and becomes PAID (then
 * SENT, DELIVERED, or CANCELLED with a refund) or PAYMENT_FAILED.
 */
export const orders = mysqlTable(
  "orders",
  {
    id: varchar("id", { length: 26 }).primaryKey(),
    customerId: varchar("customer_id", { length: 64 }).notNull(),
    totalCents: bigint("total_cents", { mode: "number" }).notNull(),
    currency: char("currency", { length: 3 }).notNull(),
    status: varchar("status", {
      length: 16,
      enum: ["PENDING", "SENT", "DELIVERED", "CANCELLED", "AWAITING_PAYMENT", "PAID", "PAYMENT_FAILED"],
    }).notNull(),
    /** The caller's idempotency key for CreateOrder. */
    requestId: varchar("request_id", { length: 64 }).notNull(),
    createdAt: datetime("created_at", { mode: "date", fsp: 3 }).notNull(),
    updatedAt: datetime("updated_at", { mode: "date", fsp: 3 }).notNull(),
    sentAt: datetime("sent_at", { mode: "date", fsp: 3 }),
    deliveredAt: datetime("delivered_at", { mode: "date", fsp: 3 }),
    cancelledAt: datetime("cancelled_at", { mode: "date", fsp: 3 }),
    /**
     * The issued voucher, copied here by the outbox cleanup when it removes the
     * delivered outbox row, so the order keeps its voucher id after the row is gone.
     */
    voucherId: varchar("voucher_id", { length: 26 }),
    /** NONE: no payment through the shop; ACCOUNT: charged to the customer's account in the payment service. */
    paymentMethod: varchar("payment_method", { length: 16, enum: ["NONE", "ACCOUNT"] }).notNull().default("NONE"),
    /** What the order knows of its payment; moved on only by its own transitions and RecordPaymentOutcome. */
    paymentStatus: varchar("payment_status", {
      length: 16,
      enum: ["NONE", "AWAITING", "CHARGED", "REFUSED", "REFUND_PENDING", "REFUNDED"],
    })
      .notNull()
      .default("NONE"),
    /** The payment service's reason for a refused charge. */
    paymentReason: varchar("payment_reason", { length: 32 }),
    chargedAt: datetime("charged_at", { mode: "date", fsp: 3 }),
    refundedAt: datetime("refunded_at", { mode: "date", fsp: 3 }),
    /**
     * NONE: shipped by hand (MarkOrderSent); REQUESTED once released for
     * shipping (its shipment_outbox row written in the same transaction);
     * then moved on only by the delivery service's shipment events.
     */
    shippingStatus: varchar("shipping_status", { length: 16, enum: ["NONE", "REQUESTED", "SHIPPED", "DELIVERED", "DECLINED"] })
      .notNull()
      .default("NONE"),
    /** The carrier asked for at CreateOrder (or at release); NULL: the delivery service's default. */
    carrier: varchar("carrier", { length: 32 }),
    /** When the shipment request was recorded (database clock). */
    shippingRequestedAt: datetime("shipping_requested_at", { mode: "date", fsp: 3 }),
    /** The carrier's reason for a declined shipment. */
    shippingDeclineReason: varchar("shipping_decline_reason", { length: 64 }),
    /** Who marked the order sent: HAND (MarkOrderSent) or SHIPMENT (its shipment's event); NULL before 0005 or while unsent. */
    sentBy: varchar("sent_by", { length: 16, enum: ["HAND", "SHIPMENT"] }),
  },
  (t) => [
    uniqueIndex("orders_request_id_uq").on(t.requestId),
    // ListOrdersByPaymentStatus (the reconciler): one payment state, oldest first.
    index("orders_payment_status_idx").on(t.paymentStatus, t.createdAt, t.id),
    // ListOrders: a customer's orders newest first (ids sort by creation time).
    index("orders_customer_id_idx").on(t.customerId, t.id),
    // ListSentOrders: a window of sent_at, keyset on (sent_at, id).
    index("orders_sent_at_idx").on(t.sentAt, t.id),
    // ListOrdersByShippingStatus (the reconciler): one shipping state, oldest request first.
    index("orders_shipping_status_idx").on(t.shippingStatus, t.shippingRequestedAt, t.id),
  ],
);

/**
 * Voucher requests written in the same transaction that marks a qualifying
 * order sent (the transactional outbox). One row per order at most.
 */
export const voucherOutbox = mysqlTable(
  "voucher_outbox",
  {
    id: bigint("id", { mode: "number", unsigned: true }).autoincrement().primaryKey(),
    orderId: varchar("order_id", { length: 26 }).notNull(),
    // Snapshot of what the voucher service needs, so delivery never reads orders.
    customerId: varchar("customer_id", { length: 64 }).notNull(),
    totalCents: bigint("total_cents", { mode: "number" }).notNull(),
    currency: char("currency", { length: 3 }).notNull(),
    status: varchar("status", { length: 16, enum: ["pending", "delivered", "dead"] }).notNull(),
    attempts: int("attempts").notNull().default(0),
    /** When the row may next be claimed; a claim pushes it out by the lease. */
    nextAttemptAt: datetime("next_attempt_at", { mode: "date", fsp: 3 }).notNull(),
    /** Token of the claim holding the lease; acks and failures are fenced on it. */
    lockedBy: varchar("locked_by", { length: 64 }),
    lastError: varchar("last_error", { length: 1024 }),
    voucherId: varchar("voucher_id", { length: 26 }),
    createdAt: datetime("created_at", { mode: "date", fsp: 3 }).notNull(),
    deliveredAt: datetime("delivered_at", { mode: "date", fsp: 3 }),
    /**
     * W3C traceparent of the span that wrote the row (MarkOrderSent's server
     * span), version 00 so 55 characters; the relay sends it on with the
     * request so the voucher's issue joins that trace. NULL when the writer
     * had no span. Tracing only: nothing depends on it.
     */
    traceparent: varchar("traceparent", { length: 55 }),
  },
  (t) => [
    uniqueIndex("voucher_outbox_order_id_uq").on(t.orderId),
    // The claim filters on status and next_attempt_at and orders by these same
    // columns; without this index SKIP LOCKED degenerates (filesort locks every match).
    index("voucher_outbox_claim_idx").on(t.status, t.nextAttemptAt, t.id),
    // The retention cleanup walks delivered rows oldest first and stops at the
    // cutoff, so it reads only the rows it deletes and never the pending ones.
    index("voucher_outbox_delivered_idx").on(t.status, t.deliveredAt, t.id),
  ],
);

/**
 * Charge requests: written by CreateOrder in the transaction that creates a
 * paid order, delivered to the payment service's ChargeOrder by the charge
 * flow. One row per order at most.
 */
export const chargeOutbox = mysqlTable(
  "charge_outbox",
  {
    id: bigint("id", { mode: "number", unsigned: true }).autoincrement().primaryKey(),
    orderId: varchar("order_id", { length: 26 }).notNull(),
    customerId: varchar("customer_id", { length: 64 }).notNull(),
    amountCents: bigint("amount_cents", { mode: "number" }).notNull(),
    currency: char("currency", { length: 3 }).notNull(),
    status: varchar("status", { length: 16, enum: ["pending", "delivered", "dead"] }).notNull(),
    attempts: int("attempts").notNull().default(0),
    nextAttemptAt: datetime("next_attempt_at", { mode: "date", fsp: 3 }).notNull(),
    lockedBy: varchar("locked_by", { length: 64 }),
    lastError: varchar("last_error", { length: 1024 }),
    createdAt: datetime("created_at", { mode: "date", fsp: 3 }).notNull(),
    deliveredAt: datetime("delivered_at", { mode: "date", fsp: 3 }),
    traceparent: varchar("traceparent", { length: 55 }),
  },
  (t) => [
    uniqueIndex("charge_outbox_order_id_uq").on(t.orderId),
    index("charge_outbox_claim_idx").on(t.status, t.nextAttemptAt, t.id),
    index("charge_outbox_delivered_idx").on(t.status, t.deliveredAt, t.id),
  ],
);

/**
 * Refund requests: written in the transaction that cancels a charged order
 * (or that learns a cancelled order was charged), delivered to the payment
 * service's RefundOrder by the refund flow. One row per order at most.
 */
export const refundOutbox = mysqlTable(
  "refund_outbox",
  {
    id: bigint("id", { mode: "number", unsigned: true }).autoincrement().primaryKey(),
    orderId: varchar("order_id", { length: 26 }).notNull(),
    amountCents: bigint("amount_cents", { mode: "number" }).notNull(),
    currency: char("currency", { length: 3 }).notNull(),
    status: varchar("status", { length: 16, enum: ["pending", "delivered", "dead"] }).notNull(),
    attempts: int("attempts").notNull().default(0),
    nextAttemptAt: datetime("next_attempt_at", { mode: "date", fsp: 3 }).notNull(),
    lockedBy: varchar("locked_by", { length: 64 }),
    lastError: varchar("last_error", { length: 1024 }),
    createdAt: datetime("created_at", { mode: "date", fsp: 3 }).notNull(),
    deliveredAt: datetime("delivered_at", { mode: "date", fsp: 3 }),
    traceparent: varchar("traceparent", { length: 55 }),
  },
  (t) => [
    uniqueIndex("refund_outbox_order_id_uq").on(t.orderId),
    index("refund_outbox_claim_idx").on(t.status, t.nextAttemptAt, t.id),
    index("refund_outbox_delivered_idx").on(t.status, t.deliveredAt, t.id),
  ],
);

/**
 * Shipment requests: written in the transaction that releases an order for
 * shipping (ReleaseOrderForShipping, or the CHARGED outcome that makes an
 * order PAID when SHIP_PAID_ORDERS is on), delivered to the delivery
 * service's CreateShipment by the shipment flow. One row per order at most,
 * keyed "shipment:<order id>".
 */
export const shipmentOutbox = mysqlTable(
  "shipment_outbox",
  {
    id: bigint("id", { mode: "number", unsigned: true }).autoincrement().primaryKey(),
    messageKey: varchar("message_key", { length: 128 }).notNull(),
    orderId: varchar("order_id", { length: 26 }).notNull(),
    // Snapshot of what the delivery service needs, so delivery never reads orders.
    customerId: varchar("customer_id", { length: 64 }).notNull(),
    totalCents: bigint("total_cents", { mode: "number" }).notNull(),
    currency: char("currency", { length: 3 }).notNull(),
    /** Empty: the delivery service's default carrier. */
    carrier: varchar("carrier", { length: 32 }).notNull().default(""),
    status: varchar("status", { length: 16, enum: ["pending", "delivered", "dead"] }).notNull(),
    attempts: int("attempts").notNull().default(0),
    nextAttemptAt: datetime("next_attempt_at", { mode: "date", fsp: 3 }).notNull(),
    lockedBy: varchar("locked_by", { length: 64 }),
    lastError: varchar("last_error", { length: 1024 }),
    createdAt: datetime("created_at", { mode: "date", fsp: 3 }).notNull(),
    deliveredAt: datetime("delivered_at", { mode: "date", fsp: 3 }),
    traceparent: varchar("traceparent", { length: 55 }),
  },
  (t) => [
    uniqueIndex("shipment_outbox_message_key_uq").on(t.messageKey),
    uniqueIndex("shipment_outbox_order_id_uq").on(t.orderId),
    index("shipment_outbox_claim_idx").on(t.status, t.nextAttemptAt, t.id),
    index("shipment_outbox_delivered_idx").on(t.status, t.deliveredAt, t.id),
  ],
);

/**
 * The order database's inbox (@shop/engine/inbox): every payment outcome the
 * order has taken in, keyed "payment:" + the payment service's message key,
 * and every shipment event, keyed "shipment-event:" + the delivery service's
 * message key, each recorded in the transaction that moved the order.
 */
export const inbox = mysqlTable("inbox", {
  messageKey: varchar("message_key", { length: 128 }).primaryKey(),
  facts: text("facts").notNull(),
  outcome: text("outcome"),
  receivedAt: datetime("received_at", { mode: "date", fsp: 3 }).notNull(),
});
