import { ANY_ID, decodeTimeToken, encodeTimeToken } from "@shop/platform/paging";

/**
 * ListOrderPayments' page token: the position (decided_at, order id) of the
 * last row returned, as the platform's time tokens write it, with any order
 * id ChargeOrder accepted (not only ULIDs). A token carries only the
 * position: it never grants what a first page would not.
 */

export interface OrderTimePosition {
  at: Date;
  orderId: string;
}

export function encodeOrderTimeToken(at: Date, orderId: string): string {
  return encodeTimeToken(at, orderId);
}

/** undefined for "" (the first page); INVALID_ARGUMENT when it is not a token this service made. */
export function decodeOrderTimeToken(token: string): OrderTimePosition | undefined {
  const position = decodeTimeToken(token, ANY_ID);
  return position && { at: position.at, orderId: position.id };
}
