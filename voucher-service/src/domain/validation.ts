import { invalidArgument } from "@shop/platform/errors";
import { VOUCHER_CURRENCY, type IssueRequest } from "./voucher.js";

// The protos' rules are checked before any handler runs (ids, totals,
// currency, sizes, reasons, windows); what is here is what a proto cannot say.

export interface RawIssueRequest {
  orderId: string;
  customerId: string;
  orderTotalCents: bigint;
  currency: string;
  /**
   * W3C traceparent of the request that asked for the voucher (the outbox
   * row's), parent of the issue's span. An invalid one is ignored here, as
   * tracing must never fail an issue.
   */
  traceparent?: string;
}

/**
 * An IssueVoucher request (or batch item) that passed IssueVoucherRequest's
 * rules, as the domain takes it: those rules hold order_total_cents to
 * 1..10^10, exact as a number, and currency to "EUR". The "more than 100 EUR"
 * rule is the order service's alone: here only the facts are taken.
 */
export function toIssueRequest(raw: RawIssueRequest): IssueRequest {
  return { orderId: raw.orderId, customerId: raw.customerId, orderTotalCents: Number(raw.orderTotalCents), currency: VOUCHER_CURRENCY };
}

/**
 * At most maxBatch items (VOUCHER_MAX_BATCH, which may be below the proto's
 * 1000), and no order twice: two items for one order cannot both be answered
 * honestly.
 */
export function checkBatchShape(orderIds: string[], maxBatch: number): void {
  if (orderIds.length > maxBatch) throw invalidArgument(`items has ${orderIds.length} entries; at most ${maxBatch} are allowed`);
  const seen = new Map<string, number>();
  orderIds.forEach((orderId, i) => {
    // Empty ids are refused per item, not reported as duplicates of each other.
    if (orderId === "") return;
    const first = seen.get(orderId);
    if (first !== undefined) throw invalidArgument(`items[${first}] and items[${i}] have the same order_id ${JSON.stringify(orderId)}`);
    seen.set(orderId, i);
  });
}

/** 0 means the default; above the maximum is lowered to it (as AIP-158 suggests). The proto refuses a negative one. */
export function pageSize(requested: number, def: number, max: number): number {
  return requested === 0 ? def : Math.min(requested, max);
}
