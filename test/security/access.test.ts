import { Writable } from "node:stream";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { expect } from "chai";
import { pino } from "pino";
import type { RowDataPacket } from "mysql2/promise";
import { AUDIENCES, newSigningKey, roleClaims, tokenForRole, type AuthSettings, type Role } from "@shop/platform/auth";
import { createPool, type Pool } from "@shop/platform/db";
import { CARRIER_DEFAULTS } from "@shop/delivery-service/carriers/registry";
import { startDeliveryService, type RunningDeliveryService } from "@shop/delivery-service/service";
import { startOrderService, type RunningOrderService } from "@shop/order-service/service";
import { startVoucherService, type RunningVoucherService } from "@shop/voucher-service/service";
import { bearerToken } from "@shop/sdk/clients";
import { CarrierService, DeliveryService, ShipmentStatus } from "@shop/sdk/delivery";
import { OrderService, PaymentEvent, PaymentOutcomeService, ShipmentEvent, ShipmentEventService, ShippingStatus } from "@shop/sdk/order";
import { OrderAdminService } from "@shop/sdk/order-admin";
import { VoucherService } from "@shop/sdk/voucher";
import { SCOPES } from "@shop/platform/auth";
import { allScopesToken, roleToken, testAuth, testSigningKey, testToken } from "@shop/testkit/auth";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

/**
 * Who may call what, on both transports: every method tried with every
 * role's token, each expected outcome written out here (not read from the
 * services' rule tables, so a wrong rule fails the test); customers confined
 * to their own data; missing, malformed, forged, expired, wrongly signed,
 * unknown-key, foreign-issuer tokens and tokens addressed to the other
 * service refused with UNAUTHENTICATED; the log says why and never holds a
 * token; a refused call writes nothing. Each service runs with its own
 * audience, as in production. The delivery service (DeliveryService,
 * CarrierService) and the order service's shipping RPCs
 * (ReleaseOrderForShipping, RequeueShipment, ListOrdersByShippingStatus,
 * ShipmentEventService) are tried with every caller too, the delivery
 * service's relay and the carrier role among them.
 */

type Caller = Exclude<Role, "customer"> | "customer-a";
const CALLERS: Caller[] = ["shop", "relay", "payment-relay", "delivery-relay", "carrier", "reconciler", "admin", "customer-a"];
const CUSTOMER_A = "cust-a";
const CUSTOMER_B = "cust-b";

function tokenOf(caller: Caller): string {
  return caller === "customer-a" ? roleToken("customer", CUSTOMER_A) : roleToken(caller);
}

type Service = "orders" | "vouchers" | "deliveries";
/** The services each caller's token is addressed to, written out: a caller reaching another service is refused before its scopes are read. */
const ADDRESSED_TO: Record<Caller, Service[]> = {
  shop: ["orders", "vouchers", "deliveries"],
  relay: ["vouchers", "deliveries"],
  "payment-relay": ["orders"],
  "delivery-relay": ["orders"],
  carrier: ["deliveries"],
  reconciler: ["orders", "vouchers", "deliveries"],
  admin: ["orders", "vouchers", "deliveries"],
  "customer-a": ["orders", "vouchers", "deliveries"],
};
const orderServiceAuth: AuthSettings = { ...testAuth, audience: AUDIENCES.orders };
const voucherServiceAuth: AuthSettings = { ...testAuth, audience: AUDIENCES.vouchers };
const deliveryServiceAuth: AuthSettings = { ...testAuth, audience: AUDIENCES.deliveries };
/** Every delivery scope, addressed to the delivery service: seeds shipments there. */
const deliveryHarnessToken = testToken({
  subject: "test-harness",
  scopes: [SCOPES.shipmentsCreate, SCOPES.shipmentsRead, SCOPES.shipmentsAdmin, SCOPES.carrierReport],
  audience: AUDIENCES.deliveries,
  ttlSeconds: 86_400,
});

