import { bigint, char, datetime, index, int, mysqlTable, uniqueIndex, varchar } from "drizzle-orm/mysql-core";

/** Issued vouchers. UNIQUE(order_id) is what makes issuing exactly-once. */
export const vouchers = mysqlTable(
  "vouchers",
  {
    id: varchar("id", { length: 26 }).primaryKey(),
    code: varchar("code", { length: 32 }).notNull(),
    orderId: varchar("order_id", { length: 64 }).notNull(),
    customerId: varchar("customer_id", { length: 64 }).notNull(),
    orderTotalCents: bigint("order_total_cents", { mode: "number" }).notNull(),
    amountCents: int("amount_cents").notNull(),
    currency: char("currency", { length: 3 }).notNull(),
    status: varchar("status", { length: 16, enum: ["ISSUED", "VOIDED"] }).notNull(),
    issuedAt: datetime("issued_at", { mode: "date", fsp: 3 }).notNull(),
    voidedAt: datetime("voided_at", { mode: "date", fsp: 3 }),
    voidReason: varchar("void_reason", { length: 255 }),
  },
  (t) => [
    uniqueIndex("vouchers_order_id_uq").on(t.orderId),
    uniqueIndex("vouchers_code_uq").on(t.code),
    // ListVouchers: a customer's vouchers newest first.
    index("vouchers_customer_id_idx").on(t.customerId, t.id),
    // Reconciliation: vouchers issued in a window.
    index("vouchers_issued_at_idx").on(t.issuedAt, t.id),
  ],
);
