import type { PoolConnection, ResultSetHeader, RowDataPacket } from "mysql2/promise";
import { handleOnce, type InboxAnswer } from "@shop/engine/inbox";
import { inTransaction, retryTransient, type Pool } from "@shop/platform/db";
import { alreadyExists, failedPrecondition, notFound } from "@shop/platform/errors";
import { failpoint } from "@shop/platform/failpoints";
import { newId } from "@shop/platform/ids";
import type { Logger } from "@shop/platform/logger";
import { decodeIdToken, encodeIdToken, timeWindow } from "@shop/platform/paging";
import { decodeOrderTimeToken, encodeOrderTimeToken } from "./page-token.js";

/**
 * Accounts, top-ups, charges and refunds over the payment database. Every
 * call that moves money is one transaction holding the message's inbox row
 * (@shop/engine/inbox), the balance change, the two ledger entries and, for
 * charges and refunds, the outcome's outbox row: all of it commits, or none.
 * A transaction that dies on a deadlock or lock timeout is run again whole.
 */

export type MovementKind = "TOP_UP" | "CHARGE" | "REFUND";

export interface Account {
  id: string;
  customerId: string;
  currency: string;
  balanceCents: number;
  openedAt: Date;
}

/** A movement as one account sees it: that account's entry of the pair. */
export interface Movement {
  /** The entry's id (a ULID): a statement's order and page position. */
  id: string;
  movementId: string;
  kind: MovementKind;
  /** Signed: positive credits the account. */
  amountCents: number;
  currency: string;
  orderId: string | null;
  requestId: string | null;
  createdAt: Date;
}

export type RefusalReason = "INSUFFICIENT_FUNDS" | "NO_ACCOUNT" | "NOT_CHARGED";

/** A charge's or refund's definite outcome, recorded in the inbox and answered to every replay. */
export type PaymentOutcome =
  | { outcome: "CHARGED" | "REFUNDED"; accountId: string; customerId: string; amountCents: number; currency: string; movement: Movement }
  | { outcome: "REFUSED"; reason: RefusalReason; customerId: string; amountCents: number; currency: string };

export interface Decided {
  result: PaymentOutcome;
  /** True when this call decided it; false for a replay. */
  decided: boolean;
}

export interface TopUpResult {
  account: Account;
  movement: Movement;
  applied: boolean;
}

export interface ChargeRequest {
  orderId: string;
  customerId: string;
  amountCents: number;
  currency: string;
  traceparent?: string;
}

export interface RefundRequest {
  orderId: string;
  traceparent?: string;
}

/** The system accounts on the other side of every movement (migration 0001). */
export const fundingAccount = (currency: string) => `system:funding:${currency}`;
export const clearingAccount = (currency: string) => `system:clearing:${currency}`;

export const STATEMENT_PAGE = { default: 50, max: 500 } as const;
/** ListOrderPayments' page sizes: those of ListStatement. */
export const ORDER_PAYMENTS_PAGE = STATEMENT_PAGE;

/** What was decided for one order: its charge and whether it was refunded. */
export interface OrderPayment {
  orderId: string;
  customerId: string;
  chargeOutcome: "CHARGED" | "REFUSED";
  /** Set when REFUSED. */
  refusalReason?: RefusalReason;
  amountCents: number;
  currency: string;
  /** When the charge was decided: its inbox row's received_at (the payment database's clock). */
  decidedAt: Date;
  refunded: boolean;
  refundedAt?: Date;
}

/** CHARGE_PREFIX + order id is a charge's inbox key; REFUND_PREFIX + order id its refund's. */
const CHARGE_PREFIX = "charge:";
const REFUND_PREFIX = "refund:";

/**
 * ListOrderPayments' query: the window's lower bound (always: the beginning
 * of time when none is asked, which also skips the NULLs of messages that
 * are not charges), its upper bound if asked, the keyset position after the
 * first page, and LIMIT. It walks inbox_charge_decided_idx in its order, so
 * it stops after LIMIT rows with no sort; each charge's refund is a
 * primary-key lookup. A test EXPLAINs it.
 */
