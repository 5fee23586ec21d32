import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { VoucherStatus, type Voucher } from "@shop/sdk/voucher";
import { encodeIdToken } from "@shop/platform/paging";
import { expectCode, issueRequest, orderId, startTestService, type TestService } from "./helpers.js";

describe("reading and voiding vouchers", () => {
  let t: TestService;
  before(async () => {
    t = await startTestService();
  });
  after(async () => {
    await t?.stop();
  });

  async function issueFor(customerId: string, n: number): Promise<Voucher[]> {
    const { results } = await t.client.batchIssueVouchers({ items: Array.from({ length: n }, () => issueRequest({ customerId })) });
    return results.map((r) => r.voucher!);
  }

  describe("GetVoucher", () => {
    it("returns a voucher by id", async () => {
      const { voucher } = await t.client.issueVoucher(issueRequest());
      expect((await t.client.getVoucher({ voucherId: voucher!.id })).voucher).to.deep.equal(voucher);
    });

    it("is NOT_FOUND for an unknown id and INVALID_ARGUMENT for a malformed one", async () => {
      expect((await expectCode(t.client.getVoucher({ voucherId: "01HZZZZZZZZZZZZZZZZZZZZZZZ" }), Code.NotFound)).rawMessage).to.match(/not found/);
      expect((await expectCode(t.client.getVoucher({ voucherId: "" }), Code.InvalidArgument)).rawMessage).to.equal("invalid GetVoucherRequest: voucher_id: value is required");
      await expectCode(t.client.getVoucher({ voucherId: "a b" }), Code.InvalidArgument);
    });
  });

  describe("ListVouchers", () => {
    it("pages through a customer's vouchers newest first with no skips or repeats", async () => {
      const customerId = orderId("cust");
      const issued = [...(await issueFor(customerId, 12)), ...(await issueFor(customerId, 11))];
      await issueFor(orderId("other-cust"), 3);
      const seen: Voucher[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const page = await t.client.listVouchers({ customerId, pageSize: 5, pageToken });
        expect(page.vouchers.length).to.be.at.most(5);
        seen.push(...page.vouchers);
        pageToken = page.nextPageToken;
        pages++;
      } while (pageToken !== "");
      expect(pages).to.equal(5);
      const ids = seen.map((v) => v.id);
      expect(ids).to.deep.equal(issued.map((v) => v.id).sort().reverse());
      expect(seen.every((v) => v.customerId === customerId)).to.equal(true);
    });

    it("returns 50 by default and no token on the last page", async () => {
      const customerId = orderId("cust");
      await issueFor(customerId, 3);
      const page = await t.client.listVouchers({ customerId });
      expect(page.vouchers).to.have.length(3);
      expect(page.nextPageToken).to.equal("");
      expect((await t.client.listVouchers({ customerId: orderId("nobody") })).vouchers).to.deep.equal([]);
    });

    it("refuses a malformed page token, a missing customer and a negative page size", async () => {
      // The proto's rule refuses what is not base64url; the handler what does not decode to a page position.
      for (const [pageToken, message] of [
        ["not a token", /^invalid ListVouchersRequest: page_token: does not match regex pattern/],
        ["Zm9v", /page_token is malformed/],
        [encodeIdToken("01HZZZZZZZZZZZZZZZZZZZZZZZ") + "x", /page_token is malformed/],
      ] as const) {
        expect((await expectCode(t.client.listVouchers({ customerId: "c", pageToken }), Code.InvalidArgument)).rawMessage).to.match(message);
      }
      await expectCode(t.client.listVouchers({ customerId: "" }), Code.InvalidArgument);
      await expectCode(t.client.listVouchers({ customerId: "c", pageSize: -1 }), Code.InvalidArgument);
    });
  });

  describe("BatchGetVouchersByOrder", () => {
    it("returns the vouchers of the orders that have one, in request order", async () => {
      const [a, b] = await issueFor("cust-batch-get", 2);
      const missing = orderId("missing");
      const { vouchers } = await t.client.batchGetVouchersByOrder({ orderIds: [b!.orderId, missing, a!.orderId, b!.orderId] });
      expect(vouchers).to.deep.equal([b, a]);
      expect((await t.client.batchGetVouchersByOrder({ orderIds: [] })).vouchers).to.deep.equal([]);
    });

    it("accepts 5000 order ids and refuses 5001 or a malformed one", async () => {
      const many = Array.from({ length: 5000 }, (_, i) => `absent-${i}`);
      expect((await t.client.batchGetVouchersByOrder({ orderIds: many })).vouchers).to.deep.equal([]);
      await expectCode(t.client.batchGetVouchersByOrder({ orderIds: [...many, "one-more"] }), Code.InvalidArgument);
      const err = await expectCode(t.client.batchGetVouchersByOrder({ orderIds: ["ok", "not ok"] }), Code.InvalidArgument);
      expect(err.rawMessage).to.match(/^invalid BatchGetVouchersByOrderRequest: order_ids\[1\]: /);
    });
  });

  describe("ListIssuedVouchers", () => {
    const T0 = Date.UTC(2020, 0, 1);
    let placed: Array<{ id: string; at: number }>;

    before(async () => {
      const vouchers = await issueFor("cust-window", 10);
      // Seconds 0..9, except that 3, 4 and 5 share one instant so the id breaks the tie.
      placed = vouchers.map((v, i) => ({ id: v.id, at: T0 + (i >= 3 && i <= 5 ? 3 : i) * 1000 }));
      for (const p of placed) {
        await t.db.sql(`UPDATE vouchers SET issued_at = '${new Date(p.at).toISOString().replace("T", " ").replace("Z", "")}' WHERE id = '${p.id}'`);
      }
    });

    const expected = (from: number, to: number) =>
      placed
        .filter((p) => p.at >= from && p.at < to)
        .sort((x, y) => x.at - y.at || (x.id < y.id ? -1 : 1))
        .map((p) => p.id);

    async function listAll(after: number | undefined, before: number | undefined, pageSize: number) {
      const out: Voucher[] = [];
      let pageToken = "";
      do {
        const page = await t.client.listIssuedVouchers({
          issuedAfter: after === undefined ? undefined : timestampFromDate(new Date(after)),
          issuedBefore: before === undefined ? undefined : timestampFromDate(new Date(before)),
          pageSize,
          pageToken,
        });
        expect(page.vouchers.length).to.be.at.most(pageSize || 1000);
        out.push(...page.vouchers);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      return out;
    }

    it("lists [issued_after, issued_before) by issue time then id, across pages without skips or repeats", async () => {
      const from = T0 + 2000;
      const to = T0 + 8000;
      const got = await listAll(from, to, 2);
      expect(got.map((v) => v.id)).to.deep.equal(expected(from, to));
      expect(got).to.have.length(6);
      for (const v of got) expect(timestampDate(v.issuedAt!).getTime()).to.be.within(from, to - 1);
    });

    it("pages through a tie of one instant one id at a time", async () => {
      const got = await listAll(T0 + 3000, T0 + 3001, 1);
      expect(got.map((v) => v.id)).to.deep.equal(expected(T0 + 3000, T0 + 3001));
      expect(got).to.have.length(3);
    });

    it("reads an unset lower bound as the beginning and an unset upper bound as now, voided vouchers included", async () => {
      await t.client.voidVoucher({ voucherId: placed[0]!.id, reason: "test" });
      const early = await listAll(undefined, T0 + 1500, 1000);
      expect(early.map((v) => v.id)).to.deep.equal(expected(0, T0 + 1500));
      expect(early[0]!.status).to.equal(VoucherStatus.VOIDED);
      const { voucher } = await t.client.issueVoucher(issueRequest());
      await new Promise((r) => setTimeout(r, 5));
      const upToNow = await listAll(T0, undefined, 0);
      expect(upToNow.map((v) => v.id)).to.include.members([...placed.map((p) => p.id), voucher!.id]);
    });

    it("refuses a malformed page token and an inverted window", async () => {
      await expectCode(t.client.listIssuedVouchers({ pageToken: encodeIdToken("01HZZZZZZZZZZZZZZZZZZZZZZZ") }), Code.InvalidArgument);
      await expectCode(
        t.client.listIssuedVouchers({ issuedAfter: timestampFromDate(new Date(T0 + 1)), issuedBefore: timestampFromDate(new Date(T0)) }),
        Code.InvalidArgument,
      );
    });
  });

  describe("VoidVoucher", () => {
    it("voids once; a second call changes nothing and keeps the first reason", async () => {
      const { voucher } = await t.client.issueVoucher(issueRequest());
      const first = await t.client.voidVoucher({ voucherId: voucher!.id, reason: "order cancelled" });
      expect(first.changed).to.equal(true);
      expect(first.voucher).to.include({ id: voucher!.id, status: VoucherStatus.VOIDED, voidReason: "order cancelled" });
      expect(Math.abs(timestampDate(first.voucher!.voidedAt!).getTime() - Date.now())).to.be.below(60_000);

      const second = await t.client.voidVoucher({ voucherId: voucher!.id, reason: "another reason" });
      expect(second.changed).to.equal(false);
      expect(second.voucher).to.deep.equal(first.voucher);
      expect((await t.client.getVoucher({ voucherId: voucher!.id })).voucher).to.deep.equal(first.voucher);
    });

    it("is NOT_FOUND for an unknown voucher and INVALID_ARGUMENT for a missing or long reason", async () => {
      await expectCode(t.client.voidVoucher({ voucherId: "01HZZZZZZZZZZZZZZZZZZZZZZZ", reason: "x" }), Code.NotFound);
      const { voucher } = await t.client.issueVoucher(issueRequest());
      await expectCode(t.client.voidVoucher({ voucherId: voucher!.id, reason: "" }), Code.InvalidArgument);
      await expectCode(t.client.voidVoucher({ voucherId: voucher!.id, reason: "r".repeat(256) }), Code.InvalidArgument);
      await expectCode(t.client.voidVoucher({ voucherId: "", reason: "x" }), Code.InvalidArgument);
      expect((await t.client.getVoucher({ voucherId: voucher!.id })).voucher!.status).to.equal(VoucherStatus.ISSUED);
    });
  });
});
