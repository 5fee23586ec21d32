import { Code, ConnectError } from "@connectrpc/connect";

/** What to do with a row after a failed IssueVoucher (or one failed batch item). */
export type FailureKind = "retryable" | "permanent";

/**
 * Codes that mean "this request is wrong and will stay wrong": retrying
 * cannot help, so the row goes dead and waits for a person or the
 * reconciler. ALREADY_EXISTS is here because the voucher service answers it
 * for an order id it holds with a different customer or total.
 */
const PERMANENT: ReadonlySet<Code> = new Set([
  Code.InvalidArgument,
  Code.FailedPrecondition,
  Code.AlreadyExists,
  Code.OutOfRange,
  Code.NotFound,
  Code.PermissionDenied,
]);

/**
 * Classifies a gRPC status code. Everything not known to be permanent is
 * retried: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED,
 * INTERNAL, UNKNOWN and CANCELED are transient by nature, and
 * UNAUTHENTICATED or UNIMPLEMENTED come from a misdeployment that an operator
 * fixes, after which the row must still be delivered. Losing a voucher to a
 * wrong guess is worse than retrying a hopeless row.
 */
export function classifyCode(code: number): FailureKind {
  return PERMANENT.has(code as Code) ? "permanent" : "retryable";
}

/** Classifies a failed call; anything that is not a ConnectError counts as UNKNOWN (retryable). */
export function classifyCallError(err: unknown): { kind: FailureKind; code: Code; message: string } {
  const ce = ConnectError.from(err);
  return { kind: classifyCode(ce.code), code: ce.code, message: `${codeName(ce.code)}: ${ce.rawMessage}` };
}

/** The status name as gRPC spells it (DEADLINE_EXCEEDED), for logs and last_error. */
export function codeName(code: number): string {
  const name = Code[code as Code];
  return name ? name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase() : `CODE_${code}`;
}