export function listOrderPaymentsSql(opts: { before: boolean; from: boolean }): string {
  const where = ["c.charge_decided_at >= ?"];
  if (opts.before) where.push("c.charge_decided_at < ?");
  if (opts.from) where.push("(c.charge_decided_at > ? OR (c.charge_decided_at = ? AND c.message_key > ?))");
  return `SELECT c.message_key AS messageKey, c.outcome, c.charge_decided_at AS decidedAt, r.outcome AS refundOutcome, r.received_at AS refundedAt
  FROM inbox c FORCE INDEX (inbox_charge_decided_idx)
  LEFT JOIN inbox r ON r.message_key = CONCAT('${REFUND_PREFIX}', SUBSTRING(c.message_key, ${CHARGE_PREFIX.length + 1}))
 WHERE ${where.join(" AND ")}
 ORDER BY c.charge_decided_at, c.message_key
 LIMIT ?`;
}

const ACCOUNT_COLUMNS = "id, customer_id AS customerId, currency, balance_cents AS balanceCents, opened_at AS openedAt";
const ENTRY_COLUMNS = `id, movement_id AS movementId, kind, amount_cents AS amountCents, currency, order_id AS orderId,
  request_id AS requestId, created_at AS createdAt`;

function toAccount(row: RowDataPacket): Account {
  return { id: row.id, customerId: row.customerId, currency: row.currency, balanceCents: Number(row.balanceCents), openedAt: row.openedAt };
}

function toMovement(row: RowDataPacket): Movement {
  return {
    id: row.id,
    movementId: row.movementId,
    kind: row.kind,
    amountCents: Number(row.amountCents),
    currency: row.currency,
    orderId: row.orderId ?? null,
    requestId: row.requestId ?? null,
    createdAt: row.createdAt,
  };
}

/** A movement read back from the inbox's JSON: its date is a string there. */
function revive<T extends { movement?: Movement }>(value: T): T {
  if (value.movement) value.movement = { ...value.movement, createdAt: new Date(value.movement.createdAt) };
  return value;
}

type Facts = Record<string, string | number>;
/** A message's facts as one string, fields in the order given: a replay must say the same. */
const factsOf = (facts: Facts) => JSON.stringify(facts);

export interface PaymentsOptions {
  pool: Pool;
  logger: Logger;
  /** Told after each commit that wrote an outcome's outbox row (a charge or refund decided), so the relay delivers it now. */
  onOutcome?: () => void;
}

export class Payments {
  private readonly pool: Pool;
  private readonly logger: Logger;
  private readonly onOutcome?: () => void;

  constructor(opts: PaymentsOptions) {
    this.pool = opts.pool;
    this.logger = opts.logger;
    this.onOutcome = opts.onOutcome;
  }

  async ping(): Promise<void> {
    await this.pool.query("SELECT 1");
  }

  /** Opens the customer's one account; a second call returns it with created=false. */
  async openAccount(customerId: string, currency: string): Promise<{ account: Account; created: boolean }> {
    let created = true;
    try {
      await this.pool.query("INSERT INTO accounts (id, customer_id, kind, currency, balance_cents, opened_at) VALUES (?, ?, 'CUSTOMER', ?, 0, NOW(3))", [
        newId(),
        customerId,
        currency,
      ]);
    } catch (err) {
      // UNIQUE(customer_id) decides between racing opens: the loser reads the winner's account.
      if ((err as { errno?: number }).errno !== 1062) throw err;
      created = false;
    }
    const account = await this.findAccount(this.pool, customerId);
    if (!account) throw new Error(`account of customer ${customerId} vanished after it was opened`);
    if (account.currency !== currency) {
      throw alreadyExists(`customer ${customerId} already has an account in ${account.currency}, not ${currency}`);
    }
    if (created) this.logger.info({ customerId, accountId: account.id }, "account opened");
    return { account, created };
  }

