import { expect } from "chai";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import type { RowDataPacket } from "mysql2";
import { PaymentOutcome, RefusalReason, type OrderPayment } from "@shop/sdk/payment";
import { roleToken } from "@shop/testkit/auth";
import { listOrderPaymentsSql } from "../src/payments.js";
import { expectCode, startTestService, uniqueId, type TestService, type Transport } from "./helpers.js";

describe("payment service: what was decided for orders (BatchGetOrderPayments, ListOrderPayments)", () => {
  let t: TestService;
  before(async () => {
    t = await startTestService();
  });
  after(async () => {
    await t?.stop();
  });

  async function fundedCustomer(cents: bigint): Promise<string> {
    const customerId = uniqueId("cust");
    await t.client().openAccount({ customerId, currency: "EUR" });
    if (cents > 0n) await t.client().topUp({ customerId, amountCents: cents, currency: "EUR", requestId: uniqueId("fund") });
    return customerId;
  }
  /** The inbox's own record of a key: what decided_at and refunded_at must be. */
  async function receivedAt(key: string): Promise<Date> {
    const [rows] = await t.pool.query<RowDataPacket[]>("SELECT received_at FROM inbox WHERE message_key = ?", [key]);
    return rows[0]!.received_at as Date;
  }
  const plain = (p: OrderPayment) => ({
    orderId: p.orderId,
    customerId: p.customerId,
    chargeOutcome: p.chargeOutcome,
    refusalReason: p.refusalReason,
    amountCents: p.amountCents,
    currency: p.currency,
    decidedAt: p.decidedAt && timestampDate(p.decidedAt).getTime(),
    refunded: p.refunded,
    refundedAt: p.refundedAt && timestampDate(p.refundedAt).getTime(),
  });

  for (const transport of ["grpc", "connect"] as Transport[]) {
    it(`answers per order over ${transport}: charged, refused with its reason, refunded with its time; unknown orders absent, each order once, in the request's order`, async () => {
      const c = t.client(transport);
      const rich = await fundedCustomer(10_000n);
      const poor = await fundedCustomer(100n);
      const [charged, refunded, short, noAccount, unknown] = ["charged", "refunded", "short", "noacct", "unknown"].map((p) => uniqueId(p));
      await c.chargeOrder({ orderId: charged!, customerId: rich, amountCents: 1_000n, currency: "EUR" });
      await c.chargeOrder({ orderId: refunded!, customerId: rich, amountCents: 2_500n, currency: "EUR" });
      await c.refundOrder({ orderId: refunded! });
      await c.chargeOrder({ orderId: short!, customerId: poor, amountCents: 500n, currency: "EUR" });
      const nobody = uniqueId("nobody");
      await c.chargeOrder({ orderId: noAccount!, customerId: nobody, amountCents: 700n, currency: "EUR" });

      const res = await c.batchGetOrderPayments({ orderIds: [refunded!, unknown!, short!, charged!, refunded!, noAccount!] });
      expect(res.payments.map(plain)).to.deep.equal([
        {
          orderId: refunded,
          customerId: rich,
          chargeOutcome: PaymentOutcome.CHARGED,
          refusalReason: RefusalReason.UNSPECIFIED,
          amountCents: 2_500n,
          currency: "EUR",
          decidedAt: (await receivedAt(`charge:${refunded}`)).getTime(),
          refunded: true,
          refundedAt: (await receivedAt(`refund:${refunded}`)).getTime(),
        },
        {
          orderId: short,
          customerId: poor,
          chargeOutcome: PaymentOutcome.REFUSED,
          refusalReason: RefusalReason.INSUFFICIENT_FUNDS,
          amountCents: 500n,
          currency: "EUR",
          decidedAt: (await receivedAt(`charge:${short}`)).getTime(),
          refunded: false,
          refundedAt: undefined,
        },
        {
          orderId: charged,
          customerId: rich,
          chargeOutcome: PaymentOutcome.CHARGED,
          refusalReason: RefusalReason.UNSPECIFIED,
          amountCents: 1_000n,
          currency: "EUR",
          decidedAt: (await receivedAt(`charge:${charged}`)).getTime(),
          refunded: false,
          refundedAt: undefined,
        },
        {
          orderId: noAccount,
          customerId: nobody,
          chargeOutcome: PaymentOutcome.REFUSED,
          refusalReason: RefusalReason.NO_ACCOUNT,
          amountCents: 700n,
          currency: "EUR",
          decidedAt: (await receivedAt(`charge:${noAccount}`)).getTime(),
          refunded: false,
          refundedAt: undefined,
        },
      ]);
      expect((await c.batchGetOrderPayments({ orderIds: [] })).payments).to.deep.equal([]);
    });
  }

  it("tells a refund refused as NOT_CHARGED from a refund: refunded stays false", async () => {
    const c = t.client();
    const orderId = uniqueId("refused-then-refund");
    await c.chargeOrder({ orderId, customerId: await fundedCustomer(0n), amountCents: 300n, currency: "EUR" });
    const r = await c.refundOrder({ orderId });
    expect(r.outcome).to.equal(PaymentOutcome.REFUSED);
    const [p] = (await c.batchGetOrderPayments({ orderIds: [orderId] })).payments;
    expect(p).to.include({ chargeOutcome: PaymentOutcome.REFUSED, refunded: false });
    expect(p!.refundedAt).to.equal(undefined);
  });

  it("compares order ids exactly: another case is another order", async () => {
    const c = t.client();
    const orderId = uniqueId("CaseOrder");
    await c.chargeOrder({ orderId, customerId: await fundedCustomer(1_000n), amountCents: 100n, currency: "EUR" });
    expect((await c.batchGetOrderPayments({ orderIds: [orderId.toLowerCase(), orderId.toUpperCase()] })).payments).to.deep.equal([]);
    expect((await c.batchGetOrderPayments({ orderIds: [orderId] })).payments).to.have.length(1);
  });

  it("refuses more than 1000 order ids, or a malformed one, with INVALID_ARGUMENT", async () => {
    const c = t.client();
    await expectCode(c.batchGetOrderPayments({ orderIds: Array.from({ length: 1001 }, (_, i) => `o${i}`) }), Code.InvalidArgument);
    await expectCode(c.batchGetOrderPayments({ orderIds: ["bad id"] }), Code.InvalidArgument);
    await expectCode(c.batchGetOrderPayments({ orderIds: [""] }), Code.InvalidArgument);
  });

  describe("ListOrderPayments", () => {
    /** A window of its own: charges whose decided_at is set to given times, so the listing is exact. */
    const BASE = Date.UTC(2031, 4, 6, 12, 0, 0);
    const at = (s: number) => new Date(BASE + s * 1000);
    let customer: string;
    let orders: Array<{ id: string; at: Date }>;

    before(async () => {
      customer = await fundedCustomer(1_000_000n);
      // Ids chosen so that two share a time and sort by id within it, and the page boundary falls inside that time.
      const tag = uniqueId("w");
      orders = [
        { id: `${tag}-b`, at: at(1) },
        { id: `${tag}-a`, at: at(1) },
        { id: `${tag}-c`, at: at(1) },
        { id: `${tag}-d`, at: at(2) },
        { id: `${tag}-e`, at: at(3) },
      ];
      for (const o of orders) await t.client().chargeOrder({ orderId: o.id, customerId: customer, amountCents: 100n, currency: "EUR" });
      await t.client().refundOrder({ orderId: orders[3]!.id });
      // A top-up and a refund inside the window: not charges, never listed.
      await t.client().topUp({ customerId: customer, amountCents: 1n, currency: "EUR", requestId: `${tag}-topup` });
      for (const o of orders) await t.pool.query("UPDATE inbox SET received_at = ? WHERE message_key = ?", [o.at, `charge:${o.id}`]);
      await t.pool.query("UPDATE inbox SET received_at = ? WHERE message_key IN (?)", [at(2), [`topup:${tag}-topup`, `refund:${orders[3]!.id}`]]);
    });

    const expected = () => [...orders].sort((x, y) => x.at.getTime() - y.at.getTime() || (x.id < y.id ? -1 : 1)).map((o) => o.id);

    async function listAll(pageSize: number, after = at(0), before = at(10)): Promise<{ ids: string[]; pages: number }> {
      const ids: string[] = [];
      let token = "";
      let pages = 0;
      do {
        const res = await t.client().listOrderPayments({ decidedAfter: timestampFromDate(after), decidedBefore: timestampFromDate(before), pageSize, pageToken: token });
        ids.push(...res.payments.map((p) => p.orderId));
        token = res.nextPageToken;
        pages++;
        expect(pages, "paging ends").to.be.below(20);
      } while (token);
      return { ids, pages };
    }

    it("lists the charges decided in [after, before) by (decided_at, order id), the same whatever the page size", async () => {
      expect((await listAll(500)).ids).to.deep.equal(expected());
      for (const size of [1, 2, 3]) {
        const { ids, pages } = await listAll(size);
        expect(ids, `page size ${size}`).to.deep.equal(expected());
        expect(pages).to.equal(Math.ceil(orders.length / size));
      }
      // after is inclusive, before exclusive.
      expect((await listAll(10, at(1), at(3))).ids).to.deep.equal(expected().slice(0, 4));
      expect((await listAll(10, at(2), at(3))).ids).to.deep.equal([orders[3]!.id]);
      const [refundedOne] = (await t.client().listOrderPayments({ decidedAfter: timestampFromDate(at(2)), decidedBefore: timestampFromDate(at(3)) })).payments;
      expect(refundedOne).to.include({ refunded: true, chargeOutcome: PaymentOutcome.CHARGED, customerId: customer, amountCents: 100n });
      expect(timestampDate(refundedOne!.decidedAt!).getTime()).to.equal(at(2).getTime());
    });

    it("pages at 50 by default and at most 500; an open window lists from the beginning and up to now", async () => {
      // 510 decided charges in a window of their own, written as the inbox records them (the paging is what is tested here).
      const tag = uniqueId("bulk");
      const when = new Date(Date.UTC(2032, 0, 1));
      const rows = Array.from({ length: 510 }, (_, i) => [
        `charge:${tag}-${String(i).padStart(4, "0")}`,
        JSON.stringify({ customerId: "x" }),
        JSON.stringify({ outcome: "REFUSED", reason: "NO_ACCOUNT", customerId: "x", amountCents: 1, currency: "EUR" }),
        when,
      ]);
      await t.pool.query("INSERT INTO inbox (message_key, facts, outcome, received_at) VALUES ?", [rows]);
      try {
        const window = { decidedAfter: timestampFromDate(when), decidedBefore: timestampFromDate(new Date(when.getTime() + 1)) };
        expect((await t.client().listOrderPayments(window)).payments).to.have.length(50);
        const big = await t.client().listOrderPayments({ ...window, pageSize: 10_000 });
        expect(big.payments).to.have.length(500);
        const rest = await t.client().listOrderPayments({ ...window, pageSize: 10_000, pageToken: big.nextPageToken });
        expect(rest.payments).to.have.length(10);
        expect(rest.nextPageToken).to.equal("");
        // No bounds: everything decided so far, the test window's charges among them.
        const open = await t.client().listOrderPayments({ pageSize: 500 });
        expect(open.payments.map((p) => p.orderId)).to.include.members(expected());
      } finally {
        await t.pool.query("DELETE FROM inbox WHERE message_key LIKE ?", [`charge:${tag}-%`]);
      }
    });

    it("refuses a window whose end is not after its start, and a page token it did not make, with INVALID_ARGUMENT", async () => {
      const c = t.client();
      await expectCode(c.listOrderPayments({ decidedAfter: timestampFromDate(at(2)), decidedBefore: timestampFromDate(at(1)) }), Code.InvalidArgument);
      await expectCode(c.listOrderPayments({ pageSize: -1 }), Code.InvalidArgument);
      const err = await expectCode(c.listOrderPayments({ pageToken: Buffer.from("12.bad id!").toString("base64url") }), Code.InvalidArgument);
      expect(err.rawMessage).to.match(/page_token is malformed/);
      await expectCode(c.listOrderPayments({ pageToken: "bm90LWEtdG9rZW4" }), Code.InvalidArgument);
    });

    it("walks inbox_charge_decided_idx in its order (no sort) and finds each refund by primary key", async () => {
      await t.pool.query("ANALYZE TABLE inbox");
      for (const shape of [
        { before: false, from: false },
        { before: true, from: true },
      ]) {
        const params = [at(0), ...(shape.before ? [at(10)] : []), ...(shape.from ? [at(1), at(1), "charge:x"] : []), 51];
        const [plan] = await t.pool.query<RowDataPacket[]>(`EXPLAIN ${listOrderPaymentsSql(shape)}`, params);
        expect(plan).to.have.length(2);
        expect(plan[0]).to.include({ table: "c", key: "inbox_charge_decided_idx" });
        expect(String(plan[0]!.Extra ?? ""), JSON.stringify(plan)).not.to.match(/filesort|temporary/i);
        expect(plan[1]).to.include({ table: "r", key: "PRIMARY", type: "eq_ref" });
      }
    });
  });

  it("needs payments:read: the reconciler and the shop may read, the charging relay and a customer may not", async () => {
    const orderId = uniqueId("acc");
    await t.client().chargeOrder({ orderId, customerId: await fundedCustomer(1_000n), amountCents: 100n, currency: "EUR" });
    for (const role of ["reconciler", "shop"] as const) {
      const c = t.client("grpc", roleToken(role));
      expect((await c.batchGetOrderPayments({ orderIds: [orderId] })).payments, role).to.have.length(1);
      await c.listOrderPayments({ pageSize: 1 });
    }
    for (const token of [roleToken("relay"), roleToken("customer", "c1")]) {
      const c = t.client("grpc", token);
      await expectCode(c.batchGetOrderPayments({ orderIds: [orderId] }), Code.PermissionDenied);
      await expectCode(c.listOrderPayments({}), Code.PermissionDenied);
    }
  });
});
