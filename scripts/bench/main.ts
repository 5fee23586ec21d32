/**
 * `npm run bench` (`-- --quick` for a smoke run of about a minute; `-- --profile`
 * to write CPU profiles of the services and relay processes to bench-results/profiles/,
 * summarised by `npx tsx scripts/bench/summarize-profile.ts <file>`).
 *
 * Starts two private MariaDB servers (1 GiB buffer pool, durable commits:
 * innodb_flush_log_at_trx_commit=1, the default), the voucher and order
 * services as real processes, and measures, one scenario after another:
 *   1. MarkOrderSent over gRPC at 1, 8 and 32 clients (in-process relay on)
 *   2. commit → voucher latency at a fixed offered rate
 *   3. drain of a pending backlog by one and by two relay processes
 *   4. the raw batched-insert ceiling of the voucher database, and drain / ceiling
 *   5. peak RSS (VmHWM) of every process
 *   6. grpc-js and connect-node serving the same calls
 *   7. claim speed with a million delivered rows waiting, and with the cleanup removing them
 * Prints a table, writes bench-results/bench-<timestamp>.json.
 */
import { execFileSync } from "node:child_process";
import http from "node:http";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { RowDataPacket } from "mysql2/promise";
import { pino } from "pino";
import { createPool, type Pool } from "@shop/platform/db";
import { newId } from "@shop/platform/ids";
import { bearerToken, createOrderClient } from "@shop/sdk/clients";
import { OrderService } from "@shop/sdk/order";
import { MariaDbServer } from "@shop/testkit/mariadb";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { migrateOrderDatabase } from "@shop/order-service/db/migrate";
import { ackDelivered } from "@shop/order-service/outbox/ack";
import { claimDueRows } from "@shop/order-service/outbox/claim";
import { OutboxCleanup, OUTBOX_CLEANUP_DEFAULTS } from "@shop/order-service/outbox/cleanup";
import { RELAY_DEFAULTS } from "@shop/order-service/outbox/relay";
import { closedLoop, openLoop, peakRssMb, round, summarize, type Latency } from "./load.js";
import { allScopesToken } from "@shop/testkit/auth";

const QUICK = process.argv.includes("--quick");
const PROFILE = process.argv.includes("--profile");
const ROOT = path.resolve(import.meta.dirname, "../..");

/** Sizes and time bounds; quick mode keeps every scenario but shrinks it. */
const P = QUICK
  ? { phaseMs: 2_000, orders: 30_000, steadyRates: [200, 1000], steadyMs: 3_000, backlog: 10_000, ceilingRows: 20_000, delivered: 100_000, claimRows: 5_000, drainTimeoutMs: 60_000 }
  : { phaseMs: 8_000, orders: 120_000, steadyRates: [200, 1000], steadyMs: 10_000, backlog: 100_000, ceilingRows: 100_000, delivered: 1_000_000, claimRows: 30_000, drainTimeoutMs: 120_000 };

