import { invalidArgument } from "@shop/platform/errors";

// Tokens are opaque to callers (base64url) but carry only the keyset
// position, so a token never grants anything a first page would not.

const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;
const BASE64URL = /^[A-Za-z0-9_-]{1,200}$/;

function decode(token: string): string | undefined {
  if (!BASE64URL.test(token)) return undefined;
  const text = Buffer.from(token, "base64url").toString("utf8");
  // Round-trip check: Node's decoder skips junk silently.
  return Buffer.from(text, "utf8").toString("base64url") === token ? text : undefined;
}

function malformed(): never {
  throw invalidArgument("page_token is malformed; pass back next_page_token unchanged");
}

/** ListVouchers position: the last id returned (ids are ULIDs, newest first). */
export function encodeIdToken(lastId: string): string {
  return Buffer.from(lastId, "utf8").toString("base64url");
}

/** undefined for "" (the first page); INVALID_ARGUMENT when it is not a token this service made. */
export function decodeIdToken(token: string): string | undefined {
  if (token === "") return undefined;
  const id = decode(token);
  if (id === undefined || !ULID.test(id)) malformed();
  return id;
}

export interface IssuedPosition {
  issuedAt: Date;
  id: string;
}

/** ListIssuedVouchers position: (issued_at in ms, id) of the last voucher returned. */
export function encodeIssuedToken(pos: IssuedPosition): string {
  return Buffer.from(`${pos.issuedAt.getTime()}.${pos.id}`, "utf8").toString("base64url");
}

export function decodeIssuedToken(token: string): IssuedPosition | undefined {
  if (token === "") return undefined;
  const m = /^(\d{1,15})\.([0-9A-HJKMNP-TV-Z]{26})$/.exec(decode(token) ?? "");
  if (!m) malformed();
  return { issuedAt: new Date(Number(m[1])), id: m[2]! };
}
