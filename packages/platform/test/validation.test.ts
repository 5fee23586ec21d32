import { execFileSync } from "node:child_process";
import path from "node:path";
import { expect } from "chai";
import {
  create,
  createFileRegistry,
  fromBinary,
  setExtension,
  type DescEnum,
  type DescExtension,
  type DescField,
  type DescFile,
  type DescMessage,
  type DescMethod,
} from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FieldOptionsSchema,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
  file_google_protobuf_timestamp,
} from "@bufbuild/protobuf/wkt";
import { CompilationError, RuntimeError } from "@bufbuild/protovalidate";
import { field as fieldRulesExt, FieldRulesSchema, file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { requestValidator, timestampProblems } from "@shop/platform/validation";
import { OrderService } from "@shop/sdk/order";
import { OrderAdminService } from "@shop/sdk/order-admin";

const root = path.resolve(import.meta.dirname, "../../..");
const SUBSET = "vendor/proto/buf/validate/validate.proto";

/** Our vendored subset, compiled by buf exactly as `buf generate` compiles it. */
function compileSubset(): DescFile {
  const image = execFileSync(path.join(root, "node_modules/.bin/buf"), ["build", "--path", SUBSET, "-o", "-#format=binpb"], {
    cwd: root,
    maxBuffer: 64 * 1024 * 1024,
  });
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, image));
  const file = registry.getFile("buf/validate/validate.proto");
  if (!file) throw new Error(`buf build did not produce ${SUBSET}`);
  return file;
}

/** What must agree between a field of ours and the real one: everything that ends up on the wire or in a descriptor path. */
function fieldShape(f: DescField | DescExtension) {
  return {
    name: f.name,
    number: f.number,
    type: FieldDescriptorProto_Type[f.proto.type],
    label: FieldDescriptorProto_Label[f.proto.label],
    typeName: f.proto.typeName,
    jsonName: f.jsonName,
    oneof: f.oneof?.name,
  };
}

function throwsConnectError(fn: () => void): ConnectError {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(ConnectError);
    return err as ConnectError;
  }
  throw new Error("expected a ConnectError");
}

describe("vendored buf/validate/validate.proto subset", () => {
  let ours: DescFile;
  const real = file_buf_validate_validate;
  before(function () {
    this.timeout(60_000);
    ours = compileSubset();
  });

  it("is the same file as the real one: name, package and syntax", () => {
    expect(ours.name).to.equal(real.name);
    expect(ours.proto.package).to.equal(real.proto.package);
    expect(ours.edition).to.equal(real.edition);
  });

  it("declares only messages of the real file, each field with the real number, type, label, type name and oneof", () => {
    expect(ours.messages.length).to.be.greaterThan(0);
    for (const m of ours.messages) {
      const r = real.messages.find((x: DescMessage) => x.typeName === m.typeName);
      expect(r, `${m.typeName} is not in the real buf/validate/validate.proto`).to.not.equal(undefined);
      expect(m.nestedMessages.map((n) => n.name), `${m.typeName} nested messages`).to.deep.equal([]);
      for (const f of m.fields) {
        const rf = r!.fields.find((x) => x.name === f.name);
        expect(rf, `${m.typeName}.${f.name} is not in the real message`).to.not.equal(undefined);
        expect(fieldShape(f), `${m.typeName}.${f.name}`).to.deep.equal(fieldShape(rf!));
      }
    }
  });

  it("declares only enums of the real file, each value with its real number", () => {
    for (const e of ours.enums) {
      const r = real.enums.find((x: DescEnum) => x.typeName === e.typeName);
      expect(r, `${e.typeName} is not in the real file`).to.not.equal(undefined);
      for (const v of e.values) {
        expect(r!.values.find((x) => x.name === v.name)?.number, `${e.typeName}.${v.name}`).to.equal(v.number);
      }
    }
  });

  it("declares only extensions of the real file, with the real number, extendee and type", () => {
    expect(ours.extensions.map((x) => x.name).sort()).to.deep.equal(["field", "message"]);
    for (const x of ours.extensions) {
      const r = real.extensions.find((y) => y.typeName === x.typeName);
      expect(r, `${x.typeName} is not in the real file`).to.not.equal(undefined);
      expect({ ...fieldShape(x), extendee: x.extendee.typeName }, x.typeName).to.deep.equal({ ...fieldShape(r!), extendee: r!.extendee.typeName });
    }
  });

  it("is not what the generated code imports: that is the full file from @bufbuild/protovalidate", () => {
    const dep = OrderService.file.dependencies.find((d) => d.name === "buf/validate/validate");
    expect(dep).to.equal(real);
  });
});

