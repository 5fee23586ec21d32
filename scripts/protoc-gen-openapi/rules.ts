import { getOption, hasOption, isFieldSet, type DescField, type DescMessage } from "@bufbuild/protobuf";
import {
  DoubleRulesSchema,
  field as fieldRulesExt,
  Fixed32RulesSchema,
  Fixed64RulesSchema,
  FloatRulesSchema,
  Int32RulesSchema,
  Int64RulesSchema,
  message as messageRulesExt,
  SFixed32RulesSchema,
  SFixed64RulesSchema,
  SInt32RulesSchema,
  SInt64RulesSchema,
  StringRulesSchema,
  UInt32RulesSchema,
  UInt64RulesSchema,
  type FieldRules,
  type Rule,
} from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

/** The rules message of each numeric type, for the presence of its const. */
const numericRules = {
  int32: Int32RulesSchema,
  int64: Int64RulesSchema,
  uint32: UInt32RulesSchema,
  uint64: UInt64RulesSchema,
  sint32: SInt32RulesSchema,
  sint64: SInt64RulesSchema,
  fixed32: Fixed32RulesSchema,
  fixed64: Fixed64RulesSchema,
  sfixed32: SFixed32RulesSchema,
  sfixed64: SFixed64RulesSchema,
  float: FloatRulesSchema,
  double: DoubleRulesSchema,
} as const;

/** A JSON Schema (the OpenAPI 3.1 dialect), built as plain JSON. */
export type JsonSchema = { [key: string]: unknown };

/** The field's protovalidate rules, if it has any. */
export function fieldRules(field: DescField): FieldRules | undefined {
  return hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined;
}

/** The message-level CEL rules. */
export function messageCelRules(message: DescMessage): Rule[] {
  return hasOption(message, messageRulesExt) ? getOption(message, messageRulesExt).cel : [];
}

/** "Rule `id`: message" lines for CEL rules, which have no JSON Schema counterpart. */
export function describeCel(rules: Rule[]): string[] {
  return rules.map((r) => `Rule \`${r.id}\`: ${r.message || r.expression}.`.replace(/\.\.$/, "."));
}

function num(v: bigint | number): number {
  return typeof v === "bigint" ? Number(v) : v;
}

/**
 * Adds the plain protovalidate rules of one value (a field, or the items of a
 * repeated field) to its schema: lengths, pattern, const, in, bounds, item
 * counts. Rules that JSON Schema cannot say (CEL, timestamp bounds, ...) are
 * left to the description.
 */
export function applyValueRules(schema: JsonSchema, rules: FieldRules): void {
  const t = rules.type;
  switch (t.case) {
    case "string": {
      const s = t.value;
      if (isFieldSet(s, StringRulesSchema.field.const)) schema.const = s.const;
      if (isFieldSet(s, StringRulesSchema.field.len)) schema.minLength = schema.maxLength = num(s.len);
      if (isFieldSet(s, StringRulesSchema.field.minLen)) schema.minLength = num(s.minLen);
      if (isFieldSet(s, StringRulesSchema.field.maxLen)) schema.maxLength = num(s.maxLen);
      if (isFieldSet(s, StringRulesSchema.field.pattern)) schema.pattern = s.pattern;
      if (s.in.length > 0) schema.enum = [...s.in];
      if (s.wellKnown.case === "email" && s.wellKnown.value) schema.format = "email";
      if (s.wellKnown.case === "uuid" && s.wellKnown.value) schema.format = "uuid";
      if (s.wellKnown.case === "uri" && s.wellKnown.value) schema.format = "uri";
      if (s.wellKnown.case === "hostname" && s.wellKnown.value) schema.format = "hostname";
      if (s.example.length > 0) schema.examples = [...s.example];
      break;
    }
    case "int32":
    case "int64":
    case "uint32":
    case "uint64":
    case "sint32":
    case "sint64":
    case "fixed32":
    case "fixed64":
    case "sfixed32":
    case "sfixed64":
    case "float":
    case "double": {
      const n = t.value as {
        const: bigint | number;
        lessThan: { case: "lt" | "lte" | undefined; value?: bigint | number };
        greaterThan: { case: "gt" | "gte" | undefined; value?: bigint | number };
        in: Array<bigint | number>;
      };
      // 64-bit integers are strings in proto3 JSON: their const and in are too. Their bounds
      // stay numbers, as JSON Schema has no string bounds: for people, and for callers that send numbers.
      const wide = typeof n.const === "bigint";
      const value = (v: bigint | number) => (wide ? String(v) : num(v));
      if (isFieldSet(t.value as never, numericRules[t.case].field.const as never)) schema.const = value(n.const);
      if (n.lessThan.case === "lt") schema.exclusiveMaximum = num(n.lessThan.value!);
      if (n.lessThan.case === "lte") schema.maximum = num(n.lessThan.value!);
      if (n.greaterThan.case === "gt") schema.exclusiveMinimum = num(n.greaterThan.value!);
      if (n.greaterThan.case === "gte") schema.minimum = num(n.greaterThan.value!);
      if (n.in.length > 0) schema.enum = n.in.map(value);
      break;
    }
    case "repeated": {
      const r = t.value;
      if (r.minItems > 0n) schema.minItems = num(r.minItems);
      if (r.maxItems > 0n) schema.maxItems = num(r.maxItems);
      if (r.unique) schema.uniqueItems = true;
      if (r.items && schema.items && typeof schema.items === "object") applyValueRules(schema.items as JsonSchema, r.items);
      break;
    }
    case "map": {
      const m = t.value;
      if (m.minPairs > 0n) schema.minProperties = num(m.minPairs);
      if (m.maxPairs > 0n) schema.maxProperties = num(m.maxPairs);
      if (m.values && schema.additionalProperties && typeof schema.additionalProperties === "object") {
        applyValueRules(schema.additionalProperties as JsonSchema, m.values);
      }
      break;
    }
    default:
      break;
  }
  // Rules on repeated items and map values state their CEL rules too.
  if (rules.type.case === "repeated" && rules.type.value.items?.cel.length) {
    appendDescription(schema, describeCel(rules.type.value.items.cel).join("\n"));
  }
}

export function appendDescription(schema: JsonSchema, text: string): void {
  if (!text) return;
  schema.description = typeof schema.description === "string" && schema.description ? `${schema.description}\n\n${text}` : text;
}
