/**
 * Checks the invariants I1–I9 of docs/design (architecture: "Invariants")
 * straight from the two databases, plus calls to the services where an
 * invariant is about their behaviour; with the payment database also the
 * payment invariants P1–P8 (one debit per charged order, balances, zero
 * sums, refunds, each paid order's status against its payment outcome); with
 * the delivery database also the shipping invariants S1–S7 (one shipment per
 * order in shipping, of its facts; orders agree with their shipments; who
 * sent them; transitions; event rows; lag: scripts/ledger/shipping.ts). An
 * operator tool and the last step of every fault test.
 *
 *   ORDER_DATABASE_URL=mysql://… VOUCHER_DATABASE_URL=mysql://… PAYMENT_DATABASE_URL=mysql://… DELIVERY_DATABASE_URL=mysql://… npm run check:ledger
 *   npm run check:ledger -- --voucher-service http://127.0.0.1:50052 --order-service http://127.0.0.1:50051
 *
 * Prints one line per invariant (PASS, FAIL or SKIP, with counts) and exits 1
 * on any FAIL, 2 when it cannot run at all.
 *
 * "A voucher" here is always a live one (status ISSUED): a voided voucher is
 * history, and an order whose only vouchers are voided has none the customer
 * can use. The invariant is: every owed order has exactly one ISSUED voucher,
 * none has two, no order that is not owed one has an ISSUED voucher.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import type { RowDataPacket } from "mysql2/promise";
import { createPool, type Pool } from "@shop/platform/db";
import { qualifiesForVoucher } from "@shop/rules/voucher-rule";
import { createVoucherClient } from "@shop/sdk/clients";
import { checkPaymentLedger } from "@shop/payment-service/ledger-check";
import { checkShippingLedger } from "./ledger/shipping.js";

const root = path.resolve(import.meta.dirname, "..");

export type Verdict = "PASS" | "FAIL" | "SKIP";

export interface InvariantResult {
  id: string;
  title: string;
  verdict: Verdict;
  /** What was counted, for the printed line. */
  counts: Record<string, number>;
  /** Why it failed or was skipped, and a few offending ids. */
  detail?: string;
}

export interface LedgerOptions {
  orderDatabaseUrl: string;
  voucherDatabaseUrl: string;
  /** The payment service's database, for P1–P8; without it they are skipped. */
  paymentDatabaseUrl?: string;
  /** The delivery service's database, for S1–S7; without it they are skipped. */
  deliveryDatabaseUrl?: string;
  /** Needed for I9 (the reconciler's dry run); without it I9 is skipped. */
  orderServiceUrl?: string;
  /** Needed for I5 (replays against the live service) and I9; without it they are skipped. */
  voucherServiceUrl?: string;
  /** With it, I9's reconciler run compares payments too (RECONCILE_PAYMENTS), so payment drift counts. */
  paymentServiceUrl?: string;
  /** With it, I9's reconciler run compares shipping too (RECONCILE_SHIPPING), so shipping drift counts. */
  deliveryServiceUrl?: string;
  /** I8: the oldest pending outbox row must be younger than this. Default 60000 ms, the lag alert's target. */
  lagTargetMs?: number;
  /** I6: order ids whose MarkOrderSent returned OK to a client; each must be SENT (or later). Without it I6 is skipped. */
  acknowledgedSent?: string[];
  /**
   * I2 on a quiet system (default true): every qualifying sent order must
   * already have its voucher. False on a live system: an order whose outbox
   * row is still pending is on its way and not counted missing. The payment
   * invariants likewise: settled (true), a debit of an order still awaiting
   * its payment, a cancelled order not yet refunded, or an order whose status
   * does not yet show its payment's outcome is a violation; live (false),
   * they are outcomes in flight, counted and not failed. The shipping
   * invariants alike: settled, a shipment request still pending or an order
   * behind its shipment is a violation; live, it is in flight.
   */
  drained?: boolean;
  /** I9: the reconciler's RECONCILE_GRACE_MS. Default 0: on a quiet system nothing is too young to judge. */
  reconcileGraceMs?: number;
  /** I5: how many vouchers to replay. Default 10. */
  replaySample?: number;
  /** Bearer token with the reconciler's scopes, for I5 and I9 (they call the services). */
  token?: string;
}

export interface LedgerResult {
  ok: boolean;
  results: InvariantResult[];
}

interface OrderRow {
  id: string;
  customerId: string;
  status: string;
  totalCents: number;
  currency: string;
  sentAt: Date | null;
  voucherId: string | null;
}

interface OutboxRow {
  orderId: string;
  status: "pending" | "delivered" | "dead";
  voucherId: string | null;
  ageMs: number;
}

interface VoucherRow {
  id: string;
  orderId: string;
  customerId: string;
  orderTotalCents: number;
  currency: string;
  status: string;
}

const SENT = new Set(["SENT", "DELIVERED"]);

function sample(ids: Iterable<string>, n = 5): string {
  const list = [...ids];
  return list.length === 0 ? "" : `${list.slice(0, n).join(", ")}${list.length > n ? ` … (+${list.length - n})` : ""}`;
}

async function hasColumn(pool: Pool, table: string, column: string): Promise<boolean> {
  const [rows] = await pool.query<RowDataPacket[]>(
    "SELECT COUNT(*) AS n FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
    [table, column],
  );
  return Number(rows[0]!.n) > 0;
}

async function readOrderSide(pool: Pool): Promise<{ orders: OrderRow[]; outbox: OutboxRow[]; retention: boolean }> {
  // orders.voucher_id appears with outbox retention: a delivered row may be
  // deleted once its voucher id is copied onto the order.
  const retention = await hasColumn(pool, "orders", "voucher_id");
  const [orders] = await pool.query<RowDataPacket[]>(
    `SELECT id, customer_id AS customerId, status, total_cents AS totalCents, currency, sent_at AS sentAt,
            ${retention ? "voucher_id" : "NULL"} AS voucherId
       FROM orders`,
  );
  const [outbox] = await pool.query<RowDataPacket[]>(
    `SELECT order_id AS orderId, status, voucher_id AS voucherId,
            TIMESTAMPDIFF(MICROSECOND, created_at, NOW(3)) / 1000 AS ageMs
       FROM voucher_outbox`,
  );
  return {
    orders: orders.map((r) => ({ ...(r as OrderRow), totalCents: Number(r.totalCents) })),
    outbox: outbox.map((r) => ({ ...(r as OutboxRow), ageMs: Number(r.ageMs) })),
    retention,
  };
}

async function readVouchers(pool: Pool): Promise<VoucherRow[]> {
  const [rows] = await pool.query<RowDataPacket[]>(
    `SELECT id, order_id AS orderId, customer_id AS customerId, order_total_cents AS orderTotalCents, currency, status FROM vouchers`,
  );
  return rows.map((r) => ({ ...(r as VoucherRow), orderTotalCents: Number(r.orderTotalCents) }));
}

