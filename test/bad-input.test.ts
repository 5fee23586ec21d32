import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { pino } from "pino";
import type { RowDataPacket } from "mysql2/promise";
import { createPool, type Pool } from "@shop/platform/db";
import { startOrderService, type RunningOrderService } from "@shop/order-service/service";
import { startVoucherService, type RunningVoucherService } from "@shop/voucher-service/service";
import { createOrderClient, createVoucherClient, type OrderClient, type VoucherClient } from "@shop/sdk/clients";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { testAuth, allScopesToken } from "@shop/testkit/auth";

/**
 * Every RPC of both services fed empty, overlong, malformed, negative, zero,
 * huge, wrong-currency and oversized inputs: each gets the right status and a
 * message naming the field, writes nothing, and the service keeps serving.
 * No request message has an enum field; malformed and mistyped JSON is
 * covered on the Connect transport instead. (Unknown JSON fields are ignored
 * there, as proto3 JSON allows for forward compatibility, so they are not refused.)
 */
const silent = pino({ level: "silent" });
const LONG = "x".repeat(65);
const ORDER_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ";
const BIG = 9_223_372_036_854_775_807n;

interface Case {
  name: string;
  call: () => Promise<unknown>;
  code: Code;
  /** A word the message must contain (the field, or the id not found). */
  mentions?: string;
}

