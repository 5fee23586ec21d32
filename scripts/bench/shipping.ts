/**
 * `npm run bench:shipping` (`-- --rate 100`, `-- --seconds 10`, `-- --quick`): the whole paid-order chain
 * with shipping, at a fixed offered rate.
 *
 * Starts two private MariaDB servers (durable commits, as `npm run bench`; the order and delivery databases on
 * one, the payment and voucher databases on the other) and the four services as real processes with their
 * relays in-process: the order service with SHIP_PAID_ORDERS=true, the payment service, the delivery service
 * (its carrier worker running the delayed carrier at small delays) and the voucher service. 64 accounts are
 * funded; then CreateOrder with payment, totals above 100 EUR (each qualifies for a voucher), is offered at
 * --rate orders per second (default 50) for --seconds (default 30), open loop. Each order goes
 * CreateOrder → charge → PAID → CreateShipment → carrier (CONFIRMED, SHIPPED, DELIVERED) → SHIPPED event → SENT
 * → IssueVoucher, and DELIVERED event → DELIVERED.
 *
 * Prints:
 *   - shipments completed per second: shipments DELIVERED during the offered window divided by its length, and
 *     all of them divided by the time from the first order to the last delivery;
 *   - payment → voucher: from the order's charged_at (the commit that made it PAID) to its voucher's issued_at,
 *     p50 / p99 (ms);
 *   - created → SENT: from the order's created_at to its sent_at (the SHIPPED event's commit), p50 / p99 (ms);
 *     the delayed carrier ships DELAYED_CARRIER_SHIP_MS after the shipment's creation, which this includes.
 * All times are the databases' NOW(3) on this machine. Prints figures only; asserts nothing about them.
 * Bounded: the chain must drain within --drain-seconds (default 120) after the load; everything it started
 * (processes, database servers and their files) is stopped and removed at the end, on failure and on Ctrl-C.
 */
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import type { RowDataPacket } from "mysql2/promise";
import { createPool, type Pool } from "@shop/platform/db";
import { createOrderClient, createPaymentClient } from "@shop/sdk/clients";
import { PaymentMethod } from "@shop/sdk/order";
import { allScopesToken, roleToken } from "@shop/testkit/auth";
import { MariaDbServer } from "@shop/testkit/mariadb";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { cleanupOnExit, openLoop, peakRssMb, round, summarize } from "./load.js";