function result(id: string, title: string, failures: number, counts: Record<string, number>, detail?: string): InvariantResult {
  return { id, title, verdict: failures === 0 ? "PASS" : "FAIL", counts, detail: failures === 0 ? undefined : detail };
}

/** Reads both ledgers and checks every invariant it can with what it was given. */
export async function checkLedger(opts: LedgerOptions): Promise<LedgerResult> {
  const orderPool = createPool({ url: opts.orderDatabaseUrl, connectionLimit: 2 });
  const voucherPool = createPool({ url: opts.voucherDatabaseUrl, connectionLimit: 2 });
  try {
    const [{ orders, outbox, retention }, vouchers] = await Promise.all([readOrderSide(orderPool), readVouchers(voucherPool)]);
    const results: InvariantResult[] = [];

    const orderById = new Map(orders.map((o) => [o.id, o]));
    const outboxByOrder = new Map(outbox.map((r) => [r.orderId, r]));
    const voucherById = new Map(vouchers.map((v) => [v.id, v]));
    // Only ISSUED vouchers count as the order's voucher; voided ones are history.
    const liveByOrder = new Map<string, VoucherRow[]>();
    for (const v of vouchers) if (v.status === "ISSUED") liveByOrder.set(v.orderId, [...(liveByOrder.get(v.orderId) ?? []), v]);
    const voidedOrders = new Set(vouchers.filter((v) => v.status !== "ISSUED").map((v) => v.orderId));
    // The rule version in force when the order was sent judges it. A sent order
    // without sent_at cannot be judged: it is reported under I1, not guessed at.
    const sentUndated = orders.filter((o) => SENT.has(o.status) && !o.sentAt).map((o) => o.id);
    const owed = orders.filter((o) => SENT.has(o.status) && o.sentAt && qualifiesForVoucher(o, o.sentAt));
    const owedIds = new Set(owed.map((o) => o.id));
    /** The voucher id the order side records as delivered: the delivered outbox row's, or the one kept on the order after retention. */
    const recordedId = (o: OrderRow): string | null => {
      const row = outboxByOrder.get(o.id);
      if (row) return row.status === "delivered" ? row.voucherId : null;
      return o.voucherId;
    };

    // I1: a delivery record (outbox row, or the voucher id kept on the order after retention removed the row) iff owed.
    {
      const noRecord = owed.filter((o) => !outboxByOrder.has(o.id) && !o.voucherId).map((o) => o.id);
      const unowedRows = outbox.filter((r) => !owedIds.has(r.orderId)).map((r) => r.orderId);
      const unowedIds = orders.filter((o) => o.voucherId && !owedIds.has(o.id)).map((o) => o.id);
      const dupRows = outbox.length - outboxByOrder.size;
      const bad = noRecord.length + unowedRows.length + unowedIds.length + dupRows + sentUndated.length;
      results.push(
        result(
          "I1",
          "an outbox row (or orders.voucher_id) exists iff the order is sent and qualifies",
          bad,
          {
            "sent qualifying": owed.length,
            "outbox rows": outbox.length,
            "kept voucher ids": retention ? orders.filter((o) => o.voucherId && !outboxByOrder.has(o.id)).length : 0,
            "owed without record": noRecord.length,
            "records not owed": unowedRows.length + unowedIds.length,
            "sent without sent_at": sentUndated.length,
          },
          [
            noRecord.length ? `owed but no outbox row: ${sample(noRecord)}` : "",
            unowedRows.length ? `outbox row for an order not sent or not qualifying: ${sample(unowedRows)}` : "",
            unowedIds.length ? `voucher_id on an order not owed one: ${sample(unowedIds)}` : "",
            dupRows ? `${dupRows} duplicate outbox rows` : "",
            sentUndated.length ? `sent without sent_at (no rule version can judge it): ${sample(sentUndated)}` : "",
          ].filter(Boolean).join("; "),
        ),
      );
    }

    // I2: every owed order has a live voucher (on a live system, pending rows are on their way).
    {
      const drained = opts.drained ?? true;
      const missing = owed
        .filter((o) => !liveByOrder.has(o.id))
        .filter((o) => drained || outboxByOrder.get(o.id)?.status !== "pending")
        .map((o) => o.id);
      const onlyVoided = missing.filter((id) => voidedOrders.has(id));
      const pending = outbox.filter((r) => r.status === "pending").length;
      results.push(
        result("I2", "every qualifying sent order has an ISSUED voucher", missing.length, {
          "sent qualifying": owed.length,
          "with ISSUED voucher": owed.filter((o) => liveByOrder.has(o.id)).length,
          missing: missing.length,
          "of them only voided": onlyVoided.length,
          "still pending": pending,
        }, [
          `no ISSUED voucher for ${sample(missing)}`,
          onlyVoided.length ? `only voided vouchers for ${sample(onlyVoided)}` : "",
          drained && pending ? `${pending} outbox rows still pending: not drained?` : "",
        ].filter(Boolean).join("; ")),
      );
    }

    // I3: at most one live voucher per order, and the id the order side recorded is that live voucher.
    {
      const doubled = [...liveByOrder].filter(([, vs]) => vs.length > 1).map(([id]) => id);
      const notLive: string[] = [];
      const unknown: string[] = [];
      for (const o of owed) {
        const recorded = recordedId(o);
        if (!recorded) continue;
        const v = voucherById.get(recorded);
        if (!v || v.orderId !== o.id) unknown.push(o.id);
        else if (v.status !== "ISSUED") notLive.push(o.id);
      }
      results.push(
        result("I3", "no order has two ISSUED vouchers; the recorded voucher id is the order's ISSUED voucher", doubled.length + notLive.length + unknown.length, {
          vouchers: vouchers.length,
          issued: vouchers.filter((v) => v.status === "ISSUED").length,
          voided: vouchers.length - vouchers.filter((v) => v.status === "ISSUED").length,
          "orders with a voided voucher": voidedOrders.size,
          "orders with two or more issued": doubled.length,
          "recorded id voided": notLive.length,
          "recorded id not the order's": unknown.length,
        }, [
          doubled.length ? `two or more ISSUED vouchers: ${sample(doubled)}` : "",
          notLive.length ? `the recorded voucher is voided: ${sample(notLive)}` : "",
          unknown.length ? `the recorded voucher id is no voucher of the order: ${sample(unknown)}` : "",
        ].filter(Boolean).join("; ")),
      );
    }

    // I4: every live voucher belongs to an owed order, for that order's customer and total. Voided ones are history.
    {
      const live = vouchers.filter((v) => v.status === "ISSUED");
      const stray = live.filter((v) => !owedIds.has(v.orderId)).map((v) => v.orderId);
      const wrongFacts = live
        .filter((v) => {
          const o = orderById.get(v.orderId);
          return o && owedIds.has(o.id) && (o.customerId !== v.customerId || o.totalCents !== v.orderTotalCents || o.currency !== v.currency);
        })
        .map((v) => v.orderId);
      results.push(
        result("I4", "no ISSUED voucher without a sent, qualifying order of that customer and total", stray.length + wrongFacts.length, {
          issued: live.length,
          voided: vouchers.length - live.length,
          stray: stray.length,
          "customer or total differs": wrongFacts.length,
        }, [stray.length ? `issued voucher for an order not owed one: ${sample(stray)}` : "", wrongFacts.length ? `customer or total differs from the order: ${sample(wrongFacts)}` : ""]
          .filter(Boolean).join("; ")),
      );
    }

    results.push(await checkReplays(opts, vouchers, voucherPool));

    // I6: what a client was told is sent is sent.
    if (opts.acknowledgedSent) {
      const lost = opts.acknowledgedSent.filter((id) => !SENT.has(orderById.get(id)?.status ?? ""));
      results.push(
        result("I6", "every MarkOrderSent that returned OK is sent in the database", lost.length, {
          acknowledged: opts.acknowledgedSent.length,
          lost: lost.length,
        }, `acknowledged but not sent: ${sample(lost)}`),
      );
    } else {
      results.push({ id: "I6", title: "every MarkOrderSent that returned OK is sent in the database", verdict: "SKIP", counts: {}, detail: "no list of acknowledged orders given (--acked-file)" });
    }

    // I7: each owed order is in exactly one place: delivered (with a voucher that exists), pending, or dead.
    {
      let delivered = 0;
      let pending = 0;
      let dead = 0;
      const unaccounted: string[] = [];
      for (const o of owed) {
        const row = outboxByOrder.get(o.id);
        const status = row?.status ?? (o.voucherId ? "delivered" : undefined);
        if (status === "pending") pending++;
        else if (status === "dead") dead++;
        else if (status === "delivered" && liveByOrder.has(o.id)) delivered++;
        else unaccounted.push(o.id);
      }
      results.push(
        result("I7", "qualifying sent orders = delivered (with an ISSUED voucher) + pending + dead", unaccounted.length, {
          "sent qualifying": owed.length,
          delivered,
          pending,
          dead,
          unaccounted: unaccounted.length,
        }, `neither delivered with an ISSUED voucher, pending nor dead: ${sample(unaccounted)}`),
      );
    }

    // I8: the delivery lag is under its target.
    {
      const target = opts.lagTargetMs ?? 60_000;
      const pendingAges = outbox.filter((r) => r.status === "pending").map((r) => r.ageMs);
      const oldest = pendingAges.length ? Math.max(...pendingAges) : 0;
      results.push(
        result("I8", `the oldest pending outbox row is younger than ${target} ms`, oldest < target ? 0 : 1, {
          pending: pendingAges.length,
          "oldest ms": Math.round(oldest),
        }, `oldest pending row is ${Math.round(oldest)} ms old`),
      );
    }

    results.push(await checkReconciler(opts));
    results.push(...(await checkPayments(opts, orderPool)));
    results.push(...(await checkShippingLedger({ deliveryDatabaseUrl: opts.deliveryDatabaseUrl, drained: opts.drained, lagTargetMs: opts.lagTargetMs }, orderPool)));
    return { ok: results.every((r) => r.verdict !== "FAIL"), results };
  } finally {
    await Promise.allSettled([orderPool.end(), voucherPool.end()]);
  }
}

