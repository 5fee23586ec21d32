/**
 * `npx tsx scripts/bench/profile.ts [--clients=1,32] [--seconds=6] [--cpu-prof] [--relay=false]`
 *
 * A short MarkOrderSent load against real processes (two private MariaDB
 * servers, the voucher service, the order service with its in-process relay),
 * for profiling one thing at a time. With --cpu-prof the order and voucher
 * services write .cpuprofile files to bench-results/profiles/ when they stop;
 * summarise them with scripts/bench/summarize-profile.ts.
 */
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { createPool } from "@shop/platform/db";
import { newId } from "@shop/platform/ids";
import { createOrderClient } from "@shop/sdk/clients";
import { MariaDbServer } from "@shop/testkit/mariadb";
import { freePort } from "@shop/testkit/ports";
import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import { createWriteStream, mkdirSync, readFileSync } from "node:fs";
import { closedLoop, openLoop, round, summarize } from "./load.js";
import { allScopesToken } from "@shop/testkit/auth";

const ROOT = path.resolve(import.meta.dirname, "../..");
const arg = (name: string, def: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? def;
/** --drain=N: no API load; N pending outbox rows drained by one relay process (extra settings: --relay-env=K=V,K=V). */
const DRAIN = Number(arg("drain", "0"));
const RELAY_ENV = Object.fromEntries(arg("relay-env", "").split(",").filter(Boolean).map((kv) => kv.split("=") as [string, string]));
/** --rate=R: open loop at R MarkOrderSent/s for --seconds, then commit → voucher latency, as the bench's steady state. */
const RATE = Number(arg("rate", "0"));
const CLIENTS = arg("clients", "1,8,32").split(",").map(Number);
const SECONDS = Number(arg("seconds", "6"));
const PROFILE = process.argv.includes("--cpu-prof");
const RELAY = arg("relay", "true");
const RPC = arg("rpc", "markOrderSent");
const LOG_LEVEL = arg("log-level", "info");

const DB_ARGS = ["--innodb-buffer-pool-size=1G", "--innodb-flush-log-at-trx-commit=1", "--innodb-log-file-size=512M"];
const say = (m: string) => process.stdout.write(`profile │ ${m}\n`);
void pino;
const TSX = createRequire(import.meta.url).resolve("tsx");
const PROFILE_DIR = path.join(ROOT, "bench-results", "profiles");

/**
 * Like the testkit's ServiceProcess, but node flags go before the entry:
 * NODE_OPTIONS refuses --cpu-prof.
 */
async function startService(name: string, entry: string, env: Record<string, string>, readyUrl?: string): Promise<ChildProcess> {
  mkdirSync(path.join(ROOT, ".test-logs"), { recursive: true });
  mkdirSync(PROFILE_DIR, { recursive: true });
  // One file per thread (tsx runs its loader on a worker thread), in a folder per service.
  const flags = PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${path.join(PROFILE_DIR, name)}`] : [];
  const child = spawn(process.execPath, [...flags, "--import", TSX, entry], {
    env: { ...process.env, LOG_FORMAT: "json", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const log = createWriteStream(path.join(ROOT, ".test-logs", `${name}.log`), { flags: "a" });
  child.stdout!.pipe(log, { end: false });
  child.stderr!.pipe(log, { end: false });
  if (!readyUrl) return child;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited during start`);
    try {
      if ((await fetch(readyUrl)).ok) return child;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${name} not ready`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
/** utime + stime of a process in ms, from /proc (clock ticks of 10 ms). */
function cpuMs(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return 0;
  }
}
const stopService = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });

const orderDb = new MariaDbServer({ args: DB_ARGS });
const voucherDb = new MariaDbServer({ args: DB_ARGS });
const cleanups: Array<() => unknown> = [];
try {
  await Promise.all([orderDb.start(), voucherDb.start()]);
  cleanups.push(() => orderDb.stop(), () => voucherDb.stop());
  const [orderUrl, voucherUrl] = await Promise.all([orderDb.createDatabase("orders"), voucherDb.createDatabase("vouchers")]);
  const [vGrpc, vHttp, oGrpc, oHttp] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const voucher = await startService(
    "profile-voucher-service",
    path.join(ROOT, "voucher-service/src/main.ts"),
    { VOUCHER_DATABASE_URL: voucherUrl, VOUCHER_GRPC_PORT: String(vGrpc), VOUCHER_HTTP_PORT: String(vHttp), LOG_LEVEL },
    `http://127.0.0.1:${vHttp}/readyz`,
  );
  cleanups.push(() => stopService(voucher));
  if (DRAIN > 0) {
    const pool = createPool({ url: orderUrl, connectionLimit: 2 });
    const vpool = createPool({ url: voucherUrl, connectionLimit: 2 });
    cleanups.push(() => pool.end(), () => vpool.end());
    const { migrateOrderDatabase } = await import("@shop/order-service/db/migrate");
    await migrateOrderDatabase(pool, pino({ level: "warn" }));
    const now = new Date();
    const ids = Array.from({ length: DRAIN }, () => newId());
    for (let i = 0; i < DRAIN; i += 5_000) {
      const chunk = ids.slice(i, i + 5_000);
      await pool.query("INSERT INTO voucher_outbox (order_id, customer_id, total_cents, currency, status, attempts, next_attempt_at, created_at) VALUES ?", [
        chunk.map((id) => [id, `d-${id.slice(-4)}`, 12_345, "EUR", "pending", 0, new Date(now.getTime() - 1_000), now]),
      ]);
    }
    const before = { voucher: cpuMs(voucher.pid), orderDb: cpuMs(orderDb.pid), voucherDb: cpuMs(voucherDb.pid) };
    const relay = await startService("profile-relay", path.join(ROOT, "order-service/src/relay-main.ts"), {
      ORDER_DATABASE_URL: orderUrl,
      VOUCHER_SERVICE_URL: `http://127.0.0.1:${vGrpc}`,
      LOG_LEVEL,
      ...RELAY_ENV,
    });
    cleanups.push(() => stopService(relay));
    let relayCpu = 0;
    for (;;) {
      relayCpu = cpuMs(relay.pid) || relayCpu;
      // EXISTS, not COUNT(*): counting 100,000 index entries 5 times a second loads the database being measured.
      const [rows] = (await pool.query("SELECT 1 FROM voucher_outbox WHERE status = 'pending' LIMIT 1")) as any;
      if (rows.length === 0) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    const [[v]] = (await vpool.query("SELECT COUNT(*) AS n, TIMESTAMPDIFF(MICROSECOND, MIN(issued_at), MAX(issued_at)) AS us FROM vouchers")) as any;
    say(`drain ${JSON.stringify(RELAY_ENV)}: ${v.n} vouchers at ${round(Number(v.n) / (Number(v.us) / 1e6), 0)}/s (load ${round(os.loadavg()[0]!, 2)})`);
    const per = (ms: number) => round((1000 * ms) / Number(v.n), 1);
    say(`  CPU µs per voucher: relay ${per(relayCpu)} (incl. start-up) · voucher ${per(cpuMs(voucher.pid) - before.voucher)} · orderDb ${per(cpuMs(orderDb.pid) - before.orderDb)} · voucherDb ${per(cpuMs(voucherDb.pid) - before.voucherDb)}`);
  } else {
  const order = await startService(
    "profile-order-service",
    path.join(ROOT, "order-service/src/main.ts"),
    {
      ORDER_DATABASE_URL: orderUrl,
      ORDER_GRPC_PORT: String(oGrpc),
      ORDER_HTTP_PORT: String(oHttp),
      VOUCHER_SERVICE_URL: `http://127.0.0.1:${vGrpc}`,
      RELAY_ENABLED: RELAY,
      LOG_LEVEL,
      ...(process.env.ORDER_DB_POOL_SIZE ? { ORDER_DB_POOL_SIZE: process.env.ORDER_DB_POOL_SIZE } : {}),
    },
    `http://127.0.0.1:${oHttp}/readyz`,
  );
  cleanups.push(() => stopService(order));

  const pool = createPool({ url: orderUrl, connectionLimit: 4 });
  cleanups.push(() => pool.end());
  const n = 60_000;
  const now = new Date();
  const ids = Array.from({ length: n }, () => newId());
  for (let i = 0; i < n; i += 5_000) {
    await pool.query(
      "INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at) VALUES ?",
      [ids.slice(i, i + 5_000).map((id) => [id, `p-${id.slice(-4)}`, 12_345, "EUR", "PENDING", `p-${id}`, now, now])],
    );
  }
  const client = createOrderClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${oGrpc}`, defaultTimeoutMs: 10_000 });
  cleanups.push(() => client.close());
  let cursor = 0;
  const take = (k: number) => ids.slice(cursor, (cursor = Math.min(ids.length, cursor + k)));
  await closedLoop(take(300), 8, 1_000, (id) => client.client.markOrderSent({ orderId: id }));
  if (RATE > 0) {
    const vpool = createPool({ url: voucherUrl, connectionLimit: 2 });
    cleanups.push(() => vpool.end());
    const r = await openLoop(take(RATE * SECONDS), RATE, SECONDS * 1000, 512, (id) => client.client.markOrderSent({ orderId: id }));
    // Without a relay nothing is delivered: only the calls' latency is reported.
    for (; RELAY !== "false"; ) {
      const [rows] = (await pool.query("SELECT 1 FROM voucher_outbox WHERE status = 'pending' LIMIT 1")) as any;
      if (rows.length === 0) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const [o] = (await pool.query("SELECT order_id, created_at FROM voucher_outbox WHERE order_id IN (?)", [r.used])) as any;
    const [v] = (await vpool.query("SELECT order_id, issued_at FROM vouchers WHERE order_id IN (?)", [r.used])) as any;
    const issued = new Map<string, number>(v.map((x: any) => [x.order_id, x.issued_at.getTime()]));
    const lags = o.flatMap((x: any) => (issued.has(x.order_id) ? [issued.get(x.order_id)! - x.created_at.getTime()] : []));
    say(`rate ${RATE}/s: ${r.done}/${r.offered} ok, call p99 ${r.latencyMs.p99} ms; commit → voucher ${JSON.stringify(summarize(lags))} (load ${round(os.loadavg()[0]!, 2)})`);
  }
  for (const c of RATE > 0 ? [] : CLIENTS) {
    const call = RPC === "getOrder" ? (id: string) => client.client.getOrder({ orderId: id }) : (id: string) => client.client.markOrderSent({ orderId: id });
    const procs = { loadgen: process.pid, order: order.pid, voucher: voucher.pid, orderDb: orderDb.pid, voucherDb: voucherDb.pid };
    const before = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuMs(pid)]));
    const r = await closedLoop(take(Math.floor((n - 300) / CLIENTS.length)), c, SECONDS * 1000, call);
    const perCall = Object.entries(procs).map(([k, pid]) => `${k} ${round((cpuMs(pid) - before[k]!) / r.calls, 2)}`);
    say(`  CPU ms per call: ${perCall.join(" · ")}`);
    say(`${RPC} ${c} clients: ${r.perSecond}/s p50 ${r.latencyMs.p50} ms p99 ${r.latencyMs.p99} ms errors ${r.errors} (load ${round(os.loadavg()[0]!, 2)})`);
  }
  }
} finally {
  for (const c of cleanups.reverse()) await c();
}
