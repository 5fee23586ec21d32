import path from "node:path";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { expect } from "chai";
import { bearerToken } from "@shop/sdk/clients";
import { OrderService, OrderStatus, PaymentEvent, PaymentMethod, PaymentOutcomeService, PaymentStatus, VoucherStatus } from "@shop/sdk/order";
import { MovementKind, PaymentOutcome, PaymentService } from "@shop/sdk/payment";
import { CarrierService, DeliveryService, ShipmentStatus } from "@shop/sdk/delivery";
import { VoucherService } from "@shop/sdk/voucher";
import { allScopesToken, roleToken } from "@shop/testkit/auth";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

/**
 * Ids are exact, case included, across the whole system: the customers
 * `alice`, `ALICE` and `Alice` are three people, each of whom sees only their
 * own orders, vouchers, account and statement, on gRPC and on Connect JSON
 * alike; an order or voucher id in another case names nothing, and orders
 * whose ids differ only in case are charged separately; and idempotency keys
 * `k-1` and `K-1` are two requests (orders and top-ups); shipments of the
 * orders `o-1` and `O-1` are two shipments, each reported on by itself, and
 * each customer reads only the shipment of their own order. The four
 * services run as processes: the order service's relays issue the vouchers,
 * charge the paid orders and request the released orders' shipments, the
 * payment service's relay reports the charges back.
 */
const root = path.resolve(import.meta.dirname, "..");
const CUSTOMERS = ["alice", "ALICE", "Alice"] as const;
const TRANSPORTS = ["grpc", "connect"] as const;
type Kind = (typeof TRANSPORTS)[number];

interface Clients {
  orders: Client<typeof OrderService>;
  vouchers: Client<typeof VoucherService>;
  payments: Client<typeof PaymentService>;
  outcomes: Client<typeof PaymentOutcomeService>;
  deliveries: Client<typeof DeliveryService>;
  carriers: Client<typeof CarrierService>;
}

/** The shop's backend at the payment service (accounts, top-ups, reads), and the order service's relay (charges). */
const SHOP_TOKEN = roleToken("shop");
const RELAY_TOKEN = roleToken("relay");
/** A business reporting for the manual carrier. */
const CARRIER_TOKEN = roleToken("carrier");

