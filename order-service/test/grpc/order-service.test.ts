import { expect } from "chai";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { randomCrockford } from "@shop/platform/ids";
import { createOrderClient, type OrderClient } from "@shop/sdk/clients";
import { OrderStatus, VoucherStatus, type Order } from "@shop/sdk/order";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { startOrderService, type RunningOrderService } from "../../src/service.js";
import { count, silentLogger, snapshot } from "../db/helpers.js";
import { testAuth, allScopesToken } from "@shop/testkit/auth";

async function statusOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (err) {
    const ce = ConnectError.from(err);
    return { code: ce.code, message: ce.rawMessage };
  }
  throw new Error("expected the call to fail");
}

describe("OrderService over gRPC", function () {
  let db: TestDatabase;
  let service: RunningOrderService;
  let orders: OrderClient;
  let closeClient: () => void;

  before(async () => {
    db = await freshDatabase("order");
    service = await startOrderService({
      config: {
        databaseUrl: db.url,
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        poolSize: 10,
        voucherServiceUrl: "http://127.0.0.1:1",
        relayEnabled: false, auth: testAuth,
      },
      logger: silentLogger,
      relay: false,
      shutdownGraceMs: 1_000,
    });
    const c = createOrderClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${service.grpcPort}` });
    orders = c.client;
    closeClient = c.close;
  });

  after(async () => {
    closeClient?.();
    await service?.stop();
    await db?.drop();
  });

  const newOrder = async (totalCents = 10_001n, customerId = "cust-grpc"): Promise<Order> =>
    (await orders.createOrder({ customerId, totalCents, currency: "EUR", requestId: `r-${randomCrockford(16)}` })).order!;

  describe("CreateOrder", () => {
    it("creates a PENDING order with no voucher due", async () => {
      const res = await orders.createOrder({ customerId: "c-new", totalCents: 25_000n, currency: "EUR", requestId: "create-1" });
      expect(res.created).to.equal(true);
      expect(res.order).to.deep.include({ customerId: "c-new", totalCents: 25_000n, currency: "EUR", status: OrderStatus.PENDING });
      expect(res.order!.id).to.have.length(26);
      expect(res.order!.createdAt).to.not.equal(undefined);
      expect(res.order!.sentAt).to.equal(undefined);
      expect(res.order!.voucher!.status).to.equal(VoucherStatus.NOT_ELIGIBLE);
    });

    it("returns the first order for a replayed request_id and ALREADY_EXISTS for a conflicting one", async () => {
      const req = { customerId: "c-replay", totalCents: 25_000n, currency: "EUR", requestId: "create-replay" };
      const first = await orders.createOrder(req);
      const again = await orders.createOrder(req);
      expect(again.created).to.equal(false);
      expect(again.order!.id).to.equal(first.order!.id);
      const conflict = await statusOf(orders.createOrder({ ...req, totalCents: 1n }));
      expect(conflict.code).to.equal(Code.AlreadyExists);
      expect(conflict.message).to.contain(first.order!.id);
    });

    it("creates one order for concurrent calls with the same request_id", async () => {
      const req = { customerId: "c-race", totalCents: 25_000n, currency: "EUR", requestId: "create-race" };
      const results = await Promise.all(Array.from({ length: 8 }, () => orders.createOrder(req)));
      expect(new Set(results.map((r) => r.order!.id)).size).to.equal(1);
      expect(results.filter((r) => r.created)).to.have.length(1);
    });

    it("refuses every bad field with INVALID_ARGUMENT naming it, and writes nothing", async () => {
      const ok = { customerId: "c-bad", totalCents: 25_000n, currency: "EUR", requestId: "create-bad" };
      const cases: Array<[Partial<typeof ok>, string]> = [
        [{ customerId: "" }, "customer_id"],
        [{ customerId: "x".repeat(65) }, "customer_id"],
        [{ customerId: "has space" }, "customer_id"],
        [{ totalCents: 0n }, "total_cents"],
        [{ totalCents: -1n }, "total_cents"],
        [{ totalCents: 10_000_000_001n }, "total_cents"],
        [{ currency: "" }, "currency"],
        [{ currency: "USD" }, "currency: must equal `EUR`"],
        [{ requestId: "" }, "request_id"],
        [{ requestId: "r".repeat(65) }, "request_id"],
      ];
      const before = await snapshot(service.pool);
      for (const [change, field] of cases) {
        const s = await statusOf(orders.createOrder({ ...ok, ...change }));
        expect(s.code, JSON.stringify(change, (_, v) => (typeof v === "bigint" ? String(v) : v))).to.equal(Code.InvalidArgument);
        expect(s.message).to.contain(field);
      }
      expect(await snapshot(service.pool)).to.deep.equal(before);
    });
  });

  describe("GetOrder", () => {
    it("returns the order, NOT_FOUND for an unknown id and INVALID_ARGUMENT for an empty one", async () => {
      const o = await newOrder();
      expect((await orders.getOrder({ orderId: o.id })).order!.id).to.equal(o.id);
      expect((await statusOf(orders.getOrder({ orderId: "01J00000000000000000000000" }))).code).to.equal(Code.NotFound);
      expect((await statusOf(orders.getOrder({ orderId: "" }))).code).to.equal(Code.InvalidArgument);
      expect((await statusOf(orders.getOrder({ orderId: "x".repeat(65) }))).code).to.equal(Code.InvalidArgument);
    });

    it("shows each outbox status as its voucher state", async () => {
      const o = await newOrder();
      await orders.markOrderSent({ orderId: o.id });
      const voucher = async () => (await orders.getOrder({ orderId: o.id })).order!.voucher!;
      expect(await voucher()).to.deep.include({ status: VoucherStatus.PENDING, attempts: 0, lastError: "" });
      await service.pool.query("UPDATE voucher_outbox SET status = 'dead', attempts = 2, last_error = 'refused' WHERE order_id = ?", [o.id]);
      expect(await voucher()).to.deep.include({ status: VoucherStatus.DEAD, lastError: "refused", attempts: 2 });
      await service.pool.query("UPDATE voucher_outbox SET status = 'delivered', voucher_id = 'V-1', last_error = NULL WHERE order_id = ?", [o.id]);
      expect(await voucher()).to.deep.include({ status: VoucherStatus.ISSUED, voucherId: "V-1" });
    });
  });

  describe("MarkOrderSent", () => {
    it("requests a voucher only above 10000 cents", async () => {
      for (const [cents, expected] of [[9_999n, VoucherStatus.NOT_ELIGIBLE], [10_000n, VoucherStatus.NOT_ELIGIBLE], [10_001n, VoucherStatus.PENDING]] as const) {
        const o = await newOrder(cents);
        const res = await orders.markOrderSent({ orderId: o.id });
        expect(res.changed).to.equal(true);
        expect(res.order!.status).to.equal(OrderStatus.SENT);
        expect(res.order!.sentAt).to.not.equal(undefined);
        expect(res.order!.voucher!.status, `${cents} cents`).to.equal(expected);
        expect(await count(service.pool, "SELECT COUNT(*) FROM voucher_outbox WHERE order_id = ?", [o.id])).to.equal(expected === VoucherStatus.PENDING ? 1 : 0);
      }
    });

    it("answers a second call with changed=false and still one outbox row", async () => {
      const o = await newOrder();
      await orders.markOrderSent({ orderId: o.id });
      const again = await orders.markOrderSent({ orderId: o.id });
      expect(again.changed).to.equal(false);
      expect(await count(service.pool, "SELECT COUNT(*) FROM voucher_outbox WHERE order_id = ?", [o.id])).to.equal(1);
    });

    it("makes one transition out of 20 concurrent calls", async () => {
      const o = await newOrder();
      const results = await Promise.all(Array.from({ length: 20 }, () => orders.markOrderSent({ orderId: o.id })));
      expect(results.filter((r) => r.changed)).to.have.length(1);
      expect(await count(service.pool, "SELECT COUNT(*) FROM voucher_outbox WHERE order_id = ?", [o.id])).to.equal(1);
    });

    it("refuses a cancelled order with FAILED_PRECONDITION, an unknown one with NOT_FOUND, an empty id with INVALID_ARGUMENT", async () => {
      const o = await newOrder();
      await orders.cancelOrder({ orderId: o.id });
      const before = await snapshot(service.pool);
      expect((await statusOf(orders.markOrderSent({ orderId: o.id }))).code).to.equal(Code.FailedPrecondition);
      expect((await statusOf(orders.markOrderSent({ orderId: "01J00000000000000000000000" }))).code).to.equal(Code.NotFound);
      expect((await statusOf(orders.markOrderSent({ orderId: "" }))).code).to.equal(Code.InvalidArgument);
      expect(await snapshot(service.pool)).to.deep.equal(before);
    });
  });

  describe("MarkOrderDelivered and CancelOrder", () => {
    it("allow the legal transitions, idempotently", async () => {
      const o = await newOrder();
      await orders.markOrderSent({ orderId: o.id });
      const d = await orders.markOrderDelivered({ orderId: o.id });
      expect(d).to.deep.include({ changed: true });
      expect(d.order!.status).to.equal(OrderStatus.DELIVERED);
      expect(d.order!.deliveredAt).to.not.equal(undefined);
      expect((await orders.markOrderDelivered({ orderId: o.id })).changed).to.equal(false);

      const c = await newOrder();
      const cancelled = await orders.cancelOrder({ orderId: c.id });
      expect(cancelled.order!.status).to.equal(OrderStatus.CANCELLED);
      expect(cancelled.order!.cancelledAt).to.not.equal(undefined);
      expect((await orders.cancelOrder({ orderId: c.id })).changed).to.equal(false);
    });

    it("refuse the illegal ones with FAILED_PRECONDITION and write nothing", async () => {
      const pending = await newOrder();
      const sent = await newOrder();
      await orders.markOrderSent({ orderId: sent.id });
      const before = await snapshot(service.pool);
      expect((await statusOf(orders.markOrderDelivered({ orderId: pending.id }))).code).to.equal(Code.FailedPrecondition);
      const s = await statusOf(orders.cancelOrder({ orderId: sent.id }));
      expect(s.code).to.equal(Code.FailedPrecondition);
      expect(s.message).to.contain("a sent order cannot be cancelled");
      expect(await snapshot(service.pool)).to.deep.equal(before);
    });
  });

  describe("ListOrders", () => {
    it("pages through a customer's orders newest first without skips or repeats", async () => {
      const customerId = `c-list-${randomCrockford(6)}`;
      const created: string[] = [];
      for (let i = 0; i < 23; i++) created.push((await newOrder(100n, customerId)).id);
      await newOrder(100n, "someone-else");
      const seen: string[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const res = await orders.listOrders({ customerId, pageSize: 5, pageToken });
        expect(res.orders.length).to.be.at.most(5);
        seen.push(...res.orders.map((o) => o.id));
        pageToken = res.nextPageToken;
        pages++;
      } while (pageToken !== "");
      expect(pages).to.equal(5);
      expect(seen).to.deep.equal([...created].sort().reverse());
    });

    it("uses the default page size for 0 and refuses a missing customer, a negative size or a bad token", async () => {
      expect((await orders.listOrders({ customerId: "nobody" })).orders).to.deep.equal([]);
      expect((await statusOf(orders.listOrders({ customerId: "" }))).code).to.equal(Code.InvalidArgument);
      expect((await statusOf(orders.listOrders({ customerId: "c", pageSize: -1 }))).code).to.equal(Code.InvalidArgument);
      const bad = await statusOf(orders.listOrders({ customerId: "c", pageToken: "garbage!" }));
      expect(bad.code).to.equal(Code.InvalidArgument);
      expect(bad.message).to.contain("page_token");
    });
  });

  describe("ListSentOrders", () => {
    it("lists SENT and DELIVERED orders of a window in (sent_at, id) order, paging without skips or repeats", async () => {
      const windowStart = new Date(Date.now() - 1_000);
      const sent: string[] = [];
      for (let i = 0; i < 12; i++) {
        const o = await newOrder(20_000n, "c-sent");
        await orders.markOrderSent({ orderId: o.id });
        if (i % 3 === 0) await orders.markOrderDelivered({ orderId: o.id });
        sent.push(o.id);
      }
      await newOrder(20_000n, "c-sent"); // pending: not listed
      // Several orders sharing one sent_at exercise the id tie-break of the keyset.
      await service.pool.query("UPDATE orders SET sent_at = (SELECT MIN(sent_at) FROM (SELECT sent_at FROM orders WHERE id IN (?)) t) WHERE id IN (?)", [sent, sent.slice(0, 6)]);
      const windowEnd = new Date(Date.now() + 60_000);
      const seen: Order[] = [];
      let pageToken = "";
      do {
        const res = await orders.listSentOrders({
          sentAfter: timestampFromDate(windowStart),
          sentBefore: timestampFromDate(windowEnd),
          pageSize: 5,
          pageToken,
        });
        seen.push(...res.orders);
        pageToken = res.nextPageToken;
      } while (pageToken !== "");
      const mine = seen.filter((o) => sent.includes(o.id));
      expect(mine.map((o) => o.id).sort()).to.deep.equal([...sent].sort());
      expect(new Set(seen.map((o) => o.id)).size).to.equal(seen.length);
      const key = (o: Order) => `${String(o.sentAt!.seconds).padStart(12, "0")}.${String(o.sentAt!.nanos).padStart(9, "0")}.${o.id}`;
      expect(seen.map(key)).to.deep.equal(seen.map(key).sort());
      expect(mine.filter((o) => o.status === OrderStatus.DELIVERED)).to.have.length(4);
    });

    it("treats sent_before as exclusive and refuses an inverted window or a bad token", async () => {
      const o = await newOrder(20_000n);
      const sentAt = (await orders.markOrderSent({ orderId: o.id })).order!.sentAt!;
      const upTo = await orders.listSentOrders({ sentAfter: sentAt, sentBefore: sentAt });
      expect(upTo.orders.map((x) => x.id)).not.to.include(o.id);
      expect((await statusOf(orders.listSentOrders({ sentAfter: timestampFromDate(new Date(2000)), sentBefore: timestampFromDate(new Date(1000)) }))).code).to.equal(Code.InvalidArgument);
      expect((await statusOf(orders.listSentOrders({ pageToken: "abc" }))).code).to.equal(Code.InvalidArgument);
    });
  });

  describe("BatchGetOrders", () => {
    it("returns the orders that exist and leaves unknown ids out", async () => {
      const a = await newOrder();
      const b = await newOrder();
      const res = await orders.batchGetOrders({ orderIds: [a.id, "01J00000000000000000000000", b.id, a.id] });
      expect(res.orders.map((o) => o.id)).to.deep.equal([a.id, b.id]);
    });

    it("refuses more than 5000 ids or an invalid one", async () => {
      const many = Array.from({ length: 5001 }, (_, i) => `id-${i}`);
      expect((await statusOf(orders.batchGetOrders({ orderIds: many }))).code).to.equal(Code.InvalidArgument);
      expect((await statusOf(orders.batchGetOrders({ orderIds: ["ok", ""] }))).code).to.equal(Code.InvalidArgument);
      expect((await orders.batchGetOrders({ orderIds: many.slice(0, 5000) })).orders).to.deep.equal([]);
    });
  });

  describe("RequeueVoucher", () => {
    it("requeues a dead delivery and leaves a pending one alone", async () => {
      const o = await newOrder();
      await orders.markOrderSent({ orderId: o.id });
      expect((await orders.requeueVoucher({ orderId: o.id })).requeued).to.equal(false);
      await service.pool.query("UPDATE voucher_outbox SET status = 'dead', last_error = 'refused' WHERE order_id = ?", [o.id]);
      const res = await orders.requeueVoucher({ orderId: o.id });
      expect(res.requeued).to.equal(true);
      expect(res.order!.voucher).to.deep.include({ status: VoucherStatus.PENDING, lastError: "refused" });
    });

    it("refuses an order that is not sent or does not qualify", async () => {
      const pending = await newOrder();
      const small = await newOrder(10_000n);
      await orders.markOrderSent({ orderId: small.id });
      for (const id of [pending.id, small.id]) {
        const s = await statusOf(orders.requeueVoucher({ orderId: id }));
        expect(s.code).to.equal(Code.FailedPrecondition);
        expect(s.message).to.contain(id);
      }
    });
  });

  describe("over Connect JSON", () => {
    it("serves MarkOrderSent to a plain HTTP POST", async () => {
      const o = await newOrder();
      const res = await fetch(`http://127.0.0.1:${service.httpPort}/shop.order.v1.OrderService/MarkOrderSent`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${allScopesToken}` },
        body: JSON.stringify({ orderId: o.id }),
      });
      expect(res.status).to.equal(200);
      const body = (await res.json()) as { order: { status: string; totalCents: string; voucher: { status: string } }; changed: boolean };
      expect(body.changed).to.equal(true);
      expect(body.order.status).to.equal("ORDER_STATUS_SENT");
      expect(body.order.totalCents).to.equal("10001");
      expect(body.order.voucher.status).to.equal("VOUCHER_STATUS_PENDING");

      const refused = await fetch(`http://127.0.0.1:${service.httpPort}/shop.order.v1.OrderService/GetOrder`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${allScopesToken}` },
        body: JSON.stringify({ orderId: "" }),
      });
      expect(refused.status).to.equal(400);
      expect(((await refused.json()) as { code: string }).code).to.equal("invalid_argument");
    });
  });
});