const { values: args } = parseArgs({
  options: {
    rate: { type: "string", default: "50" },
    seconds: { type: "string", default: "30" },
    "drain-seconds": { type: "string", default: "120" },
    quick: { type: "boolean", default: false },
  },
});
const QUICK = args.quick;
const RATE = positive("rate", args.rate);
const SECONDS = QUICK ? 5 : positive("seconds", args.seconds);
const DRAIN_MS = positive("drain-seconds", args["drain-seconds"]) * 1000;
const ROOT = path.resolve(import.meta.dirname, "../..");
const DB_ARGS = ["--innodb-buffer-pool-size=512M", "--innodb-flush-log-at-trx-commit=1", "--innodb-log-file-size=256M", "--max-connections=500"];
/** Orders spread over this many funded accounts (a charge locks its account's row until commit). */
const ACCOUNTS = 64;
/** The delayed carrier's steps, each from the shipment's creation: small, so the chain's own latency shows. */
const CARRIER_MS = { confirm: 100, ship: 200, deliver: 400 };
const customerOf = (i: number) => `bench-shipper-${i % ACCOUNTS}`;
/** 100.01 to 300.00 EUR, spread the same way every run: every order qualifies for a voucher. */
const totalOf = (i: number) => 10_001n + BigInt((i * 7_919) % 20_000);
const say = (m: string) => process.stdout.write(`bench:shipping │ ${m}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function positive(name: string, raw: string | undefined): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) {
    process.stderr.write(`bench:shipping: --${name}=${JSON.stringify(raw)} must be a positive whole number\n`);
    process.exit(2);
  }
  return n;
}

async function scalar(pool: Pool, sql: string, params: unknown[] = []): Promise<number> {
  const [rows] = await pool.query<RowDataPacket[]>(sql, params);
  return Number(Object.values(rows[0]!)[0]);
}

/** Rows of `sql` run over `ids` in chunks (IN lists of at most 5000). */
async function byChunks(pool: Pool, sql: string, ids: string[]): Promise<RowDataPacket[]> {
  const out: RowDataPacket[] = [];
  for (let i = 0; i < ids.length; i += 5_000) {
    const [rows] = await pool.query<RowDataPacket[]>(sql, [ids.slice(i, i + 5_000)]);
    out.push(...rows);
  }
  return out;
}

const { cleanups, cleanUp } = cleanupOnExit(say);

async function main(): Promise<void> {
  const results: Record<string, unknown> = { node: process.version, offeredPerSecond: RATE, seconds: SECONDS, accounts: ACCOUNTS, carrierMs: CARRIER_MS };
  const dbA = new MariaDbServer({ args: DB_ARGS });
  const dbB = new MariaDbServer({ args: DB_ARGS });
  cleanups.push(() => dbA.stop(), () => dbB.stop());
  await Promise.all([dbA.start(), dbB.start()]);
  const [orderUrl, deliveryUrl, paymentUrl, voucherUrl] = await Promise.all([
    dbA.createDatabase("orders"),
    dbA.createDatabase("deliveries"),
    dbB.createDatabase("payments"),
    dbB.createDatabase("vouchers"),
  ]);
  const orderPool = createPool({ url: orderUrl, connectionLimit: 4 });
  const deliveryPool = createPool({ url: deliveryUrl, connectionLimit: 4 });
  const voucherPool = createPool({ url: voucherUrl, connectionLimit: 4 });
  cleanups.push(() => orderPool.end(), () => deliveryPool.end(), () => voucherPool.end());

  const [og, oh, pg, ph, dg, dh, vg, vh] = await Promise.all(Array.from({ length: 8 }, () => freePort()));
  const url = (port: number) => `http://127.0.0.1:${port}`;
  const quiet = { LOG_LEVEL: "warn" };
  const services = [
    new ServiceProcess({
      name: "bench-shipping-voucher",
      entry: path.join(ROOT, "voucher-service/src/main.ts"),
      env: { ...quiet, VOUCHER_DATABASE_URL: voucherUrl, VOUCHER_GRPC_PORT: String(vg), VOUCHER_HTTP_PORT: String(vh) },
      readyUrl: `${url(vh)}/readyz`,
    }),
    new ServiceProcess({
      name: "bench-shipping-payment",
      entry: path.join(ROOT, "payment-service/src/main.ts"),
      env: {
        ...quiet,
        PAYMENT_DATABASE_URL: paymentUrl,
        PAYMENT_GRPC_PORT: String(pg),
        PAYMENT_HTTP_PORT: String(ph),
        ORDER_SERVICE_URL: url(og),
        PAYMENT_RELAY_TOKEN: roleToken("payment-relay"),
      },
      readyUrl: `${url(ph)}/readyz`,
    }),
    new ServiceProcess({
      name: "bench-shipping-delivery",
      entry: path.join(ROOT, "delivery-service/src/main.ts"),
      env: {
        ...quiet,
        DELIVERY_DATABASE_URL: deliveryUrl,
        DELIVERY_GRPC_PORT: String(dg),
        DELIVERY_HTTP_PORT: String(dh),
        ORDER_SERVICE_URL: url(og),
        DELIVERY_RELAY_TOKEN: roleToken("delivery-relay"),
        DELAYED_CARRIER_CONFIRM_MS: String(CARRIER_MS.confirm),
        DELAYED_CARRIER_SHIP_MS: String(CARRIER_MS.ship),
        DELAYED_CARRIER_DELIVER_MS: String(CARRIER_MS.deliver),
      },
      readyUrl: `${url(dh)}/readyz`,
    }),
    new ServiceProcess({
      name: "bench-shipping-order",
      entry: path.join(ROOT, "order-service/src/main.ts"),
      env: {
        ...quiet,
        ORDER_DATABASE_URL: orderUrl,
        ORDER_GRPC_PORT: String(og),
        ORDER_HTTP_PORT: String(oh),
        VOUCHER_SERVICE_URL: url(vg),
        PAYMENT_SERVICE_URL: url(pg),
        DELIVERY_SERVICE_URL: url(dg),
        SHIP_PAID_ORDERS: "true",
      },
      readyUrl: `${url(oh)}/readyz`,
    }),
  ];
  for (const s of services) cleanups.push(() => s.stop());
  await Promise.all(services.map((s) => s.start()));
  say(`services up: order ${url(og)}, payment ${url(pg)}, delivery ${url(dg)}, voucher ${url(vg)}`);

  const payments = createPaymentClient({ baseUrl: url(pg), token: roleToken("shop"), defaultTimeoutMs: 10_000 });
  const orders = createOrderClient({ baseUrl: url(og), token: allScopesToken, defaultTimeoutMs: 10_000 });
  cleanups.push(() => payments.close(), () => orders.close());
  for (let i = 0; i < ACCOUNTS; i++) {
    await payments.client.openAccount({ customerId: customerOf(i), currency: "EUR" });
    await payments.client.topUp({ customerId: customerOf(i), amountCents: 1_000_000_000n, currency: "EUR", requestId: `bench-shipping-funding-${i}` });
  }

  // The offered load: paid orders at a fixed rate, whatever the answers take.
  say(`offering ${RATE} paid orders per second for ${SECONDS} s`);
  const requests = Array.from({ length: RATE * SECONDS }, (_, i) => i);
  const created: string[] = [];
  const offerStart = await scalar(orderPool, "SELECT UNIX_TIMESTAMP(NOW(3)) * 1000");
  const rss = new Map<string, number>();
  const sampleRss = () => services.forEach((s) => rss.set(s.opts.name, Math.max(rss.get(s.opts.name) ?? 0, peakRssMb(s.pid) ?? 0)));
  const sampler = setInterval(sampleRss, 1_000);
  cleanups.push(() => clearInterval(sampler));
  const load = await openLoop(requests, RATE, SECONDS * 1000, 512, async (i) => {
    const res = await orders.client.createOrder({
      customerId: customerOf(i),
      totalCents: totalOf(i),
      currency: "EUR",
      requestId: `bench-shipping-${i}`,
      paymentMethod: PaymentMethod.ACCOUNT,
    });
    created.push(res.order!.id);
  });
  const offerEnd = await scalar(orderPool, "SELECT UNIX_TIMESTAMP(NOW(3)) * 1000");
  say(`offered ${load.offered}, created ${created.length}, errors ${load.errors}, dropped ${load.dropped}; waiting for the chain to drain`);

  // Drain: every created order DELIVERED with its voucher issued, or the time is up.
  const deadline = Date.now() + DRAIN_MS;
  let behind = { undelivered: created.length, unvouchered: created.length };
  while (Date.now() < deadline) {
    sampleRss();
    const undelivered = (await byChunks(orderPool, "SELECT COUNT(*) AS n FROM orders WHERE id IN (?) AND status <> 'DELIVERED'", created)).reduce((n, r) => n + Number(r.n), 0);
    const vouchers = (await byChunks(voucherPool, "SELECT COUNT(*) AS n FROM vouchers WHERE order_id IN (?)", created)).reduce((n, r) => n + Number(r.n), 0);
    behind = { undelivered, unvouchered: created.length - vouchers };
    if (undelivered === 0 && vouchers === created.length) break;
    await sleep(250);
  }
  clearInterval(sampler);
  if (behind.undelivered > 0 || behind.unvouchered > 0) say(`not drained after ${DRAIN_MS / 1000} s: ${JSON.stringify(behind)} (figures below cover what completed)`);

  // Shipments completed: DELIVERED during the offered window, and all of them over first order → last delivery.
  const deliveredMs = (
    await byChunks(deliveryPool, "SELECT UNIX_TIMESTAMP(delivered_at) * 1000 AS at FROM shipments WHERE order_id IN (?) AND status = 'DELIVERED'", created)
  ).map((r) => Number(r.at));
  const lastDelivered = Math.max(...deliveredMs);
  const inWindow = deliveredMs.filter((at) => at <= offerEnd).length;
  const shipments = {
    delivered: deliveredMs.length,
    deliveredPerSecondDuringOffer: round(inWindow / ((offerEnd - offerStart) / 1000), 1),
    deliveredPerSecondToLastDelivery: deliveredMs.length ? round(deliveredMs.length / ((lastDelivered - offerStart) / 1000), 1) : 0,
    secondsFromFirstOrderToLastDelivery: deliveredMs.length ? round((lastDelivered - offerStart) / 1000, 1) : NaN,
  };

  // Latencies, each from two commits' NOW(3): charged_at → the voucher's issued_at (two databases), created_at → sent_at.
  const orderRows = await byChunks(
    orderPool,
    `SELECT id, UNIX_TIMESTAMP(charged_at) * 1000 AS chargedAt, UNIX_TIMESTAMP(sent_at) * 1000 AS sentAt,
            TIMESTAMPDIFF(MICROSECOND, created_at, sent_at) / 1000 AS toSentMs,
            TIMESTAMPDIFF(MICROSECOND, created_at, charged_at) / 1000 AS toPaidMs
       FROM orders WHERE id IN (?)`,
    created,
  );
  const issued = new Map(
    (await byChunks(voucherPool, "SELECT order_id AS orderId, UNIX_TIMESTAMP(issued_at) * 1000 AS at FROM vouchers WHERE order_id IN (?)", created)).map((r) => [
      String(r.orderId),
      Number(r.at),
    ]),
  );
  const paymentToVoucher = orderRows.filter((r) => r.chargedAt !== null && issued.has(String(r.id))).map((r) => issued.get(String(r.id))! - Number(r.chargedAt));
  const createdToSent = orderRows.filter((r) => r.toSentMs !== null).map((r) => Number(r.toSentMs));
  const createdToPaid = orderRows.filter((r) => r.toPaidMs !== null).map((r) => Number(r.toPaidMs));
  // The last hop alone (SENT's commit → the voucher's), from the same two clocks as payment → voucher.
  const sentToVoucher = orderRows.filter((r) => r.sentAt !== null && issued.has(String(r.id))).map((r) => issued.get(String(r.id))! - Number(r.sentAt));

  Object.assign(results, {
    load: { offered: load.offered, created: created.length, errors: load.errors, dropped: load.dropped, createOrderMs: load.latencyMs },
    notDrained: behind,
    shipments,
    paymentToVoucherMs: summarize(paymentToVoucher),
    createdToSentMs: summarize(createdToSent),
    createdToPaidMs: summarize(createdToPaid),
    sentToVoucherMs: summarize(sentToVoucher),
    peakRssMb: Object.fromEntries(rss),
    loadAverage: os.loadavg().map((x) => round(x, 2)),
  });
  say(`shipments completed: ${shipments.deliveredPerSecondDuringOffer}/s during the offer, ${shipments.deliveredPerSecondToLastDelivery}/s to the last delivery (${shipments.delivered} delivered)`);
  say(`payment → voucher: p50 ${summarize(paymentToVoucher).p50} ms, p99 ${summarize(paymentToVoucher).p99} ms`);
  say(`created → SENT:    p50 ${summarize(createdToSent).p50} ms, p99 ${summarize(createdToSent).p99} ms (includes the carrier's ${CARRIER_MS.ship} ms to ship)`);
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
}

try {
  await main();
} catch (err) {
  say(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
} finally {
  await cleanUp();
}
