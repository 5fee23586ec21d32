import { Ignore } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { ScalarType, type DescEnum, type DescField, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { getComments } from "@bufbuild/protoplugin";
import { appendDescription, applyValueRules, describeCel, fieldRules, messageCelRules, type JsonSchema } from "./rules.js";
import { exampleMessage } from "./examples.js";

/** The comment above an element, its lines unindented by the one space after "//". */
export function comment(desc: Parameters<typeof getComments>[0]): string {
  const text = getComments(desc).leading ?? "";
  return text
    .split("\n")
    .map((l) => l.replace(/^ /, "").trimEnd())
    .join("\n")
    .trim();
}

/** Every Connect error code, as the JSON error body spells it. */
export const CONNECT_CODES = [
  "canceled",
  "unknown",
  "invalid_argument",
  "deadline_exceeded",
  "not_found",
  "already_exists",
  "permission_denied",
  "resource_exhausted",
  "failed_precondition",
  "aborted",
  "out_of_range",
  "unimplemented",
  "internal",
  "unavailable",
  "data_loss",
  "unauthenticated",
];

const ERROR_STATUSES =
  "Connect's HTTP status for each code: invalid_argument, failed_precondition and out_of_range 400; " +
  "unauthenticated 401; permission_denied 403; not_found 404; already_exists and aborted 409; " +
  "resource_exhausted 429; canceled 499; unknown, internal and data_loss 500; unimplemented 501; " +
  "unavailable 503; deadline_exceeded 504.";

/** The proto3 JSON mapping of the well-known types that have a JSON form of their own. */
const WELL_KNOWN: Record<string, JsonSchema> = {
  "google.protobuf.Timestamp": { type: "string", format: "date-time", description: "RFC 3339, in UTC (\"Z\"), e.g. 2026-01-01T12:00:00Z." },
  "google.protobuf.Duration": { type: "string", pattern: "^-?[0-9]+(\\.[0-9]{1,9})?s$", description: "Seconds with an \"s\" suffix, e.g. 1.5s." },
  "google.protobuf.FieldMask": { type: "string", description: "Comma-separated lowerCamelCase field paths." },
  "google.protobuf.Struct": { type: "object", additionalProperties: true },
  "google.protobuf.Value": {},
  "google.protobuf.ListValue": { type: "array", items: {} },
  "google.protobuf.Empty": { type: "object" },
  "google.protobuf.Any": { type: "object", properties: { "@type": { type: "string" } }, required: ["@type"], additionalProperties: true },
  "google.protobuf.DoubleValue": { type: "number", format: "double" },
  "google.protobuf.FloatValue": { type: "number", format: "float" },
  "google.protobuf.Int64Value": { type: "string", format: "int64" },
  "google.protobuf.UInt64Value": { type: "string", format: "uint64" },
  "google.protobuf.Int32Value": { type: "integer", format: "int32" },
  "google.protobuf.UInt32Value": { type: "integer", minimum: 0, maximum: 4294967295 },
  "google.protobuf.BoolValue": { type: "boolean" },
  "google.protobuf.StringValue": { type: "string" },
  "google.protobuf.BytesValue": { type: "string", contentEncoding: "base64" },
};

export function scalarSchema(t: ScalarType): JsonSchema {
  switch (t) {
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.BYTES:
      return { type: "string", contentEncoding: "base64" };
    case ScalarType.DOUBLE:
      return { type: "number", format: "double" };
    case ScalarType.FLOAT:
      return { type: "number", format: "float" };
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return { type: "integer", format: "int32" };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: "integer", minimum: 0, maximum: 4294967295 };
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      // proto3 JSON writes 64-bit integers as decimal strings (and reads numbers too).
      return { type: "string", format: "int64", pattern: "^-?[0-9]+$" };
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return { type: "string", format: "uint64", pattern: "^[0-9]+$" };
  }
}

/** A scalar's zero value in proto3 JSON. */
function zeroValue(t: ScalarType): string | number | boolean {
  switch (t) {
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return "";
    case ScalarType.BOOL:
      return false;
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.SINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return "0";
    default:
      return 0;
  }
}

export function ref(typeName: string): JsonSchema {
  return { $ref: `#/components/schemas/${typeName}` };
}

