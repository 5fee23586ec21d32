import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import { randomCrockford } from "@shop/platform/ids";
import { createOrderClient, createVoucherClient, type OrderClient, type VoucherClient } from "@shop/sdk/clients";
import { VoucherStatus } from "@shop/sdk/order";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { startVoucherService, type RunningVoucherService } from "@shop/voucher-service/service";
import { RELAY_DEFAULTS } from "../../src/outbox/relay.js";
import { startOrderService, type RunningOrderService } from "../../src/service.js";
import { silentLogger } from "../db/helpers.js";
import { eventually } from "../outbox/outbox-db.js";
import { sampleValue, scrape } from "./metrics-text.js";
import { testAuth, roleToken, allScopesToken } from "@shop/testkit/auth";

const ORDER_SVC = "shop.order.v1.OrderService";
const VOUCHER_SVC = "shop.voucher.v1.VoucherService";

async function connectCall(httpPort: number, path: string, body: object): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${httpPort}/${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${allScopesToken}` },
    body: JSON.stringify(body),
  });
  await res.text();
  return res.status;
}

describe("metrics on /metrics", function () {
  let orderDb: TestDatabase;
  let voucherDb: TestDatabase;
  let voucherService: RunningVoucherService;
  let orderService: RunningOrderService;
  let orders: OrderClient;
  let vouchers: VoucherClient;
  const closers: Array<() => void> = [];

  before(async () => {
    [orderDb, voucherDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher")]);
    voucherService = await startVoucherService({ auth: testAuth,
      databaseUrl: voucherDb.url,
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      logger: silentLogger,
      graceMs: 500,
    });
    orderService = await startOrderService({
      config: {
        databaseUrl: orderDb.url,
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        poolSize: 10,
        voucherServiceUrl: `http://127.0.0.1:${voucherService.grpcPort}`,
        relayEnabled: true, auth: testAuth, relayToken: roleToken("relay"),
      },
      relay: { ...RELAY_DEFAULTS, pollIntervalMs: 50, retryBaseMs: 20, retryMaxMs: 200 },
      logger: silentLogger,
      shutdownGraceMs: 500,
    });
    const o = createOrderClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${orderService.grpcPort}` });
    const v = createVoucherClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${voucherService.grpcPort}` });
    orders = o.client;
    vouchers = v.client;
    closers.push(o.close, v.close);
  });

  after(async () => {
    closers.forEach((c) => c());
    await orderService?.stop();
    await voucherService?.stop();
    await Promise.all([orderDb?.drop(), voucherDb?.drop()]);
  });

  const handled = (text: string, service: string, method: string, code: string) =>
    sampleValue(text, "rpc_server_handled_total", { service, method, code }) ?? 0;

  it("counts the order service's calls by method and code on both transports, with their latency", async () => {
    const before = await scrape(orderService.httpPort);
    await orders.createOrder({ customerId: "m-1", totalCents: 500n, currency: "EUR", requestId: `m-${randomCrockford(12)}` });
    await orders.getOrder({ orderId: "no-such-order" }).catch(() => {});
    expect(await connectCall(orderService.httpPort, `${ORDER_SVC}/GetOrder`, { order_id: "no-such-order" })).to.equal(404);
    expect(await connectCall(orderService.httpPort, `${ORDER_SVC}/GetOrder`, { order_id: "" })).to.equal(400);
    const after = await scrape(orderService.httpPort);

    expect(handled(after, ORDER_SVC, "CreateOrder", "OK") - handled(before, ORDER_SVC, "CreateOrder", "OK")).to.equal(1);
    expect(handled(after, ORDER_SVC, "GetOrder", "NOT_FOUND") - handled(before, ORDER_SVC, "GetOrder", "NOT_FOUND")).to.equal(2);
    expect(handled(after, ORDER_SVC, "GetOrder", "INVALID_ARGUMENT") - handled(before, ORDER_SVC, "GetOrder", "INVALID_ARGUMENT")).to.equal(1);
    const count = (t: string) => sampleValue(t, "rpc_server_handling_seconds_count", { service: ORDER_SVC, method: "GetOrder" }) ?? 0;
    expect(count(after) - count(before)).to.equal(3);
    expect(sampleValue(after, "process_start_time_seconds")).to.be.above(0);
  });

  it("counts the voucher service's calls and its issued vouchers: created, replayed, conflict, invalid", async () => {
    const before = await scrape(voucherService.httpPort);
    const orderId = `v-${randomCrockford(12)}`;
    const req = { orderId, customerId: "m-2", orderTotalCents: 12_000n, currency: "EUR" };
    expect((await vouchers.issueVoucher(req)).created).to.equal(true);
    expect((await vouchers.issueVoucher(req)).created).to.equal(false);
    await vouchers.issueVoucher({ ...req, customerId: "someone-else" }).catch(() => {});
    // A bad single call is refused by the proto's rules before the handler (it shows in the call counts);
    // a bad item of a batch is refused by the handler and counted as invalid.
    await vouchers.issueVoucher({ ...req, orderId: "" }).catch(() => {});
    const batch = await vouchers.batchIssueVouchers({ items: [req, { ...req, orderId: `v-${randomCrockford(12)}` }, { ...req, orderId: "bad id" }] });
    expect(batch.results.map((r) => r.created)).to.deep.equal([false, true, false]);
    expect(Code[batch.results[2]!.errorCode]).to.equal("InvalidArgument");
    const after = await scrape(voucherService.httpPort);

    const issued = (t: string, result: string) => sampleValue(t, "vouchers_issued_total", { result }) ?? 0;
    expect(issued(after, "created") - issued(before, "created")).to.equal(2);
    expect(issued(after, "replayed") - issued(before, "replayed")).to.equal(2);
    expect(issued(after, "conflict") - issued(before, "conflict")).to.equal(1);
    expect(issued(after, "invalid") - issued(before, "invalid")).to.equal(1);
    expect(handled(after, VOUCHER_SVC, "IssueVoucher", "OK") - handled(before, VOUCHER_SVC, "IssueVoucher", "OK")).to.equal(2);
    expect(handled(after, VOUCHER_SVC, "IssueVoucher", "ALREADY_EXISTS") - handled(before, VOUCHER_SVC, "IssueVoucher", "ALREADY_EXISTS")).to.equal(1);
    expect(handled(after, VOUCHER_SVC, "IssueVoucher", "INVALID_ARGUMENT") - handled(before, VOUCHER_SVC, "IssueVoucher", "INVALID_ARGUMENT")).to.equal(1);
  });

  it("counts relay deliveries and the commit → voucher latency as vouchers flow", async () => {
    const before = await scrape(orderService.httpPort);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { order } = await orders.createOrder({ customerId: "m-3", totalCents: 15_000n, currency: "EUR", requestId: `m-${randomCrockford(12)}` });
      await orders.markOrderSent({ orderId: order!.id });
      ids.push(order!.id);
    }
    await eventually("the three vouchers are issued", async () => {
      const { orders: got } = await orders.batchGetOrders({ orderIds: ids });
      return got.every((o) => o.voucher?.status === VoucherStatus.ISSUED);
    });
    // The relay counts a delivery just after its ack commits, so the order can
    // show ISSUED a moment before the counter moves: wait for the counter too.
    const delivered = (t: string) => sampleValue(t, "relay_deliveries_total", { result: "delivered" }) ?? 0;
    let after = "";
    await eventually("the relay has counted three deliveries", async () => {
      after = await scrape(orderService.httpPort);
      return delivered(after) - delivered(before) >= 3;
    });
    expect(delivered(after) - delivered(before)).to.equal(3);
    expect(sampleValue(after, "relay_deliveries_total", { result: "dead" })).to.equal(0);
    // The series the relay alerts watch are served from the start, at 0 while the relay is let in.
    for (const code of ["UNAUTHENTICATED", "PERMISSION_DENIED", "UNIMPLEMENTED"]) {
      expect(sampleValue(after, "relay_call_failures_total", { code, cause: "misconfigured" })).to.equal(0);
    }
    expect(sampleValue(after, "relay_batch_split_rows_total")).to.equal(0);
    const latencyCount = (t: string) => sampleValue(t, "voucher_commit_to_issue_seconds_count") ?? 0;
    const latencySum = (t: string) => sampleValue(t, "voucher_commit_to_issue_seconds_sum") ?? 0;
    expect(latencyCount(after) - latencyCount(before)).to.equal(3);
    const perVoucher = (latencySum(after) - latencySum(before)) / 3;
    expect(perVoucher).to.be.above(0).and.below(10);
    expect(sampleValue(after, "voucher_commit_to_issue_seconds_bucket", { le: "+Inf" })).to.equal(latencyCount(after));
  });
});
