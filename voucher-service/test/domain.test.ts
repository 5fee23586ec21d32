import { expect } from "chai";
import { DomainError } from "@shop/platform/errors";
import { classifyIssue, newVoucherCode, VOUCHER_CODE_PATTERN, voucherToShow, type Voucher } from "../src/domain/voucher.js";
import { checkBatchShape, pageSize, toIssueRequest } from "../src/domain/validation.js";

function refusal(fn: () => unknown): DomainError {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(DomainError);
    return err as DomainError;
  }
  throw new Error("expected a refusal");
}

describe("voucher domain", () => {
  describe("toIssueRequest", () => {
    it("takes the facts of a request that passed its proto's rules, the total as a number", () => {
      const raw = { orderId: "ord-1", customerId: "cust-1", orderTotalCents: 10_000_000_000n, currency: "EUR", traceparent: "" };
      expect(toIssueRequest(raw)).to.deep.equal({ orderId: "ord-1", customerId: "cust-1", orderTotalCents: 10_000_000_000, currency: "EUR" });
    });
  });

  describe("newVoucherCode", () => {
    it("makes well-formed codes that do not repeat", () => {
      const codes = Array.from({ length: 20_000 }, newVoucherCode);
      for (const c of codes) expect(c).to.match(VOUCHER_CODE_PATTERN);
      expect(new Set(codes).size).to.equal(codes.length);
    });

    it("uses every Crockford character, so all 80 bits are random", () => {
      const chars = new Set(Array.from({ length: 2_000 }, newVoucherCode).join("").replace(/^V5|-/g, ""));
      expect(chars.size).to.be.at.least(32);
    });
  });

  describe("classifyIssue", () => {
    const request = { orderId: "ord-1", customerId: "cust-1", orderTotalCents: 15_000, currency: "EUR" as const };
    const row: Voucher = {
      ...request,
      id: "01J00000000000000000000000",
      code: "V5-AAAA-BBBB-CCCC-DDDD",
      amountCents: 500,
      status: "ISSUED",
      issuedAt: new Date(),
      voidedAt: null,
      voidReason: null,
    };

    const voided = (id: string, at: number): Voucher => ({ ...row, id, status: "VOIDED", voidedAt: new Date(at), voidReason: "test" });

    it("is created when the live row is the one this call inserted, reissued when voided ones came before it", () => {
      expect(classifyIssue(request, row.id, [row])?.kind).to.equal("created");
      const old = voided("01H00000000000000000000000", 1);
      expect(classifyIssue(request, row.id, [old, row])).to.deep.equal({ kind: "reissued", voucher: row, voided: [old] });
    });

    it("is a replay of the live voucher when an earlier call issued it for the same facts", () => {
      expect(classifyIssue(request, "other", [row])).to.deep.equal({ kind: "replayed", voucher: row });
      expect(classifyIssue(request, "other", [voided("01H00000000000000000000000", 1), row])).to.deep.equal({ kind: "replayed", voucher: row });
    });

    it("has no answer when the order has only voided vouchers: a voided voucher is never replayed", () => {
      expect(classifyIssue(request, "other", [voided(row.id, 1)])).to.equal(undefined);
      expect(classifyIssue(request, "other", [])).to.equal(undefined);
    });

    it("is a conflict naming what differs, judged on the live voucher only", () => {
      const msg = (v: Voucher) => {
        const o = classifyIssue(request, "other", [v]);
        return o?.kind === "conflict" ? o.message : o?.kind;
      };
      expect(msg({ ...row, customerId: "cust-2" })).to.equal("voucher for order ord-1 was issued for a different customer");
      expect(msg({ ...row, orderTotalCents: 1 })).to.equal("voucher for order ord-1 was issued for a different order total");
      expect(msg({ ...row, customerId: "c", orderTotalCents: 1 })).to.equal(
        "voucher for order ord-1 was issued for a different customer and order total",
      );
      // A voided voucher for other facts does not make a conflict of a matching live one.
      expect(classifyIssue(request, "other", [{ ...voided("01H00000000000000000000000", 1), customerId: "cust-2" }, row])?.kind).to.equal("replayed");
    });
  });

  describe("voucherToShow", () => {
    const row: Voucher = {
      id: "01J00000000000000000000000",
      code: "V5-AAAA-BBBB-CCCC-DDDD",
      orderId: "ord-1",
      customerId: "cust-1",
      orderTotalCents: 15_000,
      amountCents: 500,
      currency: "EUR",
      status: "ISSUED",
      issuedAt: new Date(),
      voidedAt: null,
      voidReason: null,
    };
    const voided = (id: string, at: number): Voucher => ({ ...row, id, status: "VOIDED", voidedAt: new Date(at), voidReason: "test" });

    it("shows the live voucher wherever it stands", () => {
      expect(voucherToShow([voided("01K00000000000000000000000", 5), row, voided("01A00000000000000000000000", 9)])).to.equal(row);
    });

    it("else the most recently voided one, by voided_at and then by id", () => {
      const late = voided("01A00000000000000000000000", 9);
      expect(voucherToShow([voided("01K00000000000000000000000", 5), late, voided("01B00000000000000000000000", 7)])).to.equal(late);
      const tieHigh = voided("01Z00000000000000000000000", 9);
      expect(voucherToShow([late, tieHigh])).to.equal(tieHigh);
      expect(voucherToShow([tieHigh, late])).to.equal(tieHigh);
      expect(voucherToShow([])).to.equal(undefined);
    });
  });

  describe("batch shape and page sizes", () => {
    it("refuses a batch over the configured maximum, or one naming an order twice", () => {
      expect(refusal(() => checkBatchShape(["a", "b", "c"], 2)).message).to.match(/at most 2/);
      expect(refusal(() => checkBatchShape(["a", "b", "a"], 10)).message).to.equal('items[0] and items[2] have the same order_id "a"');
      expect(() => checkBatchShape(["", ""], 10)).not.to.throw();
      expect(() => checkBatchShape(["a", "b"], 2)).not.to.throw();
    });

    it("defaults and caps page sizes", () => {
      expect(pageSize(0, 50, 500)).to.equal(50);
      expect(pageSize(7, 50, 500)).to.equal(7);
      expect(pageSize(9999, 50, 500)).to.equal(500);
    });
  });
});
