import { requireId } from "@shop/platform/ids";
import { invalidArgument } from "@shop/platform/errors";
import { ORDER_CURRENCY, type NewOrder } from "./order.js";

/** Largest order total accepted: 100 million EUR, far above any real order, far below 2^53. */
export const MAX_ORDER_TOTAL_CENTS = 10_000_000_000n;
/** BatchGetOrders limit, as documented in the proto. */
export const MAX_BATCH_GET_IDS = 5000;

export const LIST_ORDERS_PAGE = { default: 50, max: 500 } as const;
export const LIST_SENT_ORDERS_PAGE = { default: 1000, max: 5000 } as const;

export interface RawCreateOrder {
  customerId: string;
  totalCents: bigint;
  currency: string;
  requestId: string;
}

export function validateCreateOrder(raw: RawCreateOrder): NewOrder {
  requireId("customer_id", raw.customerId);
  if (raw.totalCents <= 0n) throw invalidArgument(`total_cents must be greater than 0 (got ${raw.totalCents})`);
  if (raw.totalCents > MAX_ORDER_TOTAL_CENTS) {
    throw invalidArgument(`total_cents must be at most ${MAX_ORDER_TOTAL_CENTS} (got ${raw.totalCents})`);
  }
  if (raw.currency === "") throw invalidArgument("currency is required");
  if (raw.currency !== ORDER_CURRENCY) {
    throw invalidArgument(`currency ${JSON.stringify(raw.currency)} is not accepted; only "${ORDER_CURRENCY}" is`);
  }
  requireId("request_id", raw.requestId);
  return { customerId: raw.customerId, totalCents: Number(raw.totalCents), currency: ORDER_CURRENCY, requestId: raw.requestId };
}

/** 0 means the default; above the maximum is lowered to it (as AIP-158 suggests); negative is an error. */
export function pageSize(requested: number, limits: { default: number; max: number }): number {
  if (requested < 0) throw invalidArgument(`page_size must not be negative (got ${requested})`);
  if (requested === 0) return limits.default;
  return Math.min(requested, limits.max);
}

/** Distinct ids in request order; every one must be a valid id. */
export function orderIdsToLookUp(orderIds: string[]): string[] {
  if (orderIds.length > MAX_BATCH_GET_IDS) {
    throw invalidArgument(`order_ids has ${orderIds.length} entries; at most ${MAX_BATCH_GET_IDS} are allowed`);
  }
  orderIds.forEach((id, i) => requireId(`order_ids[${i}]`, id));
  return [...new Set(orderIds)];
}