  async getAccount(customerId: string): Promise<Account> {
    const account = await this.findAccount(this.pool, customerId);
    if (!account) throw notFound(`customer ${customerId} has no account`);
    return account;
  }

  /** Credits the account once per request id; a replay answers the first call's movement. */
  async topUp(req: { customerId: string; amountCents: number; currency: string; requestId: string }): Promise<TopUpResult> {
    const account = await this.getAccount(req.customerId);
    if (account.currency !== req.currency) throw alreadyExists(`the account of customer ${req.customerId} is in ${account.currency}, not ${req.currency}`);
    const answer = await this.once<Movement>(
      `topup:${req.requestId}`,
      { customerId: req.customerId, amountCents: req.amountCents, currency: req.currency },
      async (conn) => {
        await conn.query("UPDATE accounts SET balance_cents = balance_cents + ? WHERE id = ?", [req.amountCents, account.id]);
        const movement = await this.move(conn, {
          kind: "TOP_UP",
          credit: account.id,
          debit: fundingAccount(req.currency),
          amountCents: req.amountCents,
          currency: req.currency,
          requestId: req.requestId,
          seenBy: account.id,
        });
        failpoint("payment.topup.before-commit");
        return movement;
      },
    );
    if (answer.kind === "conflict") {
      throw alreadyExists(`top-up request ${req.requestId} was made before with other facts (${answer.recordedFacts}); nothing moved`);
    }
    failpoint("payment.topup.after-commit");
    const movement = revive({ movement: answer.outcome }).movement!;
    if (answer.kind === "handled") this.logger.info({ customerId: req.customerId, requestId: req.requestId, amountCents: req.amountCents }, "account topped up");
    return { account: await this.getAccount(req.customerId), movement, applied: answer.kind === "handled" };
  }

  /**
   * Debits an order's amount at most once, ever: the inbox row "charge:<order>"
   * and the conditional debit commit together. The debit is a compare and
   * swap on the balance (it applies only if the balance covers it), so racing
   * charges on one account never take it below zero; one that finds too
   * little is REFUSED, a definite outcome like CHARGED.
   */
  async charge(req: ChargeRequest): Promise<Decided> {
    const key = `charge:${req.orderId}`;
    const answer = await this.once<PaymentOutcome>(
      key,
      { customerId: req.customerId, amountCents: req.amountCents, currency: req.currency },
      async (conn) => {
        const refused = (reason: RefusalReason): PaymentOutcome => ({ outcome: "REFUSED", reason, customerId: req.customerId, amountCents: req.amountCents, currency: req.currency });
        const account = await this.findAccount(conn, req.customerId);
        let outcome: PaymentOutcome;
        if (!account || account.currency !== req.currency) {
          outcome = refused("NO_ACCOUNT");
        } else {
          const [debit] = await conn.query<ResultSetHeader>(
            "UPDATE accounts SET balance_cents = balance_cents - ? WHERE id = ? AND balance_cents >= ?",
            [req.amountCents, account.id, req.amountCents],
          );
          if (debit.affectedRows === 0) {
            outcome = refused("INSUFFICIENT_FUNDS");
          } else {
            const movement = await this.move(conn, {
              kind: "CHARGE",
              debit: account.id,
              credit: clearingAccount(req.currency),
              amountCents: req.amountCents,
              currency: req.currency,
              orderId: req.orderId,
              seenBy: account.id,
            });
            outcome = { outcome: "CHARGED", accountId: account.id, customerId: req.customerId, amountCents: req.amountCents, currency: req.currency, movement };
          }
        }
        await this.enqueueOutcome(conn, key, req.orderId, outcome, req.traceparent);
        failpoint("payment.charge.before-commit");
        return outcome;
      },
    );
    if (answer.kind === "conflict") {
      throw alreadyExists(`order ${req.orderId} was charged before with other facts (${answer.recordedFacts}); nothing moved`);
    }
    if (answer.kind === "handled") this.onOutcome?.();
    failpoint("payment.charge.after-commit");
    return this.decided(answer, req.orderId, "charge");
  }

