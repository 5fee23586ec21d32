import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError, type Code } from "@connectrpc/connect";
import type { VoucherClient } from "@shop/sdk/clients";
import { BatchIssueVouchersRequestSchema, type IssueVoucherRequestSchema } from "@shop/sdk/voucher";
import { normalizeTraceparent, SpanKind, SpanStatusCode, withChildSpan } from "@shop/platform/tracing";
import { OWN_FAILURE_MARK, type ClaimedRow } from "./claim.js";
import { classifyCode, codeName, failureCause, type FailureCause, type FailureKind } from "./classify.js";

/** What became of one row in one delivery attempt. */
export type Outcome = Delivered | Failed;
export type Delivered = { row: ClaimedRow; kind: "delivered"; voucherId: string; created: boolean };
export type Failed = {
  row: ClaimedRow;
  kind: FailureKind;
  error: string;
  cause: FailureCause;
  /**
   * The failure is this row's own, not the service's nor the caller's: its
   * own item failed in an answered batch, or it failed alone while the
   * voucher service answered its neighbours. Only such failures count
   * towards RELAY_MAX_ATTEMPTS: an outage or a wrong token never parks a row.
   */
  ownFault: boolean;
};

/** A call that failed as a whole, for the relay's log and metrics. */
export interface CallFailure {
  method: "BatchIssueVouchers" | "IssueVoucher";
  code: Code;
  cause: FailureCause;
  /** The status name and the service's message. */
  message: string;
  rows: number;
}

export interface DeliverOptions {
  /** Deadline of each call, in ms. */
  callTimeoutMs: number;
  /**
   * No call may start unless it can end by this time (on `now`'s clock): the
   * claim's lease less the time kept for settling, so splitting a failed
   * batch never makes a claim outlive its lease.
   */
  callsEndBy: number;
  /** Default Date.now. */
  now?: () => number;
  /** Told of every call that failed as a whole. */
  onCallFailure?: (failure: CallFailure) => void;
  /** Told when a failed batch is split, with the number of rows split. */
  onSplit?: (rows: number) => void;
}

/**
 * The row's stored traceparent goes along normalized to version 00, or empty
 * if it is unreadable: IssueVoucher refuses a malformed one (INVALID_ARGUMENT,
 * which would park the row as dead), and tracing must never cost a voucher.
 */
export function requestFor(row: ClaimedRow): MessageInitShape<typeof IssueVoucherRequestSchema> {
  return {
    orderId: row.orderId,
    customerId: row.customerId,
    orderTotalCents: BigInt(row.totalCents),
    currency: row.currency,
    traceparent: normalizeTraceparent(row.traceparent) ?? "",
  };
}

/**
 * The largest BatchIssueVouchers request of `items` rows, in bytes as the
 * receiver counts them against its size limit (grpc-js'
 * max_receive_message_length is the encoded protobuf message). Each field is
 * at its column's longest (order_id VARCHAR(26), customer_id VARCHAR(64),
 * currency CHAR(3), utf8mb4 so up to 4 bytes a character), total_cents takes
 * a BIGINT's longest varint, the traceparent is always 55 characters.
 */
export function largestBatchBytes(items: number): number {
  const widest = (chars: number) => String.fromCodePoint(0x10ffff).repeat(chars);
  const item = {
    orderId: widest(26),
    customerId: widest(64),
    orderTotalCents: -(2n ** 63n),
    currency: widest(3),
    traceparent: `00-${"f".repeat(32)}-${"f".repeat(16)}-ff`,
  };
  const one = toBinary(BatchIssueVouchersRequestSchema, create(BatchIssueVouchersRequestSchema, { items: [item] })).length;
  return one * items;
}

/**
 * Asks the voucher service for the vouchers of the claimed rows, outside any
 * database transaction, and says per row what happened. Never throws.
 *
 * One BatchIssueVouchers call carries the claim (batching is the main
 * throughput lever) and answers per item. Rows whose last failure was their
 * own go in a second call beside it, so a poison row found once no longer
 * fails its neighbours. If a batch fails as a whole:
 *
 * - with a permanent code, the request as a whole was refused, which one bad
 *   row can cause: each row is sent alone with IssueVoucher and only the bad
 *   one goes dead;
 * - with a suspect code (INTERNAL, DEADLINE_EXCEEDED, …), one poison row may
 *   be failing everyone: the batch is split (see bisect);
 * - with any other code (an outage, a misconfigured relay), every row is
 *   retried, none blamed.
 */
