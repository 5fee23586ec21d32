import type { TestDatabase } from "./shared-servers.js";

/**
 * Reads of both ledgers straight from the databases, for tests that check
 * "exactly one live voucher per owed order" on their own, without the code
 * under test or the ledger check.
 */

/** A voucher row; status ISSUED is live, VOIDED is history. */
export interface VoucherRow {
  id: string;
  orderId: string;
  customerId: string;
  orderTotalCents: bigint;
  status: string;
}

/** Every voucher row, voided ones included, by id. */
export async function voucherRows(db: Pick<TestDatabase, "sql">): Promise<VoucherRow[]> {
  const out = await db.sql("SELECT id, order_id, customer_id, order_total_cents, status FROM vouchers ORDER BY id");
  return out
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [id, orderId, customerId, total, status] = line.split("\t");
      return { id: id!, orderId: orderId!, customerId: customerId!, orderTotalCents: BigInt(total!), status: status! };
    });
}

/** order id → the voucher id the order side records as delivered (delivered outbox row, else orders.voucher_id when that column exists). */
export async function recordedVoucherIds(db: Pick<TestDatabase, "sql">): Promise<Map<string, string>> {
  const retention = Number((await db.sql(
    "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'orders' AND COLUMN_NAME = 'voucher_id'",
  )).trim()) > 0;
  const out = await db.sql(
    `SELECT o.id, CASE WHEN b.order_id IS NOT NULL THEN IF(b.status = 'delivered', b.voucher_id, NULL) ELSE ${retention ? "o.voucher_id" : "NULL"} END
       FROM orders o LEFT JOIN voucher_outbox b ON b.order_id = o.id`,
  );
  const map = new Map<string, string>();
  for (const line of out.split("\n").filter(Boolean)) {
    const [orderId, voucherId] = line.split("\t");
    if (voucherId && voucherId !== "NULL") map.set(orderId!, voucherId);
  }
  return map;
}

/** One sample from a Prometheus text page; 0 when the series is absent. */
export async function scrapeMetric(url: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(url)).text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const labelText = line.slice(name.length).match(/^\{([^}]*)\}/)?.[1] ?? "";
    if (want.every((w) => labelText.split(",").includes(w))) return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return 0;
}
