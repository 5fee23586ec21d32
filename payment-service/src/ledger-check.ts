import type { RowDataPacket } from "mysql2/promise";
import type { Pool } from "@shop/platform/db";

/**
 * The payment ledger's invariants, checked over the whole database; each
 * broken one is a line naming what is wrong. Tests run it after every
 * scenario; `npm run check:ledger` is to run it on a live database.
 *  1. every customer account's balance_cents equals the sum of its entries,
 *     and is not negative; no system account's column is used (it stays 0);
 *  2. every movement is exactly two entries on two accounts summing to zero,
 *     so all entries, per currency, sum to zero;
 *  3. the clearing account's entries never sum below zero (it pays refunds
 *     only of charges it received);
 *  4. at most one debit per order, and it is the one the inbox recorded as
 *     CHARGED; every CHARGED charge has its debit; at most one refund per
 *     order, only of a charged order and of the charged amount;
 *  5. every charge and refund outcome has its outbox row.
 */
export async function checkPaymentLedger(pool: Pick<Pool, "query">): Promise<string[]> {
  const problems: string[] = [];
  const rows = async (sql: string) => (await pool.query<RowDataPacket[]>(sql))[0];

  for (const r of await rows(`
    SELECT a.id, a.kind, a.balance_cents AS balance, COALESCE(SUM(e.amount_cents), 0) AS total
    FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
    GROUP BY a.id, a.kind, a.balance_cents`)) {
    const [balance, total] = [Number(r.balance), Number(r.total)];
    if (r.kind === "CUSTOMER") {
      if (balance !== total) problems.push(`account ${r.id}: balance ${balance} but its entries sum to ${total}`);
      if (balance < 0) problems.push(`account ${r.id}: balance ${balance} is negative`);
    } else {
      if (balance !== 0) problems.push(`system account ${r.id}: balance column ${balance}, not 0 (its balance is its entries' sum)`);
      if (r.kind === "CLEARING" && total < 0) problems.push(`clearing account ${r.id}: entries sum to ${total}, below zero`);
    }
  }
  for (const r of await rows(`SELECT e.account_id AS id FROM ledger_entries e LEFT JOIN accounts a ON a.id = e.account_id WHERE a.id IS NULL GROUP BY e.account_id`)) {
    problems.push(`entries of account ${r.id}, which does not exist`);
  }
  for (const r of await rows(`
    SELECT movement_id AS id, COUNT(*) AS n, COUNT(DISTINCT account_id) AS accounts, SUM(amount_cents) AS total, COUNT(DISTINCT kind) AS kinds
    FROM ledger_entries GROUP BY movement_id
    HAVING n <> 2 OR accounts <> 2 OR total <> 0 OR kinds <> 1`)) {
    problems.push(`movement ${r.id}: ${r.n} entries on ${r.accounts} accounts summing to ${Number(r.total)}`);
  }
  for (const r of await rows(`SELECT currency, SUM(amount_cents) AS total FROM ledger_entries GROUP BY currency HAVING total <> 0`)) {
    problems.push(`all ${r.currency} entries sum to ${Number(r.total)}, not 0`);
  }

  // Customer-side entries of charges and refunds, per order.
  const debits = new Map<string, number[]>();
  const refunds = new Map<string, number[]>();
  for (const r of await rows(`
    SELECT e.order_id AS orderId, e.kind, e.amount_cents AS amount
    FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
    WHERE a.kind = 'CUSTOMER' AND e.kind IN ('CHARGE', 'REFUND')`)) {
    const into = r.kind === "CHARGE" ? debits : refunds;
    into.set(r.orderId, [...(into.get(r.orderId) ?? []), Number(r.amount)]);
  }
  const recorded = new Map<string, { outcome: string; amountCents: number }>();
  for (const r of await rows(`SELECT message_key AS k, outcome FROM inbox WHERE message_key LIKE 'charge:%' OR message_key LIKE 'refund:%'`)) {
    if (r.outcome === null) {
      problems.push(`inbox ${r.k}: recorded without an outcome`);
      continue;
    }
    recorded.set(r.k, JSON.parse(String(r.outcome)));
  }
  for (const [orderId, amounts] of debits) {
    if (amounts.length > 1) problems.push(`order ${orderId}: ${amounts.length} debits`);
    const charge = recorded.get(`charge:${orderId}`);
    if (charge?.outcome !== "CHARGED") problems.push(`order ${orderId}: a debit, but its charge is recorded as ${charge?.outcome ?? "nothing"}`);
    else if (amounts[0] !== -charge.amountCents) problems.push(`order ${orderId}: debit ${amounts[0]} for a charge of ${charge.amountCents}`);
  }
  for (const [key, r] of recorded) {
    const orderId = key.slice(key.indexOf(":") + 1);
    if (key.startsWith("charge:") && r.outcome === "CHARGED" && !debits.has(orderId)) problems.push(`order ${orderId}: charged, but no debit`);
    if (key.startsWith("refund:") && r.outcome === "REFUNDED" && !refunds.has(orderId)) problems.push(`order ${orderId}: refunded, but no refund entry`);
  }
  for (const [orderId, amounts] of refunds) {
    if (amounts.length > 1) problems.push(`order ${orderId}: ${amounts.length} refunds`);
    const debit = debits.get(orderId);
    if (!debit) problems.push(`order ${orderId}: a refund, but no debit`);
    else if (amounts[0] !== -debit[0]!) problems.push(`order ${orderId}: refund ${amounts[0]} of a debit ${debit[0]}`);
  }

  for (const r of await rows(`
    SELECT i.message_key AS k FROM inbox i LEFT JOIN payment_outbox o ON o.message_key = i.message_key
    WHERE (i.message_key LIKE 'charge:%' OR i.message_key LIKE 'refund:%') AND o.id IS NULL`)) {
    problems.push(`${r.k}: decided, but no outcome row in payment_outbox`);
  }
  return problems;
}