const PAYMENT_TITLES = {
  P1: "exactly one debit for every charged order (payment CHARGED, REFUND_PENDING or REFUNDED; every PAID, SENT or DELIVERED paid order is one), never two, of the order's customer, total and currency",
  P2: "no debit without a charged order (an order still awaiting its payment with a debit is in flight on a live system)",
  P3: "every customer account's balance equals the sum of its entries and is not negative; system accounts keep 0 in the column",
  P4: "all ledger entries sum to zero per currency; every movement is two entries on two accounts summing to zero",
  P5: "every cancelled charged order is refunded exactly once, of its debit; no refund without a charge",
  P6: "every paid order's status agrees with its payment outcome (PAID/SENT/DELIVERED: charged; PAYMENT_FAILED: refused; CANCELLED: refunded or refused)",
  P7: "the payment service's own ledger check finds nothing (inbox, debits, refunds, outcome rows)",
  P8: "the oldest pending charge, refund and outcome row is younger than the lag target",
} as const;

/** The payment columns of migration 0004, on an order, or none before it. */
interface PaidOrderRow {
  id: string;
  customerId: string;
  status: string;
  totalCents: number;
  currency: string;
  paymentMethod: string;
  paymentStatus: string;
}

interface PaymentEntry {
  orderId: string;
  kind: "CHARGE" | "REFUND";
  amountCents: number;
  currency: string;
  customerId: string | null;
}

interface Decision {
  outcome: string;
  reason?: string;
  customerId?: string;
  amountCents?: number;
  currency?: string;
}

const CHARGED_PAYMENT = new Set(["CHARGED", "REFUND_PENDING", "REFUNDED"]);
const SHIPPABLE = new Set(["PAID", "SENT", "DELIVERED"]);

type Queryable = Pick<Pool, "query">;

async function hasTable(pool: Queryable, table: string): Promise<boolean> {
  const [rows] = await pool.query<RowDataPacket[]>(
    "SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    [table],
  );
  return Number(rows[0]!.n) > 0;
}

/** Outbox rows by status and the age of the oldest pending one; zeros when the table does not exist. */
async function outboxState(pool: Queryable, table: string): Promise<{ pending: number; dead: number; oldestMs: number; byKey: Map<string, string> }> {
  if (!(await hasTable(pool, table))) return { pending: 0, dead: 0, oldestMs: 0, byKey: new Map() };
  const key = table === "payment_outbox" ? "message_key" : "order_id";
  const [rows] = await pool.query<RowDataPacket[]>(
    `SELECT ${key} AS k, status, TIMESTAMPDIFF(MICROSECOND, created_at, NOW(3)) / 1000 AS ageMs FROM ${table}`,
  );
  const byKey = new Map<string, string>();
  let pending = 0;
  let dead = 0;
  let oldestMs = 0;
  for (const r of rows) {
    byKey.set(String(r.k), String(r.status));
    if (r.status === "pending") {
      pending++;
      oldestMs = Math.max(oldestMs, Number(r.ageMs));
    } else if (r.status === "dead") dead++;
  }
  return { pending, dead, oldestMs, byKey };
}

/**
 * P1–P8: the payment ledger against the orders. A debit is the customer-side
 * CHARGE entry of an order (negative), a refund its customer-side REFUND
 * entry; a decision is what the payment service's inbox recorded for
 * "charge:<order>" or "refund:<order>". Without the payment database, or on
 * an order database without the payment columns (before migration 0004), they
 * are skipped and say why.
 */