async function codeOf(call: Promise<unknown>): Promise<Code | "OK"> {
  try {
    await call;
    return "OK";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

/** A case variant of an id that is not the id itself (ULIDs are upper case). */
const otherCase = (id: string) => (id.toLowerCase() !== id ? id.toLowerCase() : id.toUpperCase());

describe("exact ids across both services and both transports", function () {
  this.timeout(120_000);
  let orderDb: TestDatabase;
  let voucherDb: TestDatabase;
  let paymentDb: TestDatabase;
  let order: ServiceProcess;
  let voucher: ServiceProcess;
  let payment: ServiceProcess;
  let deliveryDb: TestDatabase;
  let delivery: ServiceProcess;
  const ports = { orderGrpc: 0, orderHttp: 0, voucherGrpc: 0, voucherHttp: 0, paymentGrpc: 0, paymentHttp: 0, deliveryGrpc: 0, deliveryHttp: 0 };
  /** Each customer's order and voucher, top-up and paid order, and an order released for shipping with the manual carrier. */
  const seeded: Record<string, { orderId: string; voucherId: string; topUpCents: bigint; paidOrderId: string; paidCents: bigint; shippedOrderId: string }> = {};

  const clientCache = new Map<string, Clients>();
  /** Clients of both services over one transport, calling with one token. */
  function clients(kind: Kind, token: string): Clients {
    const key = `${kind}:${token}`;
    if (!clientCache.has(key)) {
      const auth = bearerToken(token);
      const transport = (grpcPort: number, httpPort: number): Transport =>
        kind === "grpc"
          ? createGrpcTransport({ baseUrl: `http://127.0.0.1:${grpcPort}`, defaultTimeoutMs: 10_000, interceptors: [auth] })
          : createConnectTransport({ baseUrl: `http://127.0.0.1:${httpPort}`, httpVersion: "1.1", defaultTimeoutMs: 10_000, interceptors: [auth] });
      clientCache.set(key, {
        orders: createClient(OrderService, transport(ports.orderGrpc, ports.orderHttp)),
        vouchers: createClient(VoucherService, transport(ports.voucherGrpc, ports.voucherHttp)),
        payments: createClient(PaymentService, transport(ports.paymentGrpc, ports.paymentHttp)),
        outcomes: createClient(PaymentOutcomeService, transport(ports.orderGrpc, ports.orderHttp)),
        deliveries: createClient(DeliveryService, transport(ports.deliveryGrpc, ports.deliveryHttp)),
        carriers: createClient(CarrierService, transport(ports.deliveryGrpc, ports.deliveryHttp)),
      });
    }
    return clientCache.get(key)!;
  }
  const shop = (kind: Kind) => clients(kind, allScopesToken);
  const customerTokens = new Map<string, string>();
  const customer = (kind: Kind, customerId: string) => {
    if (!customerTokens.has(customerId)) customerTokens.set(customerId, roleToken("customer", customerId));
    return clients(kind, customerTokens.get(customerId)!);
  };
  const shopPayments = (kind: Kind) => clients(kind, SHOP_TOKEN).payments;
  const relayPayments = (kind: Kind) => clients(kind, RELAY_TOKEN).payments;
  const shopDeliveries = (kind: Kind) => clients(kind, SHOP_TOKEN).deliveries;
  const relayDeliveries = (kind: Kind) => clients(kind, RELAY_TOKEN).deliveries;
  const carrierReports = (kind: Kind) => clients(kind, CARRIER_TOKEN).carriers;

  before(async () => {
    [orderDb, voucherDb, paymentDb, deliveryDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher"), freshDatabase("voucher"), freshDatabase("voucher")]);
    [ports.orderGrpc, ports.orderHttp, ports.voucherGrpc, ports.voucherHttp, ports.paymentGrpc, ports.paymentHttp, ports.deliveryGrpc, ports.deliveryHttp] = await Promise.all(
      Array.from({ length: 8 }, () => freePort()),
    );
    voucher = new ServiceProcess({
      name: "identity-voucher",
      entry: path.join(root, "voucher-service/src/main.ts"),
      env: { VOUCHER_DATABASE_URL: voucherDb.url, VOUCHER_GRPC_PORT: String(ports.voucherGrpc), VOUCHER_HTTP_PORT: String(ports.voucherHttp) },
      readyUrl: `http://127.0.0.1:${ports.voucherHttp}/readyz`,
    });
    order = new ServiceProcess({
      name: "identity-order",
      entry: path.join(root, "order-service/src/main.ts"),
      env: {
        ORDER_DATABASE_URL: orderDb.url,
        ORDER_GRPC_PORT: String(ports.orderGrpc),
        ORDER_HTTP_PORT: String(ports.orderHttp),
        VOUCHER_SERVICE_URL: `http://127.0.0.1:${ports.voucherGrpc}`,
        PAYMENT_SERVICE_URL: `http://127.0.0.1:${ports.paymentGrpc}`,
        // Shipments of released orders only: the paid orders stay PAID (SHIP_PAID_ORDERS is off).
        DELIVERY_SERVICE_URL: `http://127.0.0.1:${ports.deliveryGrpc}`,
        RELAY_RETRY_BASE_MS: "100",
        RELAY_RETRY_MAX_MS: "1000",
      },
      readyUrl: `http://127.0.0.1:${ports.orderHttp}/readyz`,
    });
    payment = new ServiceProcess({
      name: "identity-payment",
      entry: path.join(root, "payment-service/src/main.ts"),
      env: {
        PAYMENT_DATABASE_URL: paymentDb.url,
        PAYMENT_GRPC_PORT: String(ports.paymentGrpc),
        PAYMENT_HTTP_PORT: String(ports.paymentHttp),
        ORDER_SERVICE_URL: `http://127.0.0.1:${ports.orderGrpc}`,
        PAYMENT_RELAY_TOKEN: roleToken("payment-relay"),
        PAYMENT_RELAY_RETRY_BASE_MS: "100",
        PAYMENT_RELAY_RETRY_MAX_MS: "1000",
      },
      readyUrl: `http://127.0.0.1:${ports.paymentHttp}/readyz`,
    });
    delivery = new ServiceProcess({
      name: "identity-delivery",
      entry: path.join(root, "delivery-service/src/main.ts"),
      env: {
        DELIVERY_DATABASE_URL: deliveryDb.url,
        DELIVERY_GRPC_PORT: String(ports.deliveryGrpc),
        DELIVERY_HTTP_PORT: String(ports.deliveryHttp),
        ORDER_SERVICE_URL: `http://127.0.0.1:${ports.orderGrpc}`,
        DELIVERY_RELAY_TOKEN: roleToken("delivery-relay"),
        DELIVERY_RELAY_RETRY_BASE_MS: "100",
        DELIVERY_RELAY_RETRY_MAX_MS: "1000",
      },
      readyUrl: `http://127.0.0.1:${ports.deliveryHttp}/readyz`,
    });
    await Promise.all([voucher.start(), order.start(), payment.start(), delivery.start()]);

    const { orders } = shop("grpc");
    for (const [i, customerId] of CUSTOMERS.entries()) {
      const { order: o } = await orders.createOrder({ customerId, totalCents: 12_000n, currency: "EUR", requestId: `seed-${i}` });
      await orders.markOrderSent({ orderId: o!.id });
      seeded[customerId] = { orderId: o!.id, voucherId: "", topUpCents: 0n, paidOrderId: "", paidCents: 0n, shippedOrderId: "" };
    }
    // Each customer's account, topped up with an amount of its own, and an order paid from it.
    const payments = shopPayments("grpc");
    for (const [i, customerId] of CUSTOMERS.entries()) {
      const opened = await payments.openAccount({ customerId, currency: "EUR" });
      expect([opened.created, opened.account!.customerId], `${customerId}'s account`).to.deep.equal([true, customerId]);
      const topUpCents = 100_000n + BigInt(i) * 1_000n;
      const top = await payments.topUp({ customerId, amountCents: topUpCents, currency: "EUR", requestId: `top-${customerId}` });
      expect(top.applied).to.equal(true);
      const paidCents = 10_000n + BigInt(i) * 100n;
      const { order: p } = await orders.createOrder({ customerId, totalCents: paidCents, currency: "EUR", requestId: `paid-${i}`, paymentMethod: PaymentMethod.ACCOUNT });
      Object.assign(seeded[customerId]!, { topUpCents, paidOrderId: p!.id, paidCents });
    }
    // Each customer's order released for shipping with the manual carrier: its shipment waits for a report, and moves nothing.
    for (const [i, customerId] of CUSTOMERS.entries()) {
      const { order: s } = await orders.createOrder({ customerId, totalCents: 15_000n + BigInt(i), currency: "EUR", requestId: `ship-${i}` });
      const released = await orders.releaseOrderForShipping({ orderId: s!.id, carrier: "manual" });
      expect(released.changed, `${customerId}'s order released`).to.equal(true);
      seeded[customerId]!.shippedOrderId = s!.id;
    }
    // The relay delivers the three vouchers; wait until each order shows its own.
    const deadline = Date.now() + 30_000;
    for (const customerId of CUSTOMERS) {
      for (;;) {
        const { order: o } = await orders.getOrder({ orderId: seeded[customerId]!.orderId });
        if (o!.voucher!.status === VoucherStatus.ISSUED) {
          seeded[customerId]!.voucherId = o!.voucher!.voucherId;
          break;
        }
        if (Date.now() > deadline) throw new Error(`no voucher for ${customerId}'s order within 30 s; see ${order.logFile}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      // The charge goes to the payment service and its outcome comes back: wait until the paid order is PAID.
      for (;;) {
        const { order: o } = await orders.getOrder({ orderId: seeded[customerId]!.paidOrderId });
        if (o!.status === OrderStatus.PAID) break;
        if (o!.status !== OrderStatus.AWAITING_PAYMENT) throw new Error(`${customerId}'s paid order is ${OrderStatus[o!.status]}; see ${order.logFile} and ${payment.logFile}`);
        if (Date.now() > deadline) throw new Error(`${customerId}'s order not PAID within 30 s; see ${order.logFile} and ${payment.logFile}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      // The shipment relay delivers the released order's request: wait until the delivery service has its shipment.
      for (;;) {
        const { shipments } = await shopDeliveries("grpc").batchGetShipments({ orderIds: [seeded[customerId]!.shippedOrderId] });
        if (shipments.length === 1) break;
        if (Date.now() > deadline) throw new Error(`no shipment for ${customerId}'s released order within 30 s; see ${order.logFile} and ${delivery.logFile}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });

  after(async () => {
    await Promise.allSettled([order?.stop(), voucher?.stop(), payment?.stop(), delivery?.stop()]);
    await Promise.allSettled([orderDb?.drop(), voucherDb?.drop(), paymentDb?.drop(), deliveryDb?.drop()]);
  });

  for (const kind of TRANSPORTS) {
    describe(`over ${kind === "grpc" ? "gRPC" : "Connect JSON"}`, () => {
      it("ListOrders gives each of alice, ALICE and Alice their own order only, and a variant nobody uses none", async () => {
        for (const customerId of CUSTOMERS) {
          const theirs = [seeded[customerId]!.orderId, seeded[customerId]!.paidOrderId, seeded[customerId]!.shippedOrderId];
          const own = await customer(kind, customerId).orders.listOrders({ customerId });
          expect(own.orders.map((o) => o.id), `${customerId}'s own token`).to.have.members(theirs);
          const asShop = await shop(kind).orders.listOrders({ customerId });
          expect(asShop.orders.map((o) => o.id), `the shop listing ${customerId}`).to.have.members(theirs);
          for (const other of CUSTOMERS.filter((c) => c !== customerId)) {
            expect(await codeOf(customer(kind, customerId).orders.listOrders({ customerId: other })), `${customerId} listing ${other}`).to.equal(
              Code.PermissionDenied,
            );
          }
        }
        expect((await shop(kind).orders.listOrders({ customerId: "aLiCe" })).orders).to.deep.equal([]);
        // ListOrdersByPaymentStatus names each paid order with its own customer, case and all.
        const { orders: charged } = await shop(kind).orders.listOrdersByPaymentStatus({ paymentStatus: PaymentStatus.CHARGED });
        expect(charged.map((o) => [o.id, o.customerId])).to.have.deep.members(CUSTOMERS.map((c) => [seeded[c]!.paidOrderId, c]));
      });

      it("GetOrder lets each customer read their own order, refuses the others', and finds no order by an id in another case", async () => {
        for (const customerId of CUSTOMERS) {
          const c = customer(kind, customerId);
          const { order: own } = await c.orders.getOrder({ orderId: seeded[customerId]!.orderId });
          expect(own!.customerId).to.equal(customerId);
          for (const other of CUSTOMERS.filter((x) => x !== customerId)) {
            expect(await codeOf(c.orders.getOrder({ orderId: seeded[other]!.orderId })), `${customerId} reading ${other}'s order`).to.equal(
              Code.PermissionDenied,
            );
          }
          const variant = otherCase(seeded[customerId]!.orderId);
          expect(await codeOf(c.orders.getOrder({ orderId: variant })), `${customerId} reading ${variant}`).to.equal(Code.NotFound);
          expect(await codeOf(shop(kind).orders.getOrder({ orderId: variant })), `the shop reading ${variant}`).to.equal(Code.NotFound);
        }
        const { orders } = await shop(kind).orders.batchGetOrders({ orderIds: CUSTOMERS.map((c) => otherCase(seeded[c]!.orderId)) });
        expect(orders).to.deep.equal([]);
      });

      it("ListVouchers gives each customer their own voucher only", async () => {
        for (const customerId of CUSTOMERS) {
          const own = await customer(kind, customerId).vouchers.listVouchers({ customerId });
          expect(own.vouchers.map((v) => v.id), `${customerId}'s own token`).to.deep.equal([seeded[customerId]!.voucherId]);
          const asShop = await shop(kind).vouchers.listVouchers({ customerId });
          expect(asShop.vouchers.map((v) => v.id), `the shop listing ${customerId}`).to.deep.equal([seeded[customerId]!.voucherId]);
          for (const other of CUSTOMERS.filter((c) => c !== customerId)) {
            expect(await codeOf(customer(kind, customerId).vouchers.listVouchers({ customerId: other })), `${customerId} listing ${other}`).to.equal(
              Code.PermissionDenied,
            );
          }
        }
        expect((await shop(kind).vouchers.listVouchers({ customerId: "aLiCe" })).vouchers).to.deep.equal([]);
      });

      it("GetVoucher lets each customer read their own voucher, refuses the others', and finds none by an id in another case", async () => {
        for (const customerId of CUSTOMERS) {
          const c = customer(kind, customerId);
          const { voucher: own } = await c.vouchers.getVoucher({ voucherId: seeded[customerId]!.voucherId });
          expect(own!.customerId).to.equal(customerId);
          expect(own!.orderId).to.equal(seeded[customerId]!.orderId);
          for (const other of CUSTOMERS.filter((x) => x !== customerId)) {
            expect(await codeOf(c.vouchers.getVoucher({ voucherId: seeded[other]!.voucherId })), `${customerId} reading ${other}'s voucher`).to.equal(
              Code.PermissionDenied,
            );
          }
          const variant = otherCase(seeded[customerId]!.voucherId);
          expect(await codeOf(shop(kind).vouchers.getVoucher({ voucherId: variant })), `the shop reading ${variant}`).to.equal(Code.NotFound);
        }
        const { vouchers } = await shop(kind).vouchers.batchGetVouchersByOrder({ orderIds: CUSTOMERS.map((c) => otherCase(seeded[c]!.orderId)) });
        expect(vouchers).to.deep.equal([]);
      });

      it("CreateOrder takes request ids differing only in case as different requests", async () => {
        const { orders } = shop(kind);
        const create = (requestId: string, customerId: string, totalCents: bigint) =>
          orders.createOrder({ customerId, totalCents, currency: "EUR", requestId });
        // The same customer and total under both keys: two orders, not a replay.
        const a = await create(`${kind}-k-1`, "kim", 12_000n);
        const b = await create(`${kind}-K-1`, "kim", 12_000n);
        // A different customer and total: two orders, not a "different customer or total" refusal.
        const c = await create(`${kind}-k-2`, "kim", 12_000n);
        const d = await create(`${kind}-K-2`, "KIM", 9_000n);
        for (const [name, r] of Object.entries({ a, b, c, d })) expect(r.created, name).to.equal(true);
        expect(new Set([a, b, c, d].map((r) => r.order!.id)).size).to.equal(4);
        // Each key still replays its own order.
        const again = await create(`${kind}-K-1`, "kim", 12_000n);
        expect([again.created, again.order!.id]).to.deep.equal([false, b.order!.id]);
        expect(await codeOf(create(`${kind}-K-2`, "kim", 12_000n))).to.equal(Code.AlreadyExists);
      });

      it("OpenAccount and GetAccount keep alice, ALICE and Alice as three accounts, each read by its own customer only", async () => {
        for (const customerId of CUSTOMERS) {
          const { topUpCents, paidCents } = seeded[customerId]!;
          // Opening again is the same account, with its own balance: not another customer's.
          const again = await shopPayments(kind).openAccount({ customerId, currency: "EUR" });
          expect([again.created, again.account!.customerId, again.account!.balanceCents], `${customerId} opened again`).to.deep.equal([false, customerId, topUpCents - paidCents]);
          const { account } = await customer(kind, customerId).payments.getAccount({ customerId });
          expect([account!.customerId, account!.balanceCents], `${customerId}'s own token`).to.deep.equal([customerId, topUpCents - paidCents]);
          for (const other of CUSTOMERS.filter((c) => c !== customerId)) {
            expect(await codeOf(customer(kind, customerId).payments.getAccount({ customerId: other })), `${customerId} reading ${other}'s account`).to.equal(Code.PermissionDenied);
          }
        }
        expect(await codeOf(shopPayments(kind).getAccount({ customerId: "aLiCe" }))).to.equal(Code.NotFound);
      });

      it("TopUp and ListStatement: each of alice, ALICE and Alice sees their own top-up and charge only", async () => {
        for (const customerId of CUSTOMERS) {
          const { topUpCents, paidOrderId, paidCents } = seeded[customerId]!;
          const { movements } = await customer(kind, customerId).payments.listStatement({ customerId });
          expect(
            movements.map((m) => [MovementKind[m.kind], m.amountCents, m.orderId, m.requestId]),
            `${customerId}'s statement`,
          ).to.deep.equal([
            ["CHARGE", -paidCents, paidOrderId, ""],
            ["TOP_UP", topUpCents, "", `top-${customerId}`],
          ]);
          for (const other of CUSTOMERS.filter((c) => c !== customerId)) {
            expect(await codeOf(customer(kind, customerId).payments.listStatement({ customerId: other })), `${customerId} listing ${other}`).to.equal(Code.PermissionDenied);
            // Another customer's top-up request id is not this customer's: reusing it is a conflict, not a replay.
            expect(
              await codeOf(shopPayments(kind).topUp({ customerId, amountCents: seeded[other]!.topUpCents, currency: "EUR", requestId: `top-${other}` })),
              `${customerId} topped up under ${other}'s request id`,
            ).to.equal(Code.AlreadyExists);
          }
        }
        expect(await codeOf(shopPayments(kind).listStatement({ customerId: "aLiCe" }))).to.equal(Code.NotFound);
      });

      it("TopUp takes request ids k-1 and K-1 as two top-ups, each replaying its own", async () => {
        const payments = shopPayments(kind);
        const kim = `kim-${kind}`;
        await payments.openAccount({ customerId: kim, currency: "EUR" });
        const start = (await payments.getAccount({ customerId: kim })).account!.balanceCents;
        const top = (requestId: string, amountCents: bigint) => payments.topUp({ customerId: kim, amountCents, currency: "EUR", requestId });
        const a = await top(`${kind}-k-1`, 1_000n);
        const b = await top(`${kind}-K-1`, 1_000n);
        expect([a.applied, b.applied]).to.deep.equal([true, true]);
        expect(a.movement!.id).not.to.equal(b.movement!.id);
        expect(b.account!.balanceCents).to.equal(start + 2_000n);
        // Each key replays its own movement, and holds its own amount.
        const again = await top(`${kind}-K-1`, 1_000n);
        expect([again.applied, again.movement!.id, again.account!.balanceCents]).to.deep.equal([false, b.movement!.id, start + 2_000n]);
        expect(await codeOf(top(`${kind}-k-1`, 2_000n))).to.equal(Code.AlreadyExists);
        // A different amount under the other-case key is a new top-up, not a conflict.
        const c = await top(`${kind}-K-2`, 500n);
        const d = await top(`${kind}-k-2`, 700n);
        expect([c.applied, d.applied, d.account!.balanceCents]).to.deep.equal([true, true, start + 3_200n]);
        const { movements } = await payments.listStatement({ customerId: kim });
        expect(movements.filter((m) => m.requestId.startsWith(`${kind}-`)).map((m) => [m.requestId, m.amountCents])).to.have.deep.members([
          [`${kind}-k-1`, 1_000n],
          [`${kind}-K-1`, 1_000n],
          [`${kind}-K-2`, 500n],
          [`${kind}-k-2`, 700n],
        ]);
      });

      it("ChargeOrder and BatchGetOrderPayments: order ids differing only in case are different orders", async () => {
        // The three paid orders, charged by the relay: each to its own customer, none found by an id in another case.
        const paidIds = CUSTOMERS.map((c) => seeded[c]!.paidOrderId);
        const { payments: found } = await shopPayments(kind).batchGetOrderPayments({ orderIds: paidIds });
        expect(found.map((p) => [p.orderId, p.customerId, p.amountCents, PaymentOutcome[p.chargeOutcome]])).to.have.deep.members(
          CUSTOMERS.map((c) => [seeded[c]!.paidOrderId, c, seeded[c]!.paidCents, "CHARGED"]),
        );
        expect((await shopPayments(kind).batchGetOrderPayments({ orderIds: paidIds.map(otherCase) })).payments).to.deep.equal([]);
        for (const customerId of CUSTOMERS) {
          const { order: o } = await customer(kind, customerId).orders.getOrder({ orderId: seeded[customerId]!.paidOrderId });
          expect([o!.customerId, PaymentStatus[o!.payment!.status]]).to.deep.equal([customerId, "CHARGED"]);
        }
        // Charges of ord-1, ORD-1 and Ord-1: three orders, three debits, each replaying its own amount.
        const kim = `kim-${kind}`;
        await shopPayments(kind).topUp({ customerId: kim, amountCents: 10_000n, currency: "EUR", requestId: `${kind}-for-charges` });
        const before = (await shopPayments(kind).getAccount({ customerId: kim })).account!.balanceCents;
        const ids = [`${kind}-ord-1`, `${kind}-ORD-1`, `${kind}-Ord-1`];
        const amounts = [100n, 200n, 300n];
        for (const [i, orderId] of ids.entries()) {
          const r = await relayPayments(kind).chargeOrder({ orderId, customerId: kim, amountCents: amounts[i]!, currency: "EUR" });
          expect([PaymentOutcome[r.outcome], r.decided, r.movement!.orderId], orderId).to.deep.equal(["CHARGED", true, orderId]);
        }
        for (const [i, orderId] of ids.entries()) {
          const r = await relayPayments(kind).chargeOrder({ orderId, customerId: kim, amountCents: amounts[i]!, currency: "EUR" });
          expect([r.decided, r.movement!.amountCents], `${orderId} replayed`).to.deep.equal([false, -amounts[i]!]);
          expect(await codeOf(relayPayments(kind).chargeOrder({ orderId, customerId: kim, amountCents: amounts[(i + 1) % 3]!, currency: "EUR" })), `${orderId} with another's amount`).to.equal(
            Code.AlreadyExists,
          );
        }
        expect((await shopPayments(kind).getAccount({ customerId: kim })).account!.balanceCents).to.equal(before - 600n);
        const { payments: charged } = await shopPayments(kind).batchGetOrderPayments({ orderIds: [...ids, `${kind}-oRD-1`] });
        expect(charged.map((p) => [p.orderId, p.amountCents])).to.have.deep.members(ids.map((id, i) => [id, amounts[i]!]));
      });

      it("RecordPaymentOutcome and RequeuePayment find no order by an id in another case", async () => {
        for (const customerId of CUSTOMERS) {
          const { paidOrderId, paidCents } = seeded[customerId]!;
          const variant = otherCase(paidOrderId);
          // Were the variant to find the paid order, this would be a contradiction (FAILED_PRECONDITION), not NOT_FOUND.
          const refused = shop(kind).outcomes.recordPaymentOutcome({
            messageKey: `charge:${variant}`,
            orderId: variant,
            event: PaymentEvent.REFUSED,
            refusalReason: "INSUFFICIENT_FUNDS",
            amountCents: paidCents,
            currency: "EUR",
          });
          expect(await codeOf(refused), `an outcome for ${variant}`).to.equal(Code.NotFound);
          expect(await codeOf(shop(kind).orders.requeuePayment({ orderId: variant })), `requeueing ${variant}`).to.equal(Code.NotFound);
          const { order: o } = await shop(kind).orders.getOrder({ orderId: paidOrderId });
          expect([OrderStatus[o!.status], PaymentStatus[o!.payment!.status]]).to.deep.equal(["PAID", "CHARGED"]);
        }
      });

      it("GetShipment lets each customer read the shipment of their own order only, and finds none by an order id in another case", async () => {
        for (const [i, customerId] of CUSTOMERS.entries()) {
          const { shippedOrderId } = seeded[customerId]!;
          const { shipment: own } = await customer(kind, customerId).deliveries.getShipment({ orderId: shippedOrderId });
          expect([own!.orderId, own!.customerId, own!.totalCents, own!.carrier], `${customerId}'s shipment`).to.deep.equal([shippedOrderId, customerId, 15_000n + BigInt(i), "manual"]);
          for (const other of CUSTOMERS.filter((c) => c !== customerId)) {
            expect(await codeOf(customer(kind, customerId).deliveries.getShipment({ orderId: seeded[other]!.shippedOrderId })), `${customerId} reading ${other}'s shipment`).to.equal(
              Code.PermissionDenied,
            );
          }
          const variant = otherCase(shippedOrderId);
          expect(await codeOf(shopDeliveries(kind).getShipment({ orderId: variant })), `the shop reading ${variant}`).to.equal(Code.NotFound);
          expect(await codeOf(customer(kind, customerId).deliveries.getShipment({ orderId: variant })), `${customerId} reading ${variant}`).to.equal(Code.NotFound);
          // Nor does the order service take the variant for the order: releasing or requeueing it finds no order.
          expect(await codeOf(shop(kind).orders.releaseOrderForShipping({ orderId: variant, carrier: "manual" })), `releasing ${variant}`).to.equal(Code.NotFound);
          expect(await codeOf(shop(kind).orders.requeueShipment({ orderId: variant })), `requeueing ${variant}`).to.equal(Code.NotFound);
        }
        const shippedIds = CUSTOMERS.map((c) => seeded[c]!.shippedOrderId);
        const { shipments } = await shopDeliveries(kind).batchGetShipments({ orderIds: [...shippedIds, ...shippedIds.map(otherCase)] });
        expect(shipments.map((s) => [s.orderId, s.customerId])).to.have.deep.members(CUSTOMERS.map((c) => [seeded[c]!.shippedOrderId, c]));
      });

      it("CreateShipment and the carrier's reports: orders o-1, O-1 and O-1's other customer are separate shipments, each moved by itself", async () => {
        const ids = [`${kind}-o-1`, `${kind}-O-1`, `${kind}-o-I`];
        const customers = ["kim", "KIM", "kim"];
        const totals = [1_000n, 2_000n, 3_000n];
        const make = (i: number) => relayDeliveries(kind).createShipment({ orderId: ids[i]!, customerId: customers[i]!, totalCents: totals[i]!, currency: "EUR", carrier: "manual" });
        for (const i of [0, 1, 2]) {
          const r = await make(i);
          expect([r.created, r.shipment!.orderId, r.shipment!.customerId, r.shipment!.totalCents], ids[i]).to.deep.equal([true, ids[i], customers[i], totals[i]]);
        }
        // Each replays its own; another's customer or total under an id is a conflict, not a replay of the other case's.
        for (const i of [0, 1, 2]) {
          const again = await make(i);
          expect([again.created, again.shipment!.customerId, again.shipment!.totalCents], `${ids[i]} replayed`).to.deep.equal([false, customers[i], totals[i]]);
        }
        const conflicting = relayDeliveries(kind).createShipment({ orderId: ids[0]!, customerId: "KIM", totalCents: 2_000n, currency: "EUR", carrier: "manual" });
        expect(await codeOf(conflicting), `${ids[0]} with ${ids[1]}'s customer and total`).to.equal(Code.AlreadyExists);
        // A report on o-1 moves o-1 only.
        expect((await carrierReports(kind).confirmShipment({ orderId: ids[0]! })).changed).to.equal(true);
        const { shipments } = await shopDeliveries(kind).batchGetShipments({ orderIds: ids });
        expect(Object.fromEntries(shipments.map((s) => [s.orderId, ShipmentStatus[s.status]]))).to.deep.equal({
          [ids[0]!]: "CONFIRMED",
          [ids[1]!]: "CREATED",
          [ids[2]!]: "CREATED",
        });
        expect(await codeOf(carrierReports(kind).confirmShipment({ orderId: `${kind}-O-I` })), "a variant nobody has").to.equal(Code.NotFound);
        const { shipment } = await shopDeliveries(kind).getShipment({ orderId: ids[0]! });
        expect(shipment!.transitions.map((t) => ShipmentStatus[t.to])).to.deep.equal(["CREATED", "CONFIRMED"]);
      });
    });
  }
});