describe("bad input on every RPC", function () {
  this.timeout(60_000);
  let orderDb: TestDatabase;
  let voucherDb: TestDatabase;
  let orderSvc: RunningOrderService;
  let voucherSvc: RunningVoucherService;
  let orders: OrderClient;
  let vouchers: VoucherClient;
  let orderPool: Pool;
  let voucherPool: Pool;
  let sentOrderId: string;
  let voucherId: string;
  const closers: Array<() => void> = [];

  async function rowCounts(): Promise<string> {
    const [[o], [b], [v]] = await Promise.all([
      orderPool.query<RowDataPacket[]>("SELECT COUNT(*) AS n, COALESCE(MAX(updated_at), 0) AS t FROM orders"),
      orderPool.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM voucher_outbox"),
      voucherPool.query<RowDataPacket[]>("SELECT COUNT(*) AS n, SUM(status = 'VOIDED') AS voided FROM vouchers"),
    ]);
    return JSON.stringify([o, b, v]);
  }

  before(async () => {
    [orderDb, voucherDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher")]);
    voucherSvc = await startVoucherService({ auth: testAuth, databaseUrl: voucherDb.url, host: "127.0.0.1", grpcPort: 0, httpPort: 0, logger: silent, graceMs: 500 });
    orderSvc = await startOrderService({
      config: {
        databaseUrl: orderDb.url,
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        poolSize: 5,
        voucherServiceUrl: `http://127.0.0.1:${voucherSvc.grpcPort}`,
        relayEnabled: false, auth: testAuth,
      },
      logger: silent,
      relay: false,
      shutdownGraceMs: 500,
    });
    const o = createOrderClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${orderSvc.grpcPort}`, defaultTimeoutMs: 10_000 });
    const v = createVoucherClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${voucherSvc.grpcPort}`, defaultTimeoutMs: 10_000 });
    orders = o.client;
    vouchers = v.client;
    closers.push(o.close, v.close);
    orderPool = createPool({ url: orderDb.url, connectionLimit: 2 });
    voucherPool = createPool({ url: voucherDb.url, connectionLimit: 2 });
    // Something for the calls to collide with: a sent order and its voucher.
    const { order } = await orders.createOrder({ customerId: "cust-1", totalCents: 20_000n, currency: "EUR", requestId: "bad-input-seed" });
    sentOrderId = order!.id;
    await orders.markOrderSent({ orderId: sentOrderId });
    const issued = await vouchers.issueVoucher({ orderId: sentOrderId, customerId: "cust-1", orderTotalCents: 20_000n, currency: "EUR" });
    voucherId = issued.voucher!.id;
  });

  after(async () => {
    closers.forEach((c) => c());
    await Promise.allSettled([orderSvc?.stop(), voucherSvc?.stop(), orderPool?.end(), voucherPool?.end()]);
    await Promise.allSettled([orderDb?.drop(), voucherDb?.drop()]);
  });

  const create = (over: Partial<{ customerId: string; totalCents: bigint; currency: string; requestId: string }>) =>
    orders.createOrder({ customerId: "cust-1", totalCents: 12_345n, currency: "EUR", requestId: `req-${Math.random().toString(36).slice(2)}`, ...over });
  const issue = (over: Partial<{ orderId: string; customerId: string; orderTotalCents: bigint; currency: string }>) =>
    vouchers.issueVoucher({ orderId: "01HNEWORDER000000000000000", customerId: "cust-1", orderTotalCents: 12_345n, currency: "EUR", ...over });
  const badIds: Array<[string, string, Code, string]> = [
    ["empty", "", Code.InvalidArgument, "required"],
    ["overlong", LONG, Code.InvalidArgument, "longer than 64"],
    ["malformed (spaces)", "a b", Code.InvalidArgument, "may only contain"],
    ["malformed (unicode)", "ördér", Code.InvalidArgument, "may only contain"],
    ["unknown", ORDER_ID, Code.NotFound, ORDER_ID],
  ];
  const ts = (iso: string) => timestampFromDate(new Date(iso));

  const cases: Case[] = [
    // OrderService.CreateOrder
    { name: "CreateOrder with an empty customer_id", call: () => create({ customerId: "" }), code: Code.InvalidArgument, mentions: "customer_id" },
    { name: "CreateOrder with an overlong customer_id", call: () => create({ customerId: LONG }), code: Code.InvalidArgument, mentions: "customer_id" },
    { name: "CreateOrder with a malformed customer_id", call: () => create({ customerId: "cust 1" }), code: Code.InvalidArgument, mentions: "customer_id" },
    { name: "CreateOrder with a unicode customer_id", call: () => create({ customerId: "kündé" }), code: Code.InvalidArgument, mentions: "customer_id" },
    { name: "CreateOrder with a zero total", call: () => create({ totalCents: 0n }), code: Code.InvalidArgument, mentions: "total_cents" },
    { name: "CreateOrder with a negative total", call: () => create({ totalCents: -1n }), code: Code.InvalidArgument, mentions: "total_cents" },
    { name: "CreateOrder with a huge total", call: () => create({ totalCents: 10_000_000_001n }), code: Code.InvalidArgument, mentions: "total_cents" },
    { name: "CreateOrder with the largest int64 total", call: () => create({ totalCents: BIG }), code: Code.InvalidArgument, mentions: "total_cents" },
    { name: "CreateOrder in USD", call: () => create({ currency: "USD" }), code: Code.InvalidArgument, mentions: "EUR" },
    { name: "CreateOrder in lower-case eur", call: () => create({ currency: "eur" }), code: Code.InvalidArgument, mentions: "EUR" },
    { name: "CreateOrder with no currency", call: () => create({ currency: "" }), code: Code.InvalidArgument, mentions: "currency" },
    { name: "CreateOrder with an empty request_id", call: () => create({ requestId: "" }), code: Code.InvalidArgument, mentions: "request_id" },
    { name: "CreateOrder with an overlong request_id", call: () => create({ requestId: LONG }), code: Code.InvalidArgument, mentions: "request_id" },
    {
      name: "CreateOrder reusing a request_id with another total",
      call: () => create({ requestId: "bad-input-seed", totalCents: 1n }),
      code: Code.AlreadyExists,
      mentions: "request_id",
    },
    {
      name: "CreateOrder larger than the 1 MiB message limit",
      call: () => create({ customerId: "c".repeat(2 * 1024 * 1024) }),
      code: Code.ResourceExhausted,
    },
    // OrderService: every call that takes one order id
    ...(["getOrder", "markOrderSent", "markOrderDelivered", "cancelOrder", "requeueVoucher"] as const).flatMap((rpc) =>
      badIds.map(([what, id, code, mentions]): Case => ({
        name: `${rpc} with an ${what} order_id`,
        call: () => orders[rpc]({ orderId: id }),
        code,
        mentions: code === Code.InvalidArgument ? "order_id" : mentions,
      })),
    ),
    { name: "cancelOrder on a sent order", call: () => orders.cancelOrder({ orderId: sentOrderId }), code: Code.FailedPrecondition, mentions: "sent" },
    // OrderService.ListOrders
    { name: "ListOrders with an empty customer_id", call: () => orders.listOrders({ customerId: "" }), code: Code.InvalidArgument, mentions: "customer_id" },
    { name: "ListOrders with page_size -1", call: () => orders.listOrders({ customerId: "cust-1", pageSize: -1 }), code: Code.InvalidArgument, mentions: "page_size" },
    { name: "ListOrders with a malformed page_token", call: () => orders.listOrders({ customerId: "cust-1", pageToken: "%%not-a-token%%" }), code: Code.InvalidArgument, mentions: "page_token" },
    // OrderService.ListSentOrders
    { name: "ListSentOrders with page_size -1", call: () => orders.listSentOrders({ pageSize: -1 }), code: Code.InvalidArgument, mentions: "page_size" },
    { name: "ListSentOrders with a malformed page_token", call: () => orders.listSentOrders({ pageToken: "garbage!" }), code: Code.InvalidArgument, mentions: "page_token" },
    {
      name: "ListSentOrders with sent_after later than sent_before",
      call: () => orders.listSentOrders({ sentAfter: ts("2030-01-01T00:00:00Z"), sentBefore: ts("2020-01-01T00:00:00Z") }),
      code: Code.InvalidArgument,
      mentions: "sent_after",
    },
    {
      name: "ListSentOrders with a bound past the year 9999",
      call: () => orders.listSentOrders({ sentBefore: { seconds: 400_000_000_000n, nanos: 0 } }),
      code: Code.InvalidArgument,
      mentions: "sent_before",
    },
    // OrderService.BatchGetOrders
    {
      name: "BatchGetOrders with more than 5000 ids",
      call: () => orders.batchGetOrders({ orderIds: Array.from({ length: 5001 }, (_, i) => `id-${i}`) }),
      code: Code.InvalidArgument,
      mentions: "order_ids",
    },
    { name: "BatchGetOrders with a malformed id", call: () => orders.batchGetOrders({ orderIds: [sentOrderId, "a b"] }), code: Code.InvalidArgument, mentions: "order_ids[1]" },
    // VoucherService.IssueVoucher
    { name: "IssueVoucher with an empty order_id", call: () => issue({ orderId: "" }), code: Code.InvalidArgument, mentions: "order_id" },
    { name: "IssueVoucher with an overlong order_id", call: () => issue({ orderId: LONG }), code: Code.InvalidArgument, mentions: "order_id" },
    { name: "IssueVoucher with a unicode order_id", call: () => issue({ orderId: "ördér" }), code: Code.InvalidArgument, mentions: "order_id" },
    { name: "IssueVoucher with an empty customer_id", call: () => issue({ customerId: "" }), code: Code.InvalidArgument, mentions: "customer_id" },
    // Only the proto's rules know this field: a refusal proves they are enforced before the handler.
    {
      name: "IssueVoucher with a malformed traceparent (a rule declared only in the proto)",
      call: () => vouchers.issueVoucher({ orderId: "01HNEWORDER000000000000001", customerId: "cust-1", orderTotalCents: 12_345n, currency: "EUR", traceparent: "00-nope" }),
      code: Code.InvalidArgument,
      mentions: "traceparent",
    },
    { name: "IssueVoucher with a zero total", call: () => issue({ orderTotalCents: 0n }), code: Code.InvalidArgument, mentions: "order_total_cents" },
    { name: "IssueVoucher with a negative total", call: () => issue({ orderTotalCents: -5n }), code: Code.InvalidArgument, mentions: "order_total_cents" },
    { name: "IssueVoucher with the largest int64 total", call: () => issue({ orderTotalCents: BIG }), code: Code.InvalidArgument, mentions: "order_total_cents" },
    { name: "IssueVoucher in USD", call: () => issue({ currency: "USD" }), code: Code.InvalidArgument, mentions: "currency" },
    { name: "IssueVoucher in lower-case eur", call: () => issue({ currency: "eur" }), code: Code.InvalidArgument, mentions: "currency" },
    {
      name: "IssueVoucher replayed for another customer",
      call: () => issue({ orderId: sentOrderId, customerId: "cust-2", orderTotalCents: 20_000n }),
      code: Code.AlreadyExists,
      mentions: "customer",
    },
    { name: "IssueVoucher larger than the 1 MiB message limit", call: () => issue({ customerId: "c".repeat(2 * 1024 * 1024) }), code: Code.ResourceExhausted },
    // VoucherService.BatchIssueVouchers
    { name: "BatchIssueVouchers with no items", call: () => vouchers.batchIssueVouchers({ items: [] }), code: Code.InvalidArgument, mentions: "items" },
    {
      name: "BatchIssueVouchers with more than 1000 items",
      call: () =>
        vouchers.batchIssueVouchers({
          items: Array.from({ length: 1001 }, (_, i) => ({ orderId: `batch-${i}`, customerId: "cust-1", orderTotalCents: 12_345n, currency: "EUR" })),
        }),
      code: Code.InvalidArgument,
      mentions: "items",
    },
    {
      name: "BatchIssueVouchers with one order twice",
      call: () =>
        vouchers.batchIssueVouchers({
          items: [0, 1].map(() => ({ orderId: "01HTWICE000000000000000000", customerId: "cust-1", orderTotalCents: 12_345n, currency: "EUR" })),
        }),
      code: Code.InvalidArgument,
      mentions: "order_id",
    },
    // VoucherService reads and void
    ...badIds.map(([what, id, code, mentions]): Case => ({
      name: `GetVoucher with an ${what} voucher_id`,
      call: () => vouchers.getVoucher({ voucherId: id }),
      code,
      mentions: code === Code.InvalidArgument ? "voucher_id" : mentions,
    })),
    ...badIds.slice(0, 4).map(([what, id, code]): Case => ({
      name: `VoidVoucher with an ${what} voucher_id`,
      call: () => vouchers.voidVoucher({ voucherId: id, reason: "test" }),
      code,
      mentions: "voucher_id",
    })),
    { name: "VoidVoucher with an empty reason", call: () => vouchers.voidVoucher({ voucherId, reason: "  " }), code: Code.InvalidArgument, mentions: "reason" },
    { name: "VoidVoucher with an overlong reason", call: () => vouchers.voidVoucher({ voucherId, reason: "r".repeat(256) }), code: Code.InvalidArgument, mentions: "reason" },
    { name: "ListVouchers with an empty customer_id", call: () => vouchers.listVouchers({ customerId: "" }), code: Code.InvalidArgument, mentions: "customer_id" },
    { name: "ListVouchers with page_size -1", call: () => vouchers.listVouchers({ customerId: "cust-1", pageSize: -1 }), code: Code.InvalidArgument, mentions: "page_size" },
    { name: "ListVouchers with a malformed page_token", call: () => vouchers.listVouchers({ customerId: "cust-1", pageToken: "%%%" }), code: Code.InvalidArgument, mentions: "page_token" },
    { name: "ListIssuedVouchers with page_size -1", call: () => vouchers.listIssuedVouchers({ pageSize: -1 }), code: Code.InvalidArgument, mentions: "page_size" },
    { name: "ListIssuedVouchers with a malformed page_token", call: () => vouchers.listIssuedVouchers({ pageToken: "nope" }), code: Code.InvalidArgument, mentions: "page_token" },
    {
      name: "ListIssuedVouchers with issued_after later than issued_before",
      call: () => vouchers.listIssuedVouchers({ issuedAfter: ts("2030-01-01T00:00:00Z"), issuedBefore: ts("2020-01-01T00:00:00Z") }),
      code: Code.InvalidArgument,
      mentions: "issued_after",
    },
    {
      name: "BatchGetVouchersByOrder with more than 5000 ids",
      call: () => vouchers.batchGetVouchersByOrder({ orderIds: Array.from({ length: 5001 }, (_, i) => `id-${i}`) }),
      code: Code.InvalidArgument,
      mentions: "order_ids",
    },
    { name: "BatchGetVouchersByOrder with a malformed id", call: () => vouchers.batchGetVouchersByOrder({ orderIds: ["ok", "a b"] }), code: Code.InvalidArgument, mentions: "order_ids[1]" },
  ];

  for (const c of cases) {
    it(`refuses ${c.name} with ${Code[c.code]}, writes nothing and keeps serving`, async () => {
      const before = await rowCounts();
      let err: ConnectError | undefined;
      try {
        await c.call();
      } catch (e) {
        err = ConnectError.from(e);
      }
      expect(err, "the call should have failed").to.not.equal(undefined);
      expect(Code[err!.code], err!.rawMessage).to.equal(Code[c.code]);
      if (c.mentions) expect(err!.rawMessage).to.include(c.mentions);
      expect(await rowCounts()).to.equal(before);
      // Both services still answer.
      expect((await orders.getOrder({ orderId: sentOrderId })).order!.id).to.equal(sentOrderId);
      expect((await vouchers.getVoucher({ voucherId })).voucher!.id).to.equal(voucherId);
    });
  }

  it("answers a batch item with bad input by a per-item INVALID_ARGUMENT and issues only the good items", async () => {
    const issued = async () => Number((await voucherDb.sql("SELECT COUNT(*) FROM vouchers")).trim());
    const before = await issued();
    const res = await vouchers.batchIssueVouchers({
      items: [
        { orderId: "01HGOODITEM000000000000000", customerId: "cust-1", orderTotalCents: 12_345n, currency: "EUR" },
        { orderId: "01HBADITEM0000000000000000", customerId: "cust-1", orderTotalCents: 12_345n, currency: "USD" },
      ],
    });
    const bad = res.results.find((r) => r.orderId === "01HBADITEM0000000000000000")!;
    expect(bad.errorCode).to.equal(Code.InvalidArgument);
    expect(bad.errorMessage).to.include("currency");
    expect(await issued()).to.equal(before + 1);
  });

  describe("on the Connect (JSON over HTTP) transport", () => {
    const post = (port: () => number, path: string, body: string) =>
      fetch(`http://127.0.0.1:${port()}/${path}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${allScopesToken}` }, body });

    for (const [what, body] of [
      ["a body that is not JSON", "{not json"],
      ["a total that is not a number", '{"customerId":"c","totalCents":"abc","currency":"EUR","requestId":"r1"}'],
      ["a total beyond int64", '{"customerId":"c","totalCents":"99999999999999999999","currency":"EUR","requestId":"r2"}'],
      ["a field of the wrong type", '{"customerId":["c"],"totalCents":"20000","currency":"EUR","requestId":"r3"}'],
    ] as const) {
      it(`refuses CreateOrder with ${what} as invalid_argument and writes nothing`, async () => {
        const before = await rowCounts();
        const res = await post(() => orderSvc.httpPort, "shop.order.v1.OrderService/CreateOrder", body);
        expect(res.status).to.equal(400);
        expect(((await res.json()) as { code: string }).code).to.equal("invalid_argument");
        expect(await rowCounts()).to.equal(before);
      });
    }

    it("enforces the proto's rules (here the traceparent pattern, which only the proto declares) and writes nothing", async () => {
      const before = await rowCounts();
      const body = JSON.stringify({ orderId: "01HNEWORDER000000000000002", customerId: "c", orderTotalCents: "20000", currency: "EUR", traceparent: "01-x" });
      const res = await post(() => voucherSvc.httpPort, "shop.voucher.v1.VoucherService/IssueVoucher", body);
      expect(res.status).to.equal(400);
      const answer = (await res.json()) as { code: string; message: string };
      expect(answer.code).to.equal("invalid_argument");
      expect(answer.message).to.match(/^invalid IssueVoucherRequest: traceparent: /);
      expect(await rowCounts()).to.equal(before);
    });

    it("refuses a Connect request over the 1 MiB limit and keeps serving", async () => {
      const before = await rowCounts();
      const body = JSON.stringify({ orderId: "o".repeat(2 * 1024 * 1024), customerId: "c", orderTotalCents: "20000", currency: "EUR" });
      const res = await post(() => voucherSvc.httpPort, "shop.voucher.v1.VoucherService/IssueVoucher", body);
      expect(res.status).to.be.oneOf([400, 413, 429]);
      expect(await rowCounts()).to.equal(before);
      expect((await fetch(`http://127.0.0.1:${voucherSvc.httpPort}/readyz`)).status).to.equal(200);
    });
  });
});
