import type { MessageInitShape } from "@bufbuild/protobuf";
import type { VoucherClient } from "@shop/sdk/clients";
import type { IssueVoucherRequestSchema } from "@shop/sdk/voucher";
import { normalizeTraceparent, SpanKind, SpanStatusCode, withChildSpan } from "@shop/platform/tracing";
import type { ClaimedRow } from "./claim.js";
import { classifyCallError, classifyCode, codeName, type FailureKind } from "./classify.js";

/** What became of one row in one delivery attempt. */
export type Outcome = Delivered | Failed;
export type Delivered = { row: ClaimedRow; kind: "delivered"; voucherId: string; created: boolean };
export type Failed = { row: ClaimedRow; kind: FailureKind; error: string };

export interface DeliverOptions {
  /** Deadline of each call, in ms. */
  callTimeoutMs: number;
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
 * Asks the voucher service for the vouchers of the claimed rows, outside any
 * database transaction, and says per row what happened. Never throws.
 *
 * One BatchIssueVouchers call carries the whole claim (batching is the main
 * throughput lever) and answers per item. If the whole call fails with a
 * retryable code every row is retried; if it fails with a permanent code the
 * request as a whole was refused, which one bad row can cause, so each row is
 * sent alone with IssueVoucher and only the bad one goes dead.
 */
export async function deliverRows(voucher: VoucherClient, rows: ClaimedRow[], opts: DeliverOptions): Promise<Outcome[]> {
  if (rows.length === 0) return [];
  // One span per batch, not per row (the relay's hot path): it links to every
  // row's trace, and its traceparent travels in the call's headers.
  return withChildSpan(
    "relay.deliver",
    undefined,
    async (span) => {
      const outcomes = await deliverBatch(voucher, rows, opts);
      const delivered = outcomes.filter((o) => o.kind === "delivered").length;
      span.setAttributes({ "outbox.rows": rows.length, "outbox.delivered": delivered, "outbox.failed": rows.length - delivered });
      if (delivered < rows.length) span.setStatus({ code: SpanStatusCode.ERROR, message: `${rows.length - delivered} of ${rows.length} not delivered` });
      return outcomes;
    },
    { kind: SpanKind.CLIENT, links: rows.map((r) => r.traceparent) },
  );
}

async function deliverBatch(voucher: VoucherClient, rows: ClaimedRow[], opts: DeliverOptions): Promise<Outcome[]> {
  let results;
  try {
    const res = await voucher.batchIssueVouchers({ items: rows.map(requestFor) }, { timeoutMs: opts.callTimeoutMs });
    results = res.results;
  } catch (err) {
    const failure = classifyCallError(err);
    if (failure.kind === "retryable") {
      return rows.map((row) => ({ row, kind: "retryable", error: `BatchIssueVouchers: ${failure.message}` }));
    }
    return deliverOneByOne(voucher, rows, opts);
  }

  // Matched by order id rather than position, so a server that reorders or
  // drops items cannot attach a voucher to the wrong row.
  const byOrder = new Map(results.map((r) => [r.orderId, r]));
  return rows.map((row): Outcome => {
    const r = byOrder.get(row.orderId);
    if (!r) return { row, kind: "retryable", error: "BatchIssueVouchers: no result for this order in the response" };
    if (r.errorCode !== 0) {
      return { row, kind: classifyCode(r.errorCode), error: `BatchIssueVouchers item: ${codeName(r.errorCode)}: ${r.errorMessage}` };
    }
    if (!r.voucher?.id) return { row, kind: "retryable", error: "BatchIssueVouchers item: success without a voucher id" };
    return { row, kind: "delivered", voucherId: r.voucher.id, created: r.created };
  });
}

/** All rows at once, each in its own call: the whole fallback takes one call timeout, not N. */
async function deliverOneByOne(voucher: VoucherClient, rows: ClaimedRow[], opts: DeliverOptions): Promise<Outcome[]> {
  return Promise.all(
    rows.map(async (row): Promise<Outcome> => {
      try {
        const res = await voucher.issueVoucher(requestFor(row), { timeoutMs: opts.callTimeoutMs });
        if (!res.voucher?.id) return { row, kind: "retryable", error: "IssueVoucher: success without a voucher id" };
        return { row, kind: "delivered", voucherId: res.voucher.id, created: res.created };
      } catch (err) {
        const failure = classifyCallError(err);
        return { row, kind: failure.kind, error: `IssueVoucher: ${failure.message}` };
      }
    }),
  );
}
