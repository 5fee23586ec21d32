import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { VoucherStatus } from "@shop/sdk/voucher";
import { VOUCHER_CODE_PATTERN } from "../src/domain/voucher.js";
import { expectCode, issueRequest, LEVEL, orderId, startTestService, type TestService } from "./helpers.js";
import { allScopesToken } from "@shop/testkit/auth";

describe("IssueVoucher", () => {
  let t: TestService;
  before(async () => {
    t = await startTestService({ poolSize: 20 });
  });
  after(async () => {
    await t?.stop();
  });

  // Refused by the rules declared in the proto, before the handler (whose own checks say the same in other words).
  const invalid: Array<[string, Parameters<typeof issueRequest>[0], RegExp]> = [
    ["an empty order_id", { orderId: "" }, /^invalid IssueVoucherRequest: order_id: value is required$/],
    ["an order_id over 64 characters", { orderId: "o".repeat(65) }, /^invalid IssueVoucherRequest: order_id: must be at most 64 characters$/],
    ["an order_id with a space", { orderId: "ord 1" }, /^invalid IssueVoucherRequest: order_id: does not match regex pattern/],
    ["an empty customer_id", { customerId: "" }, /^invalid IssueVoucherRequest: customer_id: value is required$/],
    ["a customer_id over 64 characters", { customerId: "c".repeat(65) }, /^invalid IssueVoucherRequest: customer_id: must be at most 64 characters$/],
    ["a customer_id with a quote", { customerId: "c'1" }, /^invalid IssueVoucherRequest: customer_id: does not match regex pattern/],
    ["a zero total", { orderTotalCents: 0n }, /^invalid IssueVoucherRequest: order_total_cents: must be greater than 0 and less than or equal to 10000000000$/],
    ["a negative total", { orderTotalCents: -15_000n }, /^invalid IssueVoucherRequest: order_total_cents: must be greater than 0 and less than or equal to 10000000000$/],
    ["a total over 100 million EUR", { orderTotalCents: 10_000_000_001n }, /^invalid IssueVoucherRequest: order_total_cents: must be greater than 0 and less than or equal to 10000000000$/],
    ["a missing currency", { currency: "" }, /^invalid IssueVoucherRequest: currency: (value is required|must equal `EUR`)$/],
    ["another currency", { currency: "USD" }, /^invalid IssueVoucherRequest: currency: (value is required|must equal `EUR`)$/],
  ];
  for (const [what, overrides, message] of invalid) {
    it(`refuses ${what} with INVALID_ARGUMENT and writes nothing`, async () => {
      const before = await t.count();
      const req = issueRequest(overrides);
      const err = await expectCode(t.client.issueVoucher(req), Code.InvalidArgument);
      expect(err.rawMessage).to.match(message);
      expect(await t.count()).to.equal(before);
    });
  }

  it("issues a 5 EUR voucher the first time and logs it with the order and voucher ids", async () => {
    const req = issueRequest({ customerId: "cust-first", orderTotalCents: 10_001n });
    const res = await t.client.issueVoucher(req);
    expect(res.created).to.equal(true);
    const v = res.voucher!;
    expect(v.id).to.have.length(26);
    expect(v.code).to.match(VOUCHER_CODE_PATTERN);
    expect(v).to.include({ orderId: req.orderId, customerId: "cust-first", currency: "EUR", status: VoucherStatus.ISSUED, voidReason: "" });
    expect(v.amountCents).to.equal(500n);
    expect(v.orderTotalCents).to.equal(10_001n);
    expect(Math.abs(timestampDate(v.issuedAt!).getTime() - Date.now())).to.be.below(60_000);
    expect(v.voidedAt).to.equal(undefined);
    expect(await t.count(req.orderId)).to.equal(1);
    const line = t.lines.find((l) => l.msg === "voucher issued" && l.orderId === req.orderId);
    expect(line).to.include({ level: LEVEL.info, voucherId: v.id });
  });

  it("answers a replay with created=false and the identical voucher", async () => {
    const req = issueRequest();
    const first = await t.client.issueVoucher(req);
    const again = await t.client.issueVoucher(req);
    expect(again.created).to.equal(false);
    expect(again.voucher).to.deep.equal(first.voucher);
    expect(await t.count(req.orderId)).to.equal(1);
  });

  it("refuses the same order for another customer with ALREADY_EXISTS, writes nothing and logs a warning", async () => {
    const req = issueRequest({ customerId: "cust-a" });
    const first = await t.client.issueVoucher(req);
    const err = await expectCode(t.client.issueVoucher({ ...req, customerId: "cust-b" }), Code.AlreadyExists);
    expect(err.rawMessage).to.equal(`voucher for order ${req.orderId} was issued for a different customer`);
    const [row] = (await t.client.batchGetVouchersByOrder({ orderIds: [req.orderId] })).vouchers;
    expect(row).to.deep.equal(first.voucher);
    expect(await t.count(req.orderId)).to.equal(1);
    const warning = t.lines.find((l) => l.level === LEVEL.warn && l.orderId === req.orderId);
    expect(warning?.msg).to.match(/different customer/);
  });

  it("refuses the same order with another total with ALREADY_EXISTS and writes nothing", async () => {
    const req = issueRequest({ orderTotalCents: 20_000n });
    const first = await t.client.issueVoucher(req);
    const err = await expectCode(t.client.issueVoucher({ ...req, orderTotalCents: 20_001n }), Code.AlreadyExists);
    expect(err.rawMessage).to.equal(`voucher for order ${req.orderId} was issued for a different order total`);
    expect((await t.client.getVoucher({ voucherId: first.voucher!.id })).voucher).to.deep.equal(first.voucher);
    expect(await t.count(req.orderId)).to.equal(1);
  });

  it("never answers a replay with a voided voucher: the order gets a new live one, and the voided one stays as it was", async () => {
    const req = issueRequest();
    const first = await t.client.issueVoucher(req);
    const voided = (await t.client.voidVoucher({ voucherId: first.voucher!.id, reason: "order returned" })).voucher!;
    const again = await t.client.issueVoucher(req);
    expect(again.created).to.equal(true);
    expect(again.voucher!.id).not.to.equal(first.voucher!.id);
    expect(again.voucher!.status).to.equal(VoucherStatus.ISSUED);
    expect((await t.client.getVoucher({ voucherId: voided.id })).voucher).to.deep.equal(voided);
    expect(await t.count(req.orderId)).to.equal(2);
  });

  it("gives fifty concurrent identical calls one voucher, fifty identical answers and exactly one created=true", async () => {
    const req = issueRequest();
    const answers = await Promise.all(Array.from({ length: 50 }, () => t.client.issueVoucher(req)));
    expect(answers.filter((a) => a.created)).to.have.length(1);
    const ids = new Set(answers.map((a) => a.voucher!.id));
    const codes = new Set(answers.map((a) => a.voucher!.code));
    expect(ids.size).to.equal(1);
    expect(codes.size).to.equal(1);
    for (const a of answers) expect(a.voucher).to.deep.equal(answers[0]!.voucher);
    expect(await t.count(req.orderId)).to.equal(1);
  });

  it("gives concurrent calls for many orders one well-formed, distinct code each", async () => {
    const reqs = Array.from({ length: 40 }, () => issueRequest());
    const answers = await Promise.all([...reqs, ...reqs].map((r) => t.client.issueVoucher(r)));
    expect(answers.filter((a) => a.created)).to.have.length(40);
    const codes = new Set(answers.map((a) => a.voucher!.code));
    expect(codes.size).to.equal(40);
    for (const c of codes) expect(c).to.match(VOUCHER_CODE_PATTERN);
    // Straight from the database: each order holds one row, ISSUED, with the code it was answered with.
    const ids = reqs.map((r) => `'${r.orderId}'`).join(",");
    const rows = await t.db.sql(`SELECT order_id, status, code FROM vouchers WHERE order_id IN (${ids}) ORDER BY order_id`);
    const answered = new Map(answers.map((a) => [a.voucher!.orderId, a.voucher!.code]));
    const expected = [...reqs].sort((a, b) => (a.orderId < b.orderId ? -1 : 1)).map((r) => `${r.orderId}\tISSUED\t${answered.get(r.orderId)}`);
    expect(rows.trim().split("\n")).to.deep.equal(expected);
  });

  it("is served as Connect JSON over HTTP/1.1 as well", async () => {
    const id = orderId("json");
    const call = (body: unknown) =>
      fetch(`${t.httpUrl}/shop.voucher.v1.VoucherService/IssueVoucher`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${allScopesToken}` },
        body: JSON.stringify(body),
      });
    const res = await call({ orderId: id, customerId: "cust-json", orderTotalCents: "12345", currency: "EUR" });
    expect(res.status).to.equal(200);
    const body = (await res.json()) as { created: boolean; voucher: Record<string, unknown> };
    expect(body.created).to.equal(true);
    expect(body.voucher).to.include({ orderId: id, customerId: "cust-json", amountCents: "500", currency: "EUR", status: "VOUCHER_STATUS_ISSUED" });

    const replay = await call({ orderId: id, customerId: "cust-json", orderTotalCents: "12345", currency: "EUR" });
    expect(((await replay.json()) as { created?: boolean }).created ?? false).to.equal(false);

    const refused = await call({ orderId: id, customerId: "cust-json", orderTotalCents: "12345", currency: "GBP" });
    expect(refused.status).to.equal(400);
    expect(await refused.json()).to.deep.include({ code: "invalid_argument" });
    expect(await t.count(id)).to.equal(1);
  });
});
