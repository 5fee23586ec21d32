import { expect } from "chai";
import { DomainError } from "@shop/platform/errors";
import { orderIdsToLookUp, pageSize, validateCreateOrder } from "../../src/domain/validation.js";

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
