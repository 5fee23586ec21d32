import { create, isFieldSet, ScalarType, type DescEnum, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { createValidator } from "@bufbuild/protovalidate";
import { StringRulesSchema, type FieldRules } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { fieldRules } from "./rules.js";

/**
 * Where an example goes: the OpenAPI document (fixed values) or the Postman
 * collection, where an idempotency key is Postman's {{$guid}}, new on every send.
 */
export type ExampleTarget = "openapi" | "postman";

const EXAMPLE_TIME = "2026-01-01T00:00:00Z";
const EXAMPLE_LATER = "2026-01-02T00:00:00Z";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * An example of a message in proto3 JSON that its protovalidate rules accept:
 * every field set (a message field once, not recursively), within its bounds.
 */
export function exampleMessage(message: DescMessage, target: ExampleTarget, depth = 0): { [key: string]: Json } {
  const out: { [key: string]: Json } = {};
  for (const f of message.fields) {
    // Of a oneof, the first member only.
    if (f.oneof && !f.proto.proto3Optional && f.oneof.fields[0] !== f) continue;
    const value = exampleField(f, target, depth);
    if (value !== undefined) out[f.jsonName] = value;
  }
  return out;
}

function exampleField(f: DescField, target: ExampleTarget, depth: number): Json | undefined {
  const rules = fieldRules(f);
  switch (f.fieldKind) {
    case "scalar":
      return exampleScalar(f.scalar, f.name, rules, target);
    case "enum":
      return exampleEnum(f, rules);
    case "message":
      return exampleNested(f.message, f.name, target, depth);
    case "list": {
      const items = rules?.type.case === "repeated" ? rules.type.value.items : undefined;
      const item =
        f.listKind === "scalar"
          ? exampleScalar(f.scalar, singular(f.name), items, target)
          : f.listKind === "enum"
            ? exampleEnumValue(f.enum, items)
            : exampleNested(f.message, singular(f.name), target, depth);
      return item === undefined ? [] : [item];
    }
    case "map":
      return {};
  }
}

function exampleNested(m: DescMessage, name: string, target: ExampleTarget, depth: number): Json | undefined {
  switch (m.typeName) {
    case "google.protobuf.Timestamp":
      // The upper bound of a window a day after its lower bound.
      return name.endsWith("_before") ? EXAMPLE_LATER : EXAMPLE_TIME;
    case "google.protobuf.Duration":
      return "1s";
    case "google.protobuf.Empty":
    case "google.protobuf.Struct":
      return {};
  }
  if (m.typeName.startsWith("google.protobuf.")) return undefined;
  return depth >= 2 ? undefined : exampleMessage(m, target, depth + 1);
}

function singular(name: string): string {
  return name.endsWith("s") ? name.slice(0, -1) : name;
}

const validator = createValidator();

/**
 * The first value of the enum (its zero value, usually "unspecified") that the
 * field's rules accept, CEL rules included: protovalidate judges each value
 * alone in an otherwise empty message.
 */
function exampleEnum(f: DescField & { fieldKind: "enum" }, rules: FieldRules | undefined): Json {
  if (!rules) return f.enum.values[0]!.name;
  const accepted = f.enum.values.find((v) => {
    const message = create(f.parent, { [f.localName]: v.number } as never);
    const result = validator.validate(f.parent, message);
    return result.kind === "valid" || (result.kind === "invalid" && !result.violations.some((x) => x.field[0] === f));
  });
  return (accepted ?? f.enum.values[0]!).name;
}

function exampleEnumValue(e: DescEnum, rules: FieldRules | undefined): Json {
  const er = rules?.type.case === "enum" ? rules.type.value : undefined;
  const allowed = e.values.filter((v) => (!rules?.required || v.number !== 0) && (!er || er.in.length === 0 || er.in.includes(v.number)) && !er?.notIn.includes(v.number));
  return (allowed[0] ?? e.values[0]!).name;
}

function exampleScalar(t: ScalarType, name: string, rules: FieldRules | undefined, target: ExampleTarget): Json {
  switch (t) {
    case ScalarType.STRING: {
      const s = rules?.type.case === "string" ? rules.type.value : undefined;
      if (s && isFieldSet(s, StringRulesSchema.field.const)) return s.const;
      if (s?.example.length) return s.example[0]!;
      if (s && s.in.length > 0) return s.in[0]!;
      // An idempotency key: a new one on every send from Postman.
      if (name === "request_id" || name.endsWith("_request_id")) return target === "postman" ? "{{$guid}}" : "request-1";
      if (name.endsWith("_id")) return `${name.slice(0, -3).replace(/_/g, "-")}-1`;
      if (rules?.required || (s && s.minLen > 0n)) return name.replace(/_/g, "-");
      return "";
    }
    case ScalarType.BOOL:
      return false;
    case ScalarType.BYTES:
      return "";
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return String(clamp(name.endsWith("_cents") ? 15_000 : 1, rules));
    default:
      return clamp(name === "page_size" ? 10 : name.endsWith("_cents") ? 15_000 : 1, rules);
  }
}

/** The value moved inside the field's numeric bounds, if it has any. */
function clamp(value: number, rules: FieldRules | undefined): number {
  const t = rules?.type;
  if (!t || !t.value || !("greaterThan" in t.value)) return value;
  const n = t.value as {
    lessThan: { case: string | undefined; value?: bigint | number };
    greaterThan: { case: string | undefined; value?: bigint | number };
  };
  let v = value;
  if (n.greaterThan.case === "gte") v = Math.max(v, Number(n.greaterThan.value));
  if (n.greaterThan.case === "gt") v = Math.max(v, Number(n.greaterThan.value) + 1);
  if (n.lessThan.case === "lte") v = Math.min(v, Number(n.lessThan.value));
  if (n.lessThan.case === "lt") v = Math.min(v, Number(n.lessThan.value) - 1);
  return v;
}
