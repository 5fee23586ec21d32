import { expect } from "chai";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { randomCrockford } from "@shop/platform/ids";
import { createOrderAdminClient, createOrderClient, type OrderAdminClient, type OrderClient } from "@shop/sdk/clients";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { RequeueDeadVoucherDeliveriesRequestSchema } from "@shop/sdk/order-admin";
import { createOrderAdminServiceImpl } from "../../src/grpc/admin-routes.js";
import { startOrderService, type RunningOrderService } from "../../src/service.js";
import { silentLogger } from "../db/helpers.js";
import { testAuth, allScopesToken } from "@shop/testkit/auth";

describe("OrderAdminService", function () {
  let db: TestDatabase;
  let service: RunningOrderService;
  let orders: OrderClient;
  let admin: OrderAdminClient;
  const closers: Array<() => void> = [];

  before(async () => {
    db = await freshDatabase("order");
    service = await startOrderService({
      config: { databaseUrl: db.url, host: "127.0.0.1", grpcPort: 0, httpPort: 0, poolSize: 4, voucherServiceUrl: "http://127.0.0.1:1", relayEnabled: false, auth: testAuth },
      relay: false,
      logger: silentLogger,
      shutdownGraceMs: 200,
    });
    const o = createOrderClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${service.grpcPort}` });
    const a = createOrderAdminClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${service.grpcPort}` });
    orders = o.client;
    admin = a.client;
    closers.push(o.close, a.close);
  });

  after(async () => {
    closers.forEach((c) => c());
    await service?.stop();
    await db?.drop();
  });

  beforeEach(async () => {
    await db.sql("DELETE FROM voucher_outbox");
  });

  /** A sent, qualifying order whose delivery the relay gave up on. */
  async function deadOrder(error = "IssueVoucher: FAILED_PRECONDITION: nope"): Promise<string> {
    const { order } = await orders.createOrder({ customerId: "adm", totalCents: 20_000n, currency: "EUR", requestId: `adm-${randomCrockford(12)}` });
    await orders.markOrderSent({ orderId: order!.id });
    await db.sql(`UPDATE voucher_outbox SET status = 'dead', attempts = 3, last_error = '${error}' WHERE order_id = '${order!.id}'`);
    return order!.id;
  }

  async function statusOf(orderId: string): Promise<string> {
    return (await db.sql(`SELECT status FROM voucher_outbox WHERE order_id = '${orderId}'`)).trim();
  }

  it("lists dead deliveries with their last error, oldest first, page by page", async () => {
    const ids = [await deadOrder("e1"), await deadOrder("e2"), await deadOrder("e3")];
    const first = await admin.listDeadVoucherDeliveries({ pageSize: 2 });
    expect(first.deliveries.map((d) => d.orderId)).to.deep.equal(ids.slice(0, 2));
    const d = first.deliveries[0]!;
    expect([d.customerId, d.totalCents, d.currency, d.attempts, d.lastError]).to.deep.equal(["adm", 20_000n, "EUR", 3, "e1"]);
    expect(Date.now() - timestampDate(d.createdAt!).getTime()).to.be.within(0, 60_000);
    expect(first.nextPageToken).to.not.equal("");
    const second = await admin.listDeadVoucherDeliveries({ pageSize: 2, pageToken: first.nextPageToken });
    expect(second.deliveries.map((x) => x.orderId)).to.deep.equal(ids.slice(2));
    expect(second.nextPageToken).to.equal("");
  });

  it("refuses a malformed page token", async () => {
    const err = await admin.listDeadVoucherDeliveries({ pageToken: "not-a-token" }).catch((e) => ConnectError.from(e));
    expect((err as ConnectError).code).to.equal(Code.InvalidArgument);
  });

  it("requeues one dead delivery and skips orders that are not dead, saying why", async () => {
    const dead = await deadOrder();
    const other = await deadOrder();
    const { order: pending } = await orders.createOrder({ customerId: "adm", totalCents: 20_000n, currency: "EUR", requestId: `adm-${randomCrockford(12)}` });
    await orders.markOrderSent({ orderId: pending!.id });
    const { order: small } = await orders.createOrder({ customerId: "adm", totalCents: 100n, currency: "EUR", requestId: `adm-${randomCrockford(12)}` });

    const res = await admin.requeueDeadVoucherDeliveries({ orderIds: [dead, pending!.id, small!.id, "no-such-order"] });
    expect(res.requeuedCount).to.equal(1n);
    expect(res.requeuedOrderIds).to.deep.equal([dead]);
    expect(res.skipped.map((s) => [s.orderId, s.reason])).to.deep.equal([
      [pending!.id, "delivery is pending, not dead"],
      [small!.id, "no voucher delivery recorded for this order (RequeueVoucher records a missing one)"],
      ["no-such-order", "order not found"],
    ]);
    expect(await statusOf(dead)).to.equal("pending");
    expect(await statusOf(other)).to.equal("dead");
    // The error that killed it stays for the record; the row is due at once.
    expect((await db.sql(`SELECT last_error, next_attempt_at <= NOW(3) FROM voucher_outbox WHERE order_id = '${dead}'`)).trim()).to.equal(
      "IssueVoucher: FAILED_PRECONDITION: nope\t1",
    );
  });

  it("requeues every dead delivery with all=true, in batches", async () => {
    const ids = await Promise.all(Array.from({ length: 7 }, () => deadOrder()));
    // Batches of 3: 7 rows take three rounds, and the last (short) one ends the loop.
    const impl = createOrderAdminServiceImpl({ pool: service.pool, store: service.store, logger: silentLogger, requeueBatch: 3 });
    const req = create(RequeueDeadVoucherDeliveriesRequestSchema, { all: true });
    const res = await impl.requeueDeadVoucherDeliveries(req, { signal: new AbortController().signal } as HandlerContext);
    expect(res.requeuedCount).to.equal(7n);
    expect(res.skipped).to.deep.equal([]);
    for (const id of ids) expect(await statusOf(id)).to.equal("pending");
    expect((await admin.listDeadVoucherDeliveries({})).deliveries).to.deep.equal([]);
    expect((await admin.requeueDeadVoucherDeliveries({ all: true })).requeuedCount).to.equal(0n);
  });

  it("refuses a request with both order_ids and all, or with neither, changing nothing", async () => {
    const dead = await deadOrder();
    for (const req of [{ orderIds: [dead], all: true }, {}, { orderIds: [""] }]) {
      const err = await admin.requeueDeadVoucherDeliveries(req).catch((e) => ConnectError.from(e));
      expect((err as ConnectError).code, JSON.stringify(req)).to.equal(Code.InvalidArgument);
    }
    expect(await statusOf(dead)).to.equal("dead");
  });
});