/** Collects the component schemas of the messages and enums reachable from a service's methods. */
class SchemaSet {
  readonly schemas: Record<string, JsonSchema> = {};

  enumRef(e: DescEnum): JsonSchema {
    if (e.typeName === "google.protobuf.NullValue") return { type: "null" };
    if (!(e.typeName in this.schemas)) {
      const lines = e.values.map((v) => {
        const c = comment(v).replace(/\n/g, " ");
        return `- \`${v.name}\`${c ? `: ${c}` : ""}`;
      });
      const schema: JsonSchema = { type: "string", enum: e.values.map((v) => v.name) };
      appendDescription(schema, comment(e));
      appendDescription(schema, lines.join("\n"));
      this.schemas[e.typeName] = schema;
    }
    return ref(e.typeName);
  }

  messageRef(m: DescMessage): JsonSchema {
    const wkt = WELL_KNOWN[m.typeName];
    if (wkt) return structuredClone(wkt);
    if (!(m.typeName in this.schemas)) {
      // Placed first, so that a recursive message refers to itself.
      const schema: JsonSchema = { type: "object" };
      this.schemas[m.typeName] = schema;
      const properties: Record<string, JsonSchema> = {};
      const required: string[] = [];
      for (const f of m.fields) {
        properties[f.jsonName] = this.fieldSchema(f);
        const rules = fieldRules(f);
        if (rules?.required) required.push(f.jsonName);
      }
      appendDescription(schema, comment(m));
      appendDescription(schema, describeCel(messageCelRules(m)).join("\n"));
      schema.properties = properties;
      if (required.length > 0) schema.required = required;
    }
    return ref(m.typeName);
  }

  private valueSchema(kind: "scalar" | "enum" | "message", f: { scalar?: ScalarType; enum?: DescEnum; message?: DescMessage }): JsonSchema {
    if (kind === "scalar") return scalarSchema(f.scalar!);
    if (kind === "enum") return this.enumRef(f.enum!);
    return this.messageRef(f.message!);
  }