describe("requestValidator", () => {
  const check = requestValidator();
  const create_ = OrderService.method.createOrder;
  const valid = { customerId: "cust-1", totalCents: 12_345n, currency: "EUR", requestId: "req-1" };

  it("passes a valid request", () => {
    expect(() => check(create_.input, create(create_.input, valid))).to.not.throw();
  });

  it("refuses an invalid request with INVALID_ARGUMENT naming every broken field and its rule", () => {
    const err = throwsConnectError(() =>
      check(create_.input, create(create_.input, { customerId: "", totalCents: 0n, currency: "USD", requestId: "a b" })),
    );
    expect(err.code).to.equal(Code.InvalidArgument);
    expect(err.rawMessage).to.equal(
      "invalid CreateOrderRequest: customer_id: value is required; " +
        "total_cents: must be greater than 0 and less than or equal to 10000000000; " +
        "currency: must equal `EUR`; " +
        "request_id: does not match regex pattern `^[A-Za-z0-9._:-]*$`",
    );
  });

  it("names the element of a list that breaks a rule", () => {
    const m = OrderService.method.batchGetOrders;
    const err = throwsConnectError(() => check(m.input, create(m.input, { orderIds: ["ok-1", "ok-2", "not ok"] })));
    expect(err.rawMessage).to.equal("invalid BatchGetOrdersRequest: order_ids[2]: does not match regex pattern `^[A-Za-z0-9._:-]*$`");
  });

  it("gives the rule's message alone for a rule on the whole message", () => {
    const m = OrderAdminService.method.requeueDeadVoucherDeliveries;
    const err = throwsConnectError(() => check(m.input, create(m.input, { all: true, orderIds: ["o-1"] })));
    expect(err.rawMessage).to.equal("invalid RequeueDeadVoucherDeliveriesRequest: give either order_ids or all=true, not both");
  });

  it("never echoes the offending value, and lists at most 10 violations", () => {
    const huge = "ü".repeat(100_000);
    const err = throwsConnectError(() => check(create_.input, create(create_.input, { ...valid, customerId: huge })));
    expect(err.rawMessage).to.not.include("ü");
    const m = OrderService.method.batchGetOrders;
    const long = "x".repeat(100_000);
    const many = throwsConnectError(() => check(m.input, create(m.input, { orderIds: Array.from({ length: 50 }, () => long) })));
    expect(many.rawMessage).to.not.include("x".repeat(65));
    expect(many.rawMessage).to.include("order_ids[9]:").and.include("; and 40 more violations");
    expect(many.rawMessage).to.not.include("order_ids[10]");
    expect(many.rawMessage.length).to.be.lessThan(2000);
  });

  describe("rules that cannot be evaluated", () => {
    /** A service whose request has a CEL rule we choose, built like generated code is: from a descriptor. */
    function methodWithRule(expression: string): DescMethod {
      const options = create(FieldOptionsSchema);
      setExtension(options, fieldRulesExt, create(FieldRulesSchema, { cel: [{ id: "test.rule", message: "test rule", expression }] }));
      const proto = create(FileDescriptorProtoSchema, {
        name: "test/validation/v1/broken.proto",
        package: "test.validation.v1",
        syntax: "proto3",
        messageType: [
          {
            name: "BrokenRequest",
            field: [{ name: "name", jsonName: "name", number: 1, type: FieldDescriptorProto_Type.STRING, label: FieldDescriptorProto_Label.OPTIONAL, options }],
          },
        ],
        service: [{ name: "BrokenService", method: [{ name: "Call", inputType: ".test.validation.v1.BrokenRequest", outputType: ".test.validation.v1.BrokenRequest" }] }],
      });
      const file = createFileRegistry(proto, () => undefined).getFile(proto.name)!;
      return file.services[0]!.methods[0]!;
    }

    it("accept or refuse as written when the rule is sound (the test service works)", () => {
      const m = methodWithRule("this.size() < 3");
      expect(() => check(m.input, create(m.input, { name: "ab" }))).to.not.throw();
      expect(throwsConnectError(() => check(m.input, create(m.input, { name: "abc" }))).code).to.equal(Code.InvalidArgument);
    });

    it("are INTERNAL, not the caller's fault, with the compilation error as the cause", () => {
      const m = methodWithRule("this.size( <");
      const err = throwsConnectError(() => check(m.input, create(m.input, { name: "x" })));
      expect(err.code).to.equal(Code.Internal);
      expect(err.rawMessage).to.equal("internal error: the validation rules of BrokenRequest could not be evaluated");
      expect(err.cause).to.be.instanceOf(CompilationError);
    });

    it("are INTERNAL when the rule fails while evaluated, with the runtime error as the cause", () => {
      const m = methodWithRule("1 / (this.size() - this.size()) == 1");
      const err = throwsConnectError(() => check(m.input, create(m.input, { name: "x" })));
      expect(err.code).to.equal(Code.Internal);
      expect(err.cause).to.be.instanceOf(RuntimeError);
    });
  });
});

