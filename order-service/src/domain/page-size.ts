/** Page sizes of the listings, as documented in the protos. */
export const LIST_ORDERS_PAGE = { default: 50, max: 500 } as const;
export const LIST_SENT_ORDERS_PAGE = { default: 1000, max: 5000 } as const;

/**
 * 0 means the default; above the maximum is lowered to it (as AIP-158
 * suggests). A negative size never gets here: the proto's rule refuses it.
 */
export function pageSize(requested: number, limits: { default: number; max: number }): number {
  return requested === 0 ? limits.default : Math.min(requested, limits.max);
}
