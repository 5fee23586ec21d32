import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { AUDIENCES, SCOPES } from "@shop/platform/auth";
import {
  createOrderClient,
  createPaymentClient,
  createPaymentOutcomeClient,
  type OrderClient,
  type PaymentClient,
  type PaymentOutcomeClient,
} from "@shop/sdk/clients";
import { PaymentMethod, type Order } from "@shop/sdk/order";
import type { OrderPayment } from "@shop/sdk/payment";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { freePort } from "@shop/testkit/ports";
import { allScopesToken, roleToken, testAuth, testToken } from "@shop/testkit/auth";
import { startOrderService, type RunningOrderService } from "@shop/order-service/service";
import { RELAY_DEFAULTS } from "@shop/order-service/outbox/relay";
import { startVoucherService, type RunningVoucherService } from "@shop/voucher-service/service";
import { startPaymentService, type RunningPaymentService } from "@shop/payment-service/service";
import { PAYMENT_RELAY_DEFAULTS } from "@shop/payment-service/outbox/relay";
import { loadConfig, type ReconcilerConfig } from "../src/config.js";
import { Reconciler, type RunRequest } from "../src/job.js";
import { quietLogger } from "./system.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const FAST = { pollIntervalMs: 100, retryBaseMs: 50, retryMaxMs: 500 };

/** The shop and the relay at the payment service: open accounts, top up, and charge as the order service's relay would. */
const paymentHarnessToken = testToken({
  subject: "test-harness",
  scopes: [SCOPES.paymentsWrite, SCOPES.paymentsRead, SCOPES.paymentsCharge],
  audience: AUDIENCES.payments,
  ttlSeconds: 86_400,
});

/**
 * The order, voucher and payment services in this process, each on a fresh
 * database, the order service with its relays (voucher, charge, refund) and
 * the payment service with or without its outcome relay: stopping that relay
 * is how a test leaves decisions undelivered. Ports are fixed at start, so
 * the payment service can be restarted with its relay on or off while the
 * order service's relays keep their address. A reconciler with a grace
 * period of 0 and payments on, its state and reports in a temporary folder.
 */
export class PaymentSystem {
  orderDb!: TestDatabase;
  voucherDb!: TestDatabase;
  paymentDb!: TestDatabase;
  orderService?: RunningOrderService;
  voucherService?: RunningVoucherService;
  paymentService?: RunningPaymentService;
  orders!: OrderClient;
  payments!: PaymentClient;
  outcomes!: PaymentOutcomeClient;
  config!: ReconcilerConfig;
  paymentRelayOn = false;
  readonly dir = mkdtempSync(path.join(tmpdir(), "reconcile-payments-test-"));
  private orderPort = 0;
  private paymentPort = 0;
  private closers: Array<() => void> = [];