  fieldSchema(f: DescField): JsonSchema {
    let schema: JsonSchema;
    switch (f.fieldKind) {
      case "scalar":
        schema = scalarSchema(f.scalar);
        break;
      case "enum":
        schema = this.enumRef(f.enum);
        break;
      case "message":
        schema = this.messageRef(f.message);
        break;
      case "list":
        schema = { type: "array", items: this.valueSchema(f.listKind, f) };
        break;
      case "map":
        schema = {
          type: "object",
          additionalProperties: this.valueSchema(f.mapKind, f),
        };
        break;
    }
    const rules = fieldRules(f);
    if (rules && rules.ignore === Ignore.ALWAYS) {
      // protovalidate skips the field's rules.
    } else if (rules && rules.ignore === Ignore.IF_ZERO_VALUE && f.fieldKind === "scalar") {
      // The zero value (unset) is accepted; any other value must pass the rules.
      const constrained: JsonSchema = {};
      applyValueRules(constrained, rules);
      if (Object.keys(constrained).length > 0) schema.anyOf = [{ const: zeroValue(f.scalar) }, constrained];
      appendDescription(schema, describeCel(rules.cel).join("\n"));
    } else if (rules) {
      // Rules beside a $ref apply to the referenced schema's value too (OpenAPI 3.1).
      applyValueRules(schema, rules);
      if (rules.required && schema.type === "string" && schema.minLength === undefined && schema.const === undefined) {
        // protovalidate's required refuses the empty string too.
        schema.minLength = 1;
      }
      appendDescription(schema, describeCel(rules.cel).join("\n"));
    }
    const notes: string[] = [];
    if (f.oneof && !f.proto.proto3Optional) notes.push(`One of \`${f.oneof.name}\`: set at most one of ${f.oneof.fields.map((o) => `\`${o.jsonName}\``).join(", ")}.`);
    const text = [comment(f), ...notes].filter(Boolean).join("\n\n");
    if (text) schema.description = typeof schema.description === "string" ? `${text}\n\n${schema.description}` : text;
    return schema;
  }
}

/** The Connect error body, also what every refusal of the platform answers. */
export const CONNECT_ERROR_SCHEMA: JsonSchema = {
  type: "object",
  description: "A Connect error. " + ERROR_STATUSES,
  required: ["code"],
  properties: {
    code: { type: "string", enum: CONNECT_CODES, description: "The status code, in snake case (gRPC's names in lower case)." },
    message: { type: "string", description: "What went wrong, for people; a refused request's message names the field." },
    details: {
      type: "array",
      description: "Typed error details; none are sent by these services.",
      items: {
        type: "object",
        properties: {
          type: { type: "string", description: "The detail's message type name, e.g. google.rpc.RetryInfo." },
          value: { type: "string", contentEncoding: "base64", description: "The detail, protobuf binary, base64 (unpadded)." },
          debug: { description: "The detail as JSON, when the server adds it." },
        },
      },
    },
  },
};

export function operationId(method: DescMethod): string {
  return `${method.parent.typeName}.${method.name}`;
}

export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** The unary methods, the only ones that Connect serves as plain JSON requests. */
export function unaryMethods(service: DescService): DescMethod[] {
  return service.methods.filter((m) => m.methodKind === "unary");
}

/** The OpenAPI 3.1 document of one service's Connect JSON API. */
export function openApiDocument(service: DescService): JsonSchema {
  const schemas = new SchemaSet();
  const paths: Record<string, JsonSchema> = {};
  for (const method of unaryMethods(service)) {
    const request = schemas.messageRef(method.input);
    const response = schemas.messageRef(method.output);
    const summaryText = comment(method);
    paths[methodPath(method)] = {
      post: {
        operationId: operationId(method),
        tags: [service.typeName],
        summary: method.name,
        ...(summaryText ? { description: summaryText } : {}),
        parameters: [{ $ref: "#/components/parameters/ConnectProtocolVersion" }, { $ref: "#/components/parameters/ConnectTimeoutMs" }],
        requestBody: {
          required: true,
          content: { "application/json": { schema: request, example: exampleMessage(method.input, "openapi") } },
        },
        responses: {
          "200": { description: `${method.output.name}, in proto3 JSON (fields with their default value are left out).`, content: { "application/json": { schema: response } } },
          default: { $ref: "#/components/responses/ConnectError" },
        },
      },
    };
  }
  const streaming = service.methods.filter((m) => m.methodKind !== "unary");
  const description = [
    comment(service),
    `The Connect protocol's JSON form of \`${service.typeName}\`: each method is \`POST /${service.typeName}/<Method>\` ` +
      "with `Content-Type: application/json` and the request message in proto3 JSON (lowerCamelCase field names, 64-bit integers " +
      "as strings, enums by name, timestamps in RFC 3339); the answer is the response message, or a Connect error body with a non-2xx status. " +
      "Every method needs `Authorization: Bearer <JWT>`. The same methods are served over gRPC on the service's gRPC port.",
    streaming.length > 0 ? `Streaming methods, not described here (gRPC only): ${streaming.map((m) => m.name).join(", ")}.` : "",
  ]
    .filter(Boolean)
    .join("\n\n");
  const version = /\.(v\d+\w*)$/.exec(service.file.proto.package)?.[1] ?? "v1";
  return {
    openapi: "3.1.0",
    info: { title: service.typeName, version, description },
    tags: [{ name: service.typeName, description: comment(service) }],
    security: [{ bearerAuth: [] }],
    paths,
    components: {
      schemas: { ...sortedKeys(schemas.schemas), "connect.Error": CONNECT_ERROR_SCHEMA },
      responses: {
        ConnectError: {
          description: "A Connect error. " + ERROR_STATUSES,
          content: { "application/json": { schema: ref("connect.Error") } },
        },
      },
      parameters: {
        ConnectProtocolVersion: {
          name: "Connect-Protocol-Version",
          in: "header",
          required: false,
          description: "The Connect protocol version; optional here.",
          schema: { type: "string", const: "1" },
        },
        ConnectTimeoutMs: {
          name: "Connect-Timeout-Ms",
          in: "header",
          required: false,
          description: "The caller's deadline in milliseconds; optional.",
          schema: { type: "string", pattern: "^[0-9]{1,10}$" },
        },
      },
      securitySchemes: {
        bearerAuth: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description: "A JWT signed with one of the service's keys, with the scopes the method needs.",
        },
      },
    },
  };
}

function sortedKeys<T>(o: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
