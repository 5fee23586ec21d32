import { Writable } from "node:stream";
import type { DescMethod } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { pino } from "pino";
import type { RowDataPacket } from "mysql2/promise";
import { AUDIENCES, DEFAULT_ISSUER, SCOPES } from "@shop/platform/auth";
import { createPool, type Pool } from "@shop/platform/db";
import { CARRIER_DEFAULTS } from "@shop/delivery-service/carriers/registry";
import { startDeliveryService, type RunningDeliveryService } from "@shop/delivery-service/service";
import { startOrderService, type RunningOrderService } from "@shop/order-service/service";
import {
  createCarrierClient,
  createDeliveryClient,
  createOrderClient,
  createShipmentEventClient,
  type CarrierClient,
  type DeliveryClient,
  type OrderClient,
  type ShipmentEventClient,
} from "@shop/sdk/clients";
import { CarrierService, DeliveryService, ShipmentStatus } from "@shop/sdk/delivery";
import { OrderService, PaymentMethod, ShipmentEvent, ShipmentEventService, ShippingStatus } from "@shop/sdk/order";
import { allScopesToken, testAuth, testSigningKey, testToken } from "@shop/testkit/auth";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

/**
 * Requests that decode, at every DeliveryService and CarrierService RPC and
 * at the order service's shipping RPCs (ReleaseOrderForShipping,
 * RequeueShipment, ListOrdersByShippingStatus, RecordShipmentEvent, and the
 * hand changes an order in shipping refuses), refused by the proto's rules
 * or by the domain: an order's shipment created again for another customer
 * or total, a report for an unknown shipment, for a carrier that does not
 * take reports over RPC, or one the lifecycle forbids; a release of an order
 * that cannot ship; an event under another order's key, with other facts, or
 * contradicting the order. On gRPC and on Connect JSON alike each gets its
 * status and a message naming the field or the fact, changes no row in the
 * order or the delivery database, is logged once (method, status, transport,
 * reason) and counted in rpc_server_handled_total; a refusal of a call that
 * changes shipments is counted in delivery_requests_total too.
 */

const logLines: Array<Record<string, unknown> & { msg: string }> = [];
const logger = pino(
  { level: "info" },
  new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n")) if (l) logLines.push(JSON.parse(l));
      done();
    },
  }),
);

/** Every delivery scope, addressed to the delivery service (which accepts only its own audience). */
const deliveryToken = testToken({
  subject: "test-harness",
  scopes: [SCOPES.shipmentsCreate, SCOPES.shipmentsRead, SCOPES.shipmentsAdmin, SCOPES.carrierReport],
  audience: AUDIENCES.deliveries,
  ttlSeconds: 86_400,
});

const LONG = "x".repeat(65);
const BIG = 9_223_372_036_854_775_807n;
const UNKNOWN_ORDER = "01HZZZZZZZZZZZZZZZZZZZZZZZ";
const SHIPMENT_ID = "01HSHIPMENTBAD000000000000";
/** A page token that passes the pattern but is no page token of the services'. */
const FORGED_TOKEN = "bm90LWEtdG9rZW4";
/** Shipments seeded at the delivery service, by what they are for. */
const SHIP = {
  delayed: "01HSHIPDELAYED000000000000",
  manual: "01HSHIPMANUAL0000000000000",
  shipped: "01HSHIPSHIPPED000000000000",
  declined: "01HSHIPDECLINED00000000000",
  delivered: "01HSHIPDELIVERED0000000000",
};

type Transport = "grpc" | "connect";

interface Clients {
  orders: OrderClient;
  events: ShipmentEventClient;
  deliveries: DeliveryClient;
  carriers: CarrierClient;
}

interface Case {
  name: string;
  method: DescMethod;
  call: (c: Clients) => Promise<unknown>;
  code: Code;
  /** Text the message must contain: the field, or the fact refused. */
  mentions: string;
  /** Also counted in the delivery service's delivery_requests_total{call,result}. */
  counted?: { call: string; result: "refused" | "conflict" };
  /** Only on this transport: the Connect client cannot write a Timestamp past 9999 as JSON (test/hostile-input.test.ts sends such JSON by hand). */
  only?: Transport;
}

const ts = (iso: string) => timestampFromDate(new Date(iso));