async function checkPayments(opts: LedgerOptions, orderPool: Pool): Promise<InvariantResult[]> {
  const skipAll = (detail: string) => Object.entries(PAYMENT_TITLES).map(([id, title]): InvariantResult => ({ id, title, verdict: "SKIP", counts: {}, detail }));
  if (!(await hasColumn(orderPool, "orders", "payment_status"))) return skipAll("the order database has no payment columns (before migration 0004)");
  const [paidCount] = await orderPool.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM orders WHERE payment_method <> 'NONE'");
  if (!opts.paymentDatabaseUrl) return skipAll(`no payment database given (--payment-db, PAYMENT_DATABASE_URL); ${Number(paidCount[0]!.n)} paid orders unchecked`);
  const settled = opts.drained ?? true;
  const paymentPool = createPool({ url: opts.paymentDatabaseUrl, connectionLimit: 2 });
  try {
    const q = async (pool: Queryable, sql: string) => (await pool.query<RowDataPacket[]>(sql))[0];
    const readOrders = async (): Promise<PaidOrderRow[]> =>
      (
        await q(orderPool, `SELECT id, customer_id AS customerId, status, total_cents AS totalCents, currency,
                                   payment_method AS paymentMethod, payment_status AS paymentStatus FROM orders`)
      ).map((r) => ({ ...(r as PaidOrderRow), totalCents: Number(r.totalCents) }));
    // The order side first: whatever the payment side then shows that the
    // orders do not is younger than what they show (an outcome in flight).
    const orders = await readOrders();
    const [charges, refunds] = await Promise.all([outboxState(orderPool, "charge_outbox"), outboxState(orderPool, "refund_outbox")]);
    // The payment side in one consistent snapshot, so its reads agree with each other on a live system.
    const conn = await paymentPool.getConnection();
    let entries: PaymentEntry[], outcomes: Awaited<ReturnType<typeof outboxState>>, balances: RowDataPacket[], sums: RowDataPacket[], badMovements: RowDataPacket[], ownCheck: string[];
    const decisions = new Map<string, Decision>();
    try {
      await conn.query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ");
      await conn.query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY");
      entries = (
        await q(conn, `SELECT e.order_id AS orderId, e.kind, e.amount_cents AS amountCents, e.currency, a.customer_id AS customerId
                         FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
                        WHERE a.kind = 'CUSTOMER' AND e.kind IN ('CHARGE', 'REFUND')`)
      ).map((r) => ({ ...(r as PaymentEntry), amountCents: Number(r.amountCents) }));
      for (const r of await q(conn, "SELECT message_key AS k, outcome FROM inbox WHERE message_key LIKE 'charge:%' OR message_key LIKE 'refund:%'")) {
        if (r.outcome !== null) decisions.set(String(r.k), JSON.parse(String(r.outcome)) as Decision);
      }
      outcomes = await outboxState(conn, "payment_outbox");
      balances = await q(conn, `SELECT a.id, a.kind, a.currency, a.balance_cents AS balance, COALESCE(SUM(e.amount_cents), 0) AS total
                                  FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
                                 GROUP BY a.id, a.kind, a.currency, a.balance_cents`);
      sums = await q(conn, "SELECT currency, SUM(amount_cents) AS total, COUNT(*) AS n FROM ledger_entries GROUP BY currency");
      badMovements = await q(conn, `SELECT movement_id AS id FROM ledger_entries GROUP BY movement_id
                                    HAVING COUNT(*) <> 2 OR COUNT(DISTINCT account_id) <> 2 OR SUM(amount_cents) <> 0`);
      ownCheck = await checkPaymentLedger(conn);
      await conn.query("COMMIT");
    } finally {
      conn.release();
    }
    // What the payment side shows (a debit, a refund) is judged against the
    // orders as they are after it was read: on a live system an order created,
    // cancelled or charged since the first read is then seen as it is.
    const ordersAfter = settled ? orders : await readOrders();
    const afterById = new Map(ordersAfter.map((o) => [o.id, o]));

    const group = (kind: PaymentEntry["kind"], sign: number) => {
      const m = new Map<string, PaymentEntry[]>();
      for (const e of entries) if (e.kind === kind && Math.sign(e.amountCents) === sign) m.set(e.orderId, [...(m.get(e.orderId) ?? []), e]);
      return m;
    };
    const debits = group("CHARGE", -1);
    const refundsBy = group("REFUND", 1);
    const paid = orders.filter((o) => o.paymentMethod !== "NONE");
    const results: InvariantResult[] = [];

    // P1: exactly one debit per charged order, for its facts.
    {
      const charged = paid.filter((o) => CHARGED_PAYMENT.has(o.paymentStatus));
      const missing = charged.filter((o) => !debits.has(o.id)).map((o) => o.id);
      // Status and payment change in one transaction of the order database: a paid order past PAID is charged, live or not.
      const shippedUncharged = paid.filter((o) => SHIPPABLE.has(o.status) && o.paymentStatus !== "CHARGED").map((o) => o.id);
      const doubled = [...debits].filter(([, d]) => d.length > 1).map(([id]) => id);
      const wrongFacts = [...debits]
        .filter(([id, [d]]) => {
          const o = afterById.get(id);
          return o && (d!.customerId !== o.customerId || -d!.amountCents !== o.totalCents || d!.currency !== o.currency);
        })
        .map(([id]) => id);
      results.push(
        result("P1", PAYMENT_TITLES.P1, missing.length + doubled.length + wrongFacts.length + shippedUncharged.length, {
          "charged orders": charged.length,
          debits: [...debits.values()].reduce((n, d) => n + d.length, 0),
          "charged without debit": missing.length,
          "orders with two or more debits": doubled.length,
          "debit facts differ": wrongFacts.length,
          "PAID/SENT/DELIVERED not charged": shippedUncharged.length,
        }, [
          shippedUncharged.length ? `PAID, SENT or DELIVERED paid order whose payment is not CHARGED: ${sample(shippedUncharged)}` : "",
          missing.length ? `charged but no debit: ${sample(missing)}` : "",
          doubled.length ? `two or more debits: ${sample(doubled)}` : "",
          wrongFacts.length ? `debit's customer, amount or currency is not the order's: ${sample(wrongFacts)}` : "",
        ].filter(Boolean).join("; ")),
      );
    }

    // P2: no debit without a charged order; one still awaiting is in flight only on a live system.
    {
      const unknown: string[] = [];
      const unpaid: string[] = [];
      const awaiting: string[] = [];
      for (const id of debits.keys()) {
        const o = afterById.get(id);
        if (!o) unknown.push(id);
        else if (CHARGED_PAYMENT.has(o.paymentStatus)) continue;
        else if (o.paymentStatus === "AWAITING") awaiting.push(id);
        else unpaid.push(id);
      }
      results.push(
        result("P2", PAYMENT_TITLES.P2, unknown.length + unpaid.length + (settled ? awaiting.length : 0), {
          debits: debits.size,
          "of no known order": unknown.length,
          "of an order not charged": unpaid.length,
          [settled ? "of an order still awaiting (settled: drift)" : "in flight (order still awaiting)"]: awaiting.length,
        }, [
          unknown.length ? `debit of an order the order database does not have: ${sample(unknown)}` : "",
          unpaid.length ? `debit of an order whose payment is neither charged nor awaiting: ${sample(unpaid)}` : "",
          settled && awaiting.length ? `debit of an order still awaiting its payment after drain: ${sample(awaiting)}` : "",
        ].filter(Boolean).join("; ")),
      );
    }

    // P3: balances.
    {
      const problems: string[] = [];
      let customers = 0;
      let total = 0;
      for (const r of balances) {
        const [balance, sum] = [Number(r.balance), Number(r.total)];
        if (r.kind === "CUSTOMER") {
          customers++;
          total += balance;
          if (balance !== sum) problems.push(`${r.id}: balance ${balance}, entries ${sum}`);
          else if (balance < 0) problems.push(`${r.id}: balance ${balance} below zero`);
        } else if (balance !== 0) problems.push(`system account ${r.id}: balance column ${balance}`);
      }
      results.push(
        result("P3", PAYMENT_TITLES.P3, problems.length, { "customer accounts": customers, "sum of balances": total, wrong: problems.length }, sample(problems, 3)),
      );
    }

    // P4: zero sums.
    {
      const off = sums.filter((r) => Number(r.total) !== 0).map((r) => `${r.currency} sums to ${Number(r.total)}`);
      const moves = badMovements.map((r) => String(r.id));
      results.push(
        result("P4", PAYMENT_TITLES.P4, off.length + moves.length, {
          entries: sums.reduce((n, r) => n + Number(r.n), 0),
          currencies: sums.length,
          "currencies not zero": off.length,
          "unbalanced movements": moves.length,
        }, [off.join(", "), moves.length ? `unbalanced movements: ${sample(moves)}` : ""].filter(Boolean).join("; ")),
      );
    }

    // P5: refunds.
    {
      const refunded = paid.filter((o) => o.paymentStatus === "REFUNDED");
      const pendingRefund = paid.filter((o) => o.paymentStatus === "REFUND_PENDING");
      const notRefunded = refunded.filter((o) => !refundsBy.has(o.id)).map((o) => o.id);
      const doubled = [...refundsBy].filter(([, r]) => r.length > 1).map(([id]) => id);
      const withoutDebit = [...refundsBy.keys()].filter((id) => !debits.has(id));
      const wrongAmount = [...refundsBy].filter(([id, [r]]) => debits.has(id) && r!.amountCents !== -debits.get(id)![0]!.amountCents).map(([id]) => id);
      // A refund entry of an order that never asked for one (its payment is not REFUND_PENDING or REFUNDED).
      const unasked = [...refundsBy.keys()].filter((id) => !["REFUND_PENDING", "REFUNDED"].includes(afterById.get(id)?.paymentStatus ?? ""));
      // A refund asked of an order the payment service never charged: the order side asks only after it knows of the charge.
      const refusedRefunds = [...decisions].filter(([k, d]) => k.startsWith("refund:") && d.outcome !== "REFUNDED").map(([k]) => k.slice("refund:".length));
      const stillPending = settled ? pendingRefund.map((o) => o.id) : [];
      const notCancelled = [...refunded, ...pendingRefund].filter((o) => o.status !== "CANCELLED").map((o) => o.id);
      const bad = notRefunded.length + doubled.length + withoutDebit.length + wrongAmount.length + unasked.length + refusedRefunds.length + stillPending.length + notCancelled.length;
      results.push(
        result("P5", PAYMENT_TITLES.P5, bad, {
          refunded: refunded.length,
          [settled ? "refund pending (settled: drift)" : "refund in flight"]: pendingRefund.length,
          "refund entries": [...refundsBy.values()].reduce((n, r) => n + r.length, 0),
          "refunded without entry": notRefunded.length,
          "refunded twice": doubled.length,
          "refund without debit": withoutDebit.length + refusedRefunds.length,
          "refund not asked": unasked.length,
        }, [
          notRefunded.length ? `REFUNDED but no refund entry: ${sample(notRefunded)}` : "",
          doubled.length ? `two or more refunds: ${sample(doubled)}` : "",
          withoutDebit.length ? `refund entry without a debit: ${sample(withoutDebit)}` : "",
          wrongAmount.length ? `refund differs from the debit: ${sample(wrongAmount)}` : "",
          unasked.length ? `refund of an order whose payment is not REFUND_PENDING or REFUNDED: ${sample(unasked)}` : "",
          refusedRefunds.length ? `refund asked of an order that was not charged: ${sample(refusedRefunds)}` : "",
          stillPending.length ? `still REFUND_PENDING after drain: ${sample(stillPending)}` : "",
          notCancelled.length ? `refund pending or done on an order that is not CANCELLED: ${sample(notCancelled)}` : "",
        ].filter(Boolean).join("; ")),
      );
    }

    // P6: status against outcome, on a settled system.
    if (!settled) {
      results.push({ id: "P6", title: PAYMENT_TITLES.P6, verdict: "SKIP", counts: { "paid orders": paid.length }, detail: "a live system has outcomes in flight: judged after drain only" });
    } else {
      const wrong: string[] = [];
      const stuck: string[] = [];
      const counts: Record<string, number> = { "paid orders": paid.length, shippable: 0, "payment failed": 0, "cancelled refunded": 0, "cancelled refused": 0 };
      for (const o of paid) {
        const decided = decisions.get(`charge:${o.id}`)?.outcome;
        const debited = debits.has(o.id);
        const refundedOnce = refundsBy.get(o.id)?.length === 1;
        const shape = `${o.status}/${o.paymentStatus} (charge ${decided ?? "undecided"}${debited ? ", debit" : ""}${refundsBy.has(o.id) ? ", refund" : ""})`;
        let ok = false;
        if (SHIPPABLE.has(o.status)) {
          ok = o.paymentStatus === "CHARGED" && decided === "CHARGED" && debited && !refundsBy.has(o.id);
          if (ok) counts.shippable!++;
        } else if (o.status === "PAYMENT_FAILED") {
          ok = o.paymentStatus === "REFUSED" && decided === "REFUSED" && !debited;
          if (ok) counts["payment failed"]!++;
        } else if (o.status === "CANCELLED" && o.paymentStatus === "REFUNDED") {
          ok = decided === "CHARGED" && debited && refundedOnce;
          if (ok) counts["cancelled refunded"]!++;
        } else if (o.status === "CANCELLED" && o.paymentStatus === "REFUSED") {
          ok = decided === "REFUSED" && !debited;
          if (ok) counts["cancelled refused"]!++;
        } else if ((o.status === "AWAITING_PAYMENT" || o.status === "CANCELLED") && o.paymentStatus === "AWAITING" && !decided && charges.byKey.get(o.id) === "dead") {
          // The charge was never decided and its delivery gave up: an operator's case (RequeuePayment), not drift.
          stuck.push(o.id);
          ok = true;
        }
        if (!ok) wrong.push(`${o.id} ${shape}`);
      }
      // Orders without payment have none.
      const noneWithPayment = orders.filter((o) => o.paymentMethod === "NONE" && o.paymentStatus !== "NONE").map((o) => o.id);
      counts["stuck (charge row dead)"] = stuck.length;
      counts.disagree = wrong.length + noneWithPayment.length;
      results.push(
        result("P6", PAYMENT_TITLES.P6, wrong.length + noneWithPayment.length, counts, [
          wrong.length ? `status and payment disagree: ${sample(wrong, 3)}` : "",
          noneWithPayment.length ? `an order without payment has a payment status: ${sample(noneWithPayment)}` : "",
        ].filter(Boolean).join("; ")),
      );
    }

    results.push(result("P7", PAYMENT_TITLES.P7, ownCheck.length, { problems: ownCheck.length }, sample(ownCheck, 3)));

    // P8: lag of the three payment outboxes; dead rows are counted (an operator's case), not failed, as in I7/I8.
    {
      const target = opts.lagTargetMs ?? 60_000;
      const oldest = Math.max(charges.oldestMs, refunds.oldestMs, outcomes.oldestMs);
      results.push(
        result("P8", `${PAYMENT_TITLES.P8} (${target} ms)`, oldest < target ? 0 : 1, {
          "charge pending": charges.pending,
          "charge dead": charges.dead,
          "refund pending": refunds.pending,
          "refund dead": refunds.dead,
          "outcome pending": outcomes.pending,
          "outcome dead": outcomes.dead,
          "oldest ms": Math.round(oldest),
        }, `oldest pending row is ${Math.round(oldest)} ms old`),
      );
    }
    return results;
  } finally {
    await paymentPool.end().catch(() => {});
  }
}