/** Log lines, kept to check what the refusals said (and that no token was written). */
const logLines: string[] = [];
const logger = pino(
  { level: "info" },
  new Writable({
    write(chunk, _enc, done) {
      logLines.push(chunk.toString());
      done();
    },
  }),
);

/** Whether a log line's message holds `text` and matches `reason` (read from the JSON, as reasons quote with "). */
function logged(text: string, reason: RegExp): boolean {
  return logLines.some((l) => {
    const msg = String(JSON.parse(l).msg);
    return msg.includes(text) && reason.test(msg);
  });
}

interface Clients {
  orders: ReturnType<typeof createClient<typeof OrderService>>;
  admin: ReturnType<typeof createClient<typeof OrderAdminService>>;
  outcomes: ReturnType<typeof createClient<typeof PaymentOutcomeService>>;
  vouchers: ReturnType<typeof createClient<typeof VoucherService>>;
  shipmentEvents: ReturnType<typeof createClient<typeof ShipmentEventService>>;
  deliveries: ReturnType<typeof createClient<typeof DeliveryService>>;
  carriers: ReturnType<typeof createClient<typeof CarrierService>>;
}

describe("access control on both transports", function () {
  this.timeout(60_000);
  let orderDb: TestDatabase;
  let voucherDb: TestDatabase;
  let orderSvc: RunningOrderService;
  let voucherSvc: RunningVoucherService;
  let deliverySvc: RunningDeliveryService;
  let deliveryDb: TestDatabase;
  let orderPool: Pool;
  let deliveryPool: Pool;
  const closers: Array<() => void> = [];
  // Seeded data: an order and a voucher of each customer.
  let orderA: string;
  let orderB: string;
  let voucherA: string;
  let voucherB: string;
  /** An order of customer A whose shipment (manual carrier) the carrier calls report on. */
  const carrierOrder = "01HACCESSCARRIER0000000000";

  const transports: Record<"grpc" | "connect", (port: { grpc: number; http: number }, interceptors: Interceptor[]) => Transport> = {
    grpc: (port, interceptors) => createGrpcTransport({ baseUrl: `http://127.0.0.1:${port.grpc}`, defaultTimeoutMs: 10_000, interceptors }),
    connect: (port, interceptors) =>
      createConnectTransport({ baseUrl: `http://127.0.0.1:${port.http}`, httpVersion: "1.1", defaultTimeoutMs: 10_000, interceptors }),
  };

  function clients(kind: "grpc" | "connect", interceptors: Interceptor[]): Clients {
    const o = transports[kind]({ grpc: orderSvc.grpcPort, http: orderSvc.httpPort }, interceptors);
    const v = transports[kind]({ grpc: voucherSvc.grpcPort, http: voucherSvc.httpPort }, interceptors);
    const d = transports[kind]({ grpc: deliverySvc.grpcPort, http: deliverySvc.httpPort }, interceptors);
    return {
      orders: createClient(OrderService, o),
      admin: createClient(OrderAdminService, o),
      outcomes: createClient(PaymentOutcomeService, o),
      vouchers: createClient(VoucherService, v),
      shipmentEvents: createClient(ShipmentEventService, o),
      deliveries: createClient(DeliveryService, d),
      carriers: createClient(CarrierService, d),
    };
  }

  const byCaller = new Map<string, Clients>();
  /** One set of clients per transport and caller, reused across tests. */
  function callerClients(kind: "grpc" | "connect", caller: Caller): Clients {
    const key = `${kind}:${caller}`;
    if (!byCaller.has(key)) byCaller.set(key, clients(kind, [bearerToken(tokenOf(caller))]));
    return byCaller.get(key)!;
  }

  async function codeOf(call: Promise<unknown>): Promise<Code | "OK"> {
    try {
      await call;
      return "OK";
    } catch (err) {
      return ConnectError.from(err).code;
    }
  }

  before(async () => {
    [orderDb, voucherDb, deliveryDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher"), freshDatabase("voucher")]);
    // No carrier worker and no event relay: shipments stay as the calls leave them.
    deliverySvc = await startDeliveryService({
      auth: deliveryServiceAuth,
      databaseUrl: deliveryDb.url,
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      logger,
      poolSize: 4,
      graceMs: 200,
      relay: false,
      carrierWorker: false,
      carriers: { ...CARRIER_DEFAULTS, delayed: { ...CARRIER_DEFAULTS.delayed }, enabled: [...CARRIER_DEFAULTS.enabled] },
    });
    deliveryPool = createPool({ url: deliveryDb.url, connectionLimit: 2 });
    voucherSvc = await startVoucherService({ auth: voucherServiceAuth, databaseUrl: voucherDb.url, host: "127.0.0.1", grpcPort: 0, httpPort: 0, logger, graceMs: 200 });
    orderSvc = await startOrderService({
      config: {
        databaseUrl: orderDb.url,
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        poolSize: 4,
        voucherServiceUrl: `http://127.0.0.1:${voucherSvc.grpcPort}`,
        relayEnabled: false,
        auth: orderServiceAuth,
      },
      logger,
      relay: false,
      shutdownGraceMs: 200,
    });
    orderPool = createPool({ url: orderDb.url, connectionLimit: 2 });
    const c = clients("grpc", [bearerToken(allScopesToken)]);
    const seed = async (customerId: string) => {
      const { order } = await c.orders.createOrder({ customerId, totalCents: 20_000n, currency: "EUR", requestId: `seed-${customerId}` });
      await c.orders.markOrderSent({ orderId: order!.id });
      const { voucher } = await c.vouchers.issueVoucher({ orderId: order!.id, customerId, orderTotalCents: 20_000n, currency: "EUR" });
      return [order!.id, voucher!.id] as const;
    };
    [orderA, voucherA] = await seed(CUSTOMER_A);
    [orderB, voucherB] = await seed(CUSTOMER_B);
    // A shipment of each customer's order, and one of the manual carrier's for the carrier's reports.
    const d = clients("grpc", [bearerToken(deliveryHarnessToken)]).deliveries;
    await d.createShipment({ orderId: orderA, customerId: CUSTOMER_A, totalCents: 20_000n, currency: "EUR", carrier: "manual" });
    await d.createShipment({ orderId: orderB, customerId: CUSTOMER_B, totalCents: 20_000n, currency: "EUR", carrier: "manual" });
    await d.createShipment({ orderId: carrierOrder, customerId: CUSTOMER_A, totalCents: 20_000n, currency: "EUR", carrier: "manual" });
  });

  after(async () => {
    closers.forEach((c) => c());
    await Promise.allSettled([orderSvc?.stop(), voucherSvc?.stop(), deliverySvc?.stop(), orderPool?.end(), deliveryPool?.end()]);
    await Promise.allSettled([orderDb?.drop(), voucherDb?.drop(), deliveryDb?.drop()]);
  });

  /**
   * One valid call of every method; the callers expected to get in; the rest
   * must get PERMISSION_DENIED, or UNAUTHENTICATED where their token is not
   * addressed to the method's service.
   */
  const methods: Array<{ name: string; allowed: Caller[]; call: (c: Clients, n: number) => Promise<unknown> }> = [
    {
      name: "OrderService/CreateOrder",
      allowed: ["shop"],
      call: (c, n) => c.orders.createOrder({ customerId: CUSTOMER_A, totalCents: 5_000n, currency: "EUR", requestId: `acl-${n}` }),
    },
    { name: "OrderService/GetOrder", allowed: ["shop", "reconciler", "admin", "customer-a"], call: (c) => c.orders.getOrder({ orderId: orderA }) },
    {
      name: "OrderService/ListOrders",
      allowed: ["shop", "reconciler", "admin", "customer-a"],
      call: (c) => c.orders.listOrders({ customerId: CUSTOMER_A }),
    },
    { name: "OrderService/MarkOrderSent", allowed: ["shop"], call: (c) => c.orders.markOrderSent({ orderId: orderA }) },
    { name: "OrderService/MarkOrderDelivered", allowed: ["shop"], call: (c) => c.orders.markOrderDelivered({ orderId: orderA }) },
    { name: "OrderService/CancelOrder", allowed: ["shop"], call: (c) => c.orders.cancelOrder({ orderId: orderB }) },
    { name: "OrderService/ListSentOrders", allowed: ["shop", "reconciler", "admin"], call: (c) => c.orders.listSentOrders({}) },
    { name: "OrderService/BatchGetOrders", allowed: ["shop", "reconciler", "admin"], call: (c) => c.orders.batchGetOrders({ orderIds: [orderA] }) },
    { name: "OrderService/RequeueVoucher", allowed: ["reconciler"], call: (c) => c.orders.requeueVoucher({ orderId: orderA }) },
    { name: "OrderService/RequeuePayment", allowed: ["reconciler"], call: (c) => c.orders.requeuePayment({ orderId: orderA }) },
    {
      name: "OrderService/ListOrdersByPaymentStatus",
      allowed: ["shop", "reconciler", "admin"],
      call: (c) => c.orders.listOrdersByPaymentStatus({ paymentStatus: 2 }),
    },
    {
      name: "PaymentOutcomeService/RecordPaymentOutcome",
      allowed: ["payment-relay", "reconciler"],
      // orderA has no payment: an allowed caller gets FAILED_PRECONDITION, and nothing changes.
      call: (c) =>
        c.outcomes.recordPaymentOutcome({
          messageKey: `charge:${orderA}`,
          orderId: orderA,
          event: PaymentEvent.CHARGED,
          amountCents: 20_000n,
          currency: "EUR",
        }),
    },
    // orderA was sent by hand: releasing it, requeueing its shipment or recording an event on it is FAILED_PRECONDITION for an allowed caller, and changes nothing.
    { name: "OrderService/ReleaseOrderForShipping", allowed: ["shop"], call: (c) => c.orders.releaseOrderForShipping({ orderId: orderA }) },
    { name: "OrderService/RequeueShipment", allowed: ["reconciler", "admin"], call: (c) => c.orders.requeueShipment({ orderId: orderA }) },
    {
      name: "OrderService/ListOrdersByShippingStatus",
      allowed: ["shop", "reconciler", "admin"],
      call: (c) => c.orders.listOrdersByShippingStatus({ shippingStatus: ShippingStatus.REQUESTED }),
    },
    {
      name: "ShipmentEventService/RecordShipmentEvent",
      allowed: ["delivery-relay", "reconciler"],
      call: (c) =>
        c.shipmentEvents.recordShipmentEvent({ messageKey: `shipment:${orderA}:SHIPPED`, orderId: orderA, event: ShipmentEvent.SHIPPED, shipmentId: "01HACCESSSHIPMENT000000000" }),
    },
    { name: "OrderAdminService/ListDeadVoucherDeliveries", allowed: ["admin"], call: (c) => c.admin.listDeadVoucherDeliveries({}) },
    { name: "OrderAdminService/RequeueDeadVoucherDeliveries", allowed: ["admin"], call: (c) => c.admin.requeueDeadVoucherDeliveries({ all: true }) },
    {
      name: "VoucherService/IssueVoucher",
      allowed: ["relay", "reconciler"],
      call: (c) => c.vouchers.issueVoucher({ orderId: orderA, customerId: CUSTOMER_A, orderTotalCents: 20_000n, currency: "EUR" }),
    },
    {
      name: "VoucherService/BatchIssueVouchers",
      allowed: ["relay", "reconciler"],
      call: (c) => c.vouchers.batchIssueVouchers({ items: [{ orderId: orderA, customerId: CUSTOMER_A, orderTotalCents: 20_000n, currency: "EUR" }] }),
    },
    { name: "VoucherService/GetVoucher", allowed: ["shop", "reconciler", "admin", "customer-a"], call: (c) => c.vouchers.getVoucher({ voucherId: voucherA }) },
    {
      name: "VoucherService/ListVouchers",
      allowed: ["shop", "reconciler", "admin", "customer-a"],
      call: (c) => c.vouchers.listVouchers({ customerId: CUSTOMER_A }),
    },
    {
      name: "VoucherService/BatchGetVouchersByOrder",
      allowed: ["shop", "reconciler", "admin"],
      call: (c) => c.vouchers.batchGetVouchersByOrder({ orderIds: [orderA] }),
    },
    { name: "VoucherService/ListIssuedVouchers", allowed: ["shop", "reconciler", "admin"], call: (c) => c.vouchers.listIssuedVouchers({}) },
    { name: "VoucherService/VoidVoucher", allowed: ["reconciler"], call: (c) => c.vouchers.voidVoucher({ voucherId: voucherB, reason: "access test" }) },
    {
      name: "DeliveryService/CreateShipment",
      allowed: ["relay"],
      // A replay of the seeded shipment: an allowed caller gets it back (created=false), nothing changes.
      call: (c) => c.deliveries.createShipment({ orderId: orderA, customerId: CUSTOMER_A, totalCents: 20_000n, currency: "EUR", carrier: "manual" }),
    },
    { name: "DeliveryService/GetShipment", allowed: ["shop", "reconciler", "admin", "customer-a"], call: (c) => c.deliveries.getShipment({ orderId: orderA }) },
    { name: "DeliveryService/BatchGetShipments", allowed: ["shop", "reconciler", "admin"], call: (c) => c.deliveries.batchGetShipments({ orderIds: [orderA] }) },
    { name: "DeliveryService/ListShipments", allowed: ["shop", "reconciler", "admin"], call: (c) => c.deliveries.listShipments({ status: ShipmentStatus.CREATED }) },
    // Nothing is parked: resumed=false for the admin.
    { name: "DeliveryService/ResumeShipment", allowed: ["admin"], call: (c) => c.deliveries.resumeShipment({ orderId: orderA }) },
    { name: "CarrierService/ConfirmShipment", allowed: ["carrier"], call: (c) => c.carriers.confirmShipment({ orderId: carrierOrder }) },
    { name: "CarrierService/MarkShipmentShipped", allowed: ["carrier"], call: (c) => c.carriers.markShipmentShipped({ orderId: carrierOrder, trackingNumber: "ACL-1" }) },
    { name: "CarrierService/MarkShipmentDelivered", allowed: ["carrier"], call: (c) => c.carriers.markShipmentDelivered({ orderId: carrierOrder }) },
    // Delivered already by the time it runs: FAILED_PRECONDITION for the carrier, refused before that for everyone else.
    { name: "CarrierService/DeclineShipment", allowed: ["carrier"], call: (c) => c.carriers.declineShipment({ orderId: carrierOrder, reason: "NO_CAPACITY" }) },
  ];

  for (const transport of ["grpc", "connect"] as const) {
    describe(`over ${transport === "grpc" ? "gRPC" : "Connect JSON"}`, () => {
      let n = 0;
      for (const m of methods) {
        it(`${m.name}: lets in ${m.allowed.join(", ")}; refuses the others`, async () => {
          const service: Service = m.name.startsWith("Voucher") ? "vouchers" : /^(Delivery|Carrier)Service\//.test(m.name) ? "deliveries" : "orders";
          for (const caller of CALLERS) {
            const code = await codeOf(m.call(callerClients(transport, caller), n++));
            if (m.allowed.includes(caller)) {
              expect([Code.PermissionDenied, Code.Unauthenticated], `${caller} should get into ${m.name}`).not.to.include(code);
            } else if (!ADDRESSED_TO[caller].includes(service)) {
              expect(code, `${caller} calling ${m.name} with a token for another service`).to.equal(Code.Unauthenticated);
            } else {
              expect(code, `${caller} calling ${m.name}`).to.equal(Code.PermissionDenied);
            }
          }
        });
      }

      it("keeps a customer to its own orders and vouchers", async () => {
        const c = callerClients(transport, "customer-a");
        expect(await codeOf(c.orders.getOrder({ orderId: orderA }))).to.equal("OK");
        expect(await codeOf(c.orders.getOrder({ orderId: orderB }))).to.equal(Code.PermissionDenied);
        expect(await codeOf(c.orders.listOrders({ customerId: CUSTOMER_B }))).to.equal(Code.PermissionDenied);
        expect(await codeOf(c.vouchers.getVoucher({ voucherId: voucherA }))).to.equal("OK");
        expect(await codeOf(c.vouchers.getVoucher({ voucherId: voucherB }))).to.equal(Code.PermissionDenied);
        expect(await codeOf(c.vouchers.listVouchers({ customerId: CUSTOMER_B }))).to.equal(Code.PermissionDenied);
        const own = await c.orders.listOrders({ customerId: CUSTOMER_A });
        expect(own.orders).to.have.length.greaterThan(0);
        expect(new Set(own.orders.map((o) => o.customerId))).to.deep.equal(new Set([CUSTOMER_A]));
      });

      it("keeps a customer to its own shipments", async () => {
        const c = callerClients(transport, "customer-a");
        const own = await c.deliveries.getShipment({ orderId: orderA });
        expect([own.shipment!.orderId, own.shipment!.customerId]).to.deep.equal([orderA, CUSTOMER_A]);
        expect(await codeOf(c.deliveries.getShipment({ orderId: orderB }))).to.equal(Code.PermissionDenied);
        // Another customer's token learns nothing from an order without a shipment either: not found, not someone else's.
        expect(await codeOf(c.deliveries.getShipment({ orderId: "01HNOSHIPMENT0000000000000" }))).to.equal(Code.NotFound);
      });

      it("changes no shipment or order on a refused shipping call", async () => {
        const before = [await orderRows(), await deliveryRows()];
        for (const caller of ["shop", "customer-a", "reconciler", "delivery-relay"] as const) {
          const c = callerClients(transport, caller);
          expect(
            await codeOf(c.deliveries.createShipment({ orderId: `refused-${transport}-${caller}`, customerId: CUSTOMER_A, totalCents: 20_000n, currency: "EUR" })),
          ).to.be.oneOf([Code.PermissionDenied, Code.Unauthenticated]);
          expect(await codeOf(c.carriers.declineShipment({ orderId: orderB, reason: "NO_CAPACITY" }))).to.be.oneOf([Code.PermissionDenied, Code.Unauthenticated]);
        }
        for (const caller of ["shop", "relay", "carrier", "payment-relay"] as const) {
          const c = callerClients(transport, caller);
          const refused = c.shipmentEvents.recordShipmentEvent({
            messageKey: `shipment:${orderB}:DELIVERED`,
            orderId: orderB,
            event: ShipmentEvent.DELIVERED,
            shipmentId: "01HACCESSSHIPMENT000000000",
          });
          expect(await codeOf(refused)).to.be.oneOf([Code.PermissionDenied, Code.Unauthenticated]);
          if (caller !== "shop") expect(await codeOf(c.orders.releaseOrderForShipping({ orderId: orderB }))).to.be.oneOf([Code.PermissionDenied, Code.Unauthenticated]);
        }
        expect([await orderRows(), await deliveryRows()]).to.deep.equal(before);
      });
    });
  }

  describe("tokens that are refused with UNAUTHENTICATED", () => {
    const header = (value: string): Interceptor => (next) => (req) => {
      req.header.set("authorization", value);
      return next(req);
    };
    const valid = roleToken("shop");
    const [h, p, s] = valid.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, "base64url").toString());
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const stranger = newSigningKey(testSigningKey.kid); // same key id, another key
    const shop = roleClaims("shop", { ttlSeconds: 600 });
    const cases: Array<[string, Interceptor[], RegExp]> = [
      ["no token at all", [], /no bearer token/],
      ["a Basic credential", [header("Basic dXNlcjpwYXNz")], /not a Bearer token/],
      ["a token that is not a JWT", [header("Bearer not-a-token")], /malformed token/],
      ["a forged token (scopes added, signature kept)", [header(`Bearer ${h}.${b64({ ...claims, scope: "admin orders:write" })}.${s}`)], /bad signature/],
      ["an expired token", [bearerToken(testToken({ ...shop, subject: "old", ttlSeconds: 60, issuedAt: 1_000_000 }))], /expired/],
      ["a token signed by another key under the same key id", [bearerToken(testToken(shop, stranger))], /bad signature/],
      ["a token from an unknown key id", [bearerToken(testToken(shop, newSigningKey("other")))], /unknown key id/],
      ["an unsigned token (alg none)", [header(`Bearer ${b64({ alg: "none", kid: testSigningKey.kid })}.${p}.`)], /unsupported signature algorithm "none"/],
      ["a token MAC'd with HS256", [header(`Bearer ${b64({ alg: "HS256", kid: testSigningKey.kid })}.${p}.${s}`)], /unsupported signature algorithm "HS256"/],
      ["a token from another issuer", [bearerToken(testToken({ ...shop, issuer: "elsewhere" }))], /issued by "elsewhere", not by shop-auth/],
      [
        "the shop's token addressed to the voucher service only",
        [bearerToken(testToken({ ...shop, audience: AUDIENCES.vouchers }))],
        /token of shop-backend is for audience "voucher-service", not this service \(order-service\)/,
      ],
      [
        "the relay's token (for the voucher, payment and delivery services)",
        [bearerToken(roleToken("relay"))],
        /token of relay is for audience \["voucher-service","payment-service","delivery-service"\], not this service \(order-service\)/,
      ],
      ["the carrier's token (for the delivery service)", [bearerToken(roleToken("carrier"))], /token of carrier is for audience "delivery-service", not this service \(order-service\)/],
    ];
    for (const transport of ["grpc", "connect"] as const) {
      for (const [what, interceptors, reason] of cases) {
        it(`${what} over ${transport}: refused, the reason logged, nothing written`, async () => {
          const before = await orderRows();
          const c = clients(transport, interceptors);
          let err: ConnectError | undefined;
          try {
            await c.orders.createOrder({ customerId: CUSTOMER_A, totalCents: 20_000n, currency: "EUR", requestId: `unauth-${transport}-${what}` });
          } catch (e) {
            err = ConnectError.from(e);
          }
          expect(err?.code, what).to.equal(Code.Unauthenticated);
          expect(err!.rawMessage).to.match(reason);
          expect(await orderRows()).to.equal(before);
          expect(logged("CreateOrder refused: unauthenticated", reason)).to.equal(true);
        });
      }

      it(`tokens for the order service over ${transport}: refused at the delivery service, the reason logged, nothing written`, async () => {
        for (const [token, reason] of [
          [roleToken("delivery-relay"), /token of delivery-relay is for audience "order-service", not this service \(delivery-service\)/],
          [allScopesToken, /token of test-harness is for audience \["order-service","voucher-service"\], not this service \(delivery-service\)/],
          [testToken({ ...shop, audience: AUDIENCES.orders }), /token of shop-backend is for audience "order-service", not this service \(delivery-service\)/],
        ] as const) {
          const before = await deliveryRows();
          const c = clients(transport, [bearerToken(token)]);
          const err = await c.deliveries
            .createShipment({ orderId: `unauth-${transport}`, customerId: CUSTOMER_A, totalCents: 20_000n, currency: "EUR" })
            .then(() => undefined, (e) => ConnectError.from(e));
          expect(err?.code).to.equal(Code.Unauthenticated);
          expect(err!.rawMessage).to.match(reason);
          expect(await deliveryRows()).to.equal(before);
          expect(logged("CreateShipment refused: unauthenticated", reason)).to.equal(true);
        }
      });

      it(`a token addressed to the order service only over ${transport}: accepted there, refused at the voucher service`, async () => {
        const c = clients(transport, [bearerToken(testToken({ ...shop, audience: AUDIENCES.orders }))]);
        expect(await codeOf(c.orders.listSentOrders({}))).to.equal("OK");
        const err = await c.vouchers.listIssuedVouchers({}).then(() => undefined, (e) => ConnectError.from(e));
        expect(err?.code).to.equal(Code.Unauthenticated);
        const reason = /token of shop-backend is for audience "order-service", not this service \(voucher-service\)/;
        expect(err!.rawMessage).to.match(reason);
        expect(logged("ListIssuedVouchers refused: unauthenticated", reason)).to.equal(true);
      });
    }
  });

  // Mocha runs a suite's own tests before its nested suites: this one is nested so it comes after the calls above.
  describe("the log", () => it("says why each call was refused and never holds a token", () => {
    expect(logLines.length).to.be.greaterThan(50);
    const tokens = CALLERS.map(tokenOf).concat(allScopesToken, deliveryHarnessToken);
    const signatures = tokens.map((t) => t.split(".")[2]!);
    for (const line of logLines) for (const sig of signatures) expect(line).not.to.contain(sig);
    expect(logLines.some((l) => /may only read its own customer's data.*"caller":"customer:cust-a"|"caller":"customer:cust-a".*may only read its own customer's data/.test(l))).to.equal(true);
    expect(logLines.some((l) => l.includes('"code":"PermissionDenied"') && l.includes("relay may not call VoidVoucher"))).to.equal(true);
    expect(logLines.some((l) => l.includes('"code":"PermissionDenied"') && l.includes("delivery-relay may not call ReleaseOrderForShipping"))).to.equal(true);
    expect(logLines.some((l) => l.includes('"code":"PermissionDenied"') && l.includes("shop-backend may not call CreateShipment"))).to.equal(true);
  }));

  it("accepts every listed key, so keys can be rotated: add the new one, re-issue tokens, drop the old one", async () => {
    const next = newSigningKey("next-key");
    const both = { ...voucherServiceAuth, keys: [...testAuth.keys, next.publicJwk] };
    const onlyNext = { ...voucherServiceAuth, keys: [next.publicJwk] };
    const oldToken = roleToken("shop");
    const newToken = await tokenForRole(next, "shop", { ttlSeconds: 600 });
    const db = await freshDatabase("voucher");
    try {
      for (const [auth, expectOld] of [
        [both, "OK"],
        [onlyNext, Code.Unauthenticated],
      ] as const) {
        const svc = await startVoucherService({ auth, databaseUrl: db.url, host: "127.0.0.1", grpcPort: 0, httpPort: 0, logger, graceMs: 100 });
        try {
          const call = (token: string) =>
            codeOf(
              createClient(VoucherService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${svc.grpcPort}`, interceptors: [bearerToken(token)] })).listIssuedVouchers({}),
            );
          expect(await call(newToken)).to.equal("OK");
          expect(await call(oldToken)).to.equal(expectOld);
        } finally {
          await svc.stop();
        }
      }
    } finally {
      await db.drop();
    }
  });

  /** Every row of the delivery database's tables. */
  async function deliveryRows(): Promise<string> {
    const out: unknown[] = [];
    for (const t of ["shipments", "shipment_transitions", "shipment_event_outbox"]) {
      const [rows] = await deliveryPool.query<RowDataPacket[]>(`SELECT * FROM \`${t}\` ORDER BY id`);
      out.push(rows);
    }
    return JSON.stringify(out);
  }

  async function orderRows(): Promise<string> {
    const [rows] = await orderPool.query<RowDataPacket[]>("SELECT COUNT(*) AS n, (SELECT COUNT(*) FROM voucher_outbox) AS b FROM orders");
    return JSON.stringify(rows);
  }
});