  /**
   * Credits back a charged order's debit, at most once. An order never
   * charged because its charge was refused is REFUSED (NOT_CHARGED), for
   * good; an order whose charge is not decided yet is FAILED_PRECONDITION and
   * nothing is recorded. The charge's inbox row is read with a locking read,
   * so a refund waits for a charge of the same order still being decided
   * rather than missing it.
   */
  async refund(req: RefundRequest): Promise<Decided> {
    const key = `refund:${req.orderId}`;
    const answer = await this.once<PaymentOutcome>(key, { orderId: req.orderId }, async (conn) => {
      const [rows] = await conn.query<RowDataPacket[]>("SELECT outcome FROM inbox WHERE message_key = ? FOR UPDATE", [`charge:${req.orderId}`]);
      const charge = rows[0]?.outcome ? (JSON.parse(String(rows[0].outcome)) as PaymentOutcome) : undefined;
      if (!charge) {
        // Not a decision: nothing is recorded (the transaction, inbox key included, rolls back), so a refund
        // asked again once the order's charge is decided is decided then. Recording NOT_CHARGED here would
        // leave a later charge's debit that no refund could ever undo.
        throw failedPrecondition(`order ${req.orderId} has no decided charge to refund; nothing was recorded: ask again once its charge is decided`);
      }
      let outcome: PaymentOutcome;
      if (charge.outcome !== "CHARGED") {
        outcome = { outcome: "REFUSED", reason: "NOT_CHARGED", customerId: charge.customerId, amountCents: charge.amountCents, currency: charge.currency };
      } else {
        await conn.query("UPDATE accounts SET balance_cents = balance_cents + ? WHERE id = ?", [charge.amountCents, charge.accountId]);
        const movement = await this.move(conn, {
          kind: "REFUND",
          credit: charge.accountId,
          debit: clearingAccount(charge.currency),
          amountCents: charge.amountCents,
          currency: charge.currency,
          orderId: req.orderId,
          seenBy: charge.accountId,
        });
        outcome = { outcome: "REFUNDED", accountId: charge.accountId, customerId: charge.customerId, amountCents: charge.amountCents, currency: charge.currency, movement };
      }
      await this.enqueueOutcome(conn, key, req.orderId, outcome, req.traceparent);
      failpoint("payment.refund.before-commit");
      return outcome;
    });
    // The facts are the order id alone, which is the key: a refund never conflicts.
    if (answer.kind === "conflict") throw new Error(`refund of order ${req.orderId}: inbox facts differ (${answer.recordedFacts})`);
    if (answer.kind === "handled") this.onOutcome?.();
    failpoint("payment.refund.after-commit");
    return this.decided(answer, req.orderId, "refund");
  }

  /** A customer's movements newest first; the page token is the last entry id returned. */
  async statement(customerId: string, pageSize: number, pageToken: string): Promise<{ items: Movement[]; nextPageToken: string }> {
    const after = decodeIdToken(pageToken);
    const account = await this.getAccount(customerId);
    const limit = Math.min(pageSize > 0 ? pageSize : STATEMENT_PAGE.default, STATEMENT_PAGE.max);
    const [rows] = await this.pool.query<RowDataPacket[]>(
      `SELECT ${ENTRY_COLUMNS} FROM ledger_entries WHERE account_id = ? ${after ? "AND id < ?" : ""} ORDER BY id DESC LIMIT ?`,
      after ? [account.id, after, limit + 1] : [account.id, limit + 1],
    );
    const items = rows.slice(0, limit).map(toMovement);
    return { items, nextPageToken: rows.length > limit ? encodeIdToken(items[items.length - 1]!.id) : "" };
  }