/**
 * I5, in two parts that together say "a replay can never give an order a
 * second voucher":
 *
 * - the voucher database itself refuses a second ISSUED voucher for an order:
 *   a unique key over the order id and the status (directly, or through a
 *   generated column computed from them) is read from information_schema;
 * - replays of a sample of ISSUED vouchers (with the service URL) come back as
 *   the same voucher with created=false and write no row.
 *
 * It deliberately sends no conflicting replay (same order, another customer):
 * the service would refuse it, but it would count it in
 * vouchers_issued_total{result="conflict"}, which the VoucherConflictsIssued
 * alert watches as a sign of tampering, so every ledger check would page
 * someone. The refusal itself is proven by the voucher service's tests
 * (voucher-service/test/issue-voucher.test.ts, batch-issue-vouchers.test.ts);
 * the unique key is what makes it hold even against a service bug.
 */
async function checkReplays(opts: LedgerOptions, vouchers: VoucherRow[], voucherPool: Pool): Promise<InvariantResult> {
  const title = "the database allows one ISSUED voucher per order; a replayed IssueVoucher returns it and writes nothing";
  const problems: string[] = [];
  const guard = await liveUniqueKey(voucherPool);
  if (!guard) problems.push("no unique key on vouchers limits an order to one ISSUED voucher");
  const issued = vouchers.filter((v) => v.status === "ISSUED");
  const counts: Record<string, number> = { "unique key": guard ? 1 : 0, replayed: 0, "same voucher": 0 };
  const skipped = !opts.voucherServiceUrl ? "replays skipped: no voucher service URL given" : issued.length === 0 ? "replays skipped: no issued voucher" : "";
  if (!skipped) {
    const n = Math.min(opts.replaySample ?? 10, issued.length);
    const picked = Array.from({ length: n }, (_, i) => issued[Math.floor((i * issued.length) / n)]!);
    const { client, close } = createVoucherClient({ baseUrl: opts.voucherServiceUrl!, defaultTimeoutMs: 5_000, token: opts.token });
    try {
      for (const v of picked) {
        const res = await client.issueVoucher({ orderId: v.orderId, customerId: v.customerId, orderTotalCents: BigInt(v.orderTotalCents), currency: v.currency });
        counts.replayed!++;
        if (res.voucher?.id === v.id && !res.created) counts["same voucher"]!++;
        else problems.push(`replay of ${v.orderId} gave ${res.voucher?.id} created=${res.created}, want ${v.id} created=false`);
      }
      const [after] = await voucherPool.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM vouchers");
      const written = Number(after[0]!.n) - vouchers.length;
      if (written !== 0) problems.push(`${written} voucher rows appeared during the replays`);
    } catch (err) {
      problems.push(`replay failed: ${(err as Error).message}${ConnectError.from(err).code === Code.Unauthenticated ? ` (${TOKEN_HINT})` : ""}`);
    } finally {
      close();
    }
  }
  const r = result("I5", title, problems.length, counts, problems.slice(0, 3).join("; "));
  if (r.verdict === "PASS" && guard) r.detail = `${guard}${skipped ? `; ${skipped}` : ""}`;
  return r;
}

