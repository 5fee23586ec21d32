import path from "node:path";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { expect } from "chai";
import { bearerToken } from "@shop/sdk/clients";
import { OrderService, VoucherStatus } from "@shop/sdk/order";
import { VoucherService } from "@shop/sdk/voucher";
import { allScopesToken, roleToken } from "@shop/testkit/auth";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

/**
 * Ids are exact, case included, across the whole system: the customers
 * `alice`, `ALICE` and `Alice` are three people, each of whom sees only their
 * own orders and vouchers, on gRPC and on Connect JSON alike; an order or
 * voucher id in another case names nothing; and idempotency keys `k-1` and
 * `K-1` are two requests. Both services run as processes, the relay in the
 * order service issuing the vouchers.
 */
const root = path.resolve(import.meta.dirname, "..");
const CUSTOMERS = ["alice", "ALICE", "Alice"] as const;
const TRANSPORTS = ["grpc", "connect"] as const;
type Kind = (typeof TRANSPORTS)[number];

interface Clients {
  orders: Client<typeof OrderService>;
  vouchers: Client<typeof VoucherService>;
}

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
  let order: ServiceProcess;
  let voucher: ServiceProcess;
  const ports = { orderGrpc: 0, orderHttp: 0, voucherGrpc: 0, voucherHttp: 0 };
  /** Each customer's order and voucher. */
  const seeded: Record<string, { orderId: string; voucherId: string }> = {};

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
      });
    }
    return clientCache.get(key)!;
  }
  const shop = (kind: Kind) => clients(kind, allScopesToken);
  const customer = (kind: Kind, customerId: string) => clients(kind, roleToken("customer", customerId));

  before(async () => {
    [orderDb, voucherDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher")]);
    [ports.orderGrpc, ports.orderHttp, ports.voucherGrpc, ports.voucherHttp] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
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
        RELAY_RETRY_BASE_MS: "100",
        RELAY_RETRY_MAX_MS: "1000",
      },
      readyUrl: `http://127.0.0.1:${ports.orderHttp}/readyz`,
    });
    await Promise.all([voucher.start(), order.start()]);

    const { orders } = shop("grpc");
    for (const [i, customerId] of CUSTOMERS.entries()) {
      const { order: o } = await orders.createOrder({ customerId, totalCents: 12_000n, currency: "EUR", requestId: `seed-${i}` });
      await orders.markOrderSent({ orderId: o!.id });
      seeded[customerId] = { orderId: o!.id, voucherId: "" };
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
    }
  });

  after(async () => {
    await Promise.allSettled([order?.stop(), voucher?.stop()]);
    await Promise.allSettled([orderDb?.drop(), voucherDb?.drop()]);
  });

  for (const kind of TRANSPORTS) {
    describe(`over ${kind === "grpc" ? "gRPC" : "Connect JSON"}`, () => {
      it("ListOrders gives each of alice, ALICE and Alice their own order only, and a variant nobody uses none", async () => {
        for (const customerId of CUSTOMERS) {
          const own = await customer(kind, customerId).orders.listOrders({ customerId });
          expect(own.orders.map((o) => o.id), `${customerId}'s own token`).to.deep.equal([seeded[customerId]!.orderId]);
          const asShop = await shop(kind).orders.listOrders({ customerId });
          expect(asShop.orders.map((o) => o.id), `the shop listing ${customerId}`).to.deep.equal([seeded[customerId]!.orderId]);
          for (const other of CUSTOMERS.filter((c) => c !== customerId)) {
            expect(await codeOf(customer(kind, customerId).orders.listOrders({ customerId: other })), `${customerId} listing ${other}`).to.equal(
              Code.PermissionDenied,
            );
          }
        }
        expect((await shop(kind).orders.listOrders({ customerId: "aLiCe" })).orders).to.deep.equal([]);
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
    });
  }
});