export async function deliverRows(voucher: VoucherClient, rows: ClaimedRow[], opts: DeliverOptions): Promise<Outcome[]> {
  if (rows.length === 0) return [];
  // One span per batch, not per row (the relay's hot path): it links to every
  // row's trace, and its traceparent travels in the call's headers.
  return withChildSpan(
    "relay.deliver",
    undefined,
    async (span) => {
      const d = new Delivery(voucher, opts);
      const parts = await Promise.all([d.group(rows.filter((r) => !r.failedOnItsOwn)), d.group(rows.filter((r) => r.failedOnItsOwn), true)]);
      const byId = new Map(parts.flat().map((o) => [o.row.id, o]));
      const outcomes = rows.map((r) => byId.get(r.id)!);
      const delivered = outcomes.filter((o) => o.kind === "delivered").length;
      span.setAttributes({ "outbox.rows": rows.length, "outbox.delivered": delivered, "outbox.failed": rows.length - delivered });
      if (delivered < rows.length) span.setStatus({ code: SpanStatusCode.ERROR, message: `${rows.length - delivered} of ${rows.length} not delivered` });
      return outcomes;
    },
    { kind: SpanKind.CLIENT, links: rows.map((r) => r.traceparent) },
  );
}

type CallResult = { ok: Outcome[] } | { failed: CallFailure };

/** One claim's calls: the time budget they share, and whether any of them got through. */
class Delivery {
  private readonly now: () => number;
  /** Some call of this claim was answered: the voucher service works, so a row failing alone is at fault. */
  private answered = false;