describe("bad input at the delivery service and the order service's shipping RPCs", function () {
  this.timeout(60_000);
  let orderDb: TestDatabase;
  let deliveryDb: TestDatabase;
  let orderSvc: RunningOrderService;
  let deliverySvc: RunningDeliveryService;
  let orderPool: Pool;
  let deliveryPool: Pool;
  const closers: Array<() => void> = [];
  const clients = {} as Record<Transport, Clients>;
  /** Orders seeded in the order database, by the state they are in. */
  const seed = { pending: "", sentByHand: "", awaiting: "", cancelled: "", requested: "", shipped: "", declined: "" };

  /** Every row of every table of the order and delivery databases. */
  async function snapshot(): Promise<string> {
    const dump = async (pool: Pool) => {
      const [tables] = await pool.query<RowDataPacket[]>("SHOW TABLES");
      const out: Record<string, unknown> = {};
      for (const t of tables.map((r) => String(Object.values(r)[0]))) {
        const [rows] = await pool.query<RowDataPacket[]>(`SELECT * FROM \`${t}\``);
        out[t] = rows.map((r) => JSON.stringify(r)).sort();
      }
      return out;
    };
    return JSON.stringify([await dump(orderPool), await dump(deliveryPool)]);
  }

  /** The value of one counter series on a service's /metrics (0 when absent). */
  async function counter(httpPort: number, name: string, labels: Record<string, string>): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    let total = 0;
    for (const line of text.split("\n")) {
      const m = /^(\w+)\{([^}]*)\} (\d+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      const have = Object.fromEntries([...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
      if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[3]);
    }
    return total;
  }

  before(async () => {
    [orderDb, deliveryDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher")]);
    // No relay on either side and no carrier worker: every request row, shipment and event row stays where the seeding put it.
    deliverySvc = await startDeliveryService({
      auth: { keys: [testSigningKey.publicJwk], audience: AUDIENCES.deliveries, issuer: DEFAULT_ISSUER },
      databaseUrl: deliveryDb.url,
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      logger,
      poolSize: 5,
      graceMs: 500,
      relay: false,
      carrierWorker: false,
      carriers: { ...CARRIER_DEFAULTS, delayed: { ...CARRIER_DEFAULTS.delayed }, enabled: [...CARRIER_DEFAULTS.enabled] },
    });
    orderSvc = await startOrderService({
      config: {
        databaseUrl: orderDb.url,
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        poolSize: 5,
        voucherServiceUrl: "http://127.0.0.1:9",
        relayEnabled: false,
        auth: testAuth,
      },
      logger,
      relay: false,
      shutdownGraceMs: 500,
    });
    orderPool = createPool({ url: orderDb.url, connectionLimit: 2 });
    deliveryPool = createPool({ url: deliveryDb.url, connectionLimit: 2 });
    for (const protocol of ["grpc", "connect"] as const) {
      const url = (svc: { grpcPort: number; httpPort: number }) => `http://127.0.0.1:${protocol === "grpc" ? svc.grpcPort : svc.httpPort}`;
      const o = createOrderClient({ token: allScopesToken, protocol, baseUrl: url(orderSvc), defaultTimeoutMs: 10_000 });
      const e = createShipmentEventClient({ token: allScopesToken, protocol, baseUrl: url(orderSvc), defaultTimeoutMs: 10_000 });
      const d = createDeliveryClient({ token: deliveryToken, protocol, baseUrl: url(deliverySvc), defaultTimeoutMs: 10_000 });
      const c = createCarrierClient({ token: deliveryToken, protocol, baseUrl: url(deliverySvc), defaultTimeoutMs: 10_000 });
      closers.push(o.close, e.close, d.close, c.close);
      clients[protocol] = { orders: o.client, events: e.client, deliveries: d.client, carriers: c.client };
    }
    const { orders, events, deliveries, carriers } = clients.grpc;
    // Orders in each state the shipping RPCs care about.
    const order = async (requestId: string, paid = false) =>
      (await orders.createOrder({ customerId: "cust-1", totalCents: 12_000n, currency: "EUR", requestId, ...(paid ? { paymentMethod: PaymentMethod.ACCOUNT } : {}) })).order!.id;
    seed.pending = await order("pending-1");
    seed.sentByHand = await order("sent-1");
    await orders.markOrderSent({ orderId: seed.sentByHand });
    seed.awaiting = await order("awaiting-1", true);
    seed.cancelled = await order("cancelled-1");
    await orders.cancelOrder({ orderId: seed.cancelled });
    seed.requested = await order("requested-1");
    seed.shipped = await order("shipped-1");
    seed.declined = await order("declined-1");
    for (const id of [seed.requested, seed.shipped, seed.declined]) expect((await orders.releaseOrderForShipping({ orderId: id, carrier: "manual" })).changed).to.equal(true);
    const event = (orderId: string, e: ShipmentEvent, name: string, declineReason = "") =>
      events.recordShipmentEvent({ messageKey: `shipment:${orderId}:${name}`, orderId, event: e, shipmentId: SHIPMENT_ID, carrier: "manual", declineReason });
    expect((await event(seed.shipped, ShipmentEvent.SHIPPED, "SHIPPED")).changed).to.equal(true);
    expect((await event(seed.declined, ShipmentEvent.DECLINED, "DECLINED", "NO_CAPACITY")).changed).to.equal(true);

    // Shipments in each state the carrier reports care about.
    const shipment = (orderId: string, carrier: string) => deliveries.createShipment({ orderId, customerId: "cust-1", totalCents: 12_000n, currency: "EUR", carrier });
    await shipment(SHIP.delayed, "delayed");
    for (const id of [SHIP.manual, SHIP.shipped, SHIP.declined, SHIP.delivered]) await shipment(id, "manual");
    await carriers.markShipmentShipped({ orderId: SHIP.shipped, trackingNumber: "TRK-1" });
    await carriers.declineShipment({ orderId: SHIP.declined, reason: "NO_CAPACITY" });
    await carriers.markShipmentDelivered({ orderId: SHIP.delivered });
    const { shipments } = await deliveries.batchGetShipments({ orderIds: Object.values(SHIP) });
    expect(Object.fromEntries(shipments.map((s) => [s.orderId, ShipmentStatus[s.status]]))).to.deep.equal({
      [SHIP.delayed]: "CREATED",
      [SHIP.manual]: "CREATED",
      [SHIP.shipped]: "SHIPPED",
      [SHIP.declined]: "DECLINED",
      [SHIP.delivered]: "DELIVERED",
    });
  });

  after(async () => {
    closers.forEach((c) => c());
    await Promise.allSettled([orderSvc?.stop(), deliverySvc?.stop(), orderPool?.end(), deliveryPool?.end()]);
    await Promise.allSettled([orderDb?.drop(), deliveryDb?.drop()]);
  });

  const D = DeliveryService.method;
  const C = CarrierService.method;
  const O = OrderService.method;
  const record = ShipmentEventService.method.recordShipmentEvent;

  const create = (c: Clients, over: Partial<{ orderId: string; customerId: string; totalCents: bigint; currency: string; carrier: string; traceparent: string }>) =>
    c.deliveries.createShipment({ orderId: "01HNEWSHIPMENT000000000000", customerId: "cust-1", totalCents: 12_000n, currency: "EUR", ...over });
  const event = (
    c: Clients,
    over: Partial<{ messageKey: string; orderId: string; event: ShipmentEvent; shipmentId: string; carrier: string; declineReason: string; traceparent: string }>,
  ) => {
    const orderId = over.orderId ?? seed.requested;
    const name = ShipmentEvent[over.event ?? ShipmentEvent.SHIPPED];
    return c.events.recordShipmentEvent({ messageKey: `shipment:${orderId}:${name}`, orderId, event: ShipmentEvent.SHIPPED, shipmentId: SHIPMENT_ID, ...over });
  };
  const badIds: Array<[string, string]> = [
    ["an empty", ""],
    ["an overlong", LONG],
    ["a malformed (spaces)", "a b"],
    ["a unicode", "kündé"],
  ];
  const badCarriers: Array<[string, string]> = [
    ["an upper-case", "Delayed"],
    ["a 33-character", "c".repeat(33)],
    ["an underscored", "de_layed"],
  ];
  const refused = (call: string) => ({ call, result: "refused" as const });

  const cases: Case[] = [
    // DeliveryService.CreateShipment: rules
    ...badIds.map(([what, id]): Case => ({ name: `CreateShipment with ${what} order_id`, method: D.createShipment, call: (c) => create(c, { orderId: id }), code: Code.InvalidArgument, mentions: "order_id" })),
    ...badIds.map(([what, id]): Case => ({ name: `CreateShipment with ${what} customer_id`, method: D.createShipment, call: (c) => create(c, { customerId: id }), code: Code.InvalidArgument, mentions: "customer_id" })),
    { name: "CreateShipment of zero", method: D.createShipment, call: (c) => create(c, { totalCents: 0n }), code: Code.InvalidArgument, mentions: "total_cents" },
    { name: "CreateShipment of -1 cent", method: D.createShipment, call: (c) => create(c, { totalCents: -1n }), code: Code.InvalidArgument, mentions: "total_cents" },
    { name: "CreateShipment of the largest int64", method: D.createShipment, call: (c) => create(c, { totalCents: BIG }), code: Code.InvalidArgument, mentions: "total_cents" },
    { name: "CreateShipment in USD", method: D.createShipment, call: (c) => create(c, { currency: "USD" }), code: Code.InvalidArgument, mentions: "currency" },
    { name: "CreateShipment with no currency", method: D.createShipment, call: (c) => create(c, { currency: "" }), code: Code.InvalidArgument, mentions: "currency" },
    ...badCarriers.map(([what, carrier]): Case => ({ name: `CreateShipment with ${what} carrier`, method: D.createShipment, call: (c) => create(c, { carrier }), code: Code.InvalidArgument, mentions: "carrier" })),
    { name: "CreateShipment with a malformed traceparent", method: D.createShipment, call: (c) => create(c, { traceparent: "00-nope" }), code: Code.InvalidArgument, mentions: "traceparent" },
    // CreateShipment: refused by the store
    {
      name: "CreateShipment of an order's shipment again for another customer",
      method: D.createShipment,
      call: (c) => create(c, { orderId: SHIP.manual, customerId: "cust-2", carrier: "manual" }),
      code: Code.AlreadyExists,
      mentions: SHIP.manual,
      counted: { call: "create", result: "conflict" },
    },
    {
      name: "CreateShipment of an order's shipment again with another total",
      method: D.createShipment,
      call: (c) => create(c, { orderId: SHIP.delayed, totalCents: 12_001n, carrier: "delayed" }),
      code: Code.AlreadyExists,
      mentions: "12001",
      counted: { call: "create", result: "conflict" },
    },
    // DeliveryService.GetShipment
    ...badIds.map(([what, id]): Case => ({ name: `GetShipment with ${what} order_id`, method: D.getShipment, call: (c) => c.deliveries.getShipment({ orderId: id }), code: Code.InvalidArgument, mentions: "order_id" })),
    { name: "GetShipment of an order without a shipment", method: D.getShipment, call: (c) => c.deliveries.getShipment({ orderId: UNKNOWN_ORDER }), code: Code.NotFound, mentions: UNKNOWN_ORDER },
    { name: "GetShipment by an order id in another case", method: D.getShipment, call: (c) => c.deliveries.getShipment({ orderId: SHIP.manual.toLowerCase() }), code: Code.NotFound, mentions: SHIP.manual.toLowerCase() },
    // DeliveryService.BatchGetShipments
    {
      name: "BatchGetShipments with 1001 ids",
      method: D.batchGetShipments,
      call: (c) => c.deliveries.batchGetShipments({ orderIds: Array.from({ length: 1001 }, (_, i) => `o-${i}`) }),
      code: Code.InvalidArgument,
      mentions: "order_ids",
    },
    { name: "BatchGetShipments with an empty id", method: D.batchGetShipments, call: (c) => c.deliveries.batchGetShipments({ orderIds: [SHIP.manual, ""] }), code: Code.InvalidArgument, mentions: "order_ids[1]" },
    { name: "BatchGetShipments with a malformed id", method: D.batchGetShipments, call: (c) => c.deliveries.batchGetShipments({ orderIds: ["a b"] }), code: Code.InvalidArgument, mentions: "order_ids[0]" },
    { name: "BatchGetShipments with an overlong id", method: D.batchGetShipments, call: (c) => c.deliveries.batchGetShipments({ orderIds: [LONG] }), code: Code.InvalidArgument, mentions: "order_ids[0]" },
    // DeliveryService.ListShipments
    { name: "ListShipments with no status", method: D.listShipments, call: (c) => c.deliveries.listShipments({}), code: Code.InvalidArgument, mentions: "status" },
    { name: "ListShipments with status 6", method: D.listShipments, call: (c) => c.deliveries.listShipments({ status: 6 as ShipmentStatus }), code: Code.InvalidArgument, mentions: "status" },
    {
      name: "ListShipments with updated_after later than updated_before",
      method: D.listShipments,
      call: (c) => c.deliveries.listShipments({ status: ShipmentStatus.CREATED, updatedAfter: ts("2030-01-01T00:00:00Z"), updatedBefore: ts("2020-01-01T00:00:00Z") }),
      code: Code.InvalidArgument,
      mentions: "updated_after",
    },
    {
      name: "ListShipments with a bound past the year 9999",
      method: D.listShipments,
      call: (c) => c.deliveries.listShipments({ status: ShipmentStatus.CREATED, updatedBefore: { seconds: 400_000_000_000n, nanos: 0 } }),
      code: Code.InvalidArgument,
      mentions: "updated_before",
      only: "grpc",
    },
    { name: "ListShipments with page_size -1", method: D.listShipments, call: (c) => c.deliveries.listShipments({ status: ShipmentStatus.CREATED, pageSize: -1 }), code: Code.InvalidArgument, mentions: "page_size" },
    {
      name: "ListShipments with a malformed page_token",
      method: D.listShipments,
      call: (c) => c.deliveries.listShipments({ status: ShipmentStatus.CREATED, pageToken: "no!" }),
      code: Code.InvalidArgument,
      mentions: "page_token",
    },
    {
      name: "ListShipments with a forged page_token",
      method: D.listShipments,
      call: (c) => c.deliveries.listShipments({ status: ShipmentStatus.CREATED, pageToken: FORGED_TOKEN }),
      code: Code.InvalidArgument,
      mentions: "page_token",
    },
    // DeliveryService.ResumeShipment
    ...badIds.map(([what, id]): Case => ({ name: `ResumeShipment with ${what} order_id`, method: D.resumeShipment, call: (c) => c.deliveries.resumeShipment({ orderId: id }), code: Code.InvalidArgument, mentions: "order_id" })),
    {
      name: "ResumeShipment of an order without a shipment",
      method: D.resumeShipment,
      call: (c) => c.deliveries.resumeShipment({ orderId: UNKNOWN_ORDER }),
      code: Code.NotFound,
      mentions: UNKNOWN_ORDER,
      counted: refused("resume"),
    },

    // CarrierService.ConfirmShipment
    ...badIds.map(([what, id]): Case => ({ name: `ConfirmShipment with ${what} order_id`, method: C.confirmShipment, call: (c) => c.carriers.confirmShipment({ orderId: id }), code: Code.InvalidArgument, mentions: "order_id" })),
    {
      name: "ConfirmShipment of an order without a shipment",
      method: C.confirmShipment,
      call: (c) => c.carriers.confirmShipment({ orderId: UNKNOWN_ORDER }),
      code: Code.NotFound,
      mentions: UNKNOWN_ORDER,
      counted: refused("confirm"),
    },
    {
      name: "ConfirmShipment of a shipment whose carrier reports by itself (delayed)",
      method: C.confirmShipment,
      call: (c) => c.carriers.confirmShipment({ orderId: SHIP.delayed }),
      code: Code.FailedPrecondition,
      mentions: "does not take reports over RPC",
      counted: refused("confirm"),
    },
    {
      name: "ConfirmShipment of a declined shipment",
      method: C.confirmShipment,
      call: (c) => c.carriers.confirmShipment({ orderId: SHIP.declined }),
      code: Code.FailedPrecondition,
      mentions: "DECLINED",
      counted: refused("confirm"),
    },
    // CarrierService.DeclineShipment
    ...badIds.map(([what, id]): Case => ({
      name: `DeclineShipment with ${what} order_id`,
      method: C.declineShipment,
      call: (c) => c.carriers.declineShipment({ orderId: id, reason: "NO_CAPACITY" }),
      code: Code.InvalidArgument,
      mentions: "order_id",
    })),
    { name: "DeclineShipment with no reason", method: C.declineShipment, call: (c) => c.carriers.declineShipment({ orderId: SHIP.manual, reason: "" }), code: Code.InvalidArgument, mentions: "reason" },
    {
      name: "DeclineShipment with a 65-character reason",
      method: C.declineShipment,
      call: (c) => c.carriers.declineShipment({ orderId: SHIP.manual, reason: "R".repeat(65) }),
      code: Code.InvalidArgument,
      mentions: "reason",
    },
    {
      name: "DeclineShipment with a reason over two lines",
      method: C.declineShipment,
      call: (c) => c.carriers.declineShipment({ orderId: SHIP.manual, reason: "NO\nCAPACITY" }),
      code: Code.InvalidArgument,
      mentions: "reason",
    },
    {
      name: "DeclineShipment of a shipped shipment",
      method: C.declineShipment,
      call: (c) => c.carriers.declineShipment({ orderId: SHIP.shipped, reason: "NO_CAPACITY" }),
      code: Code.FailedPrecondition,
      mentions: "SHIPPED",
      counted: refused("decline"),
    },
    {
      name: "DeclineShipment of a delivered shipment",
      method: C.declineShipment,
      call: (c) => c.carriers.declineShipment({ orderId: SHIP.delivered, reason: "NO_CAPACITY" }),
      code: Code.FailedPrecondition,
      mentions: "DELIVERED",
      counted: refused("decline"),
    },
    {
      name: "DeclineShipment of a shipment whose carrier reports by itself (delayed)",
      method: C.declineShipment,
      call: (c) => c.carriers.declineShipment({ orderId: SHIP.delayed, reason: "NO_CAPACITY" }),
      code: Code.FailedPrecondition,
      mentions: "does not take reports over RPC",
      counted: refused("decline"),
    },
    // CarrierService.MarkShipmentShipped
    ...badIds.map(([what, id]): Case => ({ name: `MarkShipmentShipped with ${what} order_id`, method: C.markShipmentShipped, call: (c) => c.carriers.markShipmentShipped({ orderId: id }), code: Code.InvalidArgument, mentions: "order_id" })),
    {
      name: "MarkShipmentShipped with a tracking number with spaces",
      method: C.markShipmentShipped,
      call: (c) => c.carriers.markShipmentShipped({ orderId: SHIP.manual, trackingNumber: "TRK 1" }),
      code: Code.InvalidArgument,
      mentions: "tracking_number",
    },
    {
      name: "MarkShipmentShipped with a 65-character tracking number",
      method: C.markShipmentShipped,
      call: (c) => c.carriers.markShipmentShipped({ orderId: SHIP.manual, trackingNumber: "T".repeat(65) }),
      code: Code.InvalidArgument,
      mentions: "tracking_number",
    },
    {
      name: "MarkShipmentShipped of a declined shipment",
      method: C.markShipmentShipped,
      call: (c) => c.carriers.markShipmentShipped({ orderId: SHIP.declined }),
      code: Code.FailedPrecondition,
      mentions: "DECLINED",
      counted: refused("ship"),
    },
    {
      name: "MarkShipmentShipped of an order without a shipment",
      method: C.markShipmentShipped,
      call: (c) => c.carriers.markShipmentShipped({ orderId: UNKNOWN_ORDER }),
      code: Code.NotFound,
      mentions: UNKNOWN_ORDER,
      counted: refused("ship"),
    },
    // CarrierService.MarkShipmentDelivered
    ...badIds.map(([what, id]): Case => ({
      name: `MarkShipmentDelivered with ${what} order_id`,
      method: C.markShipmentDelivered,
      call: (c) => c.carriers.markShipmentDelivered({ orderId: id }),
      code: Code.InvalidArgument,
      mentions: "order_id",
    })),
    {
      name: "MarkShipmentDelivered of a declined shipment",
      method: C.markShipmentDelivered,
      call: (c) => c.carriers.markShipmentDelivered({ orderId: SHIP.declined }),
      code: Code.FailedPrecondition,
      mentions: "DECLINED",
      counted: refused("deliver"),
    },
    {
      name: "MarkShipmentDelivered of a shipment whose carrier reports by itself (delayed)",
      method: C.markShipmentDelivered,
      call: (c) => c.carriers.markShipmentDelivered({ orderId: SHIP.delayed }),
      code: Code.FailedPrecondition,
      mentions: "does not take reports over RPC",
      counted: refused("deliver"),
    },

    // OrderService.CreateOrder with a carrier
    ...badCarriers.map(([what, carrier]): Case => ({
      name: `CreateOrder with ${what} carrier`,
      method: O.createOrder,
      call: (c) => c.orders.createOrder({ customerId: "cust-1", totalCents: 1_000n, currency: "EUR", requestId: `bad-carrier-${carrier.length}`, carrier }),
      code: Code.InvalidArgument,
      mentions: "carrier",
    })),
    // OrderService.ReleaseOrderForShipping
    ...badIds.map(([what, id]): Case => ({
      name: `ReleaseOrderForShipping with ${what} order_id`,
      method: O.releaseOrderForShipping,
      call: (c) => c.orders.releaseOrderForShipping({ orderId: id }),
      code: Code.InvalidArgument,
      mentions: "order_id",
    })),
    ...badCarriers.map(([what, carrier]): Case => ({
      name: `ReleaseOrderForShipping with ${what} carrier`,
      method: O.releaseOrderForShipping,
      call: (c) => c.orders.releaseOrderForShipping({ orderId: seed.pending, carrier }),
      code: Code.InvalidArgument,
      mentions: "carrier",
    })),
    {
      name: "ReleaseOrderForShipping of an unknown order",
      method: O.releaseOrderForShipping,
      call: (c) => c.orders.releaseOrderForShipping({ orderId: UNKNOWN_ORDER }),
      code: Code.NotFound,
      mentions: UNKNOWN_ORDER,
    },
    {
      name: "ReleaseOrderForShipping of an order sent by hand",
      method: O.releaseOrderForShipping,
      call: (c) => c.orders.releaseOrderForShipping({ orderId: seed.sentByHand }),
      code: Code.FailedPrecondition,
      mentions: "by hand",
    },
    {
      name: "ReleaseOrderForShipping of an order awaiting payment",
      method: O.releaseOrderForShipping,
      call: (c) => c.orders.releaseOrderForShipping({ orderId: seed.awaiting }),
      code: Code.FailedPrecondition,
      mentions: "awaiting payment",
    },
    {
      name: "ReleaseOrderForShipping of a cancelled order",
      method: O.releaseOrderForShipping,
      call: (c) => c.orders.releaseOrderForShipping({ orderId: seed.cancelled }),
      code: Code.FailedPrecondition,
      mentions: "cancelled",
    },
    // OrderService.RequeueShipment
    ...badIds.map(([what, id]): Case => ({ name: `RequeueShipment with ${what} order_id`, method: O.requeueShipment, call: (c) => c.orders.requeueShipment({ orderId: id }), code: Code.InvalidArgument, mentions: "order_id" })),
    { name: "RequeueShipment of an unknown order", method: O.requeueShipment, call: (c) => c.orders.requeueShipment({ orderId: UNKNOWN_ORDER }), code: Code.NotFound, mentions: UNKNOWN_ORDER },
    { name: "RequeueShipment of an order never released", method: O.requeueShipment, call: (c) => c.orders.requeueShipment({ orderId: seed.pending }), code: Code.FailedPrecondition, mentions: "not in shipping" },
    { name: "RequeueShipment of an order its shipment has shipped", method: O.requeueShipment, call: (c) => c.orders.requeueShipment({ orderId: seed.shipped }), code: Code.FailedPrecondition, mentions: "SHIPPED" },
    // OrderService.ListOrdersByShippingStatus
    { name: "ListOrdersByShippingStatus with no shipping_status", method: O.listOrdersByShippingStatus, call: (c) => c.orders.listOrdersByShippingStatus({}), code: Code.InvalidArgument, mentions: "shipping_status" },
    {
      name: "ListOrdersByShippingStatus with shipping_status NONE",
      method: O.listOrdersByShippingStatus,
      call: (c) => c.orders.listOrdersByShippingStatus({ shippingStatus: ShippingStatus.NONE }),
      code: Code.InvalidArgument,
      mentions: "shipping_status",
    },
    {
      name: "ListOrdersByShippingStatus with shipping_status 6",
      method: O.listOrdersByShippingStatus,
      call: (c) => c.orders.listOrdersByShippingStatus({ shippingStatus: 6 as ShippingStatus }),
      code: Code.InvalidArgument,
      mentions: "shipping_status",
    },
    {
      name: "ListOrdersByShippingStatus with requested_before past the year 9999",
      method: O.listOrdersByShippingStatus,
      call: (c) => c.orders.listOrdersByShippingStatus({ shippingStatus: ShippingStatus.REQUESTED, requestedBefore: { seconds: 400_000_000_000n, nanos: 0 } }),
      code: Code.InvalidArgument,
      mentions: "requested_before",
      only: "grpc",
    },
    {
      name: "ListOrdersByShippingStatus with page_size -1",
      method: O.listOrdersByShippingStatus,
      call: (c) => c.orders.listOrdersByShippingStatus({ shippingStatus: ShippingStatus.REQUESTED, pageSize: -1 }),
      code: Code.InvalidArgument,
      mentions: "page_size",
    },
    {
      name: "ListOrdersByShippingStatus with a malformed page_token",
      method: O.listOrdersByShippingStatus,
      call: (c) => c.orders.listOrdersByShippingStatus({ shippingStatus: ShippingStatus.REQUESTED, pageToken: "%%" }),
      code: Code.InvalidArgument,
      mentions: "page_token",
    },
    {
      name: "ListOrdersByShippingStatus with a forged page_token",
      method: O.listOrdersByShippingStatus,
      call: (c) => c.orders.listOrdersByShippingStatus({ shippingStatus: ShippingStatus.REQUESTED, pageToken: FORGED_TOKEN }),
      code: Code.InvalidArgument,
      mentions: "page_token",
    },
    // Hand changes of an order in shipping: its shipment moves it.
    { name: "MarkOrderSent of an order in shipping", method: O.markOrderSent, call: (c) => c.orders.markOrderSent({ orderId: seed.requested }), code: Code.FailedPrecondition, mentions: "in shipping" },
    { name: "MarkOrderDelivered of an order its shipment has shipped", method: O.markOrderDelivered, call: (c) => c.orders.markOrderDelivered({ orderId: seed.shipped }), code: Code.FailedPrecondition, mentions: "in shipping" },
    { name: "CancelOrder of an order in shipping", method: O.cancelOrder, call: (c) => c.orders.cancelOrder({ orderId: seed.requested }), code: Code.FailedPrecondition, mentions: "in shipping" },

    // ShipmentEventService.RecordShipmentEvent: rules
    { name: "RecordShipmentEvent with an empty message_key", method: record, call: (c) => event(c, { messageKey: "" }), code: Code.InvalidArgument, mentions: "message_key" },
    { name: "RecordShipmentEvent with a message_key of 129 characters", method: record, call: (c) => event(c, { messageKey: `shipment:${"x".repeat(120)}` }), code: Code.InvalidArgument, mentions: "message_key" },
    { name: "RecordShipmentEvent with a message_key with spaces", method: record, call: (c) => event(c, { messageKey: "shipment: x" }), code: Code.InvalidArgument, mentions: "message_key" },
    ...badIds.map(([what, id]): Case => ({ name: `RecordShipmentEvent with ${what} order_id`, method: record, call: (c) => event(c, { orderId: id, messageKey: "shipment:x:SHIPPED" }), code: Code.InvalidArgument, mentions: "order_id" })),
    ...badIds.map(([what, id]): Case => ({ name: `RecordShipmentEvent with ${what} shipment_id`, method: record, call: (c) => event(c, { shipmentId: id }), code: Code.InvalidArgument, mentions: "shipment_id" })),
    { name: "RecordShipmentEvent with no event", method: record, call: (c) => event(c, { event: ShipmentEvent.UNSPECIFIED }), code: Code.InvalidArgument, mentions: "event" },
    { name: "RecordShipmentEvent with event 4", method: record, call: (c) => event(c, { event: 4 as ShipmentEvent }), code: Code.InvalidArgument, mentions: "event" },
    ...badCarriers.map(([what, carrier]): Case => ({ name: `RecordShipmentEvent with ${what} carrier`, method: record, call: (c) => event(c, { carrier }), code: Code.InvalidArgument, mentions: "carrier" })),
    {
      name: "RecordShipmentEvent with a 65-character decline_reason",
      method: record,
      call: (c) => event(c, { event: ShipmentEvent.DECLINED, declineReason: "R".repeat(65) }),
      code: Code.InvalidArgument,
      mentions: "decline_reason",
    },
    {
      name: "RecordShipmentEvent with a decline_reason holding a tab",
      method: record,
      call: (c) => event(c, { event: ShipmentEvent.DECLINED, declineReason: "NO\tCAPACITY" }),
      code: Code.InvalidArgument,
      mentions: "decline_reason",
    },
    { name: "RecordShipmentEvent with a malformed traceparent", method: record, call: (c) => event(c, { traceparent: "00-zz" }), code: Code.InvalidArgument, mentions: "traceparent" },
    // RecordShipmentEvent: refused by the order
    { name: "RecordShipmentEvent under another order's key", method: record, call: (c) => event(c, { messageKey: `shipment:${seed.shipped}:SHIPPED` }), code: Code.InvalidArgument, mentions: "message_key" },
    {
      name: "RecordShipmentEvent of a DELIVERED event under a SHIPPED key",
      method: record,
      call: (c) => event(c, { messageKey: `shipment:${seed.requested}:SHIPPED`, event: ShipmentEvent.DELIVERED }),
      code: Code.InvalidArgument,
      mentions: "message_key",
    },
    { name: "RecordShipmentEvent for an unknown order", method: record, call: (c) => event(c, { orderId: UNKNOWN_ORDER }), code: Code.NotFound, mentions: UNKNOWN_ORDER },
    {
      name: "RecordShipmentEvent for an order in another case",
      method: record,
      call: (c) => event(c, { orderId: seed.requested.toLowerCase() }),
      code: Code.NotFound,
      mentions: "not found",
    },
    { name: "RecordShipmentEvent for an order never released", method: record, call: (c) => event(c, { orderId: seed.pending }), code: Code.FailedPrecondition, mentions: "never released" },
    {
      name: "RecordShipmentEvent for an order sent by hand",
      method: record,
      call: (c) => event(c, { orderId: seed.sentByHand, event: ShipmentEvent.DELIVERED }),
      code: Code.FailedPrecondition,
      mentions: "never released",
    },
    {
      name: "RecordShipmentEvent of a decline after the shipment shipped",
      method: record,
      call: (c) => event(c, { orderId: seed.shipped, event: ShipmentEvent.DECLINED, declineReason: "NO_CAPACITY" }),
      code: Code.FailedPrecondition,
      mentions: "contradicts",
    },
    {
      name: "RecordShipmentEvent of a shipment after it was declined",
      method: record,
      call: (c) => event(c, { orderId: seed.declined }),
      code: Code.FailedPrecondition,
      mentions: "declined",
    },
    {
      name: "RecordShipmentEvent replayed with other facts (another shipment id)",
      method: record,
      call: (c) => event(c, { orderId: seed.shipped, shipmentId: "01HANOTHERSHIPMENT00000000" }),
      code: Code.FailedPrecondition,
      mentions: "other facts",
    },
  ];

  it("covers every DeliveryService and CarrierService RPC and every shipping RPC of the order service", () => {
    for (const m of [...DeliveryService.methods, ...CarrierService.methods, record, O.releaseOrderForShipping, O.requeueShipment, O.listOrdersByShippingStatus]) {
      expect(cases.some((c) => c.method === m), m.name).to.equal(true);
    }
    expect(cases.filter((c) => c.code !== Code.InvalidArgument).length, "refusals by the domain").to.be.at.least(25);
  });

  for (const transport of ["grpc", "connect"] as const) {
    describe(`over ${transport === "grpc" ? "gRPC" : "Connect JSON"}`, () => {
      for (const c of cases.filter((x) => (x.only ?? transport) === transport)) {
        it(`refuses ${c.name} with ${Code[c.code]}, writes nothing, logs and counts it`, async () => {
          const svc = c.method.parent === DeliveryService || c.method.parent === CarrierService ? deliverySvc : orderSvc;
          const handled = { service: c.method.parent.typeName, method: c.method.name, code: grpcCodeName(c.code) };
          const before = await snapshot();
          const handledBefore = await counter(svc.httpPort, "rpc_server_handled_total", handled);
          const countedBefore = c.counted ? await counter(deliverySvc.httpPort, "delivery_requests_total", c.counted) : 0;
          const logFrom = logLines.length;

          let err: ConnectError | undefined;
          try {
            await c.call(clients[transport]);
          } catch (e) {
            err = ConnectError.from(e);
          }
          expect(err, "the call succeeded").not.to.equal(undefined);
          expect(Code[err!.code], err!.rawMessage).to.equal(Code[c.code]);
          expect(err!.rawMessage).to.include(c.mentions);

          expect(await snapshot(), "a row changed").to.equal(before);
          expect((await counter(svc.httpPort, "rpc_server_handled_total", handled)) - handledBefore, "rpc_server_handled_total").to.equal(1);
          if (c.counted) {
            expect((await counter(deliverySvc.httpPort, "delivery_requests_total", c.counted)) - countedBefore, `delivery_requests_total ${JSON.stringify(c.counted)}`).to.equal(1);
          }
          const lines = logLines.slice(logFrom).filter((l) => l.rpc === c.method.name && l.code === Code[c.code] && l.protocol === transport);
          expect(lines, `the refusal's log line among ${JSON.stringify(logLines.slice(logFrom).map((l) => l.msg))}`).to.have.length(1);
          expect(String(lines[0]!.reason)).to.equal(err!.rawMessage);
        });
      }
    });
  }

  describe("afterwards", () => {
    it("still serves, with the seeded orders and shipments as they were", async () => {
      const { orders, deliveries } = clients.connect;
      const { orders: found } = await orders.batchGetOrders({ orderIds: [seed.requested, seed.shipped, seed.declined, seed.pending] });
      expect(Object.fromEntries(found.map((o) => [o.id, ShippingStatus[o.shipping!.status]]))).to.deep.equal({
        [seed.requested]: "REQUESTED",
        [seed.shipped]: "SHIPPED",
        [seed.declined]: "DECLINED",
        [seed.pending]: "NONE",
      });
      const { shipment } = await deliveries.getShipment({ orderId: SHIP.manual });
      expect([ShipmentStatus[shipment!.status], shipment!.customerId, shipment!.totalCents]).to.deep.equal(["CREATED", "cust-1", 12_000n]);
      // A replay of a seeded shipment is still answered as one.
      const again = await create(clients.grpc, { orderId: SHIP.manual, carrier: "manual" });
      expect([again.created, again.shipment!.orderId]).to.deep.equal([false, SHIP.manual]);
    });
  });
});

/** The gRPC status name rpc_server_handled_total labels a code with (INVALID_ARGUMENT, ...). */
function grpcCodeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}
