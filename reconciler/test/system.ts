import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { pino } from "pino";
import { createOrderClient, createVoucherClient, type OrderClient, type VoucherClient } from "@shop/sdk/clients";
import type { Order } from "@shop/sdk/order";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { startOrderService, type RunningOrderService } from "@shop/order-service/service";
import { RELAY_DEFAULTS } from "@shop/order-service/outbox/relay";
import { startVoucherService, type RunningVoucherService } from "@shop/voucher-service/service";
import { loadConfig, type ReconcilerConfig } from "../src/config.js";
import { Reconciler, type RunRequest } from "../src/job.js";
import { testAuth, roleToken, allScopesToken } from "@shop/testkit/auth";

export const quietLogger = () => pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

/**
 * Both services in this process on port 0, each on a fresh database, the
 * order service with its relay; SDK clients; and a reconciler with a grace
 * period of 0 whose state and reports go to a temporary folder.
 */
export class System {
  orderDb!: TestDatabase;
  voucherDb!: TestDatabase;
  orderService?: RunningOrderService;
  voucherService?: RunningVoucherService;
  orders!: OrderClient;
  vouchers!: VoucherClient;
  config!: ReconcilerConfig;
  readonly dir = mkdtempSync(path.join(tmpdir(), "reconcile-test-"));
  private clientClosers: Array<() => void> = [];
  private closers: Array<() => void> = [];

  /** relayDelayMs: the relay reaches the voucher service through a proxy that holds every chunk this long each way. */
  constructor(private readonly opts: { relayDelayMs?: number } = {}) {}

  async start(): Promise<void> {
    [this.orderDb, this.voucherDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher")]);
    this.voucherService = await startVoucherService({ auth: testAuth,
      databaseUrl: this.voucherDb.url,
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      logger: quietLogger(),
      graceMs: 500,
    });
    const voucherUrl = `http://127.0.0.1:${this.voucherService.grpcPort}`;
    const relayUrl = this.opts.relayDelayMs
      ? `http://127.0.0.1:${await this.delayProxy(this.voucherService.grpcPort, this.opts.relayDelayMs)}`
      : voucherUrl;
    this.orderService = await startOrderService({
      config: {
        databaseUrl: this.orderDb.url,
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        poolSize: 10,
        voucherServiceUrl: relayUrl,
        relayEnabled: true, auth: testAuth, relayToken: roleToken("relay"),
      },
      relay: { ...RELAY_DEFAULTS, pollIntervalMs: 100, retryBaseMs: 50, retryMaxMs: 500 },
      logger: quietLogger(),
      shutdownGraceMs: 500,
    });
    const orderUrl = `http://127.0.0.1:${this.orderService.grpcPort}`;
    const o = createOrderClient({ token: allScopesToken, baseUrl: orderUrl });
    const v = createVoucherClient({ token: allScopesToken, baseUrl: voucherUrl });
    this.orders = o.client;
    this.vouchers = v.client;
    this.clientClosers.push(o.close, v.close);
    this.config = loadConfig({
      ORDER_SERVICE_URL: orderUrl,
      VOUCHER_SERVICE_URL: voucherUrl,
      RECONCILE_GRACE_MS: "0",
      RECONCILE_STATE_FILE: path.join(this.dir, "state.json"),
      RECONCILE_REPORT_DIR: path.join(this.dir, "reports"),
      RECONCILE_CALL_TIMEOUT_MS: "10000",
      RECONCILE_TOKEN: roleToken("reconciler"),
    });
  }

  /** A TCP proxy to `port` that delays each chunk by `delayMs` in both directions (order kept). */
  private async delayProxy(port: number, delayMs: number): Promise<number> {
    const sockets = new Set<net.Socket>();
    const server = net.createServer((client) => {
      const upstream = net.connect(port, "127.0.0.1");
      for (const [from, to] of [
        [client, upstream],
        [upstream, client],
      ] as const) {
        sockets.add(from);
        from.on("data", (chunk) => setTimeout(() => to.writable && to.write(chunk), delayMs));
        from.on("close", () => setTimeout(() => to.destroy(), delayMs));
        from.on("error", () => to.destroy());
      }
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    this.closers.push(() => {
      server.close();
      for (const s of sockets) s.destroy();
    });
    return (server.address() as net.AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.clientClosers.forEach((c) => c());
    await this.orderService?.stop();
    await this.voucherService?.stop();
    this.closers.forEach((c) => c());
    await Promise.all([this.orderDb?.drop(), this.voucherDb?.drop()]);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** One reconciliation run through the same code the CLI and the scheduler use. */
  async reconcile(req: RunRequest = {}, config: Partial<ReconcilerConfig> = {}) {
    const reconciler = new Reconciler({ ...this.config, ...config }, quietLogger());
    try {
      return await reconciler.run(req);
    } finally {
      reconciler.close();
    }
  }

  async createOrder(totalCents: bigint, customerId = "cust-1"): Promise<Order> {
    const { order } = await this.orders.createOrder({ customerId, totalCents, currency: "EUR", requestId: randomUUID() });
    return order!;
  }

  /** A created and sent order; with its voucher delivered when it qualifies (after drained()). */
  async sentOrder(totalCents: bigint, customerId = "cust-1"): Promise<Order> {
    const o = await this.createOrder(totalCents, customerId);
    const { order } = await this.orders.markOrderSent({ orderId: o.id });
    return order!;
  }

  /** Waits until no outbox row is pending. */
  async drained(timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Number((await this.orderDb.sql("SELECT COUNT(*) FROM voucher_outbox WHERE status = 'pending'")).trim()) > 0) {
      if (Date.now() > deadline) throw new Error("outbox did not drain");
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async voucherRows(orderId: string): Promise<Array<{ id: string; status: string; customerId: string; voidReason: string }>> {
    const out = await this.voucherDb.sql(`SELECT id, status, customer_id, IFNULL(void_reason, '') FROM vouchers WHERE order_id = '${orderId}'`);
    return out
      .split("\n")
      .filter(Boolean)
      .map((line) => {
        const [id, status, customerId, voidReason] = line.split("\t");
        return { id: id!, status: status!, customerId: customerId!, voidReason: voidReason! };
      });
  }

  /** A voucher written straight into the voucher database, as a bug or a manual edit would. */
  async insertVoucher(orderId: string, customerId = "cust-1", orderTotalCents = 12_000): Promise<string> {
    const id = `TESTV${randomUUID().replace(/-/g, "").slice(0, 21).toUpperCase()}`;
    await this.voucherDb.sql(
      `INSERT INTO vouchers (id, code, order_id, customer_id, order_total_cents, amount_cents, currency, status, issued_at)
       VALUES ('${id}', '${id}', '${orderId}', '${customerId}', ${orderTotalCents}, 500, 'EUR', 'ISSUED', NOW(3) - INTERVAL 1 SECOND)`,
    );
    return id;
  }

  /** Every row of both databases, to prove that something changed nothing. */
  async dump(): Promise<string> {
    const [orders, outbox, vouchers] = await Promise.all([
      this.orderDb.sql("SELECT * FROM orders ORDER BY id"),
      this.orderDb.sql("SELECT * FROM voucher_outbox ORDER BY id"),
      this.voucherDb.sql("SELECT * FROM vouchers ORDER BY id"),
    ]);
    return [orders, outbox, vouchers].join("\n--\n");
  }
}