const DB_ARGS = ["--innodb-buffer-pool-size=1G", "--innodb-flush-log-at-trx-commit=1", "--innodb-log-file-size=512M"];
const quiet = pino({ level: "warn" });
const say = (m: string) => process.stdout.write(`bench │ ${m}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const rss: Record<string, number> = {};
/** The 1-minute load average at each scenario's end: other work on the machine shows up here, not in the figures. */
const load: Record<string, number> = {};
const noteLoad = (scenario: string) => void (load[scenario] = round(os.loadavg()[0]!, 2));
function sampleRss(name: string, pid: number | undefined): void {
  const mb = peakRssMb(pid);
  if (mb !== undefined) rss[name] = Math.max(rss[name] ?? 0, mb);
}

async function bulkInsert(pool: Pool, table: string, columns: string[], rows: unknown[][], chunk = 5_000): Promise<void> {
  for (let i = 0; i < rows.length; i += chunk) {
    await pool.query(`INSERT INTO ${table} (${columns.join(", ")}) VALUES ?`, [rows.slice(i, i + chunk)]);
  }
}

/** PENDING orders of 123.45 EUR (qualifying), straight into the table; returns their ids. */
async function insertPendingOrders(pool: Pool, n: number, tag: string): Promise<string[]> {
  const now = new Date();
  const ids = Array.from({ length: n }, () => newId());
  await bulkInsert(
    pool,
    "orders",
    ["id", "customer_id", "total_cents", "currency", "status", "request_id", "created_at", "updated_at"],
    ids.map((id) => [id, `${tag}-${id.slice(-4)}`, 12_345, "EUR", "PENDING", `${tag}-${id}`, now, now]),
  );
  return ids;
}

/** Sent orders and their due outbox rows, as if MarkOrderSent had run n times while no relay was running. */
async function insertBacklog(pool: Pool, n: number, tag: string): Promise<void> {
  const now = new Date();
  const due = new Date(now.getTime() - 1_000);
  const ids = Array.from({ length: n }, () => newId());
  await bulkInsert(
    pool,
    "orders",
    ["id", "customer_id", "total_cents", "currency", "status", "request_id", "created_at", "updated_at", "sent_at"],
    ids.map((id) => [id, `${tag}-${id.slice(-4)}`, 12_345, "EUR", "SENT", `${tag}-${id}`, now, now, now]),
  );
  await bulkInsert(
    pool,
    "voucher_outbox",
    ["order_id", "customer_id", "total_cents", "currency", "status", "attempts", "next_attempt_at", "created_at"],
    ids.map((id) => [id, `${tag}-${id.slice(-4)}`, 12_345, "EUR", "pending", 0, due, now]),
  );
}

/**
 * EXISTS rather than COUNT(*): the waits poll every 100 ms, and counting up to
 * 100,000 pending index entries each time loaded the very database whose
 * drain was being timed.
 */
async function anyPending(pool: Pool): Promise<boolean> {
  const [rows] = await pool.query<RowDataPacket[]>("SELECT 1 FROM voucher_outbox WHERE status = 'pending' LIMIT 1");
  return rows.length > 0;
}

async function waitUntil(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      say(`  gave up waiting for ${what} after ${timeoutMs} ms`);
      return false;
    }
    await sleep(100);
  }
  return true;
}

function machine() {
  const version = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { encoding: "utf8" }).trim();
    } catch {
      return "unknown";
    }
  };
  return {
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? "unknown",
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    node: process.version,
    mariadb: version(MariaDbServer.binary(), ["--version"]),
    os: `${os.type()} ${os.release()}`,
  };
}

async function main(): Promise<void> {
  const started = Date.now();
  const results: Record<string, unknown> = { quick: QUICK, machine: machine(), relayDefaults: RELAY_DEFAULTS, databaseArgs: DB_ARGS };
  const orderDb = new MariaDbServer({ args: DB_ARGS });
  const voucherDb = new MariaDbServer({ args: DB_ARGS });
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  const profileDir = path.join(ROOT, "bench-results", "profiles");
  // NODE_OPTIONS refuses --cpu-prof; the preload profiles the main thread instead. The caller's NODE_OPTIONS stay:
  // npm run bench sets the shop-source condition there, which the services' tsx runs need.
  const profileEnv = (name: string): Record<string, string> =>
    PROFILE ? { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import=${path.join(ROOT, "scripts/bench/cpu-profile.mjs")}`, CPU_PROFILE_DIR: profileDir, CPU_PROFILE_NAME: name } : {};
  try {
    say(`${QUICK ? "quick run" : "full run"} on ${JSON.stringify(results.machine)}`);
    await Promise.all([orderDb.start(), voucherDb.start()]);
    cleanups.push(() => orderDb.stop(), () => voucherDb.stop());
    const [orderUrl, voucherUrl] = await Promise.all([orderDb.createDatabase("orders"), voucherDb.createDatabase("vouchers")]);
    const orderPool = createPool({ url: orderUrl, connectionLimit: 8 });
    const voucherPool = createPool({ url: voucherUrl, connectionLimit: 8 });
    cleanups.push(() => orderPool.end(), () => voucherPool.end());

    const [vGrpc, vHttp] = [await freePort(), await freePort()];
    const voucher = new ServiceProcess({
      name: "bench-voucher-service",
      entry: path.join(ROOT, "voucher-service/src/main.ts"),
      env: { VOUCHER_DATABASE_URL: voucherUrl, VOUCHER_GRPC_PORT: String(vGrpc), VOUCHER_HTTP_PORT: String(vHttp), LOG_LEVEL: "info", ...profileEnv("voucher-service") },
      readyUrl: `http://127.0.0.1:${vHttp}/readyz`,
    });
    await voucher.start();
    cleanups.push(() => voucher.stop());
    const voucherServiceUrl = `http://127.0.0.1:${vGrpc}`;

    const startOrderService = async (relayEnabled: boolean) => {
      const [grpcPort, httpPort] = [await freePort(), await freePort()];
      const p = new ServiceProcess({
        name: `bench-order-service${relayEnabled ? "" : "-no-relay"}`,
        entry: path.join(ROOT, "order-service/src/main.ts"),
        env: {
          ORDER_DATABASE_URL: orderUrl,
          ORDER_GRPC_PORT: String(grpcPort),
          ORDER_HTTP_PORT: String(httpPort),
          VOUCHER_SERVICE_URL: voucherServiceUrl,
          RELAY_ENABLED: String(relayEnabled),
          LOG_LEVEL: "info",
          ...profileEnv(`order-service${relayEnabled ? "" : "-no-relay"}`),
        },
        readyUrl: `http://127.0.0.1:${httpPort}/readyz`,
      });
      await p.start();
      cleanups.push(() => p.stop());
      return { p, grpcPort, httpPort };
    };

    // 4. The ceiling first, on an idle voucher database.
    say("ceiling: raw batched inserts into the voucher database");
    await voucherPool.query("CREATE TABLE ceiling LIKE vouchers");
    const ceiling: Record<string, number> = {};
    for (const concurrency of [4, 8]) {
      await voucherPool.query("TRUNCATE TABLE ceiling");
      const batch = RELAY_DEFAULTS.batchSize;
      const batches = Array.from({ length: Math.ceil(P.ceilingRows / batch) }, (_, b) => b);
      const r = await closedLoop(batches, concurrency, 60_000, async () => {
        const rows = Array.from({ length: batch }, () => {
          const id = newId();
          return [id, `C${id}`, `O${id}`, "cust", 12_345, 500, "EUR", "ISSUED"];
        });
        await voucherPool.query(
          `INSERT INTO ceiling (id, code, order_id, customer_id, order_total_cents, amount_cents, currency, status, issued_at)
           VALUES ${rows.map(() => "(?, ?, ?, ?, ?, ?, ?, ?, NOW(3))").join(", ")} ON DUPLICATE KEY UPDATE id = id`,
          rows.flat(),
        );
      });
      ceiling[`batch${batch}_c${concurrency}`] = round((r.calls * batch) / r.seconds, 0);
      say(`  batch ${batch}, ${concurrency} connections: ${ceiling[`batch${batch}_c${concurrency}`]} rows/s`);
    }
    await voucherPool.query("DROP TABLE ceiling");
    const ceilingRate = Math.max(...Object.values(ceiling));
    results.ceiling = { ...ceiling, best: ceilingRate };

    // 1 + 6. MarkOrderSent, with the in-process relay delivering as it would in production.
    let order = await startOrderService(true);
    say(`MarkOrderSent over gRPC (grpc-js server), ${P.phaseMs} ms per level`);
    const ids = await insertPendingOrders(orderPool, P.orders, "ms");
    let cursor = 0;
    const take = (n: number) => ids.slice(cursor, (cursor = Math.min(ids.length, cursor + n)));
    const grpcClient = createOrderClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${order.grpcPort}`, defaultTimeoutMs: 10_000 });
    cleanups.push(() => grpcClient.close());
    await closedLoop(take(500), 8, 2_000, (id) => grpcClient.client.markOrderSent({ orderId: id })); // warm-up
    const markSent: Record<string, unknown> = {};
    for (const clients of [1, 8, 32]) {
      const r = await closedLoop(take(Math.ceil((P.orders - 1_000) / 4)), clients, P.phaseMs, (id) => grpcClient.client.markOrderSent({ orderId: id }));
      markSent[`c${clients}`] = r;
      say(`  ${clients} clients: ${r.perSecond}/s, p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms${r.errors ? `, ${r.errors} errors (${r.firstError})` : ""}`);
    }
    results.markOrderSent = markSent;
    noteLoad("markOrderSent");

    say("grpc-js and connect-node (Connect JSON over HTTP/1.1) on the same calls, 32 clients");
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    const connectClient = createClient(
      OrderService,
      createConnectTransport({
        baseUrl: `http://127.0.0.1:${order.httpPort}`,
        httpVersion: "1.1",
        nodeOptions: { agent },
        defaultTimeoutMs: 10_000,
        interceptors: [bearerToken(allScopesToken)],
      }),
    );
    cleanups.push(() => agent.destroy());
    const transports: Record<string, unknown> = {};
    const readIds = ids.slice(0, 1_000);
    for (const [name, client] of [["grpc-js", grpcClient.client], ["connect-node", connectClient]] as const) {
      const sent = await closedLoop(take(Math.ceil((P.orders - 1_000) / 4)), 32, P.phaseMs / 2, (id) => client.markOrderSent({ orderId: id }));
      let i = 0;
      const reads = Array.from({ length: 1_000_000 }, () => readIds[i++ % readIds.length]!);
      const got = await closedLoop(reads, 32, P.phaseMs / 2, (id) => client.getOrder({ orderId: id }));
      transports[name] = { markOrderSent: sent, getOrder: got };
      say(`  ${name}: MarkOrderSent ${sent.perSecond}/s p99 ${sent.latencyMs.p99} ms · GetOrder ${got.perSecond}/s p99 ${got.latencyMs.p99} ms`);
      for (const [what, r] of [["MarkOrderSent", sent], ["GetOrder", got]] as const) {
        if (r.errors > 0) say(`  ${name}: ${what}: ${r.errors} calls failed, the first with: ${r.firstError}`);
      }
    }
    results.transports = transports;
    noteLoad("transports");
    sampleRss("order-service (API + relay)", order.p.pid);
    sampleRss("voucher-service", voucher.pid);
    sampleRss("bench (load generator)", process.pid);
    await waitUntil("the MarkOrderSent vouchers", P.drainTimeoutMs, async () => !(await anyPending(orderPool)));

    // 2. Commit → voucher at a fixed offered rate.
    const steady: Record<string, unknown> = {};
    for (const rate of P.steadyRates) {
      say(`steady state: ${rate} qualifying MarkOrderSent per second for ${P.steadyMs} ms`);
      const batch = await insertPendingOrders(orderPool, Math.ceil((rate * P.steadyMs) / 1000), `st${rate}`);
      const r = await openLoop(batch, rate, P.steadyMs, 512, (id) => grpcClient.client.markOrderSent({ orderId: id }));
      await waitUntil("steady-state vouchers", P.drainTimeoutMs, async () => !(await anyPending(orderPool)));
      const created = new Map<string, number>();
      const issued = new Map<string, number>();
      for (let i = 0; i < r.used.length; i += 5_000) {
        const chunk = r.used.slice(i, i + 5_000);
        const [o] = await orderPool.query<RowDataPacket[]>("SELECT order_id, created_at FROM voucher_outbox WHERE order_id IN (?)", [chunk]);
        for (const row of o) created.set(row.order_id, (row.created_at as Date).getTime());
        const [v] = await voucherPool.query<RowDataPacket[]>("SELECT order_id, issued_at FROM vouchers WHERE order_id IN (?)", [chunk]);
        for (const row of v) issued.set(row.order_id, (row.issued_at as Date).getTime());
      }
      const lags = [...created].flatMap(([id, c]) => (issued.has(id) ? [issued.get(id)! - c] : []));
      steady[`rate${rate}`] = { offered: r.offered, done: r.done, errors: r.errors, dropped: r.dropped, markOrderSentMs: r.latencyMs, vouchers: lags.length, commitToVoucherMs: summarize(lags) };
      const s = summarize(lags);
      say(`  ${r.done}/${r.offered} calls ok (p99 ${r.latencyMs.p99} ms); commit → voucher p50 ${s.p50} ms, p99 ${s.p99} ms, max ${s.max} ms over ${lags.length} vouchers`);
    }
    results.steadyState = steady;
    noteLoad("steadyState");
    sampleRss("order-service (API + relay)", order.p.pid);
    sampleRss("voucher-service", voucher.pid);

    // 3. Drain: the API keeps running without its relay; relays run as their own processes.
    await order.p.stop();
    order = await startOrderService(false);
    const drain: Record<string, unknown> = {};
    for (const relays of [1, 2]) {
      const tag = `dr${relays}`;
      say(`drain: ${P.backlog.toLocaleString("en")} pending rows, ${relays} relay process(es)`);
      let t = Date.now();
      await insertBacklog(orderPool, P.backlog, tag);
      say(`  backlog built in ${Date.now() - t} ms`);
      const procs = Array.from({ length: relays }, (_, i) => {
        const env: Record<string, string> = { ORDER_DATABASE_URL: orderUrl, VOUCHER_SERVICE_URL: voucherServiceUrl, RELAY_ID: `bench-${tag}-${i}`, LOG_LEVEL: "info" };
        if (PROFILE) Object.assign(env, profileEnv(`relay-${tag}-${i}`));
        return new ServiceProcess({ name: `bench-relay-${i}`, entry: path.join(ROOT, "order-service/src/relay-main.ts"), env });
      });
      t = Date.now();
      await Promise.all(procs.map((p) => p.start()));
      let peakTimer = setInterval(() => procs.forEach((p, i) => sampleRss(`relay ${i + 1}`, p.pid)), 500);
      const done = await waitUntil("the drain", P.drainTimeoutMs, async () => !(await anyPending(orderPool)));
      const wallMs = Date.now() - t;
      clearInterval(peakTimer);
      procs.forEach((p, i) => sampleRss(`relay ${i + 1}`, p.pid));
      sampleRss("voucher-service", voucher.pid);
      await Promise.all(procs.map((p) => p.stop()));
      const [[v]] = await voucherPool.query<RowDataPacket[]>(
        "SELECT COUNT(*) AS n, TIMESTAMPDIFF(MICROSECOND, MIN(issued_at), MAX(issued_at)) AS us FROM vouchers WHERE customer_id LIKE ?",
        [`${tag}-%`],
      );
      const perSecond = round(Number(v!.n) / (Number(v!.us) / 1e6), 0);
      drain[`relays${relays}`] = { rows: P.backlog, vouchers: Number(v!.n), complete: done, perSecond, wallMsWithStartup: wallMs, ratioToCeiling: round(perSecond / ceilingRate, 3) };
      say(`  ${Number(v!.n)} vouchers at ${perSecond}/s (first to last issued_at; ${wallMs} ms wall clock with process start) = ${round((100 * perSecond) / ceilingRate, 1)}% of the ceiling`);
    }
    results.drain = drain;
    noteLoad("drain");
    sampleRss("order-service (API only, during the drain)", order.p.pid);
    await order.p.stop();

    // 7. Claim speed next to a million delivered rows, then with the cleanup removing them.
    say(`retention: claim + ack of ${P.claimRows.toLocaleString("en")} rows (batch ${RELAY_DEFAULTS.batchSize}, ${RELAY_DEFAULTS.concurrency} loops, no network call)`);
    const retUrl = await orderDb.createDatabase("retention");
    const retPool = createPool({ url: retUrl, connectionLimit: 12 });
    cleanups.push(() => retPool.end());
    await migrateOrderDatabase(retPool, quiet);
    const claimRun = async (tag: string) => {
      await insertBacklog(retPool, P.claimRows, tag);
      const claimMs: number[] = [];
      const t = performance.now();
      let claimed = 0;
      await Promise.all(
        Array.from({ length: RELAY_DEFAULTS.concurrency }, async (_, w) => {
          for (;;) {
            const token = `bench:${w}:${newId()}`;
            const c0 = performance.now();
            const rows = await claimDueRows(retPool, { limit: RELAY_DEFAULTS.batchSize, leaseMs: 30_000, token });
            claimMs.push(performance.now() - c0);
            if (rows.length === 0) return;
            claimed += rows.length;
            await ackDelivered(retPool, token, rows.map((r) => ({ id: r.id, voucherId: newId() })));
          }
        }),
      );
      const seconds = (performance.now() - t) / 1000;
      return { rows: claimed, perSecond: round(claimed / seconds, 0), claimMs: summarize(claimMs) };
    };
    const retention: Record<string, unknown> = {};
    retention.baseline = await claimRun("rt0");
    say(`  no old rows: ${JSON.stringify(retention.baseline)}`);
    let t = Date.now();
    // Server-side generation (MariaDB's sequence engine): a million rows in seconds.
    await retPool.query(
      `INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, sent_at)
       SELECT CONCAT('R', LPAD(seq, 25, '0')), 'old', 12345, 'EUR', 'SENT', CONCAT('old-', seq), NOW(3) - INTERVAL 30 DAY, NOW(3) - INTERVAL 30 DAY, NOW(3) - INTERVAL 30 DAY
         FROM seq_1_to_${P.delivered}`,
    );
    await retPool.query(
      `INSERT INTO voucher_outbox (order_id, customer_id, total_cents, currency, status, attempts, next_attempt_at, voucher_id, created_at, delivered_at)
       SELECT CONCAT('R', LPAD(seq, 25, '0')), 'old', 12345, 'EUR', 'delivered', 1, NOW(3) - INTERVAL 30 DAY, CONCAT('V', LPAD(seq, 25, '0')), NOW(3) - INTERVAL 30 DAY, NOW(3) - INTERVAL 30 DAY
         FROM seq_1_to_${P.delivered}`,
    );
    say(`  ${P.delivered.toLocaleString("en")} delivered rows (30 days old) inserted in ${Date.now() - t} ms`);
    retention.withDeliveredWaiting = await claimRun("rt1");
    say(`  ${P.delivered.toLocaleString("en")} delivered rows waiting: ${JSON.stringify(retention.withDeliveredWaiting)}`);
    const cleanup = new OutboxCleanup({ pool: retPool, logger: quiet, config: { ...OUTBOX_CLEANUP_DEFAULTS, retentionMs: 24 * 3_600_000, intervalMs: 1_000 } });
    t = Date.now();
    cleanup.start();
    const during = await claimRun("rt2");
    const removedDuring = cleanup.removed;
    const claimSeconds = (Date.now() - t) / 1000;
    await cleanup.stop();
    const cleanupRate = round(cleanup.removed / ((Date.now() - t) / 1000), 0);
    retention.withCleanupRunning = { ...during, cleanupRemovedDuringClaims: removedDuring, cleanupRowsPerSecond: round(removedDuring / claimSeconds, 0) };
    say(`  with the cleanup running: ${JSON.stringify(retention.withCleanupRunning)}`);
    retention.cleanupConfig = { ...OUTBOX_CLEANUP_DEFAULTS, retentionMs: "1 day (rows are 30 days old)" };
    retention.cleanupRowsPerSecondOverall = cleanupRate;
    results.retention = retention;
    noteLoad("retention");

    results.peakRssMb = rss;
    results.loadAverage1m = load;
    results.totalSeconds = round((Date.now() - started) / 1000, 1);
    printTable(results);
    mkdirSync(path.join(ROOT, "bench-results"), { recursive: true });
    const file = path.join(ROOT, "bench-results", `bench-${new Date().toISOString().replace(/[:.]/g, "-")}${QUICK ? "-quick" : ""}.json`);
    writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
    say(`results written to ${path.relative(ROOT, file)}`);
  } finally {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch (err) {
        say(`cleanup step failed: ${(err as Error).message}`);
      }
    }
  }
}

