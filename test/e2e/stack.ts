import path from "node:path";
import { outboxCounts } from "@shop/testkit/outbox";
import { paymentOutboxCounts } from "@shop/testkit/payments";
import {
  createCarrierClient,
  createDeliveryClient,
  createOrderClient,
  createPaymentClient,
  createVoucherClient,
  type CarrierClient,
  type DeliveryClient,
  type OrderClient,
  type PaymentClient,
  type VoucherClient,
} from "@shop/sdk/clients";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { allScopesToken, roleToken } from "@shop/testkit/auth";

const root = path.resolve(import.meta.dirname, "../..");

export interface StackOptions {
  /** Also run the payment service (with its relay to the order service) on its own database. Default false. */
  payment?: boolean;
  paymentEnv?: Record<string, string>;
  /**
   * Also run the delivery service (its carrier worker and its event relay to
   * the order service) on its own database; the order service then requests
   * shipments from it (DELIVERY_SERVICE_URL) and releases PAID orders itself
   * (SHIP_PAID_ORDERS=true; orderEnv may say otherwise). Default false.
   */
  delivery?: boolean;
  /** The delivery service's settings over the defaults (the delayed carrier at 100/200/400 ms here). */
  deliveryEnv?: Record<string, string>;
}

/**
 * The whole system as real processes on free ports: the voucher service and
 * the order service (with its in-process relay), each on its own fresh
 * database, plus SDK clients for both; with `payment`, the payment service
 * too (its own database; its relay delivers outcomes to the order service,
 * whose relay sends it charges and refunds); with `delivery`, the delivery
 * service too (its own database; its carrier worker ships with the delayed
 * carrier and its relay reports shipment events to the order service, whose
 * relay requests the shipments).
 */
export class Stack {
  orderDb!: TestDatabase;
  voucherDb!: TestDatabase;
  paymentDb?: TestDatabase;
  order!: ServiceProcess;
  voucher!: ServiceProcess;
  payment?: ServiceProcess;
  deliveryDb?: TestDatabase;
  delivery?: ServiceProcess;
  /** Shipment reads as the shop backend (with `delivery`). */
  deliveries!: DeliveryClient;
  /** Carrier reports as the carrier role, for the manual carrier's shipments (with `delivery`). */
  carriers!: CarrierClient;
  deliveryServiceUrl = "";
  orders!: OrderClient;
  vouchers!: VoucherClient;
  /** Payment calls as the shop backend (accounts, top-ups, reads). */
  payments!: PaymentClient;
  orderServiceUrl = "";
  voucherServiceUrl = "";
  paymentServiceUrl = "";
  private closers: Array<() => void> = [];
  private paymentPorts: [number, number] = [0, 0];
  private paymentStarts = 0;

  constructor(
    private readonly name: string,
    private readonly orderEnv: Record<string, string> = {},
    private readonly opts: StackOptions = {},
  ) {}

