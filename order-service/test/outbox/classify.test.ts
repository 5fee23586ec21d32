import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { classifyCallError, classifyCode, codeName } from "../../src/outbox/classify.js";

describe("outbox error classification", () => {
  const permanent = [
    Code.InvalidArgument,
    Code.FailedPrecondition,
    Code.AlreadyExists,
    Code.OutOfRange,
    Code.NotFound,
    Code.PermissionDenied,
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
    Code.Unimplemented,
    Code.DataLoss,
  ];

  for (const code of permanent) {
    it(`gives up on ${codeName(code)}`, () => expect(classifyCode(code)).to.equal("permanent"));
  }
  for (const code of retryable) {
    it(`retries ${codeName(code)}`, () => expect(classifyCode(code)).to.equal("retryable"));
  }

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
