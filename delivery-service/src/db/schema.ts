import { bigint, char, datetime, index, int, mysqlTable, uniqueIndex, varchar } from "drizzle-orm/mysql-core";

// Every id column compares exactly (utf8mb4_bin): "o-1" and "O-1" are two
// orders. drizzle-kit does not model collations or character sets, so
// migration 0000 sets them by hand; a new id column needs the same. Status
// columns are ASCII, so an index on them serves `status = '...'` whatever the
// connection's collation.

/**
 * Shipments: exactly one per order (UNIQUE(order_id)). status is the
 * lifecycle CREATED → CONFIRMED → SHIPPED → DELIVERED, or DECLINED from
 * CREATED or CONFIRMED. The carrier_* columns are the service's work with the
 * shipment's carrier plugin: HANDOFF until the plugin accepted it, TRACKING
 * while it reports (or is asked, at next_check_at), PARKED after too many
 * failures, DONE once final. next_check_at is when the carrier worker takes
 * the shipment up next (NULL: nothing to do until a report or a resume);
 * carrier_lease fences the worker that holds it.
 */
export const shipments = mysqlTable(
  "shipments",
  {
    id: varchar("id", { length: 64 }).primaryKey(),
    orderId: varchar("order_id", { length: 64 }).notNull(),
    customerId: varchar("customer_id", { length: 64 }).notNull(),
    totalCents: bigint("total_cents", { mode: "number" }).notNull(),
    currency: char("currency", { length: 3 }).notNull(),
    carrier: varchar("carrier", { length: 32 }).notNull(),
    status: varchar("status", { length: 16, enum: ["CREATED", "CONFIRMED", "SHIPPED", "DELIVERED", "DECLINED"] }).notNull(),
    trackingNumber: varchar("tracking_number", { length: 64 }),
    declineReason: varchar("decline_reason", { length: 64 }),
    createdAt: datetime("created_at", { mode: "date", fsp: 3 }).notNull(),
    updatedAt: datetime("updated_at", { mode: "date", fsp: 3 }).notNull(),
    confirmedAt: datetime("confirmed_at", { mode: "date", fsp: 3 }),
    shippedAt: datetime("shipped_at", { mode: "date", fsp: 3 }),
    deliveredAt: datetime("delivered_at", { mode: "date", fsp: 3 }),
    declinedAt: datetime("declined_at", { mode: "date", fsp: 3 }),
    carrierWork: varchar("carrier_work", { length: 16, enum: ["HANDOFF", "TRACKING", "PARKED", "DONE"] }).notNull(),
    carrierAttempts: int("carrier_attempts").notNull().default(0),
    carrierLastError: varchar("carrier_last_error", { length: 1024 }),
    nextCheckAt: datetime("next_check_at", { mode: "date", fsp: 3 }),
    carrierLease: varchar("carrier_lease", { length: 64 }),
    /** W3C traceparent of the order change that asked for the shipment (tracing only). */
    traceparent: varchar("traceparent", { length: 55 }),
  },
  (t) => [
    uniqueIndex("shipments_order_id_uq").on(t.orderId),
    // ListShipments: one status, by change time then order id.
    index("shipments_status_updated_idx").on(t.status, t.updatedAt, t.orderId),
    // The carrier worker's claim: due shipments, oldest first.
    index("shipments_next_check_idx").on(t.nextCheckAt),
  ],
);

/**
 * Every status change of a shipment, with its time and source: at most one
 * per status reached (UNIQUE(order_id, to_status)), so a report repeated or
 * raced is recorded once.
 */
export const shipmentTransitions = mysqlTable(
  "shipment_transitions",
  {
    id: bigint("id", { mode: "number", unsigned: true }).autoincrement().primaryKey(),
    shipmentId: varchar("shipment_id", { length: 64 }).notNull(),
    orderId: varchar("order_id", { length: 64 }).notNull(),
    fromStatus: varchar("from_status", { length: 16 }),
    toStatus: varchar("to_status", { length: 16 }).notNull(),
    at: datetime("at", { mode: "date", fsp: 3 }).notNull(),
    source: varchar("source", { length: 96 }).notNull(),
    detail: varchar("detail", { length: 256 }),
  },
  (t) => [uniqueIndex("shipment_transitions_order_status_uq").on(t.orderId, t.toStatus)],
);

/**
 * Shipment events the order service must learn (SHIPPED, DELIVERED,
 * DECLINED), written in the transaction of the change, in the engine's outbox
 * shape; message_key "shipment:<order id>:<event>" is the order service's
 * inbox key, one row per event ever.
 */
export const shipmentEventOutbox = mysqlTable(
  "shipment_event_outbox",
  {
    id: bigint("id", { mode: "number", unsigned: true }).autoincrement().primaryKey(),
    messageKey: varchar("message_key", { length: 128 }).notNull(),
    orderId: varchar("order_id", { length: 64 }).notNull(),
    shipmentId: varchar("shipment_id", { length: 64 }).notNull(),
    event: varchar("event", { length: 16, enum: ["SHIPPED", "DELIVERED", "DECLINED"] }).notNull(),
    carrier: varchar("carrier", { length: 32 }).notNull(),
    reason: varchar("reason", { length: 64 }),
    occurredAt: datetime("occurred_at", { mode: "date", fsp: 3 }).notNull(),
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
    uniqueIndex("shipment_event_outbox_message_key_uq").on(t.messageKey),
    index("shipment_event_outbox_claim_idx").on(t.status, t.nextAttemptAt, t.id),
    index("shipment_event_outbox_delivered_idx").on(t.status, t.deliveredAt, t.id),
    index("shipment_event_outbox_order_idx").on(t.orderId),
  ],
);
