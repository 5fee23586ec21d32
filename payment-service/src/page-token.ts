import { invalidArgument } from "@shop/platform/errors";

/**
 * ListOrderPayments' page token: the position (decided_at, order id) of the
 * last row returned, as the platform's time tokens (paging.ts) write it,
 * base64url of "<epoch ms>.<id>". paging.ts' decoder accepts ULIDs only, and
 * an order id here is any id ChargeOrder accepted (1 to 64 of A-Z a-z 0-9 . _ : -),
 * so this one checks against that; for a ULID the token is the same bytes.
 * A token carries only the position: it never grants what a first page would not.
 */

const BASE64URL = /^[A-Za-z0-9_-]{1,200}$/;
const POSITION = /^(\d{1,15})\.([A-Za-z0-9._:-]{1,64})$/;

export interface OrderTimePosition {
  at: Date;
  orderId: string;
}

export function encodeOrderTimeToken(at: Date, orderId: string): string {
  return Buffer.from(`${at.getTime()}.${orderId}`, "utf8").toString("base64url");
}

/** undefined for "" (the first page); INVALID_ARGUMENT when it is not a token this service made. */
export function decodeOrderTimeToken(token: string): OrderTimePosition | undefined {
  if (token === "") return undefined;
  const text = BASE64URL.test(token) ? Buffer.from(token, "base64url").toString("utf8") : undefined;
  // Round-trip check: Node's decoder skips junk silently.
  const m = text !== undefined && Buffer.from(text, "utf8").toString("base64url") === token ? POSITION.exec(text) : null;
  if (!m) throw invalidArgument("page_token is malformed; pass back next_page_token unchanged");
  return { at: new Date(Number(m[1])), orderId: m[2]! };
}
