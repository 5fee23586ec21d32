import type { TestDatabase } from "./shared-servers.js";

/**
 * Reads of the payment side straight from the databases (order database:
 * orders' payment columns, charge_outbox, refund_outbox; payment database:
 * ledger entries, accounts, payment_outbox), for tests that state "one debit
 * per charged order, one refund per cancelled one" on their own, without the
 * code under test or the ledger check.
 */

type Sql = Pick<TestDatabase, "sql">;

const lines = (out: string) => out.split("\n").filter(Boolean).map((l) => l.split("\t"));

async function tables(db: Sql): Promise<Set<string>> {
  return new Set(lines(await db.sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")).map(([t]) => t!));
}

export interface OutboxTally {
  pending: number;
  dead: number;
  /** table → status → rows */
  byTable: Record<string, Record<string, number>>;
}

/**
 * Rows by status of every outbox there is: voucher_outbox, charge_outbox and
 * refund_outbox in the order database, payment_outbox in the payment
 * database; pending and dead summed over all of them.
 */
export async function paymentOutboxCounts(orderDb: Sql, paymentDb?: Sql): Promise<OutboxTally> {
  const tally: OutboxTally = { pending: 0, dead: 0, byTable: {} };
  const from = async (db: Sql, names: string[]) => {
    const have = await tables(db);
    for (const t of names.filter((n) => have.has(n))) {
      const counts: Record<string, number> = { pending: 0, delivered: 0, dead: 0 };
      for (const [status, n] of lines(await db.sql(`SELECT status, COUNT(*) FROM ${t} GROUP BY status`))) counts[status!] = Number(n);
      tally.byTable[t] = counts;
      tally.pending += counts.pending!;
      tally.dead += counts.dead!;
    }
  };
  await from(orderDb, ["voucher_outbox", "charge_outbox", "refund_outbox"]);
  if (paymentDb) await from(paymentDb, ["payment_outbox"]);
  return tally;
}

/** An order's status and payment columns. */
export interface OrderPaymentRow {
  id: string;
  customerId: string;
  totalCents: bigint;
  status: string;
  paymentStatus: string;
  paymentReason: string | null;
}

/** Every order's status and payment, by id. */
export async function orderPayments(orderDb: Sql): Promise<Map<string, OrderPaymentRow>> {
  const out = await orderDb.sql("SELECT id, customer_id, total_cents, status, payment_status, COALESCE(payment_reason, '') FROM orders");
  return new Map(
    lines(out).map(([id, customerId, total, status, paymentStatus, reason]) => [
      id!,
      { id: id!, customerId: customerId!, totalCents: BigInt(total!), status: status!, paymentStatus: paymentStatus!, paymentReason: reason || null },
    ]),
  );
}

/** A customer-side ledger entry of an order: a debit (CHARGE, negative) or a refund (REFUND, positive). */
export interface OrderEntry {
  orderId: string;
  kind: "CHARGE" | "REFUND";
  amountCents: bigint;
  customerId: string;
}

/** order id → its customer-side CHARGE and REFUND entries. */
export async function orderEntries(paymentDb: Sql): Promise<Map<string, OrderEntry[]>> {
  const out = await paymentDb.sql(
    `SELECT e.order_id, e.kind, e.amount_cents, a.customer_id FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
      WHERE a.kind = 'CUSTOMER' AND e.kind IN ('CHARGE', 'REFUND')`,
  );
  const map = new Map<string, OrderEntry[]>();
  for (const [orderId, kind, amount, customerId] of lines(out)) {
    map.set(orderId!, [...(map.get(orderId!) ?? []), { orderId: orderId!, kind: kind as OrderEntry["kind"], amountCents: BigInt(amount!), customerId: customerId! }]);
  }
  return map;
}

/** A customer's balance column and the sum of their account's entries (equal in a sound ledger); undefined without an account. */
export async function accountState(paymentDb: Sql, customerId: string): Promise<{ balance: bigint; entriesSum: bigint; entries: number } | undefined> {
  const out = await paymentDb.sql(
    `SELECT a.balance_cents, COALESCE(SUM(e.amount_cents), 0), COUNT(e.id) FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
      WHERE a.customer_id = '${customerId.replace(/[^A-Za-z0-9._:-]/g, "")}' GROUP BY a.id, a.balance_cents`,
  );
  const [row] = lines(out);
  return row ? { balance: BigInt(row[0]!), entriesSum: BigInt(row[1]!), entries: Number(row[2]) } : undefined;
}
