import { Code, ConnectError } from "@connectrpc/connect";

/** What to do with an outbox row after a failed call (or one failed batch item). */
export type FailureKind = "retryable" | "permanent";

/**
 * Why a call (or one batch item) failed, which decides more than retry or not:
 *
 * - `request`: this request is wrong and will stay wrong; the row goes dead.
 * - `misconfigured`: the caller or the endpoint is set up wrong (a token the
 *   receiving service does not accept, a token without the scope, a URL that
 *   does not serve the method). Every request fails alike and none is at
 *   fault, so rows are retried with backoff, never parked, and the failure is
 *   logged at error level and alerted on until an operator fixes it.
 * - `unavailable`: the service or the network is down or busy; never the
 *   request's fault, retried with backoff.
 * - `suspect`: the service failed in a way the request's content may have
 *   caused (one poison row can make a whole batch INTERNAL or time out). A
 *   batch failing this way is split to find the row; a row that keeps failing
 *   on its own is parked after the flow's maxAttempts (RELAY_MAX_ATTEMPTS for vouchers).
 */
export type FailureCause = "request" | "misconfigured" | "unavailable" | "suspect";

/**
 * Codes that mean "this request is wrong and will stay wrong". ALREADY_EXISTS
 * is here because an idempotent receiver answers it for a key it holds with
 * different content (the voucher service: an order id with another customer
 * or total). PERMISSION_DENIED is not: it is the
 * caller's scope, the same for every request (it used to park every row).
 */
const REQUEST: ReadonlySet<Code> = new Set([Code.InvalidArgument, Code.FailedPrecondition, Code.AlreadyExists, Code.OutOfRange, Code.NotFound]);

/**
 * UNAUTHENTICATED and PERMISSION_DENIED are the caller's token or scope;
 * UNIMPLEMENTED is a URL pointing at something that does not serve the method
 * (HTTP 404 from a proxy maps to it too). A proxy answering 401 or 403 shows
 * up as the first two as well.
 */
const MISCONFIGURED: ReadonlySet<Code> = new Set([Code.Unauthenticated, Code.PermissionDenied, Code.Unimplemented]);

/**
 * Outages and overload that no request content causes: UNAVAILABLE (down,
 * restarting, connection refused, the receiver's database unreachable), ABORTED
 * (a concurrency conflict), CANCELED (the call was given up on).
 */
const UNAVAILABLE: ReadonlySet<Code> = new Set([Code.Unavailable, Code.Aborted, Code.Canceled]);

/**
 * The cause of a status code. Everything not listed above is `suspect`:
 * INTERNAL, UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (also what grpc-js
 * answers for a message over the receiver's size limit), DATA_LOSS, and codes
 * this version does not know. Losing a delivery (a voucher, a charge) to a wrong
 * guess is worse than retrying a hopeless row, so nothing unknown is `request`.
 */
export function failureCause(code: number): FailureCause {
  const c = code as Code;
  if (REQUEST.has(c)) return "request";
  if (MISCONFIGURED.has(c)) return "misconfigured";
  if (UNAVAILABLE.has(c)) return "unavailable";
  return "suspect";
}

/**
 * Retry or give up, by status code; the one rule every flow's relay and the
 * reconciler share. Only `request` codes are permanent: a misconfigured caller,
 * an outage or a failure the request may have caused is retried (the relay
 * parks a row that keeps failing on its own after maxAttempts).
 */
export function classifyCode(code: number): FailureKind {
  return failureCause(code) === "request" ? "permanent" : "retryable";
}

/** Classifies a failed call; anything that is not a ConnectError counts as UNKNOWN (retryable, suspect). */
export function classifyCallError(err: unknown): { kind: FailureKind; code: Code; message: string } {
  const ce = ConnectError.from(err);
  return { kind: classifyCode(ce.code), code: ce.code, message: `${codeName(ce.code)}: ${ce.rawMessage}` };
}

/** The status name as gRPC spells it (DEADLINE_EXCEEDED), for logs and last_error. */
export function codeName(code: number): string {
  const name = Code[code as Code];
  return name ? name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase() : `CODE_${code}`;
}