  async start(): Promise<void> {
    [this.orderDb, this.voucherDb, this.paymentDb, this.deliveryDb] = await Promise.all([
      freshDatabase("order"),
      freshDatabase("voucher"),
      // The payment database on the second server, beside (not in) the voucher database.
      this.opts.payment ? freshDatabase("voucher") : undefined,
      this.opts.delivery ? freshDatabase("voucher") : undefined,
    ]);
    const [vg, vh, og, oh, pg, ph, dg, dh] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);
    this.deliveryServiceUrl = `http://127.0.0.1:${dg}`;
    this.orderServiceUrl = `http://127.0.0.1:${og}`;
    this.voucherServiceUrl = `http://127.0.0.1:${vg}`;
    this.paymentServiceUrl = `http://127.0.0.1:${pg}`;
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
        PAYMENT_SERVICE_URL: `http://127.0.0.1:${pg}`,
        RELAY_RETRY_BASE_MS: "100",
        RELAY_RETRY_MAX_MS: "1000",
        ...(this.deliveryDb ? { DELIVERY_SERVICE_URL: this.deliveryServiceUrl, SHIP_PAID_ORDERS: "true" } : {}),
        ...this.orderEnv,
      },
      readyUrl: `http://127.0.0.1:${oh}/readyz`,
    });
    if (this.deliveryDb) {
      this.delivery = new ServiceProcess({
        name: `${this.name}-delivery`,
        entry: path.join(root, "delivery-service/src/main.ts"),
        env: {
          DELIVERY_DATABASE_URL: this.deliveryDb.url,
          DELIVERY_GRPC_PORT: String(dg),
          DELIVERY_HTTP_PORT: String(dh),
          ORDER_SERVICE_URL: this.orderServiceUrl,
          DELIVERY_RELAY_TOKEN: roleToken("delivery-relay"),
          DELIVERY_RELAY_RETRY_BASE_MS: "100",
          DELIVERY_RELAY_RETRY_MAX_MS: "1000",
          DELAYED_CARRIER_CONFIRM_MS: "100",
          DELAYED_CARRIER_SHIP_MS: "200",
          DELAYED_CARRIER_DELIVER_MS: "400",
          ...this.opts.deliveryEnv,
        },
        readyUrl: `http://127.0.0.1:${dh}/readyz`,
      });
    }
    this.paymentPorts = [pg, ph];
    if (this.paymentDb) this.payment = this.paymentProcess();
    await Promise.all([this.voucher.start(), this.order.start(), this.payment?.start(), this.delivery?.start()]);
    const o = createOrderClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${og}` });
    const v = createVoucherClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${vg}` });
    const p = createPaymentClient({ token: roleToken("shop"), baseUrl: `http://127.0.0.1:${pg}` });
    this.orders = o.client;
    this.vouchers = v.client;
    this.payments = p.client;
    this.closers.push(o.close, v.close, p.close);
    if (this.delivery) {
      const d = createDeliveryClient({ token: roleToken("shop"), baseUrl: this.deliveryServiceUrl });
      const c = createCarrierClient({ token: roleToken("carrier"), baseUrl: this.deliveryServiceUrl });
      this.deliveries = d.client;
      this.carriers = c.client;
      this.closers.push(d.close, c.close);
    }
  }

  async stop(): Promise<void> {
    this.closers.forEach((c) => c());
    await Promise.all([this.order?.stop(), this.voucher?.stop(), this.payment?.stop(), this.delivery?.stop()]);
    await Promise.all([this.orderDb?.drop(), this.voucherDb?.drop(), this.paymentDb?.drop(), this.deliveryDb?.drop()]);
  }

  /** Stops the payment service (SIGKILL); charges and refunds wait in their outboxes until restartPayment. */
  async killPayment(): Promise<void> {
    await this.payment!.kill();
  }

  /** A fresh payment service process on the same ports and database. */
  async restartPayment(): Promise<void> {
    await this.payment!.kill();
    this.payment = this.paymentProcess();
    await this.payment.start();
  }

  private paymentProcess(): ServiceProcess {
    const [pg, ph] = this.paymentPorts;
    return new ServiceProcess({
      name: `${this.name}-payment${this.paymentStarts++ ? `-${this.paymentStarts}` : ""}`,
      entry: path.join(root, "payment-service/src/main.ts"),
      env: {
        PAYMENT_DATABASE_URL: this.paymentDb!.url,
        PAYMENT_GRPC_PORT: String(pg),
        PAYMENT_HTTP_PORT: String(ph),
        ORDER_SERVICE_URL: this.orderServiceUrl,
        PAYMENT_RELAY_TOKEN: roleToken("payment-relay"),
        PAYMENT_RELAY_RETRY_BASE_MS: "100",
        PAYMENT_RELAY_RETRY_MAX_MS: "1000",
        ...this.opts.paymentEnv,
      },
      readyUrl: `http://127.0.0.1:${ph}/readyz`,
    });
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

  /** Pending rows of every outbox: voucher, charge and refund (order database), payment outcomes (payment database), and with `delivery` shipment requests and events. */
  async pendingEverywhere(): Promise<number> {
    return (await this.allOutboxCounts()).pending;
  }

  /** paymentOutboxCounts, plus shipment_outbox (order database) and shipment_event_outbox (delivery database) when the delivery service runs. */
  private async allOutboxCounts(): Promise<{ pending: number; byTable: Record<string, Record<string, number>> }> {
    const counts = await paymentOutboxCounts(this.orderDb, this.paymentDb);
    if (!this.deliveryDb) return counts;
    const byTable = { ...counts.byTable };
    let pending = counts.pending;
    for (const [db, table] of [
      [this.orderDb, "shipment_outbox"],
      [this.deliveryDb, "shipment_event_outbox"],
    ] as const) {
      const tally: Record<string, number> = { pending: 0, delivered: 0, dead: 0 };
      for (const line of (await db.sql(`SELECT status, COUNT(*) FROM ${table} GROUP BY status`)).split("\n").filter(Boolean)) {
        const [status, n] = line.split("\t");
        tally[status!] = Number(n);
      }
      byTable[table] = tally;
      pending += tally.pending!;
    }
    return { pending, byTable };
  }

  /**
   * Polls until no row of any outbox is pending, in two reads in a row with
   * nothing delivered in between (the databases are read one after the
   * other, and a delivery moves the pending row from one to the other);
   * throws if that takes longer than timeoutMs.
   */
  async settled(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    for (;;) {
      const counts = await this.allOutboxCounts();
      const shape = JSON.stringify(counts.byTable);
      if (counts.pending === 0 && shape === last) return;
      last = counts.pending === 0 ? shape : "";
      if (Date.now() > deadline) throw new Error(`not settled after ${timeoutMs} ms: ${shape}`);
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