/**
 * The unique key that allows one ISSUED voucher per order, described, or
 * undefined. It qualifies when every column of a unique index is order_id,
 * status (or voided_at), or a generated column whose expression uses no other column of the
 * table, and order_id takes part: then two ISSUED rows of one order would
 * have equal keys. (UNIQUE(order_id) alone qualifies too: it is stricter.)
 */
async function liveUniqueKey(pool: Pool): Promise<string | undefined> {
  const [cols] = await pool.query<RowDataPacket[]>(
    `SELECT COLUMN_NAME AS name, COALESCE(GENERATION_EXPRESSION, '') AS expr
       FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'vouchers'`,
  );
  const [keys] = await pool.query<RowDataPacket[]>(
    `SELECT INDEX_NAME AS name, COLUMN_NAME AS col
       FROM information_schema.STATISTICS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'vouchers' AND NON_UNIQUE = 0
      ORDER BY INDEX_NAME, SEQ_IN_INDEX`,
  );
  const names = cols.map((c) => String(c.name).toLowerCase());
  const exprOf = new Map(cols.map((c) => [String(c.name).toLowerCase(), String(c.expr).toLowerCase()]));
  /** The base columns a column stands for: itself, or those its generation expression mentions. */
  const basis = (col: string): string[] => {
    const expr = exprOf.get(col) ?? "";
    if (!expr) return [col];
    return names.filter((n) => n !== col && new RegExp(`(^|[^a-z0-9_])${n}([^a-z0-9_]|$)`).test(expr));
  };
  const byIndex = new Map<string, string[]>();
  for (const k of keys) byIndex.set(String(k.name), [...(byIndex.get(String(k.name)) ?? []), String(k.col).toLowerCase()]);
  for (const [index, columns] of byIndex) {
    const base = columns.flatMap(basis);
    if (base.includes("order_id") && base.every((c) => c === "order_id" || c === "status" || c === "voided_at")) {
      return `unique key ${index} (${columns.join(", ")})`;
    }
  }
  return undefined;
}

