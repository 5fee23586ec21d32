import { invalidArgument } from "./errors.js";

// Page tokens are opaque to callers (base64url) but carry only the keyset
// position, so a token never grants anything a first page would not.

const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;
const BASE64URL = /^[A-Za-z0-9_-]{1,200}$/;
const MIN_DATE = Date.UTC(1000, 0, 1);
const MAX_DATE = Date.UTC(10000, 0, 1) - 1;

function decode(token: string): string | undefined {
  if (!BASE64URL.test(token)) return undefined;
  const text = Buffer.from(token, "base64url").toString("utf8");
  // Round-trip check: Node's decoder skips junk silently.
  return Buffer.from(text, "utf8").toString("base64url") === token ? text : undefined;
}

function malformed(): never {
  throw invalidArgument("page_token is malformed; pass back next_page_token unchanged");
}

/** Position in a newest-first listing: the last id returned (ids are ULIDs). */
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

/** Position in a listing ordered by (time, id): the last row returned. */
export interface TimePosition {
  at: Date;
  id: string;
}

export function encodeTimeToken(at: Date, id: string): string {
  return Buffer.from(`${at.getTime()}.${id}`, "utf8").toString("base64url");
}

/** Any id a request may carry (the platform's ID_PATTERN, 1 to 64 characters), for listings keyed by ids that are not ULIDs. */
export const ANY_ID = /^[A-Za-z0-9._:-]{1,64}$/;

/**
 * undefined for "" (the first page); INVALID_ARGUMENT when it is not a token
 * this service made. `id` is what the listing's ids look like: ULIDs unless
 * told otherwise (ANY_ID for order ids).
 */
export function decodeTimeToken(token: string, id: RegExp = ULID): TimePosition | undefined {
  if (token === "") return undefined;
  const m = /^(\d{1,15})\.(.+)$/s.exec(decode(token) ?? "");
  if (!m || !id.test(m[2]!)) malformed();
  return { at: new Date(Number(m[1])), id: m[2]! };
}

export interface TimeWindow {
  /** Inclusive; undefined means the beginning. */
  after?: Date;
  /** Exclusive; undefined means now (the database's clock, which stamps the rows). */
  before?: Date;
}

/** Validates a [<field>_after, <field>_before) window, e.g. field "sent" for sent_after/sent_before. */
export function timeWindow(field: string, after: Date | undefined, before: Date | undefined): TimeWindow {
  for (const [name, d] of [[`${field}_after`, after], [`${field}_before`, before]] as const) {
    if (d && !(d.getTime() >= MIN_DATE && d.getTime() <= MAX_DATE)) {
      throw invalidArgument(`${name} must be between the years 1000 and 9999`);
    }
  }
  if (after && before && after.getTime() > before.getTime()) throw invalidArgument(`${field}_after must not be later than ${field}_before`);
  return { after, before };
}
