import { expect } from "chai";
import { createPool, type Pool } from "@shop/platform/db";
import { createLogger } from "@shop/platform/logger";
import { migrateOrderDatabase } from "@shop/order-service/db/migrate";
import { migratePaymentDatabase } from "@shop/payment-service/db/migrate";
import { migrateVoucherDatabase } from "@shop/voucher-service/db/migrate";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { checkLedger, type LedgerOptions, type LedgerResult } from "../../scripts/check-ledger.js";

const verdicts = (r: LedgerResult) => Object.fromEntries(r.results.filter((x) => x.id.startsWith("P")).map((x) => [x.id, x.verdict]));
const counts = (r: LedgerResult, id: string) => r.results.find((x) => x.id === id)!.counts;

/**
 * check:ledger's payment invariants (P1–P8) on databases with the real
 * schemas (both services' migrations), filled by hand with a sound history
 * and then broken one way at a time: each break is found by the invariant
 * meant to find it, and a live system's outcomes in flight are not drift.
 */
describe("check:ledger's payment invariants on hand-made histories", function () {
  this.timeout(60_000);
  let orderDb: TestDatabase;
  let voucherDb: TestDatabase;
  let paymentDb: TestDatabase;
  let pools: Pool[] = [];
  let ledger: LedgerOptions;
  let seq = 0;

  before(async () => {
    [orderDb, voucherDb, paymentDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher"), freshDatabase("voucher")]);
    const logger = createLogger("payments-ledger-test");
    logger.level = "warn";
    const [o, v, p] = [orderDb, voucherDb, paymentDb].map((d) => createPool({ url: d.url, connectionLimit: 2 }));
    pools = [o!, v!, p!];
    await Promise.all([migrateOrderDatabase(o!, logger), migrateVoucherDatabase(v!, logger), migratePaymentDatabase(p!, logger)]);
    ledger = { orderDatabaseUrl: orderDb.url, voucherDatabaseUrl: voucherDb.url, paymentDatabaseUrl: paymentDb.url };
  });
  after(async () => {
    await Promise.allSettled(pools.map((p) => p.end()));
    await Promise.allSettled([orderDb?.drop(), voucherDb?.drop(), paymentDb?.drop()]);
  });
  beforeEach(async () => {
    for (const t of ["orders", "charge_outbox", "refund_outbox"]) await orderDb.sql(`DELETE FROM ${t}`);
    await paymentDb.sql("DELETE FROM ledger_entries; DELETE FROM inbox; DELETE FROM payment_outbox; DELETE FROM accounts WHERE kind = 'CUSTOMER'");
  });

  const id = (p: string) => `${p}${String(++seq).padStart(25 - p.length, "0")}`.slice(0, 26);

  async function order(o: { id: string; customer: string; total: number; status: string; payment: string; method?: string }): Promise<void> {
    await orderDb.sql(
      `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, payment_method, payment_status, sent_at)
       VALUES ('${o.id}', '${o.customer}', ${o.total}, 'EUR', '${o.status}', '${o.id}', NOW(3), NOW(3), '${o.method ?? "ACCOUNT"}', '${o.payment}',
               ${["SENT", "DELIVERED"].includes(o.status) ? "NOW(3)" : "NULL"})`,
    );
  }
  async function account(customer: string, balance: number): Promise<string> {
    const acct = id("A");
    await paymentDb.sql(`INSERT INTO accounts (id, customer_id, kind, currency, balance_cents, opened_at) VALUES ('${acct}', '${customer}', 'CUSTOMER', 'EUR', ${balance}, NOW(3))`);
    return acct;
  }
  /** One movement: the customer's entry and the system account's opposite one. */
  async function movement(acct: string, kind: string, amount: number, orderId: string | null): Promise<void> {
    const system = kind === "TOP_UP" ? "system:funding:EUR" : "system:clearing:EUR";
    const m = id("M");
    const ord = orderId ? `'${orderId}'` : "NULL";
    await paymentDb.sql(
      `INSERT INTO ledger_entries (id, movement_id, account_id, kind, amount_cents, currency, order_id, created_at) VALUES
         ('${id("E")}', '${m}', '${acct}', '${kind}', ${amount}, 'EUR', ${ord}, NOW(3)),
         ('${id("E")}', '${m}', '${system}', '${kind}', ${-amount}, 'EUR', ${ord}, NOW(3))`,
    );
  }
  /** The payment service's record of a decision and its outcome row. */
  async function decided(kind: "charge" | "refund", orderId: string, customer: string, amount: number, outcome: string, status = "delivered"): Promise<void> {
    const key = `${kind}:${orderId}`;
    const rec = JSON.stringify({ outcome, customerId: customer, amountCents: amount, currency: "EUR", ...(outcome === "REFUSED" ? { reason: "INSUFFICIENT_FUNDS" } : {}) });
    await paymentDb.sql(`INSERT INTO inbox (message_key, facts, outcome, received_at) VALUES ('${key}', '{}', '${rec}', NOW(3))`);
    await paymentDb.sql(
      `INSERT INTO payment_outbox (message_key, order_id, customer_id, outcome, amount_cents, currency, status, next_attempt_at, created_at)
       VALUES ('${key}', '${orderId}', '${customer}', '${outcome}', ${amount}, 'EUR', '${status}', NOW(3), NOW(3))`,
    );
  }
  async function chargeRow(orderId: string, customer: string, amount: number, status = "delivered"): Promise<void> {
    await orderDb.sql(
      `INSERT INTO charge_outbox (order_id, customer_id, amount_cents, currency, status, next_attempt_at, created_at) VALUES ('${orderId}', '${customer}', ${amount}, 'EUR', '${status}', NOW(3), NOW(3))`,
    );
  }
  async function refundRow(orderId: string, amount: number, status = "delivered"): Promise<void> {
    await orderDb.sql(`INSERT INTO refund_outbox (order_id, amount_cents, currency, status, next_attempt_at, created_at) VALUES ('${orderId}', ${amount}, 'EUR', '${status}', NOW(3), NOW(3))`);
  }

  /**
   * A sound history of one customer: topped up 5000; o1 charged 1000 and
   * sent; o2 refused; o3 charged 1500, cancelled and refunded; o4 an order
   * without payment. Balance 5000 - 1000 = 4000.
   */
  async function soundHistory(): Promise<{ acct: string; o1: string; o2: string; o3: string }> {
    const c = "pl-c1";
    const acct = await account(c, 4_000);
    await movement(acct, "TOP_UP", 5_000, null);
    const [o1, o2, o3, o4] = [id("O"), id("O"), id("O"), id("O")];
    await order({ id: o1, customer: c, total: 1_000, status: "SENT", payment: "CHARGED" });
    await chargeRow(o1, c, 1_000);
    await movement(acct, "CHARGE", -1_000, o1);
    await decided("charge", o1, c, 1_000, "CHARGED");
    await order({ id: o2, customer: c, total: 9_000, status: "PAYMENT_FAILED", payment: "REFUSED" });
    await chargeRow(o2, c, 9_000);
    await decided("charge", o2, c, 9_000, "REFUSED");
    await order({ id: o3, customer: c, total: 1_500, status: "CANCELLED", payment: "REFUNDED" });
    await chargeRow(o3, c, 1_500);
    await movement(acct, "CHARGE", -1_500, o3);
    await decided("charge", o3, c, 1_500, "CHARGED");
    await refundRow(o3, 1_500);
    await movement(acct, "REFUND", 1_500, o3);
    await decided("refund", o3, c, 1_500, "REFUNDED");
    await order({ id: o4, customer: "pl-c2", total: 700, status: "PENDING", payment: "NONE", method: "NONE" });
    return { acct, o1, o2, o3 };
  }

  it("passes P1–P8 on a sound history, and skips them (saying why) without the payment database", async () => {
    await soundHistory();
    const r = await checkLedger(ledger);
    expect(verdicts(r), JSON.stringify(r.results.filter((x) => x.verdict === "FAIL"))).to.deep.equal({
      P1: "PASS", P2: "PASS", P3: "PASS", P4: "PASS", P5: "PASS", P6: "PASS", P7: "PASS", P8: "PASS",
    });
    expect(r.ok).to.equal(true);
    expect(counts(r, "P1")).to.include({ "charged orders": 2, debits: 2 });
    expect(counts(r, "P3")).to.include({ "customer accounts": 1, "sum of balances": 4_000 });
    expect(counts(r, "P6")).to.include({ "paid orders": 3, shippable: 1, "payment failed": 1, "cancelled refunded": 1 });

    const without = await checkLedger({ ...ledger, paymentDatabaseUrl: undefined });
    expect(new Set(Object.values(verdicts(without)))).to.deep.equal(new Set(["SKIP"]));
    expect(without.results.find((x) => x.id === "P1")!.detail).to.include("3 paid orders unchecked");
  });

  it("P1 and P6 fail on a charged order without a debit, P2 and P6 on a debit of a refused order", async () => {
    const { acct } = await soundHistory();
    const lost = id("O");
    await order({ id: lost, customer: "pl-c1", total: 300, status: "PAID", payment: "CHARGED" });
    const refused = id("O");
    await order({ id: refused, customer: "pl-c1", total: 200, status: "PAYMENT_FAILED", payment: "REFUSED" });
    await movement(acct, "CHARGE", -200, refused);
    await paymentDb.sql(`UPDATE accounts SET balance_cents = balance_cents - 200 WHERE id = '${acct}'`);
    const r = await checkLedger(ledger);
    expect(verdicts(r)).to.include({ P1: "FAIL", P2: "FAIL", P3: "PASS", P4: "PASS", P6: "FAIL" });
    expect(counts(r, "P1")).to.include({ "charged without debit": 1 });
    expect(counts(r, "P2")).to.include({ "of an order not charged": 1 });
    expect(r.ok).to.equal(false);
  });

  it("P1 fails on a sent paid order whose payment is not CHARGED, on a live system too", async () => {
    const { o1 } = await soundHistory();
    await orderDb.sql(`UPDATE orders SET payment_status = 'AWAITING' WHERE id = '${o1}'`);
    for (const drained of [true, false]) {
      const r = await checkLedger({ ...ledger, drained });
      expect(verdicts(r)).to.include({ P1: "FAIL" });
      expect(counts(r, "P1")).to.include({ "PAID/SENT/DELIVERED not charged": 1 });
    }
  });

  it("P1 fails on a debit of another amount than the order's total", async () => {
    const { o1 } = await soundHistory();
    await orderDb.sql(`UPDATE orders SET total_cents = 1001 WHERE id = '${o1}'`);
    const r = await checkLedger(ledger);
    expect(verdicts(r)).to.include({ P1: "FAIL" });
    expect(counts(r, "P1")).to.include({ "debit facts differ": 1 });
  });

  it("a debit of an order still awaiting its payment is drift once settled and in flight on a live system (P2, P6)", async () => {
    const { acct } = await soundHistory();
    const o = id("O");
    await order({ id: o, customer: "pl-c1", total: 400, status: "AWAITING_PAYMENT", payment: "AWAITING" });
    await chargeRow(o, "pl-c1", 400);
    await movement(acct, "CHARGE", -400, o);
    await paymentDb.sql(`UPDATE accounts SET balance_cents = balance_cents - 400 WHERE id = '${acct}'`);
    await decided("charge", o, "pl-c1", 400, "CHARGED", "pending");

    const settled = await checkLedger(ledger);
    expect(verdicts(settled)).to.include({ P1: "PASS", P2: "FAIL", P6: "FAIL" });
    const live = await checkLedger({ ...ledger, drained: false });
    expect(verdicts(live)).to.include({ P1: "PASS", P2: "PASS", P6: "SKIP" });
    expect(counts(live, "P2")).to.include({ "in flight (order still awaiting)": 1 });
    expect(counts(live, "P8")).to.include({ "outcome pending": 1 });
  });

  it("P3 fails on a balance that is not its entries' sum, P4 on an unbalanced movement", async () => {
    const { acct } = await soundHistory();
    await paymentDb.sql(`UPDATE accounts SET balance_cents = 4001 WHERE id = '${acct}'`);
    const r = await checkLedger(ledger);
    expect(verdicts(r)).to.include({ P3: "FAIL", P4: "PASS" });
    await paymentDb.sql(`UPDATE accounts SET balance_cents = 4000 WHERE id = '${acct}'`);
    await paymentDb.sql(`INSERT INTO ledger_entries (id, movement_id, account_id, kind, amount_cents, currency, created_at) VALUES ('${id("E")}', '${id("M")}', '${acct}', 'TOP_UP', 1, 'EUR', NOW(3))`);
    await paymentDb.sql(`UPDATE accounts SET balance_cents = 4001 WHERE id = '${acct}'`);
    const r2 = await checkLedger(ledger);
    expect(verdicts(r2)).to.include({ P3: "PASS", P4: "FAIL", P7: "FAIL" });
    expect(counts(r2, "P4")).to.include({ "currencies not zero": 1, "unbalanced movements": 1 });
  });

  it("P5: a refund pending after drain, a REFUNDED order without its refund, a refund of an order that asked for none", async () => {
    const { acct, o1, o3 } = await soundHistory();
    const pending = id("O");
    await order({ id: pending, customer: "pl-c1", total: 250, status: "CANCELLED", payment: "REFUND_PENDING" });
    await movement(acct, "CHARGE", -250, pending);
    await decided("charge", pending, "pl-c1", 250, "CHARGED");
    await refundRow(pending, 250, "pending");
    await paymentDb.sql(`UPDATE accounts SET balance_cents = balance_cents - 250 WHERE id = '${acct}'`);
    const live = await checkLedger({ ...ledger, drained: false });
    expect(verdicts(live)).to.include({ P5: "PASS" });
    expect(counts(live, "P5")).to.include({ "refund in flight": 1 });
    const settled = await checkLedger(ledger);
    expect(verdicts(settled)).to.include({ P5: "FAIL", P6: "FAIL" });

    await orderDb.sql(`DELETE FROM orders WHERE id = '${pending}'; DELETE FROM refund_outbox WHERE order_id = '${pending}'`);
    await paymentDb.sql(`DELETE FROM ledger_entries WHERE order_id = '${pending}'; DELETE FROM inbox WHERE message_key = 'charge:${pending}'; DELETE FROM payment_outbox WHERE order_id = '${pending}'`);
    await paymentDb.sql(`UPDATE accounts SET balance_cents = balance_cents + 250 WHERE id = '${acct}'`);
    expect((await checkLedger(ledger)).ok).to.equal(true);

    // A refund of a sent order that never asked for one.
    await movement(acct, "REFUND", 1_000, o1);
    await paymentDb.sql(`UPDATE accounts SET balance_cents = balance_cents + 1000 WHERE id = '${acct}'`);
    const unasked = await checkLedger(ledger);
    expect(verdicts(unasked)).to.include({ P5: "FAIL", P6: "FAIL" });
    expect(counts(unasked, "P5")).to.include({ "refund not asked": 1 });

    // o3 says REFUNDED; without its refund entry it is not.
    await paymentDb.sql(`DELETE FROM ledger_entries WHERE order_id = '${o1}' AND kind = 'REFUND'`);
    await paymentDb.sql(`DELETE FROM ledger_entries WHERE order_id = '${o3}' AND kind = 'REFUND'`);
    await paymentDb.sql(`UPDATE accounts SET balance_cents = 2500 WHERE id = '${acct}'`);
    const missing = await checkLedger(ledger);
    expect(verdicts(missing)).to.include({ P3: "PASS", P4: "PASS", P5: "FAIL", P6: "FAIL" });
    expect(counts(missing, "P5")).to.include({ "refunded without entry": 1 });
  });

  it("P6: an order left awaiting after drain is drift unless its charge row gave up (dead: an operator's case)", async () => {
    await soundHistory();
    const o = id("O");
    await order({ id: o, customer: "pl-c1", total: 100, status: "AWAITING_PAYMENT", payment: "AWAITING" });
    await chargeRow(o, "pl-c1", 100, "dead");
    const dead = await checkLedger(ledger);
    expect(verdicts(dead)).to.include({ P6: "PASS", P8: "PASS" });
    expect(counts(dead, "P6")).to.include({ "stuck (charge row dead)": 1 });
    expect(counts(dead, "P8")).to.include({ "charge dead": 1 });
    await orderDb.sql(`UPDATE charge_outbox SET status = 'delivered' WHERE order_id = '${o}'`);
    expect(verdicts(await checkLedger(ledger))).to.include({ P6: "FAIL" });
  });
});