  async start(opts: { paymentRelay: boolean }): Promise<void> {
    [this.orderDb, this.voucherDb, this.paymentDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher"), freshDatabase("voucher")]);
    [this.orderPort, this.paymentPort] = await Promise.all([freePort(), freePort()]);
    this.voucherService = await startVoucherService({
      auth: testAuth,
      databaseUrl: this.voucherDb.url,
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      logger: quietLogger(),
      graceMs: 500,
    });
    await this.startPaymentService(opts.paymentRelay);
    this.orderService = await startOrderService({
      config: {
        databaseUrl: this.orderDb.url,
        host: "127.0.0.1",
        grpcPort: this.orderPort,
        httpPort: 0,
        poolSize: 10,
        voucherServiceUrl: `http://127.0.0.1:${this.voucherService.grpcPort}`,
        paymentServiceUrl: this.paymentUrl,
        relayEnabled: true,
        auth: testAuth,
        relayToken: roleToken("relay"),
      },
      relay: { ...RELAY_DEFAULTS, ...FAST },
      logger: quietLogger(),
      shutdownGraceMs: 500,
    });
    const o = createOrderClient({ token: allScopesToken, baseUrl: this.orderUrl });
    const p = createPaymentClient({ token: paymentHarnessToken, baseUrl: this.paymentUrl });
    const out = createPaymentOutcomeClient({ token: allScopesToken, baseUrl: this.orderUrl });
    this.orders = o.client;
    this.payments = p.client;
    this.outcomes = out.client;
    this.closers.push(o.close, p.close, out.close);
    this.config = loadConfig({
      ORDER_SERVICE_URL: this.orderUrl,
      VOUCHER_SERVICE_URL: `http://127.0.0.1:${this.voucherService.grpcPort}`,
      PAYMENT_SERVICE_URL: this.paymentUrl,
      RECONCILE_PAYMENTS: "true",
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

  get paymentUrl(): string {
    return `http://127.0.0.1:${this.paymentPort}`;
  }

  private async startPaymentService(relay: boolean): Promise<void> {
    this.paymentService = await startPaymentService({
      auth: { ...testAuth, audience: AUDIENCES.payments },
      databaseUrl: this.paymentDb.url,
      host: "127.0.0.1",
      grpcPort: this.paymentPort,
      httpPort: 0,
      logger: quietLogger(),
      graceMs: 500,
      relay: relay ? { orderServiceUrl: this.orderUrl, token: roleToken("payment-relay"), config: { ...PAYMENT_RELAY_DEFAULTS, ...FAST } } : false,
    });
    this.paymentRelayOn = relay;
  }

  /** Restarts the payment service on its port with its outcome relay on or off (PAYMENT_RELAY_ENABLED). */
  async setPaymentRelay(on: boolean): Promise<void> {
    if (on === this.paymentRelayOn) return;
    await this.paymentService?.stop();
    this.paymentService = undefined;
    await this.startPaymentService(on);
  }

  async stop(): Promise<void> {
    this.closers.forEach((c) => c());
    await this.orderService?.stop();
    await this.paymentService?.stop();
    await this.voucherService?.stop();
    await Promise.all([this.orderDb?.drop(), this.voucherDb?.drop(), this.paymentDb?.drop()]);
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

  /** An account for the customer holding this much. */
  async fund(customerId: string, cents: bigint): Promise<void> {
    await this.payments.openAccount({ customerId, currency: "EUR" });
    await this.payments.topUp({ customerId, amountCents: cents, currency: "EUR", requestId: randomUUID() });
  }

  /** An order paid from the customer's account: AWAITING_PAYMENT until the payment service's outcome arrives. */
  async paidOrder(customerId: string, totalCents: bigint): Promise<Order> {
    const { order } = await this.orders.createOrder({ customerId, totalCents, currency: "EUR", requestId: randomUUID(), paymentMethod: PaymentMethod.ACCOUNT });
    return order!;
  }

  async order(orderId: string): Promise<Order> {
    const { order } = await this.orders.getOrder({ orderId });
    return order!;
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

  /** What the payment service decided for these orders, once it has decided them all (and, with refunded, refunded them). */
  async decided(orderIds: string[], opts: { refunded?: boolean } = {}): Promise<Map<string, OrderPayment>> {
    const res = await this.until(
      `the payment service's decisions on ${orderIds.join(", ")}`,
      () => this.payments.batchGetOrderPayments({ orderIds }),
      (r) => r.payments.length === orderIds.length && (!opts.refunded || r.payments.every((p) => p.refunded)),
    );
    // The order service's relay records the answer on its outbox row just after: wait for that too, so a test's "before" is still.
    const ids = orderIds.map((id) => `'${id}'`).join(",");
    await this.until(
      "the order service's relays to record the payment service's answers",
      async () =>
        (await this.count(this.orderDb, "charge_outbox", `status = 'pending' AND order_id IN (${ids})`)) +
        (await this.count(this.orderDb, "refund_outbox", `status = 'pending' AND order_id IN (${ids})`)),
      (n) => n === 0,
    );
    return new Map(res.payments.map((p) => [p.orderId, p]));
  }

  /** Rows of a table matching a condition. */
  async count(db: TestDatabase, table: string, where = "1 = 1"): Promise<number> {
    return Number((await db.sql(`SELECT COUNT(*) FROM ${table} WHERE ${where}`)).trim());
  }

  /** Every row of the order and payment databases' tables a payment repair could touch. */
  async dump(): Promise<string> {
    const [orders, charges, refunds, inbox, outbox, ledger] = await Promise.all([
      this.orderDb.sql("SELECT * FROM orders ORDER BY id"),
      this.orderDb.sql("SELECT id, order_id, status FROM charge_outbox ORDER BY id"),
      this.orderDb.sql("SELECT id, order_id, status FROM refund_outbox ORDER BY id"),
      this.orderDb.sql("SELECT * FROM inbox ORDER BY message_key"),
      this.paymentDb.sql("SELECT id, message_key, outcome FROM payment_outbox ORDER BY id"),
      this.paymentDb.sql("SELECT * FROM ledger_entries ORDER BY id"),
    ]);
    return [orders, charges, refunds, inbox, outbox, ledger].join("\n--\n");
  }
}
