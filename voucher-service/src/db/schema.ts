import { sql } from "drizzle-orm";
import { bigint, char, datetime, index, int, mysqlTable, uniqueIndex, varchar } from "drizzle-orm/mysql-core";

/**
 * Vouchers, live (ISSUED) and voided; never deleted. UNIQUE(live_order_id) is
 * what makes issuing exactly-once: at most one ISSUED voucher per order, while
 * voided ones do not count. The id columns compare exactly (utf8mb4_bin, set
 * by migration 0001; drizzle-kit does not model collations).
 */
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
    // The order id while the voucher is ISSUED, NULL once voided: a unique
    // index ignores NULLs, so it allows one live voucher per order and any
    // number of voided ones. STORED, as MySQL 8 and MariaDB both index it.
    liveOrderId: varchar("live_order_id", { length: 64 }).generatedAlwaysAs(sql`CASE WHEN \`status\` = 'ISSUED' THEN \`order_id\` END`, {
      mode: "stored",
    }),
  },
  (t) => [
    uniqueIndex("vouchers_live_order_id_uq").on(t.liveOrderId),
    // An order's vouchers, live and voided.
    index("vouchers_order_id_idx").on(t.orderId),
    uniqueIndex("vouchers_code_uq").on(t.code),
    // ListVouchers: a customer's vouchers newest first.
    index("vouchers_customer_id_idx").on(t.customerId, t.id),
    // Reconciliation: vouchers issued in a window.
    index("vouchers_issued_at_idx").on(t.issuedAt, t.id),
  ],
);
