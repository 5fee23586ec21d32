/**
 * `npm run bench:charges` (`-- --quick` for a smoke run): the paid-order chain's throughput and latency.
 *
 * Starts two private MariaDB servers (durable commits, as `npm run bench`), the payment service (with its
 * outcome relay) and the order service (with its charge relay) as real processes, one account funded for
 * every order, and measures:
 *   1. drain: a backlog of paid orders (over 64 accounts) whose charge requests were written while no order
 *      relay ran; the order service starts and the chain runs: charge_outbox → ChargeOrder → payment_outbox →
 *      RecordPaymentOutcome. Prints charges decided per second (payment service inbox) and orders PAID per
 *      second (order database).
 *   2. latency: CreateOrder with payment at fixed offered rates (100 and 200 per second); time from the order's
 *      created_at to its charged_at (the commit that made it PAID), and to the charge relay's ack of ChargeOrder,
 *      p50 / p99, all stamped on this machine.
 * Prints figures only; asserts nothing about them.
 */
import os from "node:os";
import path from "node:path";
import type { RowDataPacket } from "mysql2/promise";
import { createPool, type Pool } from "@shop/platform/db";
import { newId } from "@shop/platform/ids";
import { createOrderClient, createPaymentClient } from "@shop/sdk/clients";
import { PaymentMethod } from "@shop/sdk/order";
import { allScopesToken, roleToken } from "@shop/testkit/auth";
import { MariaDbServer } from "@shop/testkit/mariadb";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { migrateOrderDatabase } from "@shop/order-service/db/migrate";
import { pino } from "pino";
import { openLoop, peakRssMb, round, summarize } from "./load.js";

const QUICK = process.argv.includes("--quick");
const ROOT = path.resolve(import.meta.dirname, "../..");
const P = QUICK
  ? { backlog: 2_000, rates: [100], steadyMs: 3_000, timeoutMs: 120_000 }
  : { backlog: 20_000, rates: [100, 200], steadyMs: 10_000, timeoutMs: 600_000 };
