import { expect } from "chai";
import { DomainError } from "@shop/platform/errors";
import { newId } from "@shop/platform/ids";
import { orderIdsToLookUp, pageSize, sentWindow, validateCreateOrder } from "../../src/domain/validation.js";
import { decodeIdToken, decodeSentToken, encodeIdToken, encodeSentToken } from "../../src/domain/page-token.js";

const valid = { customerId: "c-1", totalCents: 10_001n, currency: "EUR", requestId: "req:1" };

function invalid(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof DomainError && err.kind === "invalid_argument") return err.message;
    throw err;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

describe("validateCreateOrder", () => {
  it("accepts a well-formed request and converts the total to a number", () => {
    expect(validateCreateOrder(valid)).to.deep.equal({ customerId: "c-1", totalCents: 10_001, currency: "EUR", requestId: "req:1" });
  });

  it("names the field of every kind of bad input", () => {
    expect(invalid(() => validateCreateOrder({ ...valid, customerId: "" }))).to.contain("customer_id is required");
    expect(invalid(() => validateCreateOrder({ ...valid, customerId: "x".repeat(65) }))).to.contain("customer_id");
    expect(invalid(() => validateCreateOrder({ ...valid, customerId: "a b" }))).to.contain("customer_id");
    expect(invalid(() => validateCreateOrder({ ...valid, totalCents: 0n }))).to.contain("total_cents");
    expect(invalid(() => validateCreateOrder({ ...valid, totalCents: -5n }))).to.contain("total_cents");
    expect(invalid(() => validateCreateOrder({ ...valid, totalCents: 10_000_000_001n }))).to.contain("total_cents");
    expect(invalid(() => validateCreateOrder({ ...valid, currency: "" }))).to.contain("currency is required");
    expect(invalid(() => validateCreateOrder({ ...valid, currency: "USD" }))).to.contain('"USD"');
    expect(invalid(() => validateCreateOrder({ ...valid, currency: "eur" }))).to.contain('"eur"');
    expect(invalid(() => validateCreateOrder({ ...valid, requestId: "" }))).to.contain("request_id is required");
    expect(invalid(() => validateCreateOrder({ ...valid, requestId: "r".repeat(65) }))).to.contain("request_id");
  });

  it("accepts ids of exactly 64 characters and the largest total", () => {
    expect(() => validateCreateOrder({ ...valid, customerId: "c".repeat(64), requestId: "r".repeat(64), totalCents: 10_000_000_000n })).not.to.throw();
  });
});

describe("pageSize", () => {
  it("uses the default for 0, lowers large values to the maximum and refuses negatives", () => {
    const limits = { default: 50, max: 500 };
    expect(pageSize(0, limits)).to.equal(50);
    expect(pageSize(7, limits)).to.equal(7);
    expect(pageSize(100_000, limits)).to.equal(500);
    expect(invalid(() => pageSize(-1, limits))).to.contain("page_size");
  });
});

describe("orderIdsToLookUp", () => {
  it("drops repeats, refuses bad ids by position and more than 5000 ids", () => {
    expect(orderIdsToLookUp(["a", "b", "a"])).to.deep.equal(["a", "b"]);
    expect(invalid(() => orderIdsToLookUp(["a", ""]))).to.contain("order_ids[1]");
    expect(invalid(() => orderIdsToLookUp(Array.from({ length: 5001 }, (_, i) => `id${i}`)))).to.contain("5001");
    expect(orderIdsToLookUp(Array.from({ length: 5000 }, (_, i) => `id${i}`))).to.have.length(5000);
  });
});

describe("sentWindow", () => {
  it("refuses a window that ends before it starts or lies outside what DATETIME holds", () => {
    expect(invalid(() => sentWindow(new Date(2000), new Date(1000)))).to.contain("sent_after");
    expect(invalid(() => sentWindow(new Date(Date.UTC(10000, 0, 2)), undefined))).to.contain("sent_after");
    expect(sentWindow(undefined, undefined)).to.deep.equal({ after: undefined, before: undefined });
  });
});

describe("page tokens", () => {
  it("round-trip their position", () => {
    const id = newId();
    expect(decodeIdToken(encodeIdToken(id))).to.equal(id);
    const pos = { sentAt: new Date("2030-05-06T07:08:09.123Z"), id };
    expect(decodeSentToken(encodeSentToken(pos))).to.deep.equal(pos);
    expect(decodeIdToken("")).to.equal(undefined);
  });

  it("refuses tokens this service did not make", () => {
    for (const bad of ["!!", "abc", Buffer.from("not-an-id").toString("base64url"), encodeIdToken(newId()) + "="]) {
      expect(invalid(() => decodeIdToken(bad))).to.contain("page_token");
      expect(invalid(() => decodeSentToken(bad))).to.contain("page_token");
    }
  });
});