  /**
   * What was decided for each order asked about, read from the inbox (the
   * record every replay is answered from): the charge's outcome, and whether
   * a refund was made. Orders never charged are absent; the answer follows
   * the order of the request, each order once. Primary-key lookups only.
   */
  async orderPayments(orderIds: readonly string[]): Promise<OrderPayment[]> {
    const ids = [...new Set(orderIds)];
    if (ids.length === 0) return [];
    const [rows] = await this.pool.query<RowDataPacket[]>(
      "SELECT message_key AS messageKey, outcome, received_at AS receivedAt FROM inbox WHERE message_key IN (?)",
      [ids.flatMap((id) => [CHARGE_PREFIX + id, REFUND_PREFIX + id])],
    );
    const byKey = new Map(rows.map((r) => [String(r.messageKey), r]));
    const out: OrderPayment[] = [];
    for (const id of ids) {
      const charge = byKey.get(CHARGE_PREFIX + id);
      const refund = byKey.get(REFUND_PREFIX + id);
      const payment = charge && this.toOrderPayment(id, charge.outcome, charge.receivedAt, refund && { outcome: refund.outcome, receivedAt: refund.receivedAt });
      if (payment) out.push(payment);
    }
    return out;
  }

  /**
   * The charges decided in [after, before), by (decided_at, order id), keyset
   * paged. Served by inbox_charge_decided_idx, which holds the charges alone
   * in that order: a page reads its rows and one more, never top-ups or
   * refunds. A charge is listed once it has committed; its decided_at is
   * stamped in its transaction, so a window ending in the last seconds may
   * still gain charges that were committing while it was read.
   */
  async listOrderPayments(
    decidedAfter: Date | undefined,
    decidedBefore: Date | undefined,
    pageSize: number,
    pageToken: string,
  ): Promise<{ items: OrderPayment[]; nextPageToken: string }> {
    const window = timeWindow("decided", decidedAfter, decidedBefore);
    const from = decodeOrderTimeToken(pageToken);
    const limit = Math.min(pageSize > 0 ? pageSize : ORDER_PAYMENTS_PAGE.default, ORDER_PAYMENTS_PAGE.max);
    const params: unknown[] = [window.after ?? new Date(Date.UTC(1000, 0, 1))];
    if (window.before) params.push(window.before);
    if (from) params.push(from.at, from.at, CHARGE_PREFIX + from.orderId);
    const [rows] = await this.pool.query<RowDataPacket[]>(listOrderPaymentsSql({ before: !!window.before, from: !!from }), [...params, limit + 1]);
    const items: OrderPayment[] = [];
    for (const r of rows.slice(0, limit)) {
      const orderId = String(r.messageKey).slice(CHARGE_PREFIX.length);
      const refund = r.refundOutcome === null || r.refundOutcome === undefined ? undefined : { outcome: r.refundOutcome, receivedAt: r.refundedAt };
      const payment = this.toOrderPayment(orderId, r.outcome, r.decidedAt, refund);
      if (payment) items.push(payment);
    }
    const last = rows.length > limit ? rows[limit - 1] : undefined;
    return {
      items,
      nextPageToken: last ? encodeOrderTimeToken(last.decidedAt as Date, String(last.messageKey).slice(CHARGE_PREFIX.length)) : "",
    };
  }

