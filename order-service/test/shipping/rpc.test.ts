import { expect } from "chai";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { randomCrockford } from "@shop/platform/ids";
import { createOrderClient, createShipmentEventClient, type OrderClient, type ShipmentEventClient } from "@shop/sdk/clients";
import { OrderStatus, PaymentMethod, SentBy, ShipmentEvent, ShippingStatus, VoucherStatus, type Order } from "@shop/sdk/order";
import { allScopesToken, roleToken, testAuth } from "@shop/testkit/auth";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { startOrderService, type RunningOrderService } from "../../src/service.js";
import { count, silentLogger } from "../db/helpers.js";
import { sampleValue, scrape } from "../ops/metrics-text.js";

async function statusOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (err) {
    const ce = ConnectError.from(err);
    return { code: ce.code, message: ce.rawMessage };
  }
  throw new Error("expected the call to fail");
}

/**
 * The shipping RPCs over real gRPC against the order service in this
 * process (no relay: the shipment requests stay in shipment_outbox, where the
 * test reads them), each caller with the token of its role.
 */
describe("shipping over gRPC", function () {
  let db: TestDatabase;
  let service: RunningOrderService;
  const clients: Array<() => void> = [];
  let shop: OrderClient;
  let operator: OrderClient;
  let reconciler: OrderClient;
  let events: ShipmentEventClient;
  let eventsAsShop: ShipmentEventClient;
  let harness: OrderClient;

  const orderClient = (token: string) => {
    const c = createOrderClient({ token, baseUrl: `http://127.0.0.1:${service.grpcPort}` });
    clients.push(c.close);
    return c.client;
  };
  const eventClient = (token: string) => {
    const c = createShipmentEventClient({ token, baseUrl: `http://127.0.0.1:${service.grpcPort}` });
    clients.push(c.close);
    return c.client;
  };

  before(async () => {
    db = await freshDatabase("order");
    service = await startOrderService({
      config: { databaseUrl: db.url, host: "127.0.0.1", grpcPort: 0, httpPort: 0, poolSize: 10, voucherServiceUrl: "http://127.0.0.1:1", relayEnabled: false, auth: testAuth },
      logger: silentLogger,
      relay: false,
      shutdownGraceMs: 1_000,
    });
    shop = orderClient(roleToken("shop"));
    operator = orderClient(roleToken("admin"));
    reconciler = orderClient(roleToken("reconciler"));
    harness = orderClient(allScopesToken);
    events = eventClient(roleToken("delivery-relay"));
    eventsAsShop = eventClient(roleToken("shop"));
  });
  after(async () => {
    clients.forEach((close) => close());
    await service?.stop();
    await db?.drop();
  });

  const newOrder = async (totalCents = 15_000n, carrier = ""): Promise<Order> =>
    (await shop.createOrder({ customerId: "cust-ship", totalCents, currency: "EUR", requestId: `ship-${randomCrockford(16)}`, carrier })).order!;
  const record = (orderId: string, event: ShipmentEvent, over: { messageKey?: string; declineReason?: string; shipmentId?: string } = {}) =>
    events.recordShipmentEvent({
      messageKey: over.messageKey ?? `shipment:${orderId}:${ShipmentEvent[event]}`,
      orderId,
      event,
      shipmentId: over.shipmentId ?? `S-${orderId}`,
      carrier: "delayed",
      declineReason: over.declineReason ?? "",
      occurredAt: timestampFromDate(new Date()),
    });

  it("CreateOrder keeps the carrier; a new order is not in shipping", async () => {
    const order = await newOrder(15_000n, "manual");
    expect(order.shipping).to.deep.include({ status: ShippingStatus.NONE, carrier: "manual", declineReason: "" });
    expect(order.shipping!.requestedAt).to.equal(undefined);
    expect(order.sentBy).to.equal(SentBy.UNSPECIFIED);
  });

  it("ReleaseOrderForShipping (the shop) releases an order once; MarkOrderSent, MarkOrderDelivered and CancelOrder then refuse it naming the delivery service", async () => {
    const order = await newOrder(15_000n, "manual");
    const r = await shop.releaseOrderForShipping({ orderId: order.id });
    expect(r.changed).to.equal(true);
    expect(r.order!.shipping).to.deep.include({ status: ShippingStatus.REQUESTED, carrier: "manual" });
    expect(r.order!.shipping!.requestedAt).to.not.equal(undefined);
    const again = await shop.releaseOrderForShipping({ orderId: order.id, carrier: "delayed" });
    expect([again.changed, again.order!.shipping!.carrier]).to.deep.equal([false, "manual"]);
    expect(await count(service.pool, "SELECT COUNT(*) FROM shipment_outbox WHERE order_id = ?", [order.id])).to.equal(1);
    for (const call of [
      () => shop.markOrderSent({ orderId: order.id }),
      () => shop.markOrderDelivered({ orderId: order.id }),
      () => shop.cancelOrder({ orderId: order.id }),
    ]) {
      const s = await statusOf(call());
      expect(s.code).to.equal(Code.FailedPrecondition);
      expect(s.message).to.match(/delivery service/);
    }
  });

  it("ReleaseOrderForShipping refuses an order awaiting payment (FAILED_PRECONDITION), an unknown one (NOT_FOUND), a bad carrier (INVALID_ARGUMENT); refusals are counted", async () => {
    const before = await scrape(service.httpPort);
    const paid = (await shop.createOrder({ customerId: "cust-ship", totalCents: 100n, currency: "EUR", requestId: `ship-${randomCrockford(16)}`, paymentMethod: PaymentMethod.ACCOUNT })).order!;
    const awaiting = await statusOf(shop.releaseOrderForShipping({ orderId: paid.id }));
    expect(awaiting.code).to.equal(Code.FailedPrecondition);
    expect(awaiting.message).to.match(/awaiting payment/);
    expect((await statusOf(shop.releaseOrderForShipping({ orderId: "01NOSUCHORDER000000000000X" }))).code).to.equal(Code.NotFound);
    const bad = await statusOf(shop.releaseOrderForShipping({ orderId: paid.id, carrier: "No Such" }));
    expect([bad.code, /carrier/.test(bad.message)]).to.deep.equal([Code.InvalidArgument, true]);
    const after = await scrape(service.httpPort);
    const handled = (text: string, code: string) =>
      sampleValue(text, "rpc_server_handled_total", { service: "shop.order.v1.OrderService", method: "ReleaseOrderForShipping", code }) ?? 0;
    expect(handled(after, "FAILED_PRECONDITION") - handled(before, "FAILED_PRECONDITION")).to.equal(1);
    expect(handled(after, "NOT_FOUND") - handled(before, "NOT_FOUND")).to.equal(1);
  });

  it("RecordShipmentEvent (the delivery service's relay): SHIPPED sends the order by its shipment with its voucher, a replay answers changed=false, DELIVERED delivers it", async () => {
    const order = await newOrder(15_000n);
    await shop.releaseOrderForShipping({ orderId: order.id });
    const shipped = await record(order.id, ShipmentEvent.SHIPPED);
    expect(shipped.changed).to.equal(true);
    expect(shipped.order).to.deep.include({ status: OrderStatus.SENT, sentBy: SentBy.SHIPMENT });
    expect(shipped.order!.shipping!.status).to.equal(ShippingStatus.SHIPPED);
    expect(shipped.order!.voucher!.status).to.equal(VoucherStatus.PENDING);
    const replay = await record(order.id, ShipmentEvent.SHIPPED);
    expect([replay.changed, replay.order!.status]).to.deep.equal([false, OrderStatus.SENT]);
    const delivered = await record(order.id, ShipmentEvent.DELIVERED);
    expect([delivered.changed, delivered.order!.status, delivered.order!.shipping!.status]).to.deep.equal([true, OrderStatus.DELIVERED, ShippingStatus.DELIVERED]);
    expect((await shop.getOrder({ orderId: order.id })).order!.sentBy).to.equal(SentBy.SHIPMENT);
  });

  it("RecordShipmentEvent DECLINED cancels the order with the carrier's reason; contradictions, wrong keys and unknown orders are refused with their codes", async () => {
    const order = await newOrder(2_000n);
    await shop.releaseOrderForShipping({ orderId: order.id });
    const d = await record(order.id, ShipmentEvent.DECLINED, { declineReason: "NO_CAPACITY" });
    expect(d.order!.status).to.equal(OrderStatus.CANCELLED);
    expect(d.order!.shipping).to.deep.include({ status: ShippingStatus.DECLINED, declineReason: "NO_CAPACITY" });
    expect((await statusOf(record(order.id, ShipmentEvent.SHIPPED))).code).to.equal(Code.FailedPrecondition);
    const never = await newOrder();
    expect((await statusOf(record(never.id, ShipmentEvent.SHIPPED))).message).to.match(/never released/);
    const key = await statusOf(record(never.id, ShipmentEvent.SHIPPED, { messageKey: `shipment:${order.id}:SHIPPED` }));
    expect(key.code).to.equal(Code.InvalidArgument);
    expect((await statusOf(record("01NOSUCHORDER000000000000X", ShipmentEvent.SHIPPED))).code).to.equal(Code.NotFound);
    const unspecified = await statusOf(record(order.id, ShipmentEvent.UNSPECIFIED, { messageKey: `shipment:${order.id}:SHIPPED` }));
    expect([unspecified.code, /event/.test(unspecified.message)]).to.deep.equal([Code.InvalidArgument, true]);
  });

  it("only callers with orders:shipment-event record events; releases need orders:write", async () => {
    const order = await newOrder();
    await shop.releaseOrderForShipping({ orderId: order.id });
    expect((await statusOf(eventsAsShop.recordShipmentEvent({ messageKey: `shipment:${order.id}:SHIPPED`, orderId: order.id, event: ShipmentEvent.SHIPPED, shipmentId: "S-1" }))).code).to.equal(
      Code.PermissionDenied,
    );
    expect((await statusOf(reconciler.releaseOrderForShipping({ orderId: order.id }))).code).to.equal(Code.PermissionDenied);
    // The reconciler repairs drift with the same call as the relay.
    const byReconciler = eventClient(roleToken("reconciler"));
    expect((await byReconciler.recordShipmentEvent({ messageKey: `shipment:${order.id}:SHIPPED`, orderId: order.id, event: ShipmentEvent.SHIPPED, shipmentId: "S-1" })).changed).to.equal(true);
  });

  it("RequeueShipment (the reconciler or an operator) revives a dead request; the shop may not; an order not in shipping is FAILED_PRECONDITION", async () => {
    const order = await newOrder();
    await shop.releaseOrderForShipping({ orderId: order.id });
    expect((await reconciler.requeueShipment({ orderId: order.id })).requeued).to.equal(false);
    await service.pool.query("UPDATE shipment_outbox SET status = 'dead' WHERE order_id = ?", [order.id]);
    expect((await statusOf(shop.requeueShipment({ orderId: order.id }))).code).to.equal(Code.PermissionDenied);
    const r = await operator.requeueShipment({ orderId: order.id });
    expect([r.requeued, r.order!.shipping!.status]).to.deep.equal([true, ShippingStatus.REQUESTED]);
    expect(await count(service.pool, "SELECT COUNT(*) FROM shipment_outbox WHERE order_id = ? AND status = 'pending'", [order.id])).to.equal(1);
    const never = await newOrder();
    expect((await statusOf(reconciler.requeueShipment({ orderId: never.id }))).code).to.equal(Code.FailedPrecondition);
  });

  it("ListOrdersByShippingStatus pages through one shipping state, oldest request first; NONE is refused by the rules", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const o = await newOrder(1_000n, "listing");
      await shop.releaseOrderForShipping({ orderId: o.id });
      ids.push(o.id);
    }
    await service.pool.query("UPDATE orders SET shipping_requested_at = '2002-02-02 00:00:00.000' WHERE id IN (?)", [ids]);
    const requestedBefore = timestampFromDate(new Date("2002-02-03T00:00:00Z"));
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await reconciler.listOrdersByShippingStatus({ shippingStatus: ShippingStatus.REQUESTED, requestedBefore, pageSize: 2, pageToken });
      seen.push(...page.orders.map((o) => o.id));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken);
    expect(seen).to.deep.equal([...ids].sort());
    expect(pages).to.equal(3);
    expect((await statusOf(harness.listOrdersByShippingStatus({ shippingStatus: ShippingStatus.NONE }))).code).to.equal(Code.InvalidArgument);
    expect((await statusOf(harness.listOrdersByShippingStatus({ shippingStatus: ShippingStatus.REQUESTED, pageToken: "bm90LWEtdG9rZW4" }))).code).to.equal(Code.InvalidArgument);
  });
});