const TOKEN_HINT = "give the reconciler's token: --token-file, RECONCILE_TOKEN, RECONCILE_TOKEN_FILE, or run npm start, which writes $LOCAL_DATA_DIR/auth/reconciler.token";

/** I9: the reconciler's dry run over everything finds no drift. */
async function checkReconciler(opts: LedgerOptions): Promise<InvariantResult> {
  const title = "the reconciler reports 0 drift";
  if (!opts.orderServiceUrl || !opts.voucherServiceUrl) {
    return { id: "I9", title, verdict: "SKIP", counts: {}, detail: "needs both service URLs (--order-service, --voucher-service)" };
  }
  const run = await runReconciler({
    orderServiceUrl: opts.orderServiceUrl,
    voucherServiceUrl: opts.voucherServiceUrl,
    paymentServiceUrl: opts.paymentServiceUrl,
    deliveryServiceUrl: opts.deliveryServiceUrl,
    dryRun: true,
    graceMs: opts.reconcileGraceMs ?? 0,
    token: opts.token,
  });
  if (!run.report) {
    return { id: "I9", title, verdict: "FAIL", counts: { exit: run.exitCode }, detail: `no report (exit ${run.exitCode}): ${run.stderr.trim().split("\n").slice(-3).join(" | ")}` };
  }
  const found = run.report.totals.found;
  const failed = run.report.error ? 1 : 0;
  return result("I9", title, found + failed, { "sent orders scanned": run.report.scanned.sentOrders, "vouchers scanned": run.report.scanned.vouchers, drift: found }, run.report.error ?? `drift: ${JSON.stringify(run.report.counts)}`);
}

export interface ReconcileRun {
  exitCode: number;
  report?: {
    totals: { found: number; repaired: number; unrepaired: number; needsPerson?: number };
    counts: Record<string, { found: number; repaired: number }>;
    scanned: { sentOrders: number; vouchers: number };
    /** Voids made and held back (by the cap or the window), when the reconciler reports them. */
    voids?: { cap: number; voided: number; skippedByCap: number; outsideWindow: number; capReached: boolean };
    warnings?: string[];
    error: string | null;
  };
  stderr: string;
}

/**
 * Runs `reconcile --once --json` as its own process with a throwaway state
 * file, over all of history (--full) unless told otherwise: without a state
 * file the reconciler would look back only RECONCILE_INITIAL_LOOKBACK_MS.
 */