describe("timestamps in requests", () => {
  // A request type with Timestamps in every place one can be: a field, a list, a map value, a oneof, and a recursive type.
  const T = FieldDescriptorProto_Type;
  const L = FieldDescriptorProto_Label;
  const ts = { type: T.MESSAGE, typeName: ".google.protobuf.Timestamp" };
  const file = createFileRegistry(
    create(FileDescriptorProtoSchema, {
      name: "t/times.proto",
      package: "t",
      syntax: "proto3",
      dependency: ["google/protobuf/timestamp.proto"],
      messageType: [
        {
          name: "Inner",
          field: [
            { name: "at", number: 1, label: L.OPTIONAL, jsonName: "at", ...ts },
            { name: "children", number: 2, label: L.REPEATED, type: T.MESSAGE, typeName: ".t.Inner", jsonName: "children" },
          ],
        },
        {
          name: "Req",
          field: [
            { name: "one", number: 1, label: L.OPTIONAL, type: T.MESSAGE, typeName: ".t.Inner", jsonName: "one" },
            { name: "many", number: 2, label: L.REPEATED, type: T.MESSAGE, typeName: ".t.Inner", jsonName: "many" },
            { name: "times", number: 3, label: L.REPEATED, type: T.MESSAGE, typeName: ".t.Req.TimesEntry", jsonName: "times" },
            { name: "when", number: 4, label: L.OPTIONAL, oneofIndex: 0, jsonName: "when", ...ts },
            { name: "label", number: 5, label: L.OPTIONAL, type: T.STRING, oneofIndex: 0, jsonName: "label" },
          ],
          oneofDecl: [{ name: "choice" }],
          nestedType: [
            {
              name: "TimesEntry",
              options: { mapEntry: true },
              field: [
                { name: "key", number: 1, label: L.OPTIONAL, type: T.STRING, jsonName: "key" },
                { name: "value", number: 2, label: L.OPTIONAL, jsonName: "value", ...ts },
              ],
            },
          ],
        },
        { name: "Plain", field: [{ name: "n", number: 1, label: L.OPTIONAL, type: T.INT32, jsonName: "n" }] },
      ],
    }),
    (name) => (name === "google/protobuf/timestamp.proto" ? file_google_protobuf_timestamp : undefined),
  ).getFile("t/times.proto")!;
  const Req = file.messages.find((m) => m.name === "Req")!;
  const Plain = file.messages.find((m) => m.name === "Plain")!;
  const ok = { seconds: 1_700_000_000n, nanos: 5 };
  const badNanos = { seconds: 1_700_000_000n, nanos: -5 };
  const tooLate = { seconds: 253_402_300_800n, nanos: 0 };

  it("are found at any depth, in lists, map values and oneofs, and each bad one is named by its path", () => {
    const req = create(Req, {
      one: { at: ok, children: [{ at: ok }, { children: [{ at: badNanos }] }] },
      many: [{ at: ok }, { at: tooLate }],
      times: { a: ok, "b\nc": badNanos },
      choice: { case: "when", value: { seconds: -62_135_596_801n, nanos: 0 } },
    } as never);
    expect(timestampProblems(Req, req)).to.deep.equal([
      "one.children[1].children[0].at: nanos must be 0 to 999999999",
      "many[1].at: must be a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z",
      'times["b\\nc"]: nanos must be 0 to 999999999',
      "when: must be a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z",
    ]);
  });

  it("accept the first and last instants of the documented range, and an unset timestamp", () => {
    const req = create(Req, {
      one: { at: { seconds: -62_135_596_800n, nanos: 0 } },
      many: [{ at: { seconds: 253_402_300_799n, nanos: 999_999_999 } }, {}],
      choice: { case: "label", value: "x" },
    } as never);
    expect(timestampProblems(Req, req)).to.deep.equal([]);
    expect(timestampProblems(Plain, create(Plain, { n: 1 } as never))).to.deep.equal([]);
  });

  it("refuse a recursive request nested past 32 levels instead of walking it", () => {
    let inner: Record<string, unknown> = { at: ok };
    for (let i = 0; i < 40; i++) inner = { children: [inner] };
    const problems = timestampProblems(Req, create(Req, { one: inner } as never));
    expect(problems).to.have.length(1);
    expect(problems[0]).to.match(/^one(\.children\[0\]){31}: nested more than 32 deep$/);
  });
});
