import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { classifyCallError, classifyCode, codeName, failureCause, misconfigurationHint } from "../../src/outbox/classify.js";

describe("outbox error classification", () => {
  const permanent = [
    Code.InvalidArgument,
    Code.FailedPrecondition,
    Code.AlreadyExists,
    Code.OutOfRange,
    Code.NotFound,
  ];
  const retryable = [
    Code.Unavailable,
    Code.DeadlineExceeded,
    Code.ResourceExhausted,
    Code.Aborted,
    Code.Internal,
    Code.Unknown,
    Code.Canceled,
    Code.Unauthenticated,
    Code.PermissionDenied,
    Code.Unimplemented,
    Code.DataLoss,
  ];

  for (const code of permanent) {
    it(`gives up on ${codeName(code)}`, () => expect(classifyCode(code)).to.equal("permanent"));
  }
  for (const code of retryable) {
    it(`retries ${codeName(code)}`, () => expect(classifyCode(code)).to.equal("retryable"));
  }

  it("retries PERMISSION_DENIED: a relay whose token lacks the scope must not park every row", () => {
    expect(classifyCode(Code.PermissionDenied)).to.equal("retryable");
    expect(failureCause(Code.PermissionDenied)).to.equal("misconfigured");
  });

  it("names the cause of each code: the request, the caller's setup, an outage, or possibly the content", () => {
    const causes = Object.fromEntries(
      [...permanent, ...retryable, 99].map((c) => [c === 99 ? "CODE_99" : codeName(c), failureCause(c)]),
    );
    expect(causes).to.deep.equal({
      INVALID_ARGUMENT: "request",
      FAILED_PRECONDITION: "request",
      ALREADY_EXISTS: "request",
      OUT_OF_RANGE: "request",
      NOT_FOUND: "request",
      UNAVAILABLE: "unavailable",
      DEADLINE_EXCEEDED: "suspect",
      RESOURCE_EXHAUSTED: "suspect",
      ABORTED: "unavailable",
      INTERNAL: "suspect",
      UNKNOWN: "suspect",
      CANCELED: "unavailable",
      UNAUTHENTICATED: "misconfigured",
      PERMISSION_DENIED: "misconfigured",
      UNIMPLEMENTED: "misconfigured",
      DATA_LOSS: "suspect",
      CODE_99: "suspect",
    });
  });

  it("tells an operator what to check for each misconfiguration, naming settings and never a token", () => {
    expect(misconfigurationHint(Code.Unauthenticated)).to.include("RELAY_TOKEN");
    expect(misconfigurationHint(Code.PermissionDenied)).to.include("vouchers:issue");
    expect(misconfigurationHint(Code.Unimplemented)).to.include("VOUCHER_SERVICE_URL");
  });

  it("retries a status code it does not know", () => {
    expect(classifyCode(99)).to.equal("retryable");
  });

  it("classifies a failed call by its status and names the status in the message", () => {
    const c = classifyCallError(new ConnectError("no such thing", Code.FailedPrecondition));
    expect(c).to.deep.equal({ kind: "permanent", code: Code.FailedPrecondition, message: "FAILED_PRECONDITION: no such thing" });
  });

  it("retries an error that is not a gRPC status at all", () => {
    expect(classifyCallError(new TypeError("fetch failed")).kind).to.equal("retryable");
  });

  it("names codes the way gRPC spells them", () => {
    expect(codeName(Code.DeadlineExceeded)).to.equal("DEADLINE_EXCEEDED");
    expect(codeName(Code.Unavailable)).to.equal("UNAVAILABLE");
    expect(codeName(99)).to.equal("CODE_99");
  });
});
