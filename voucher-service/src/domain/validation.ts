import { idProblem } from "@shop/platform/ids";
import { invalidArgument, type DomainError } from "@shop/platform/errors";
import { VOUCHER_CURRENCY, type IssueRequest } from "./voucher.js";

/** Largest order total accepted: 100 million EUR, far above any real order, far below 2^53. */
export const MAX_ORDER_TOTAL_CENTS = 10_000_000_000n;
/** BatchGetVouchersByOrder limit, as documented in the proto. */
export const MAX_ORDER_IDS_PER_LOOKUP = 5000;
export const MAX_VOID_REASON_CHARS = 255;

export type Validated<T> = { ok: true; value: T } | { ok: false; error: DomainError };

export interface RawIssueRequest {
  orderId: string;
  customerId: string;
  orderTotalCents: bigint;
  currency: string;
  /**
   * W3C traceparent of the request that asked for the voucher (the outbox
   * row's), parent of the issue's span. Never validated here: an invalid one
   * is ignored, as tracing must never fail an issue.
   */
  traceparent?: string;
}

/**
 * Checks an IssueVoucher request. The "more than 100 EUR" rule is the order
 * service's alone; here only the facts are checked, so the rule is written once.
 */
export function validateIssueRequest(raw: RawIssueRequest): Validated<IssueRequest> {
  const problem =
    idProblem("order_id", raw.orderId) ??
    idProblem("customer_id", raw.customerId) ??
    (raw.orderTotalCents <= 0n
      ? "order_total_cents must be greater than 0"
      : raw.orderTotalCents > MAX_ORDER_TOTAL_CENTS
        ? `order_total_cents must be at most ${MAX_ORDER_TOTAL_CENTS}`
        : undefined) ??
    (raw.currency !== VOUCHER_CURRENCY
      ? `currency must be "${VOUCHER_CURRENCY}" (got ${JSON.stringify(raw.currency)})`
      : undefined);
  if (problem) return { ok: false, error: invalidArgument(problem) };
  return {
    ok: true,
    value: {
      orderId: raw.orderId,
      customerId: raw.customerId,
      orderTotalCents: Number(raw.orderTotalCents),
      currency: VOUCHER_CURRENCY,
    },
  };
}

/** Items per batch within [1, maxBatch], and no order twice: two items for one order cannot both be answered honestly. */
export function checkBatchShape(orderIds: string[], maxBatch: number): void {
  if (orderIds.length === 0) throw invalidArgument("items must not be empty");
  if (orderIds.length > maxBatch) throw invalidArgument(`items has ${orderIds.length} entries; at most ${maxBatch} are allowed`);
  const seen = new Map<string, number>();
  orderIds.forEach((orderId, i) => {
    // Empty ids are reported per item as missing, not as duplicates of each other.
    if (orderId === "") return;
    const first = seen.get(orderId);
    if (first !== undefined) throw invalidArgument(`items[${first}] and items[${i}] have the same order_id ${JSON.stringify(orderId)}`);
    seen.set(orderId, i);
  });
}

/** 0 means the default; above the maximum is lowered to it (as AIP-158 suggests); negative is an error. */
export function pageSize(requested: number, def: number, max: number): number {
  if (requested < 0) throw invalidArgument("page_size must not be negative");
  if (requested === 0) return def;
  return Math.min(requested, max);
}

export function voidReason(reason: string): string {
  const chars = [...reason].length;
  if (reason.trim() === "") throw invalidArgument("reason is required");
  if (chars > MAX_VOID_REASON_CHARS) throw invalidArgument(`reason is ${chars} characters; at most ${MAX_VOID_REASON_CHARS} are allowed`);
  return reason;
}

export function orderIdsToLookUp(orderIds: string[]): string[] {
  if (orderIds.length > MAX_ORDER_IDS_PER_LOOKUP) {
    throw invalidArgument(`order_ids has ${orderIds.length} entries; at most ${MAX_ORDER_IDS_PER_LOOKUP} are allowed`);
  }
  orderIds.forEach((id, i) => {
    const problem = idProblem(`order_ids[${i}]`, id);
    if (problem) throw invalidArgument(problem);
  });
  return [...new Set(orderIds)];
}