function printTable(r: Record<string, any>): void {
  const lat = (l: Latency) => `p50 ${l.p50} ms · p99 ${l.p99} ms · max ${l.max} ms`;
  const rows: Array<[string, string, string]> = [];
  for (const c of [1, 8, 32]) {
    const m = r.markOrderSent[`c${c}`];
    rows.push([`MarkOrderSent gRPC, ${c} client(s)`, `${m.perSecond}/s`, lat(m.latencyMs)]);
  }
  for (const [name, t] of Object.entries<any>(r.transports)) {
    rows.push([`${name}: MarkOrderSent / GetOrder, 32 clients`, `${t.markOrderSent.perSecond}/s / ${t.getOrder.perSecond}/s`, `p99 ${t.markOrderSent.latencyMs.p99} / ${t.getOrder.latencyMs.p99} ms`]);
  }
  for (const [k, s] of Object.entries<any>(r.steadyState)) {
    rows.push([`commit → voucher at ${k.replace("rate", "")}/s`, `${s.vouchers} vouchers`, lat(s.commitToVoucherMs)]);
  }
  for (const [k, d] of Object.entries<any>(r.drain)) {
    rows.push([`drain, ${k.replace("relays", "")} relay process(es)`, `${d.perSecond} vouchers/s`, `${round(d.ratioToCeiling * 100, 1)}% of ceiling`]);
  }
  rows.push(["ceiling: batched voucher INSERTs", `${r.ceiling.best} rows/s`, Object.entries(r.ceiling).filter(([k]) => k !== "best").map(([k, v]) => `${k} ${v}`).join(" · ")]);
  for (const [k, c] of Object.entries<any>(r.retention)) {
    if (!c?.perSecond) continue;
    rows.push([`claim+ack, ${k}`, `${c.perSecond} rows/s`, `claim p50 ${c.claimMs.p50} ms · p99 ${c.claimMs.p99} ms${c.cleanupRowsPerSecond ? ` · cleanup ${c.cleanupRowsPerSecond} rows/s` : ""}`]);
  }
  for (const [name, mb] of Object.entries<number>(r.peakRssMb)) rows.push([`peak RSS ${name}`, `${mb} MB`, ""]);
  rows.push([`load average (1 min, ${os.availableParallelism()} CPUs)`, Object.values<number>(r.loadAverage1m).join(" / "), Object.keys(r.loadAverage1m).join(" / ")]);
  const w = [0, 1, 2].map((i) => Math.max(...rows.map((row) => row[i].length)));
  process.stdout.write("\n" + rows.map((row) => row.map((c, i) => c.padEnd(w[i]!)).join("  │  ")).join("\n") + "\n\n");
}

await main();
