import { sql } from "drizzle-orm";
import { bigint, char, check, datetime, index, int, mysqlTable, text, uniqueIndex, varchar } from "drizzle-orm/mysql-core";

// Every id column compares exactly (utf8mb4_bin): "alice" and "ALICE" are two
// customers. drizzle-kit does not model collations, so migration 0000 sets
// them by hand; a new id column needs the same.

/**
 * Accounts: one per customer (UNIQUE(customer_id)), plus the system accounts
 * that stand on the other side of every movement: FUNDING pays top-ups in
 * (its entries sum below zero: money that came into the system), CLEARING
 * receives charges and pays refunds back. balance_cents is kept for customer
 * accounts only, by the conditional UPDATE that is the debit's compare and
 * swap; a system account's balance is the sum of its entries and its column
 * stays 0, so that every movement does not queue on one hot row.
 */
export const accounts = mysqlTable(
  "accounts",
  {
    id: varchar("id", { length: 64 }).primaryKey(),
    customerId: varchar("customer_id", { length: 64 }),
    kind: varchar("kind", { length: 16, enum: ["CUSTOMER", "FUNDING", "CLEARING"] }).notNull(),
    currency: char("currency", { length: 3 }).notNull(),
    balanceCents: bigint("balance_cents", { mode: "number" }).notNull().default(0),
    openedAt: datetime("opened_at", { mode: "date", fsp: 3 }).notNull(),
  },
  (t) => [
    uniqueIndex("accounts_customer_id_uq").on(t.customerId),
    // The last line of defence: the conditional debit never lets it happen.
    check("accounts_balance_not_negative", sql`${t.balanceCents} >= 0`),
  ],
);

/**
 * The double-entry ledger: a movement is two entries, one per account, whose
 * amounts sum to zero (positive credits an account). Entries are never
 * updated or deleted. Ids are ULIDs: a statement lists them newest first.
 */
export const ledgerEntries = mysqlTable(
  "ledger_entries",
  {
    id: varchar("id", { length: 26 }).primaryKey(),
    movementId: varchar("movement_id", { length: 26 }).notNull(),
    accountId: varchar("account_id", { length: 64 }).notNull(),
    kind: varchar("kind", { length: 16, enum: ["TOP_UP", "CHARGE", "REFUND"] }).notNull(),
    amountCents: bigint("amount_cents", { mode: "number" }).notNull(),
    currency: char("currency", { length: 3 }).notNull(),
    orderId: varchar("order_id", { length: 64 }),
    requestId: varchar("request_id", { length: 64 }),
    createdAt: datetime("created_at", { mode: "date", fsp: 3 }).notNull(),
    // The order of a customer's debit, NULL on every other entry: a unique
    // index ignores NULLs, so the schema itself allows one debit per order,
    // as the inbox already does. Likewise one refund credit per order.
    debitOrderId: varchar("debit_order_id", { length: 64 }).generatedAlwaysAs(
      sql`CASE WHEN \`kind\` = 'CHARGE' AND \`amount_cents\` < 0 THEN \`order_id\` END`,
      { mode: "stored" },
    ),
    refundOrderId: varchar("refund_order_id", { length: 64 }).generatedAlwaysAs(
      sql`CASE WHEN \`kind\` = 'REFUND' AND \`amount_cents\` > 0 THEN \`order_id\` END`,
      { mode: "stored" },
    ),
  },
  (t) => [
    uniqueIndex("ledger_entries_movement_account_uq").on(t.movementId, t.accountId),
    // A statement: one account's entries newest first.
    index("ledger_entries_account_idx").on(t.accountId, t.id),
    uniqueIndex("ledger_entries_debit_order_uq").on(t.debitOrderId),
    uniqueIndex("ledger_entries_refund_order_uq").on(t.refundOrderId),
    index("ledger_entries_order_idx").on(t.orderId),
  ],
);

/**
 * The inbox (@shop/engine/inbox): every message that moves money, keyed
 * "topup:<request id>", "charge:<order id>", "refund:<order id>", recorded in
 * the transaction of its effect with the outcome a replay is answered.
 */
export const inbox = mysqlTable(
  "inbox",
  {
    messageKey: varchar("message_key", { length: 128 }).primaryKey(),
    facts: text("facts").notNull(),
    outcome: text("outcome"),
    receivedAt: datetime("received_at", { mode: "date", fsp: 3 }).notNull(),
    // When a charge was decided, NULL on every other message (top-ups,
    // refunds): the index below then holds the charges alone, in the order
    // ListOrderPayments lists them, (decided_at, "charge:" + order id).
    chargeDecidedAt: datetime("charge_decided_at", { mode: "date", fsp: 3 }).generatedAlwaysAs(
      sql`CASE WHEN \`message_key\` LIKE 'charge:%' THEN \`received_at\` END`,
      { mode: "stored" },
    ),
  },
  (t) => [index("inbox_charge_decided_idx").on(t.chargeDecidedAt, t.messageKey)],
);

/**
 * Outcomes to deliver back to the order service: one row per charge or
 * refund outcome, written in the transaction that decided it, in the shape of
 * the order service's voucher_outbox (claim with lease, fenced ack, retries).
 */
export const paymentOutbox = mysqlTable(
  "payment_outbox",
  {
    id: bigint("id", { mode: "number", unsigned: true }).autoincrement().primaryKey(),
    /** The inbox key of the message whose outcome this is: one row per outcome. */
    messageKey: varchar("message_key", { length: 128 }).notNull(),
    orderId: varchar("order_id", { length: 64 }).notNull(),
    customerId: varchar("customer_id", { length: 64 }).notNull(),
    /** CHARGED, REFUSED (with reason) or REFUNDED. */
    outcome: varchar("outcome", { length: 16, enum: ["CHARGED", "REFUSED", "REFUNDED"] }).notNull(),
    reason: varchar("reason", { length: 32 }),
    amountCents: bigint("amount_cents", { mode: "number" }).notNull(),
    currency: char("currency", { length: 3 }).notNull(),
    status: varchar("status", { length: 16, enum: ["pending", "delivered", "dead"] }).notNull(),
    attempts: int("attempts").notNull().default(0),
    nextAttemptAt: datetime("next_attempt_at", { mode: "date", fsp: 3 }).notNull(),
    lockedBy: varchar("locked_by", { length: 64 }),
    lastError: varchar("last_error", { length: 1024 }),
    createdAt: datetime("created_at", { mode: "date", fsp: 3 }).notNull(),
    deliveredAt: datetime("delivered_at", { mode: "date", fsp: 3 }),
    /** W3C traceparent of the request that asked (tracing only). */
    traceparent: varchar("traceparent", { length: 55 }),
  },
  (t) => [
    uniqueIndex("payment_outbox_message_key_uq").on(t.messageKey),
    index("payment_outbox_claim_idx").on(t.status, t.nextAttemptAt, t.id),
    index("payment_outbox_delivered_idx").on(t.status, t.deliveredAt, t.id),
    index("payment_outbox_order_idx").on(t.orderId),
  ],
);