export function runReconciler(o: {
  orderServiceUrl: string;
  voucherServiceUrl: string;
  /** With it the run compares payments too (RECONCILE_PAYMENTS=true, PAYMENT_SERVICE_URL). */
  paymentServiceUrl?: string;
  /** With it the run compares shipping too (RECONCILE_SHIPPING=true, DELIVERY_SERVICE_URL). */
  deliveryServiceUrl?: string;
  dryRun: boolean;
  /** Scan all of history (--full). Default true. */
  full?: boolean;
  /** More command-line arguments, e.g. ["--max-voids", "3"]. */
  args?: string[];
  /** The reconciler's bearer token; default RECONCILE_TOKEN (or RECONCILE_TOKEN_FILE) from this process's environment. */
  token?: string;
  graceMs?: number;
  /** The run is killed after this long. Default 60000 ms. */
  timeoutMs?: number;
  /** Signal for a run past timeoutMs; SIGKILL lets a test crash the reconciler part-way. Default SIGTERM. */
  killSignal?: NodeJS.Signals;
  /** Polled every 10 ms while the run goes on: once it says true the run is killed with killSignal (a crash at a chosen moment). */
  killWhen?: () => Promise<boolean>;
  /** More settings for the run, e.g. RECONCILE_REPAIR_CONCURRENCY. */
  env?: Record<string, string>;
}): Promise<ReconcileRun> {
  const dir = mkdtempSync(path.join(tmpdir(), "ledger-reconcile-"));
  const tsx = createRequire(import.meta.url).resolve("tsx");
  const args = [
    "--import", tsx, path.join(root, "reconciler/src/main.ts"), "--once", "--json",
    ...(o.dryRun ? ["--dry-run"] : []),
    ...(o.full ?? true ? ["--full"] : []),
    ...(o.args ?? []),
  ];
  return new Promise((resolve) => {
    let watching = o.killWhen !== undefined;
    const child = execFile(
      process.execPath,
      args,
      {
        env: {
          ...process.env,
          ORDER_SERVICE_URL: o.orderServiceUrl,
          VOUCHER_SERVICE_URL: o.voucherServiceUrl,
          RECONCILE_GRACE_MS: String(o.graceMs ?? 0),
          RECONCILE_STATE_FILE: path.join(dir, "state.json"),
          RECONCILE_REPORT_DIR: path.join(dir, "reports"),
          RECONCILE_CALL_TIMEOUT_MS: "5000",
          LOG_LEVEL: process.env.LOG_LEVEL ?? "warn",
          ...(o.token ? { RECONCILE_TOKEN: o.token, RECONCILE_TOKEN_FILE: "" } : {}),
          ...(o.paymentServiceUrl ? { RECONCILE_PAYMENTS: "true", PAYMENT_SERVICE_URL: o.paymentServiceUrl } : {}),
          ...(o.deliveryServiceUrl ? { RECONCILE_SHIPPING: "true", DELIVERY_SERVICE_URL: o.deliveryServiceUrl } : {}),
          ...o.env,
        },
        timeout: o.timeoutMs ?? 60_000,
        killSignal: o.killSignal ?? "SIGTERM",
        maxBuffer: 64 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        watching = false;
        rmSync(dir, { recursive: true, force: true });
        const exitCode = err ? (typeof err.code === "number" ? err.code : -1) : 0;
        let report: ReconcileRun["report"];
        try {
          report = JSON.parse(stdout);
        } catch {
          report = undefined;
        }
        resolve({ exitCode, report, stderr });
      },
    );
    const watch = async () => {
      while (watching) {
        if (await o.killWhen!().catch(() => false)) {
          child.kill(o.killSignal ?? "SIGTERM");
          return;
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    void watch();
  });
}

/** One line per invariant: `I2 PASS every qualifying sent order has a voucher (sent qualifying 61, …)`. */
export function formatLedger(r: LedgerResult): string {
  const lines = r.results.map((x) => {
    const counts = Object.entries(x.counts).map(([k, v]) => `${k} ${v}`).join(", ");
    return `${x.id} ${x.verdict} ${x.title}${counts ? ` (${counts})` : ""}${x.detail ? `: ${x.detail}` : ""}`;
  });
  const failed = r.results.filter((x) => x.verdict === "FAIL").map((x) => x.id);
  lines.push(failed.length ? `ledger: FAIL (${failed.join(", ")})` : "ledger: PASS");
  return lines.join("\n");
}

const USAGE = `usage: npm run check:ledger -- [options]
  --order-db <url>          order database (default: ORDER_DATABASE_URL)
  --voucher-db <url>        voucher database (default: VOUCHER_DATABASE_URL)
  --payment-db <url>        payment database, for P1–P8 (default: PAYMENT_DATABASE_URL; without it
                            they are skipped)
  --delivery-db <url>       delivery database, for S1–S7 (default: DELIVERY_DATABASE_URL; without it
                            they are skipped)
  --order-service <url>     order service gRPC URL, for I9 (default: ORDER_SERVICE_URL)
  --voucher-service <url>   voucher service gRPC URL, for I5 and I9 (default: VOUCHER_SERVICE_URL)
  --payment-service <url>   payment service gRPC URL: I9's reconciler run compares payments too
                            (default: PAYMENT_SERVICE_URL)
  --delivery-service <url>  delivery service gRPC URL: I9's reconciler run compares shipping too
                            (default: DELIVERY_SERVICE_URL)
  --lag-target-ms <ms>      I8 target for the oldest pending row (default 60000)
  --acked-file <file>       I6: order ids whose MarkOrderSent returned OK, one per line
  --live                    the system is not quiet: pending rows are not missing vouchers (I2); a
                            debit of an order still awaiting (P2) or a refund pending (P5) is in
                            flight, and statuses are not judged against outcomes (P6 skipped); a
                            shipment request pending (S1) or an order behind its shipment (S3) is in flight
  --token-file <file>       the reconciler's token, for I5 and I9 (default: RECONCILE_TOKEN or
                            RECONCILE_TOKEN_FILE, else $LOCAL_DATA_DIR/auth/reconciler.token as
                            written by npm start; LOCAL_DATA_DIR defaults to .data)
  --json                    print the results as JSON
exit: 0 all pass (or skipped), 1 an invariant failed, 2 could not run`;

/**
 * The reconciler's token, found the way the reconciler finds it, so the
 * README's command needs no token argument next to npm start: --token-file,
 * else RECONCILE_TOKEN or RECONCILE_TOKEN_FILE, else the file npm start writes
 * in its data folder ($LOCAL_DATA_DIR/auth/reconciler.token, default .data).
 */
export function ledgerToken(file: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (file) return readFileSync(file, "utf8").trim();
  if (env.RECONCILE_TOKEN) return env.RECONCILE_TOKEN;
  if (env.RECONCILE_TOKEN_FILE) return readFileSync(env.RECONCILE_TOKEN_FILE, "utf8").trim();
  const local = path.join(env.LOCAL_DATA_DIR ? path.resolve(env.LOCAL_DATA_DIR) : path.join(root, ".data"), "auth/reconciler.token");
  return existsSync(local) ? readFileSync(local, "utf8").trim() : undefined;
}

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        "order-db": { type: "string" },
        "voucher-db": { type: "string" },
        "payment-db": { type: "string" },
        "delivery-db": { type: "string" },
        "order-service": { type: "string" },
        "voucher-service": { type: "string" },
        "payment-service": { type: "string" },
        "delivery-service": { type: "string" },
        "lag-target-ms": { type: "string" },
        "acked-file": { type: "string" },
        "token-file": { type: "string" },
        live: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (err) {
    process.stderr.write(`check-ledger: ${(err as Error).message}\n${USAGE}\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const orderDatabaseUrl = values["order-db"] ?? process.env.ORDER_DATABASE_URL;
  const voucherDatabaseUrl = values["voucher-db"] ?? process.env.VOUCHER_DATABASE_URL;
  const paymentDatabaseUrl = values["payment-db"] ?? process.env.PAYMENT_DATABASE_URL;
  const deliveryDatabaseUrl = values["delivery-db"] ?? process.env.DELIVERY_DATABASE_URL;
  const lag = values["lag-target-ms"] === undefined ? 60_000 : Number(values["lag-target-ms"]);
  if (!orderDatabaseUrl || !voucherDatabaseUrl || !Number.isInteger(lag) || lag <= 0) {
    process.stderr.write(`check-ledger: both database URLs are needed (ORDER_DATABASE_URL, VOUCHER_DATABASE_URL) and --lag-target-ms must be a positive integer\n${USAGE}\n`);
    process.exit(2);
  }
  const acked = values["acked-file"] ? readFileSync(values["acked-file"], "utf8").split(/\s+/).filter(Boolean) : undefined;
  const orderServiceUrl = values["order-service"] ?? process.env.ORDER_SERVICE_URL;
  const voucherServiceUrl = values["voucher-service"] ?? process.env.VOUCHER_SERVICE_URL;
  const paymentServiceUrl = values["payment-service"] ?? process.env.PAYMENT_SERVICE_URL;
  const deliveryServiceUrl = values["delivery-service"] ?? process.env.DELIVERY_SERVICE_URL;
  let token: string | undefined;
  try {
    token = ledgerToken(values["token-file"]);
  } catch (err) {
    process.stderr.write(`check-ledger: cannot read the token: ${(err as Error).message}\n`);
    process.exit(2);
  }
  // Without a token every call would be refused and I5/I9 would fail for a reason that is not the ledger's.
  if ((orderServiceUrl || voucherServiceUrl) && !token) {
    process.stderr.write(`check-ledger: the service checks (I5, I9) need a token: ${TOKEN_HINT}\n${USAGE}\n`);
    process.exit(2);
  }
  try {
    const r = await checkLedger({
      orderDatabaseUrl,
      voucherDatabaseUrl,
      paymentDatabaseUrl,
      deliveryDatabaseUrl,
      orderServiceUrl,
      voucherServiceUrl,
      paymentServiceUrl,
      deliveryServiceUrl,
      lagTargetMs: lag,
      acknowledgedSent: acked,
      drained: !values.live,
      token,
    });
    process.stdout.write(values.json ? `${JSON.stringify(r, null, 2)}\n` : `${formatLedger(r)}\n`);
    process.exitCode = r.ok ? 0 : 1;
  } catch (err) {
    process.stderr.write(`check-ledger: could not read the ledgers: ${(err as Error).message}\n`);
    process.exit(2);
  }
}

// No top-level await: the tests load this module too, and mocha loads test
// files with require() where it can, which a module with top-level await defeats.
if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) void main();
