import { Code, ConnectError } from "@connectrpc/connect";

/** What kind of refusal a domain error is; each maps to one gRPC status code. */
export type ErrorKind = "invalid_argument" | "not_found" | "failed_precondition" | "already_exists" | "permission_denied";

/** An expected refusal whose message is safe to show the caller. */
export class DomainError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "DomainError";
  }
}

export const invalidArgument = (message: string) => new DomainError("invalid_argument", message);
export const notFound = (message: string) => new DomainError("not_found", message);
export const failedPrecondition = (message: string) => new DomainError("failed_precondition", message);
export const alreadyExists = (message: string) => new DomainError("already_exists", message);
export const permissionDenied = (message: string) => new DomainError("permission_denied", message);

const CODES: Record<ErrorKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  failed_precondition: Code.FailedPrecondition,
  already_exists: Code.AlreadyExists,
  permission_denied: Code.PermissionDenied,
};

/**
 * The one place errors become statuses: domain errors keep their message,
 * ConnectErrors pass through, anything else becomes INTERNAL with a generic
 * message (the cause goes to the log, never to the caller).
 */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof DomainError) return new ConnectError(err.message, CODES[err.kind]);
  if (isUnavailable(err)) return new ConnectError("storage unavailable, retry later", Code.Unavailable, undefined, undefined, err);
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}

const UNAVAILABLE_ERRNO = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "PROTOCOL_CONNECTION_LOST", "ER_CON_COUNT_ERROR"]);

function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && UNAVAILABLE_ERRNO.has(code);
}
