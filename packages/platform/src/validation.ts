import type { DescMethod, Message } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { createValidator, type Validator, type Violation } from "@bufbuild/protovalidate";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Checks a request against the protovalidate rules declared in its proto
 * ((buf.validate.field) and (buf.validate.message) options). Returns when the
 * request is valid; otherwise throws a ConnectError:
 * - INVALID_ARGUMENT when the request breaks a rule, with a message naming
 *   every broken field and rule (safe to show the caller: it quotes the
 *   schema's rules, never the request's values);
 * - INTERNAL when the rules themselves cannot be evaluated (a CEL expression
 *   that does not compile or fails at runtime, an unknown rule): that is our
 *   bug, not the caller's. The message is generic and the protovalidate error
 *   is the cause, for the caller of this function to log.
 */
export type RequestValidator = (method: DescMethod, request: Message) => void;

/** Violations listed in one error message; the rest are counted. */
const MAX_LISTED = 10;
/** Longest part (field path or rule message) quoted from one violation. */
const MAX_PART_CHARS = 200;

/**
 * One validator for the process: protovalidate compiles the rules of a
 * message type on first use and caches the plan, so build it once and reuse it
 * for every request.
 */
export function requestValidator(validator: Validator = createValidator()): RequestValidator {
  return (method, request) => {
    const result = validator.validate(method.input, request);
    switch (result.kind) {
      case "valid":
        return;
      case "invalid":
        throw new ConnectError(invalidMessage(method, result.violations), Code.InvalidArgument);
      case "error":
        throw new ConnectError(
          `internal error: the validation rules of ${method.input.name} could not be evaluated`,
          Code.Internal,
          undefined,
          undefined,
          result.error,
        );
    }
  };
}

/** "invalid CreateOrderRequest: customer_id: value is required; total_cents: must be greater than 0 ...". */
export function invalidMessage(method: DescMethod, violations: Violation[]): string {
  const listed = violations.slice(0, MAX_LISTED).map(describe);
  const more = violations.length - listed.length;
  if (more > 0) listed.push(`and ${more} more violation${more === 1 ? "" : "s"}`);
  return `invalid ${method.input.name}: ${listed.join("; ")}`;
}

/** "field: message", or just the message for a rule on the whole message. */
function describe(v: Violation): string {
  const message = clip(v.message || `rule ${v.ruleId} is not met`);
  if (v.field.length === 0) return message;
  // A path can hold a map key, which comes from the request: clip it.
  return `${clip(pathToString(v.field))}: ${message}`;
}

function clip(s: string): string {
  return s.length <= MAX_PART_CHARS ? s : `${s.slice(0, MAX_PART_CHARS)}…`;
}