  constructor(
    private readonly voucher: VoucherClient,
    private readonly opts: DeliverOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  private timeForACall(): boolean {
    return this.now() + this.opts.callTimeoutMs <= this.opts.callsEndBy;
  }

  /** `suspected`: the rows' last failure was their own, so a lone row's suspect failure now is its own again. */
  async group(rows: ClaimedRow[], suspected = false): Promise<Outcome[]> {
    if (rows.length === 0) return [];
    const first = await this.batch(rows);
    if ("ok" in first) return first.ok;
    const f = first.failed;
    if (f.cause === "request") return this.timeForACall() ? this.oneByOne(rows) : this.retryAll(rows, f);
    if (f.cause !== "suspect") return this.retryAll(rows, f);
    if (rows.length === 1) return [this.failed(rows[0]!, f, suspected)];
    return this.bisect(rows, f);
  }

  /**
   * A batch failed as a whole with a code its content may have caused: halve
   * the failing groups and send the halves at once, level by level, until the
   * rows that fail are alone. A row failing alone while its neighbours got
   * through is at fault (ownFault) and goes apart from them next time; its
   * neighbours are delivered in this round.
   *
   * Stops, retrying the rest unblamed: when every call of a level failed and
   * none of this claim was answered (an overloaded or broken service, not a
   * row: splitting further would only multiply the calls), and when the next
   * level could not end within the lease. With one poison row a level costs
   * two calls and the search log2(batch) levels; each level takes at most one
   * call timeout.
   */
  private async bisect(rows: ClaimedRow[], firstFailure: CallFailure): Promise<Outcome[]> {
    const outcomes: Outcome[] = [];
    let failing: Array<{ rows: ClaimedRow[]; failure: CallFailure }> = [{ rows, failure: firstFailure }];
    for (;;) {
      const splittable = failing.filter((g) => g.rows.length > 1);
      if (splittable.length === 0) break;
      if (!this.timeForACall()) {
        for (const g of splittable) outcomes.push(...this.retryAll(g.rows, g.failure, " (its batch failed as a whole; not split further within the lease)"));
        failing = failing.filter((g) => g.rows.length === 1);
        break;
      }
      this.opts.onSplit?.(splittable.reduce((n, g) => n + g.rows.length, 0));
      const halves = splittable.flatMap((g) => {
        const mid = Math.ceil(g.rows.length / 2);
        return [g.rows.slice(0, mid), g.rows.slice(mid)];
      });
      const results = await Promise.all(halves.map((h) => this.batch(h)));
      const next: typeof failing = failing.filter((g) => g.rows.length === 1);
      results.forEach((r, i) => {
        const half = halves[i]!;
        if ("ok" in r) {
          outcomes.push(...r.ok);
        } else if (r.failed.cause === "suspect") {
          next.push({ rows: half, failure: r.failed });
        } else {
          // The service went away or refused the request as a whole mid-search: nobody's fault here.
          outcomes.push(...this.retryAll(half, r.failed));
        }
      });
      failing = next;
      if (!this.answered) {
        for (const g of failing) outcomes.push(...this.retryAll(g.rows, g.failure, " (its batch and both halves failed as a whole)"));
        return outcomes;
      }
    }
    for (const g of failing) outcomes.push(this.failed(g.rows[0]!, g.failure, this.answered));
    return outcomes;
  }

  private async batch(rows: ClaimedRow[]): Promise<CallResult> {
    let results;
    try {
      const res = await this.voucher.batchIssueVouchers({ items: rows.map(requestFor) }, { timeoutMs: this.opts.callTimeoutMs });
      results = res.results;
    } catch (err) {
      return { failed: this.callFailed("BatchIssueVouchers", err, rows.length) };
    }
    this.answered = true;
    // Matched by order id rather than position, so a server that reorders or
    // drops items cannot attach a voucher to the wrong row.
    const byOrder = new Map(results.map((r) => [r.orderId, r]));
    return {
      ok: rows.map((row): Outcome => {
        const r = byOrder.get(row.orderId);
        if (!r) return own(row, "BatchIssueVouchers: no result for this order in the response");
        if (r.errorCode !== 0) {
          const cause = failureCause(r.errorCode);
          const error = `BatchIssueVouchers item: ${codeName(r.errorCode)}: ${r.errorMessage}`;
          if (cause === "suspect") return own(row, error);
          return { row, kind: classifyCode(r.errorCode), cause, error, ownFault: false };
        }
        if (!r.voucher?.id) return own(row, "BatchIssueVouchers item: success without a voucher id");
        return { row, kind: "delivered", voucherId: r.voucher.id, created: r.created };
      }),
    };
  }

  /** All rows at once, each in its own call: the whole fallback takes one call timeout, not N. */
  private async oneByOne(rows: ClaimedRow[]): Promise<Outcome[]> {
    const singles = await Promise.all(
      rows.map(async (row): Promise<Outcome | { row: ClaimedRow; failure: CallFailure }> => {
        try {
          const res = await this.voucher.issueVoucher(requestFor(row), { timeoutMs: this.opts.callTimeoutMs });
          this.answered = true;
          if (!res.voucher?.id) return own(row, "IssueVoucher: success without a voucher id");
          return { row, kind: "delivered", voucherId: res.voucher.id, created: res.created };
        } catch (err) {
          return { row, failure: this.callFailed("IssueVoucher", err, 1) };
        }
      }),
    );
    return singles.map((s) => ("failure" in s ? this.failed(s.row, s.failure, this.answered) : s));
  }

  private callFailed(method: CallFailure["method"], err: unknown, rows: number): CallFailure {
    const ce = ConnectError.from(err);
    const failure = { method, code: ce.code, cause: failureCause(ce.code), message: `${codeName(ce.code)}: ${ce.rawMessage}`, rows };
    this.opts.onCallFailure?.(failure);
    return failure;
  }

  /** A row whose call failed as a whole; blamed only for a suspect failure while the service answered others. */
  private failed(row: ClaimedRow, f: CallFailure, blame: boolean): Failed {
    const error = `${f.method}: ${f.message}`;
    if (f.cause === "suspect" && blame) return own(row, error);
    return { row, kind: classifyCode(f.code), cause: f.cause, error, ownFault: false };
  }

  private retryAll(rows: ClaimedRow[], f: CallFailure, note = ""): Failed[] {
    return rows.map((row) => ({ row, kind: "retryable", cause: f.cause, error: `${f.method}: ${f.message}${note}`, ownFault: false }));
  }
}

function own(row: ClaimedRow, error: string): Failed {
  return { row, kind: "retryable", cause: "suspect", error: `${OWN_FAILURE_MARK}${error}`, ownFault: true };
}
