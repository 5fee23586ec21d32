import path from "node:path";
import { outboxCounts } from "@shop/testkit/outbox";
import { createOrderClient, createVoucherClient, type OrderClient, type VoucherClient } from "@shop/sdk/clients";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { allScopesToken } from "@shop/testkit/auth";

const root = path.resolve(import.meta.dirname, "../..");

/**
 * The whole system as real processes on free ports: the voucher service and
 * the order service (with its in-process relay), each on its own fresh
 * database, plus SDK clients for both.
 */
export class Stack {
  orderDb!: TestDatabase;
  voucherDb!: TestDatabase;
  order!: ServiceProcess;
  voucher!: ServiceProcess;
  orders!: OrderClient;
  vouchers!: VoucherClient;
  private closers: Array<() => void> = [];

  constructor(
    private readonly name: string,
    private readonly orderEnv: Record<string, string> = {},
  ) {}

  async start(): Promise<void> {
    [this.orderDb, this.voucherDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher")]);
    const [vg, vh, og, oh] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    this.voucher = new ServiceProcess({
      name: `${this.name}-voucher`,
      entry: path.join(root, "voucher-service/src/main.ts"),
      env: { VOUCHER_DATABASE_URL: this.voucherDb.url, VOUCHER_GRPC_PORT: String(vg), VOUCHER_HTTP_PORT: String(vh) },
      readyUrl: `http://127.0.0.1:${vh}/readyz`,
    });
    this.order = new ServiceProcess({
      name: `${this.name}-order`,
      entry: path.join(root, "order-service/src/main.ts"),
      env: {
        ORDER_DATABASE_URL: this.orderDb.url,
        ORDER_GRPC_PORT: String(og),
        ORDER_HTTP_PORT: String(oh),
        VOUCHER_SERVICE_URL: `http://127.0.0.1:${vg}`,
        RELAY_RETRY_BASE_MS: "100",
        RELAY_RETRY_MAX_MS: "1000",
        ...this.orderEnv,
      },
      readyUrl: `http://127.0.0.1:${oh}/readyz`,
    });
    await Promise.all([this.voucher.start(), this.order.start()]);
    const o = createOrderClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${og}` });
    const v = createVoucherClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${vg}` });
    this.orders = o.client;
    this.vouchers = v.client;
    this.closers.push(o.close, v.close);
  }

  async stop(): Promise<void> {
    this.closers.forEach((c) => c());
    await Promise.all([this.order?.stop(), this.voucher?.stop()]);
    await Promise.all([this.orderDb?.drop(), this.voucherDb?.drop()]);
  }

  /** Outbox rows by status, straight from the order database. */
  outboxCounts(): Promise<Record<string, number>> {
    return outboxCounts(this.orderDb);
  }

  /** Polls until no outbox row is pending (or the timeout passes). */
  async drained(timeoutMs = 20_000): Promise<Record<string, number>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const counts = await this.outboxCounts();
      if (counts.pending === 0 || Date.now() > deadline) return counts;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Runs fn over items with at most `limit` in flight. */
export async function inParallel<T, R>(items: T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await fn(items[i]!, i);
      }
    }),
  );
  return results;
}
