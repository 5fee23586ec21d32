import { expect } from "chai";
import {
  VOUCHER_RULE_VERSIONS,
  VoucherRule,
  describeRule,
  qualifiesForVoucher,
  ruleInForce,
  type VoucherRuleVersion,
} from "../src/voucher-rule.js";

const EUR = "EUR" as const;
const CHANGE = new Date("2031-03-01T00:00:00.000Z");
const twoVersions: VoucherRuleVersion[] = [
  { version: 1, effectiveFrom: new Date(0), thresholdCents: 10_000, currency: EUR, voucherAmountCents: 500 },
  { version: 2, effectiveFrom: CHANGE, thresholdCents: 20_000, currency: EUR, voucherAmountCents: 500 },
];

describe("voucher rule versions", () => {
  it("today's list has one version, in force since the epoch: more than 10000 cents EUR earns 500 cents", () => {
    expect(VOUCHER_RULE_VERSIONS).to.have.length(1);
    const v = ruleInForce(new Date());
    expect(v).to.include({ version: 1, thresholdCents: 10_000, currency: "EUR", voucherAmountCents: 500 });
    expect(v.effectiveFrom.toISOString()).to.equal("1970-01-01T00:00:00.000Z");
  });

  it("the threshold is strict: 10000 cents does not qualify, 10001 does; other currencies never", () => {
    const at = new Date("2030-01-01T00:00:00Z");
    expect(qualifiesForVoucher({ totalCents: 10_000, currency: "EUR" }, at)).to.equal(false);
    expect(qualifiesForVoucher({ totalCents: 10_001, currency: "EUR" }, at)).to.equal(true);
    expect(qualifiesForVoucher({ totalCents: 10_001, currency: "USD" }, at)).to.equal(false);
    expect(qualifiesForVoucher({ totalCents: 10_001, currency: "eur" }, at)).to.equal(false);
  });

  it("a version is in force from its effectiveFrom instant inclusive, the previous one up to the millisecond before", () => {
    const rule = new VoucherRule(twoVersions);
    expect(rule.inForce(new Date(CHANGE.getTime() - 1)).version).to.equal(1);
    expect(rule.inForce(CHANGE).version).to.equal(2);
    expect(rule.inForce(new Date("2099-01-01T00:00:00Z")).version).to.equal(2);
  });

  it("an order is judged by the version in force when it was sent", () => {
    const rule = new VoucherRule(twoVersions);
    const order = { totalCents: 15_000, currency: "EUR" };
    expect(rule.qualifies(order, new Date(CHANGE.getTime() - 1))).to.equal(true);
    expect(rule.qualifies(order, CHANGE)).to.equal(false);
    expect(rule.qualifies({ totalCents: 20_000, currency: "EUR" }, CHANGE)).to.equal(false);
    expect(rule.qualifies({ totalCents: 20_001, currency: "EUR" }, CHANGE)).to.equal(true);
  });

  it("the order of the list does not matter", () => {
    const rule = new VoucherRule([...twoVersions].reverse());
    expect(rule.inForce(CHANGE).version).to.equal(2);
    expect(rule.inForce(new Date(0)).version).to.equal(1);
  });

  it("refuses a date before the first version, an invalid date, and lists that would make the answer ambiguous", () => {
    const later = new VoucherRule([{ ...twoVersions[1]! }]);
    expect(() => later.inForce(new Date(CHANGE.getTime() - 1))).to.throw(RangeError, /no voucher rule version/);
    expect(() => ruleInForce(new Date(Number.NaN))).to.throw(RangeError);
    expect(() => new VoucherRule([])).to.throw(RangeError);
    expect(() => new VoucherRule([twoVersions[0]!, { ...twoVersions[1]!, effectiveFrom: new Date(0) }])).to.throw(RangeError, /distinct/);
    expect(() => new VoucherRule([twoVersions[0]!, { ...twoVersions[1]!, version: 1 }])).to.throw(RangeError, /distinct/);
    expect(() => new VoucherRule([{ ...twoVersions[0]!, version: 3 }, twoVersions[1]!])).to.throw(RangeError, /grow/);
    expect(() => new VoucherRule([{ ...twoVersions[0]!, thresholdCents: 1.5 }])).to.throw(RangeError);
  });

  it("describes the condition for refusals", () => {
    expect(describeRule(new Date())).to.match(/^more than 10000 cents EUR \(rule version 1/);
  });
});
