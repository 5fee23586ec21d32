import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { AUDIENCES, SCOPES } from "@shop/platform/auth";
import {
  createCarrierClient,
  createDeliveryClient,
  createOrderClient,
  type CarrierClient,
  type DeliveryClient,
  type OrderClient,
} from "@shop/sdk/clients";
import type { Order } from "@shop/sdk/order";
import type { Shipment } from "@shop/sdk/delivery";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { freePort } from "@shop/testkit/ports";
import { allScopesToken, roleToken, testAuth, testToken } from "@shop/testkit/auth";
import { startOrderService, type RunningOrderService } from "@shop/order-service/service";
import { RELAY_DEFAULTS } from "@shop/order-service/outbox/relay";
import { startVoucherService, type RunningVoucherService } from "@shop/voucher-service/service";
import { startDeliveryService, type RunningDeliveryService } from "@shop/delivery-service/service";
import { DELIVERY_RELAY_DEFAULTS } from "@shop/delivery-service/outbox/relay";
import { CARRIER_DEFAULTS } from "@shop/delivery-service/carriers/registry";
import { loadConfig, type ReconcilerConfig } from "../src/config.js";
import { Reconciler, type RunRequest } from "../src/job.js";
import { quietLogger } from "./system.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const FAST = { pollIntervalMs: 100, retryBaseMs: 50, retryMaxMs: 500 };

/** The order relay, the shop and an operator at the delivery service: create shipments, read them, report for the manual carrier. */
const deliveryHarnessToken = testToken({
  subject: "test-harness",
  scopes: [SCOPES.shipmentsCreate, SCOPES.shipmentsRead, SCOPES.shipmentsAdmin, SCOPES.carrierReport],
  audience: AUDIENCES.deliveries,
  ttlSeconds: 86_400,
});

/**
 * The order, voucher and delivery services in this process, each on a fresh
 * database: the order service with its relays (the shipment relay to the
 * delivery service included), the delivery service with its carrier worker,
 * the manual carrier as its default (shipments move only when a test
 * reports for them), and with or without its event relay: stopping that
 * relay is how a test leaves shipment events undelivered. Ports are fixed at
 * start, so the delivery service can be restarted with its relay on or off
 * while the order service's shipment relay keeps its address. A reconciler
 * with a grace period of 0 and shipping on, its state and reports in a
 * temporary folder.
 */
export class ShippingSystem {
  orderDb!: TestDatabase;
  voucherDb!: TestDatabase;
  deliveryDb!: TestDatabase;
  orderService?: RunningOrderService;
  voucherService?: RunningVoucherService;
  deliveryService?: RunningDeliveryService;
  orders!: OrderClient;
  deliveries!: DeliveryClient;
  carrier!: CarrierClient;
  config!: ReconcilerConfig;
  deliveryRelayOn = false;
  readonly dir = mkdtempSync(path.join(tmpdir(), "reconcile-shipping-test-"));
  private orderPort = 0;
  private deliveryPort = 0;
  private closers: Array<() => void> = [];