  /** An order's payment from its charge's and refund's recorded outcomes; undefined while the charge has none (never, once committed). */
  private toOrderPayment(
    orderId: string,
    chargeOutcome: unknown,
    decidedAt: Date,
    refund: { outcome: unknown; receivedAt: Date } | undefined,
  ): OrderPayment | undefined {
    if (chargeOutcome === null || chargeOutcome === undefined) return undefined;
    const c = JSON.parse(String(chargeOutcome)) as PaymentOutcome;
    if (c.outcome === "REFUNDED") throw new Error(`inbox key ${CHARGE_PREFIX}${orderId} records a refund`);
    const refunded = refund !== undefined && refund.outcome !== null && (JSON.parse(String(refund.outcome)) as PaymentOutcome).outcome === "REFUNDED";
    return {
      orderId,
      customerId: c.customerId,
      chargeOutcome: c.outcome,
      refusalReason: c.outcome === "REFUSED" ? c.reason : undefined,
      amountCents: c.amountCents,
      currency: c.currency,
      decidedAt,
      refunded,
      refundedAt: refunded ? refund.receivedAt : undefined,
    };
  }

  private decided(answer: Exclude<InboxAnswer<PaymentOutcome>, { kind: "conflict" }>, orderId: string, what: "charge" | "refund"): Decided {
    const result = revive(answer.outcome as PaymentOutcome & { movement?: Movement });
    const decided = answer.kind === "handled";
    if (decided) {
      const fields = { orderId, customerId: result.customerId, amountCents: result.amountCents, outcome: result.outcome };
      if (result.outcome === "REFUSED") this.logger.info({ ...fields, reason: result.reason }, `${what} refused`);
      else this.logger.info({ ...fields, movementId: result.movement.movementId }, what === "charge" ? "order charged" : "order refunded");
    }
    return { result, decided };
  }

  /** One inbox-guarded transaction, run again whole on a deadlock or lock timeout. */
  private once<T>(key: string, facts: Facts, effect: (conn: PoolConnection) => Promise<T>): Promise<InboxAnswer<T>> {
    return retryTransient(() => inTransaction(this.pool, (conn) => handleOnce(conn, { key, facts: factsOf(facts), effect: () => effect(conn) })));
  }

  private async findAccount(db: Pick<Pool, "query">, customerId: string): Promise<Account | undefined> {
    const [rows] = await db.query<RowDataPacket[]>(`SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE customer_id = ? AND kind = 'CUSTOMER'`, [customerId]);
    return rows[0] ? toAccount(rows[0]) : undefined;
  }

  /** Writes a movement's two entries (debit negative, credit positive: they sum to zero); returns the entry `seenBy` sees. */
  private async move(
    conn: PoolConnection,
    m: { kind: MovementKind; debit: string; credit: string; amountCents: number; currency: string; orderId?: string; requestId?: string; seenBy: string },
  ): Promise<Movement> {
    const movementId = newId();
    const createdAt = new Date();
    const entries = [
      { id: newId(), accountId: m.debit, amountCents: -m.amountCents },
      { id: newId(), accountId: m.credit, amountCents: m.amountCents },
    ];
    await conn.query(
      `INSERT INTO ledger_entries (id, movement_id, account_id, kind, amount_cents, currency, order_id, request_id, created_at) VALUES ?`,
      [entries.map((e) => [e.id, movementId, e.accountId, m.kind, e.amountCents, m.currency, m.orderId ?? null, m.requestId ?? null, createdAt])],
    );
    const own = entries.find((e) => e.accountId === m.seenBy)!;
    return { id: own.id, movementId, kind: m.kind, amountCents: own.amountCents, currency: m.currency, orderId: m.orderId ?? null, requestId: m.requestId ?? null, createdAt };
  }

  /** The outcome's row for delivery back to the order service, in the deciding transaction. */
  private async enqueueOutcome(conn: PoolConnection, key: string, orderId: string, o: PaymentOutcome, traceparent: string | undefined): Promise<void> {
    await conn.query(
      `INSERT INTO payment_outbox (message_key, order_id, customer_id, outcome, reason, amount_cents, currency, status, attempts, next_attempt_at, created_at, traceparent)
       VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, NOW(3), NOW(3), ?)`,
      [key, orderId, o.customerId, o.outcome, o.outcome === "REFUSED" ? o.reason : null, o.amountCents, o.currency, traceparent || null],
    );
  }
}
