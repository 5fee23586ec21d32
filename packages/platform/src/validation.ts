import type { DescMessage, Message } from "@bufbuild/protobuf";
import { pathToString, reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { createValidator, type Validator, type Violation } from "@bufbuild/protovalidate";
import { Code, ConnectError } from "@connectrpc/connect";
import { clip, quote } from "./clip.js";

/**
 * Checks a message against the protovalidate rules declared in its proto
 * ((buf.validate.field) and (buf.validate.message) options). Returns when the
 * message is valid; otherwise throws a ConnectError:
 * - INVALID_ARGUMENT when a google.protobuf.Timestamp anywhere in the message
 *   is not a valid one (see timestampProblems), or when the message breaks a
 *   rule, with a message naming every broken field and rule (safe to show the
 *   caller: it quotes the schema's rules, never the request's values);
 * - INTERNAL when the rules themselves cannot be evaluated (a CEL expression
 *   that does not compile or fails at runtime, an unknown rule): that is our
 *   bug, not the caller's. The message is generic and the protovalidate error
 *   is the cause, for the caller of this function to log.
 */
export type RequestValidator = (schema: DescMessage, message: Message) => void;

/** Violations listed in one error message; the rest are counted. */
const MAX_LISTED = 10;
/** Longest part (field path or rule message) quoted from one violation. */
const MAX_PART_CHARS = 200;

/**
 * A validator over the given protovalidate Validator. protovalidate compiles
 * the rules of a message type on first use and caches the plan, so a process
 * wants one: checkRequest.
 */
export function requestValidator(validator: Validator = createValidator()): RequestValidator {
  return (schema, message) => {
    const badTimes = timestampProblems(schema, message);
    if (badTimes.length > 0) throw new ConnectError(listMessage(schema, badTimes), Code.InvalidArgument);
    const result = validator.validate(schema, message);
    switch (result.kind) {
      case "valid":
        return;
      case "invalid":
        throw new ConnectError(invalidMessage(schema, result.violations), Code.InvalidArgument);
      case "error":
        throw new ConnectError(
          `internal error: the validation rules of ${schema.name} could not be evaluated`,
          Code.Internal,
          undefined,
          undefined,
          result.error,
        );
    }
  };
}

/**
 * The process's one validator: the servers check every request with it
 * before the handler runs, and a handler checks with it what the request's
 * own rules leave out on purpose (BatchIssueVouchers' items), so each rule is
 * compiled once and read from the proto alone.
 */
export const checkRequest: RequestValidator = requestValidator();

/** "invalid CreateOrderRequest: customer_id: value is required; total_cents: must be greater than 0 ...". */
export function invalidMessage(schema: DescMessage, violations: Violation[]): string {
  return listMessage(schema, violations.map(describe));
}

function listMessage(schema: DescMessage, problems: string[]): string {
  const listed = problems.slice(0, MAX_LISTED);
  const more = problems.length - listed.length;
  if (more > 0) listed.push(`and ${more} more violation${more === 1 ? "" : "s"}`);
  return `invalid ${schema.name}: ${listed.join("; ")}`;
}

const TIMESTAMP = "google.protobuf.Timestamp";
/** 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range google.protobuf.Timestamp documents. */
const MIN_SECONDS = -62_135_596_800n;
const MAX_SECONDS = 253_402_300_799n;
/** No request type here nests this deep; a deeper one is refused rather than walked. */
const MAX_DEPTH = 32;

/**
 * Every google.protobuf.Timestamp set anywhere in the request, at any depth
 * (fields, lists, map values, oneofs), must be one the type documents: nanos
 * 0 to 999,999,999 and a time from year 1 to 9999. The binary format carries
 * any int64 and int32, and neither protobuf-es nor protovalidate's rules
 * refuse nanos out of range (a rule compares the normalized time), so a
 * handler would otherwise see {seconds: 1, nanos: -1}. Checked for every
 * request type from its descriptor, so a Timestamp field added later is
 * covered without a rule of its own. Returns "field: problem" for each.
 */
export function timestampProblems(desc: DescMessage, request: Message): string[] {
  if (!mayHoldTimestamp(desc)) return [];
  const problems: string[] = [];
  walk(reflect(desc, request), "", 0, problems);
  return problems;
}

function walk(msg: ReflectMessage, path: string, depth: number, problems: string[]): void {
  if (msg.desc.typeName === TIMESTAMP) {
    const { seconds, nanos } = msg.message as unknown as { seconds: bigint; nanos: number };
    if (!Number.isInteger(nanos) || nanos < 0 || nanos > 999_999_999) problems.push(`${path}: nanos must be 0 to 999999999`);
    else if (seconds < MIN_SECONDS || seconds > MAX_SECONDS) problems.push(`${path}: must be a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z`);
    return;
  }
  if (depth >= MAX_DEPTH) {
    problems.push(`${path}: nested more than ${MAX_DEPTH} deep`);
    return;
  }
  for (const f of msg.fields) {
    if (!msg.isSet(f)) continue;
    const at = path === "" ? f.name : `${path}.${f.name}`;
    if (f.fieldKind === "message") {
      if (mayHoldTimestamp(f.message)) walk(msg.get(f), at, depth + 1, problems);
    } else if (f.fieldKind === "list" && f.listKind === "message") {
      if (!mayHoldTimestamp(f.message)) continue;
      let i = 0;
      for (const item of msg.get(f)) walk(item as ReflectMessage, `${at}[${i++}]`, depth + 1, problems);
    } else if (f.fieldKind === "map" && f.mapKind === "message") {
      if (!mayHoldTimestamp(f.message)) continue;
      for (const [key, value] of msg.get(f)) walk(value as ReflectMessage, `${at}[${quote(key, 32)}]`, depth + 1, problems);
    }
  }
}

/** Whether a message of this type can hold a Timestamp at some depth: most requests cannot, and are not walked. */
const holdsTimestamp = new WeakMap<DescMessage, boolean>();
function mayHoldTimestamp(desc: DescMessage, visiting = new Set<DescMessage>()): boolean {
  const known = holdsTimestamp.get(desc);
  if (known !== undefined) return known;
  if (desc.typeName === TIMESTAMP) return true;
  if (visiting.has(desc)) return false; // a recursive type: its other fields decide
  visiting.add(desc);
  const result = desc.fields.some((f) => {
    const sub = f.fieldKind === "message" ? f.message : f.fieldKind === "list" && f.listKind === "message" ? f.message : f.fieldKind === "map" && f.mapKind === "message" ? f.message : undefined;
    return sub !== undefined && mayHoldTimestamp(sub, visiting);
  });
  visiting.delete(desc);
  if (visiting.size === 0) holdsTimestamp.set(desc, result);
  return result;
}

/** "field: message", or just the message for a rule on the whole message. */
function describe(v: Violation): string {
  const message = clip(v.message || `rule ${v.ruleId} is not met`, MAX_PART_CHARS);
  if (v.field.length === 0) return message;
  // A path can hold a map key, which comes from the request: clip it.
  return `${clip(pathToString(v.field), MAX_PART_CHARS)}: ${message}`;
}