const DB_ARGS = ["--innodb-buffer-pool-size=1G", "--innodb-flush-log-at-trx-commit=1", "--innodb-log-file-size=512M"];
/** Orders spread over this many funded accounts (a charge locks its account's row until commit). */
const ACCOUNTS = 64;
const customerOf = (i: number) => `bench-payer-${i % ACCOUNTS}`;
const say = (m: string) => process.stdout.write(`bench:charges │ ${m}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function scalar(pool: Pool, sql: string, params: unknown[] = []): Promise<number> {
  const [rows] = await pool.query<RowDataPacket[]>(sql, params);
  return Number(Object.values(rows[0]!)[0]);
}

async function main(): Promise<void> {
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  const results: Record<string, unknown> = { quick: QUICK, node: process.version, accounts: ACCOUNTS };
  const orderDb = new MariaDbServer({ args: DB_ARGS });
  const paymentDb = new MariaDbServer({ args: DB_ARGS });
  try {
    await Promise.all([orderDb.start(), paymentDb.start()]);
    cleanups.push(() => orderDb.stop(), () => paymentDb.stop());
    const [orderUrl, paymentUrl] = await Promise.all([orderDb.createDatabase("orders"), paymentDb.createDatabase("payments")]);
    const orderPool = createPool({ url: orderUrl, connectionLimit: 4 });
    const paymentPool = createPool({ url: paymentUrl, connectionLimit: 4 });
    cleanups.push(() => orderPool.end(), () => paymentPool.end());
    await migrateOrderDatabase(orderPool, pino({ level: "warn" }));

    const [oGrpc, oHttp, pGrpc, pHttp] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const payment = new ServiceProcess({
      name: "bench-payment-service",
      entry: path.join(ROOT, "payment-service/src/main.ts"),
      env: {
        PAYMENT_DATABASE_URL: paymentUrl,
        PAYMENT_GRPC_PORT: String(pGrpc),
        PAYMENT_HTTP_PORT: String(pHttp),
        ORDER_SERVICE_URL: `http://127.0.0.1:${oGrpc}`,
        PAYMENT_RELAY_TOKEN: roleToken("payment-relay"),
        LOG_LEVEL: "warn",
      },
      readyUrl: `http://127.0.0.1:${pHttp}/readyz`,
    });
    await payment.start();
    cleanups.push(() => payment.stop());
    const payments = createPaymentClient({ baseUrl: `http://127.0.0.1:${pGrpc}`, token: roleToken("shop"), defaultTimeoutMs: 10_000 });
    cleanups.push(() => payments.close());
    for (let i = 0; i < ACCOUNTS; i++) {
      await payments.client.openAccount({ customerId: customerOf(i), currency: "EUR" });
      await payments.client.topUp({ customerId: customerOf(i), amountCents: 1_000_000_000n, currency: "EUR", requestId: `bench-funding-${i}` });
    }

    // 1. Drain: paid orders and their charge requests, written while no order relay runs.
    const now = new Date();
    const ids = Array.from({ length: P.backlog }, () => newId());
    for (let i = 0; i < ids.length; i += 5_000) {
      const chunk = ids.slice(i, i + 5_000);
      await orderPool.query(
        "INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, payment_method, payment_status) VALUES ?",
        [chunk.map((id, j) => [id, customerOf(i + j), 12_345, "EUR", "AWAITING_PAYMENT", `bench-${id}`, now, now, "ACCOUNT", "AWAITING"])],
      );
      await orderPool.query(
        "INSERT INTO charge_outbox (order_id, customer_id, amount_cents, currency, status, attempts, next_attempt_at, created_at) VALUES ?",
        [chunk.map((id, j) => [id, customerOf(i + j), 12_345, "EUR", "pending", 0, now, now])],
      );
    }
    say(`drain: ${P.backlog} paid orders over ${ACCOUNTS} accounts waiting; starting the order service with its relays`);
    const order = new ServiceProcess({
      name: "bench-order-service",
      entry: path.join(ROOT, "order-service/src/main.ts"),
      env: {
        ORDER_DATABASE_URL: orderUrl,
        ORDER_GRPC_PORT: String(oGrpc),
        ORDER_HTTP_PORT: String(oHttp),
        PAYMENT_SERVICE_URL: `http://127.0.0.1:${pGrpc}`,
        VOUCHER_SERVICE_URL: "http://127.0.0.1:1",
        LOG_LEVEL: "warn",
      },
      readyUrl: `http://127.0.0.1:${oHttp}/readyz`,
    });
    const started = performance.now();
    await order.start();
    cleanups.push(() => order.stop());
    let decidedAt: number | undefined;
    let rssOrder = 0;
    let rssPayment = 0;
    const deadline = Date.now() + P.timeoutMs;
    for (;;) {
      rssOrder = Math.max(rssOrder, peakRssMb(order.pid) ?? 0);
      rssPayment = Math.max(rssPayment, peakRssMb(payment.pid) ?? 0);
      if (decidedAt === undefined && (await scalar(paymentPool, "SELECT COUNT(*) FROM inbox WHERE message_key LIKE 'charge:%'")) >= P.backlog) {
        decidedAt = performance.now();
      }
      const paid = await scalar(orderPool, "SELECT COUNT(*) FROM orders WHERE status = 'PAID'");
      if (paid >= P.backlog) break;
      if (Date.now() > deadline) throw new Error(`drain: only ${paid} of ${P.backlog} orders PAID after ${P.timeoutMs} ms`);
      await sleep(200);
    }
    const paidAt = performance.now();
    const drain = {
      orders: P.backlog,
      chargesDecidedPerSecond: round(P.backlog / (((decidedAt ?? paidAt) - started) / 1000), 0),
      ordersPaidPerSecond: round(P.backlog / ((paidAt - started) / 1000), 0),
      secondsIncludingStart: round((paidAt - started) / 1000, 1),
    };
    results.drain = drain;
    say(`drain: ${JSON.stringify(drain)}`);

    // 2. Latency at a fixed offered rate through the API.
    const orders = createOrderClient({ baseUrl: `http://127.0.0.1:${oGrpc}`, token: allScopesToken, defaultTimeoutMs: 10_000 });
    cleanups.push(() => orders.close());
    const steadies: unknown[] = [];
    for (const rate of P.rates) {
      const requests = Array.from({ length: Math.ceil((rate * P.steadyMs) / 1000) }, (_, i) => i);
      const created: string[] = [];
      const load = await openLoop(requests, rate, P.steadyMs, 256, async (i) => {
        const res = await orders.client.createOrder({
          customerId: customerOf(i),
          totalCents: 12_345n,
          currency: "EUR",
          requestId: `steady-${rate}-${i}`,
          paymentMethod: PaymentMethod.ACCOUNT,
        });
        created.push(res.order!.id);
      });
      const waitUntil = Date.now() + 60_000;
      let unpaid = created.length;
      while (Date.now() < waitUntil) {
        unpaid = await scalar(orderPool, "SELECT COUNT(*) FROM orders WHERE id IN (?) AND status <> 'PAID'", [created]);
        if (unpaid === 0) break;
        await sleep(100);
      }
      const [rows] = await orderPool.query<RowDataPacket[]>(
        `SELECT TIMESTAMPDIFF(MICROSECOND, o.created_at, o.charged_at) / 1000 AS ms,
                TIMESTAMPDIFF(MICROSECOND, o.created_at, c.delivered_at) / 1000 AS toDecidedMs
           FROM orders o JOIN charge_outbox c ON c.order_id = o.id WHERE o.id IN (?) AND o.charged_at IS NOT NULL`,
        [created],
      );
      const steady = {
        offeredPerSecond: rate,
        created: created.length,
        errors: load.errors,
        dropped: load.dropped,
        notPaidAfter60s: unpaid,
        createOrderMs: load.latencyMs,
        createdToPaidMs: summarize(rows.map((r) => Number(r.ms))),
        // The charge relay's ack of ChargeOrder's answer: the first half of the chain.
        createdToChargeAckedMs: summarize(rows.map((r) => Number(r.toDecidedMs))),
      };
      steadies.push(steady);
      say(`steady: ${JSON.stringify(steady)}`);
    }
    results.steady = steadies;
    results.peakRssMb = { orderService: rssOrder, paymentService: rssPayment };
    say(`peak RSS during the drain: order service ${rssOrder} MB, payment service ${rssPayment} MB`);
    results.loadAverage = os.loadavg().map((x) => round(x, 2));
    process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  } finally {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch((err) => say(`cleanup failed: ${String(err)}`));
  }
}

await main();
