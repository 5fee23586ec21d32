import { expect } from "chai";
import { DomainError } from "@shop/platform/errors";
import { newId } from "@shop/platform/ids";
import { decodeIdToken, decodeTimeToken, encodeIdToken, encodeTimeToken, timeWindow } from "@shop/platform/paging";

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(DomainError);
    expect((err as DomainError).kind).to.equal("invalid_argument");
    return (err as Error).message;
  }
  throw new Error("expected an INVALID_ARGUMENT refusal");
}

describe("page tokens", () => {
  it("round-trip their position", () => {
    const id = newId();
    expect(decodeIdToken(encodeIdToken(id))).to.equal(id);
    const at = new Date("2030-05-06T07:08:09.123Z");
    expect(decodeTimeToken(encodeTimeToken(at, id))).to.deep.equal({ at, id });
    expect(decodeIdToken("")).to.equal(undefined);
    expect(decodeTimeToken("")).to.equal(undefined);
  });

  it("refuses tokens the service did not make", () => {
    const id = newId();
    for (const bad of ["!!!", "abc", Buffer.from("not-an-id").toString("base64url"), encodeIdToken(id) + "=", encodeIdToken(id) + "A"]) {
      expect(refusal(() => decodeIdToken(bad)), bad).to.match(/page_token is malformed/);
      expect(refusal(() => decodeTimeToken(bad)), bad).to.match(/page_token is malformed/);
    }
    expect(refusal(() => decodeTimeToken(encodeIdToken(id)))).to.match(/page_token is malformed/);
  });
});

describe("timeWindow", () => {
  it("names the field of a window that ends before it starts or lies outside what DATETIME holds", () => {
    expect(refusal(() => timeWindow("sent", new Date(2000), new Date(1000)))).to.equal("sent_after must not be later than sent_before");
    expect(refusal(() => timeWindow("issued", undefined, new Date(Date.UTC(10000, 0, 2))))).to.match(/issued_before/);
    expect(timeWindow("sent", undefined, undefined)).to.deep.equal({ after: undefined, before: undefined });
    expect(timeWindow("issued", new Date(5), new Date(5))).to.deep.equal({ after: new Date(5), before: new Date(5) });
  });
});
