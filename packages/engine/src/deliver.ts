import { ConnectError, type Code } from "@connectrpc/connect";
import { SpanKind, SpanStatusCode, withChildSpan } from "@shop/platform/tracing";
import { classifyCode, codeName, failureCause, type FailureCause, type FailureKind } from "./classify.js";
import { OWN_FAILURE_MARK, type Claimed, type Flow, type ItemResult } from "./flow.js";

/** What became of one row in one delivery attempt. */
export type Outcome<Row extends object, Result> = Delivered<Row, Result> | Failed<Row>;
export type Delivered<Row extends object, Result> = { row: Claimed<Row>; kind: "delivered"; result: Result; created: boolean };
export type Failed<Row extends object> = {
  row: Claimed<Row>;
  kind: FailureKind;
  error: string;
  cause: FailureCause;
  /**
   * The failure is this row's own, not the receiver's nor the caller's: its
   * own item failed in an answered batch, or it failed alone while the
   * receiver answered its neighbours. Only such failures count towards
   * maxAttempts: an outage or a wrong token never parks a row.
   */
  ownFault: boolean;
};

/** A call that failed as a whole, for the relay's log and metrics. */
export interface CallFailure {
  /** The transport's batchMethod or singleMethod. */
  method: string;
  code: Code;
  cause: FailureCause;
  /** The status name and the receiver's message. */
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
  /** Default "relay.deliver". */
  spanName?: string;
}

/**
 * Delivers the claimed rows with the flow's transport, outside any database
 * transaction, and says per row what happened. Never throws.
 *
 * One batch call carries the claim (batching is the main throughput lever)
 * and answers per item. Rows whose last failure was their own go in a second
 * call beside it, so a poison row found once no longer fails its neighbours.
 * If a batch fails as a whole:
 *
 * - with a permanent code, the request as a whole was refused, which one bad
 *   row can cause: each row is sent alone with the single call and only the
 *   bad one goes dead;
 * - with a suspect code (INTERNAL, DEADLINE_EXCEEDED, …), one poison row may
 *   be failing everyone: the batch is split (see bisect);
 * - with any other code (an outage, a misconfigured relay), every row is
 *   retried, none blamed.
 */
export async function deliverRows<Row extends object, Result>(
  flow: Flow<Row, Result>,
  rows: Array<Claimed<Row>>,
  opts: DeliverOptions,
): Promise<Array<Outcome<Row, Result>>> {
  if (rows.length === 0) return [];
  // One span per batch, not per row (the relay's hot path): it links to every
  // row's trace, and its traceparent travels in the call's headers.
  return withChildSpan(
    opts.spanName ?? "relay.deliver",
    undefined,
    async (span) => {
      const d = new Delivery(flow, opts);
      const parts = await Promise.all([d.group(rows.filter((r) => !r.failedOnItsOwn)), d.group(rows.filter((r) => r.failedOnItsOwn), true)]);
      const byId = new Map(parts.flat().map((o) => [o.row.id, o]));
      const outcomes = rows.map((r) => byId.get(r.id)!);
      const delivered = outcomes.filter((o) => o.kind === "delivered").length;
      span.setAttributes({ "outbox.flow": flow.name, "outbox.rows": rows.length, "outbox.delivered": delivered, "outbox.failed": rows.length - delivered });
      if (delivered < rows.length) span.setStatus({ code: SpanStatusCode.ERROR, message: `${rows.length - delivered} of ${rows.length} not delivered` });
      return outcomes;
    },
    { kind: SpanKind.CLIENT, links: rows.map((r) => r.traceparent) },
  );
}

type CallResult<Row extends object, Result> = { ok: Array<Outcome<Row, Result>> } | { failed: CallFailure };

/** One claim's calls: the time budget they share, and whether any of them got through. */
class Delivery<Row extends object, Result> {
  private readonly now: () => number;
  /** Some call of this claim was answered: the receiver works, so a row failing alone is at fault. */
  private answered = false;