  async start(opts: { deliveryRelay: boolean }): Promise<void> {
    [this.orderDb, this.voucherDb, this.deliveryDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher"), freshDatabase("voucher")]);
    [this.orderPort, this.deliveryPort] = await Promise.all([freePort(), freePort()]);
    this.voucherService = await startVoucherService({
      auth: testAuth,
      databaseUrl: this.voucherDb.url,
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      logger: quietLogger(),
      graceMs: 500,
    });
    await this.startDeliveryService(opts.deliveryRelay);
    this.orderService = await startOrderService({
      config: {
        databaseUrl: this.orderDb.url,
        host: "127.0.0.1",
        grpcPort: this.orderPort,
        httpPort: 0,
        poolSize: 10,
        voucherServiceUrl: `http://127.0.0.1:${this.voucherService.grpcPort}`,
        deliveryServiceUrl: this.deliveryUrl,
        relayEnabled: true,
        auth: testAuth,
        relayToken: roleToken("relay"),
      },
      relay: { ...RELAY_DEFAULTS, ...FAST },
      logger: quietLogger(),
      shutdownGraceMs: 500,
    });
    const o = createOrderClient({ token: allScopesToken, baseUrl: this.orderUrl });
    const d = createDeliveryClient({ token: deliveryHarnessToken, baseUrl: this.deliveryUrl });
    const c = createCarrierClient({ token: deliveryHarnessToken, baseUrl: this.deliveryUrl });
    this.orders = o.client;
    this.deliveries = d.client;
    this.carrier = c.client;
    this.closers.push(o.close, d.close, c.close);
    this.config = loadConfig({
      ORDER_SERVICE_URL: this.orderUrl,
      VOUCHER_SERVICE_URL: `http://127.0.0.1:${this.voucherService.grpcPort}`,
      DELIVERY_SERVICE_URL: this.deliveryUrl,
      RECONCILE_SHIPPING: "true",
      RECONCILE_GRACE_MS: "0",
      RECONCILE_STATE_FILE: path.join(this.dir, "state.json"),
      RECONCILE_REPORT_DIR: path.join(this.dir, "reports"),
      RECONCILE_CALL_TIMEOUT_MS: "10000",
      RECONCILE_TOKEN: roleToken("reconciler"),
    });
  }

  get orderUrl(): string {
    return `http://127.0.0.1:${this.orderPort}`;
  }

  get deliveryUrl(): string {
    return `http://127.0.0.1:${this.deliveryPort}`;
  }

  private async startDeliveryService(relay: boolean): Promise<void> {
    this.deliveryService = await startDeliveryService({
      auth: { ...testAuth, audience: AUDIENCES.deliveries },
      databaseUrl: this.deliveryDb.url,
      host: "127.0.0.1",
      grpcPort: this.deliveryPort,
      httpPort: 0,
      logger: quietLogger(),
      graceMs: 500,
      carriers: { ...CARRIER_DEFAULTS, delayed: { ...CARRIER_DEFAULTS.delayed }, enabled: ["delayed", "manual"], defaultCarrier: "manual" },
      carrierWorker: true,
      relay: relay ? { orderServiceUrl: this.orderUrl, token: roleToken("delivery-relay"), config: { ...DELIVERY_RELAY_DEFAULTS, ...FAST } } : false,
    });
    this.deliveryRelayOn = relay;
  }

  /** Restarts the delivery service on its port with its event relay on or off (DELIVERY_RELAY_ENABLED). */
  async setDeliveryRelay(on: boolean): Promise<void> {
    if (on === this.deliveryRelayOn) return;
    await this.deliveryService?.stop();
    this.deliveryService = undefined;
    await this.startDeliveryService(on);
  }

  async stop(): Promise<void> {
    this.closers.forEach((c) => c());
    await this.orderService?.stop();
    await this.deliveryService?.stop();
    await this.voucherService?.stop();
    await Promise.all([this.orderDb?.drop(), this.voucherDb?.drop(), this.deliveryDb?.drop()]);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** One reconciliation run through the same code the CLI and the scheduler use; its own state file unless told. */
  async reconcile(req: RunRequest = {}, config: Partial<ReconcilerConfig> = {}) {
    const reconciler = new Reconciler({ ...this.config, stateFile: path.join(this.dir, `state-${randomUUID()}.json`), ...config }, quietLogger());
    try {
      return await reconciler.run({ full: true, ...req });
    } finally {
      reconciler.close();
    }
  }

  /** An order without payment (PENDING), released for shipping: its shipment is requested and, through the order relay, created. */
  async releasedOrder(totalCents = 2_500n, customerId = "cust-ship"): Promise<Order> {
    const { order } = await this.orders.createOrder({ customerId, totalCents, currency: "EUR", requestId: randomUUID() });
    const res = await this.orders.releaseOrderForShipping({ orderId: order!.id });
    return res.order!;
  }

  async order(orderId: string): Promise<Order> {
    const { order } = await this.orders.getOrder({ orderId });
    return order!;
  }

  /** The orders' shipments, once the delivery service has them all (and the order relay has recorded its answers). */
  async shipments(orderIds: string[]): Promise<Map<string, Shipment>> {
    const res = await this.until(
      `the shipments of ${orderIds.join(", ")}`,
      () => this.deliveries.batchGetShipments({ orderIds }),
      (r) => r.shipments.length === orderIds.length,
    );
    const ids = orderIds.map((id) => `'${id}'`).join(",");
    await this.until(
      "the order relay to record the delivery service's answers",
      () => this.count(this.orderDb, "shipment_outbox", `status = 'pending' AND order_id IN (${ids})`),
      (n) => n === 0,
    );
    return new Map(res.shipments.map((s) => [s.orderId, s]));
  }

  /** Polls until `done` holds (bounded). */
  async until<T>(what: string, read: () => Promise<T>, done: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await read();
      if (done(v)) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? String(x) : x))}`);
      await sleep(50);
    }
  }

  /** Rows of a table matching a condition. */
  async count(db: TestDatabase, table: string, where = "1 = 1"): Promise<number> {
    return Number((await db.sql(`SELECT COUNT(*) FROM ${table} WHERE ${where}`)).trim());
  }

  /** Every row of the order and delivery databases' tables a shipping repair could touch (the carrier worker's bookkeeping left out). */
  async dump(): Promise<string> {
    const [orders, requests, inbox, shipments, transitions, events] = await Promise.all([
      this.orderDb.sql("SELECT * FROM orders ORDER BY id"),
      this.orderDb.sql("SELECT id, order_id, status FROM shipment_outbox ORDER BY id"),
      this.orderDb.sql("SELECT * FROM inbox ORDER BY message_key"),
      this.deliveryDb.sql("SELECT id, order_id, customer_id, total_cents, status, shipped_at, delivered_at, declined_at FROM shipments ORDER BY id"),
      this.deliveryDb.sql("SELECT id, order_id, from_status, to_status FROM shipment_transitions ORDER BY id"),
      this.deliveryDb.sql("SELECT id, message_key, status FROM shipment_event_outbox ORDER BY id"),
    ]);
    return [orders, requests, inbox, shipments, transitions, events].join("\n--\n");
  }
}