  constructor(
    private readonly flow: Flow<Row, Result>,
    private readonly opts: DeliverOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  private get transport() {
    return this.flow.def.deliver;
  }

  private timeForACall(): boolean {
    return this.now() + this.opts.callTimeoutMs <= this.opts.callsEndBy;
  }

  /** `suspected`: the rows' last failure was their own, so a lone row's suspect failure now is its own again. */
  async group(rows: Array<Claimed<Row>>, suspected = false): Promise<Array<Outcome<Row, Result>>> {
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
   * none of this claim was answered (an overloaded or broken receiver, not a
   * row: splitting further would only multiply the calls), and when the next
   * level could not end within the lease. With one poison row a level costs
   * two calls and the search log2(batch) levels; each level takes at most one
   * call timeout.
   */
  private async bisect(rows: Array<Claimed<Row>>, firstFailure: CallFailure): Promise<Array<Outcome<Row, Result>>> {
    const outcomes: Array<Outcome<Row, Result>> = [];
    let failing: Array<{ rows: Array<Claimed<Row>>; failure: CallFailure }> = [{ rows, failure: firstFailure }];
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
          // The receiver went away or refused the request as a whole mid-search: nobody's fault here.
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

  private async batch(rows: Array<Claimed<Row>>): Promise<CallResult<Row, Result>> {
    const method = this.transport.batchMethod;
    let results: Array<ItemResult<Result>>;
    try {
      results = await this.transport.batch(rows, { timeoutMs: this.opts.callTimeoutMs });
    } catch (err) {
      return { failed: this.callFailed(method, err, rows.length) };
    }
    this.answered = true;
    return {
      ok: rows.map((row, i): Outcome<Row, Result> => {
        const r = results[i];
        if (!r) return own(row, `${method}: no result for this row in the response`);
        if ("own" in r) return own(row, r.own);
        if ("code" in r) {
          const cause = failureCause(r.code);
          const error = `${method} item: ${codeName(r.code)}: ${r.message}`;
          if (cause === "suspect") return own(row, error);
          return { row, kind: classifyCode(r.code), cause, error, ownFault: false };
        }
        return { row, kind: "delivered", result: r.result, created: r.created };
      }),
    };
  }

  /** All rows at once, each in its own call: the whole fallback takes one call timeout, not N. */
  private async oneByOne(rows: Array<Claimed<Row>>): Promise<Array<Outcome<Row, Result>>> {
    const method = this.transport.singleMethod;
    const singles = await Promise.all(
      rows.map(async (row): Promise<Outcome<Row, Result> | { row: Claimed<Row>; failure: CallFailure }> => {
        let r: ItemResult<Result>;
        try {
          r = await this.transport.single(row, { timeoutMs: this.opts.callTimeoutMs });
        } catch (err) {
          return { row, failure: this.callFailed(method, err, 1) };
        }
        this.answered = true;
        if ("own" in r) return own(row, r.own);
        if ("code" in r) {
          const cause = failureCause(r.code);
          const error = `${method}: ${codeName(r.code)}: ${r.message}`;
          if (cause === "suspect") return own(row, error);
          return { row, kind: classifyCode(r.code), cause, error, ownFault: false };
        }
        return { row, kind: "delivered", result: r.result, created: r.created };
      }),
    );
    return singles.map((s) => ("failure" in s ? this.failed(s.row, s.failure, this.answered) : s));
  }

  private callFailed(method: string, err: unknown, rows: number): CallFailure {
    const ce = ConnectError.from(err);
    const failure = { method, code: ce.code, cause: failureCause(ce.code), message: `${codeName(ce.code)}: ${ce.rawMessage}`, rows };
    this.opts.onCallFailure?.(failure);
    return failure;
  }

  /** A row whose call failed as a whole; blamed only for a suspect failure while the receiver answered others. */
  private failed(row: Claimed<Row>, f: CallFailure, blame: boolean): Failed<Row> {
    const error = `${f.method}: ${f.message}`;
    if (f.cause === "suspect" && blame) return own(row, error);
    return { row, kind: classifyCode(f.code), cause: f.cause, error, ownFault: false };
  }

  private retryAll(rows: Array<Claimed<Row>>, f: CallFailure, note = ""): Array<Failed<Row>> {
    return rows.map((row) => ({ row, kind: "retryable", cause: f.cause, error: `${f.method}: ${f.message}${note}`, ownFault: false }));
  }
}

function own<Row extends object>(row: Claimed<Row>, error: string): Failed<Row> {
  return { row, kind: "retryable", cause: "suspect", error: `${OWN_FAILURE_MARK}${error}`, ownFault: true };
}
