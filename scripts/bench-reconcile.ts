/**
 * `npm run bench:reconcile`: how long reconciling 100,000 sent orders takes.
 *
 * Starts two private MariaDB servers and both services (as processes, on
 * free ports), bulk-inserts BENCH_ORDERS sent orders (default 100000) with
 * their outbox rows and vouchers straight into the databases, a few thousand
 * of them deliberately drifted, then times one reconciliation that finds and
 * repairs the drift, and a second one over the now clean system.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pino } from "pino";
import { createPool, type Pool } from "@shop/platform/db";
import { newId } from "@shop/platform/ids";
import { testAuthEnv } from "@shop/testkit/auth";
import { MariaDbServer } from "@shop/testkit/mariadb";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { loadConfig } from "../reconciler/src/config.js";
import { Reconciler } from "../reconciler/src/job.js";
import { formatSummary } from "../reconciler/src/report.js";

const N = Number(process.env.BENCH_ORDERS ?? 100_000);
const ROWS_PER_INSERT = 2_000;
// Drift planted among the N orders (and next to them), by kind.
const DRIFT = {
  missingVoucher: 1_000,
  deadDelivery: 500,
  missingDelivery: 500,
  voucherForUnqualified: 500,
  voucherWithoutOrder: 300,
  voucherForUnsent: 200,
  customerMismatch: 200,
};

const log = pino({ level: process.env.LOG_LEVEL ?? "error" });
const say = (m: string) => process.stdout.write(`bench │ ${m}\n`);
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

const dt = (d: Date) => d.toISOString().slice(0, 23).replace("T", " ");
const code = () => randomBytes(10).toString("hex").toUpperCase();

async function insertRows(pool: Pool, table: string, columns: string[], rows: unknown[][]): Promise<void> {
  for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
    const chunk = rows.slice(i, i + ROWS_PER_INSERT);
    const placeholders = `(${columns.map(() => "?").join(", ")})`;
    await pool.query(`INSERT INTO ${table} (${columns.join(", ")}) VALUES ${chunk.map(() => placeholders).join(", ")}`, chunk.flat());
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), "bench-reconcile-"));
  const orderDbServer = new MariaDbServer({ args: ["--innodb-buffer-pool-size=512M", "--innodb-flush-log-at-trx-commit=2"] });
  const voucherDbServer = new MariaDbServer({ args: ["--innodb-buffer-pool-size=512M", "--innodb-flush-log-at-trx-commit=2"] });
  const stops: Array<() => Promise<void> | void> = [];
  try {
    say("starting two private MariaDB servers and both services");
    await Promise.all([orderDbServer.start(), voucherDbServer.start()]);
    stops.unshift(() => orderDbServer.stop(), () => voucherDbServer.stop());
    const [orderUrl, voucherUrl] = await Promise.all([orderDbServer.createDatabase("orders"), voucherDbServer.createDatabase("vouchers")]);
    // The services run as their own processes, as deployed, so they do not share a CPU core with the reconciler.
    const root = path.resolve(import.meta.dirname, "..");
    const [vg, vh, og, oh] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    const voucherService = new ServiceProcess({
      name: "bench-voucher",
      entry: path.join(root, "voucher-service/src/main.ts"),
      env: { ...testAuthEnv, VOUCHER_DATABASE_URL: voucherUrl, VOUCHER_GRPC_PORT: String(vg), VOUCHER_HTTP_PORT: String(vh), LOG_LEVEL: "warn" },
      readyUrl: `http://127.0.0.1:${vh}/readyz`,
    });
    const voucherGrpc = `http://127.0.0.1:${vg}`;
    const orderService = new ServiceProcess({
      name: "bench-order",
      entry: path.join(root, "order-service/src/main.ts"),
      env: {
        ...testAuthEnv,
        ORDER_DATABASE_URL: orderUrl,
        ORDER_GRPC_PORT: String(og),
        ORDER_HTTP_PORT: String(oh),
        VOUCHER_SERVICE_URL: voucherGrpc,
        LOG_LEVEL: "warn",
      },
      readyUrl: `http://127.0.0.1:${oh}/readyz`,
    });
    await voucherService.start();
    stops.unshift(async () => void (await voucherService.stop()));
    await orderService.start();
    stops.unshift(async () => void (await orderService.stop()));
    const orderGrpc = `http://127.0.0.1:${og}`;

    say(`inserting ${N.toLocaleString("en")} sent orders, their outbox rows and vouchers, with drift planted`);
    const t0 = Date.now();
    const orderPool = createPool({ url: orderUrl, connectionLimit: 4 });
    const voucherPool = createPool({ url: voucherUrl, connectionLimit: 4 });
    stops.unshift(() => orderPool.end(), () => voucherPool.end());
    const now = Date.now();
    const orders: unknown[][] = [];
    const outbox: unknown[][] = [];
    const vouchers: unknown[][] = [];
    let d = { ...DRIFT };
    for (let i = 0; i < N; i++) {
      const id = newId();
      const customer = `cust-${i % 997}`;
      // Four in five qualify; sent over the last two days, all older than the grace period.
      const qualifies = i % 5 !== 0;
      const total = qualifies ? 10_001 + (i % 50_000) : 1_000 + (i % 9_001);
      const sentAt = new Date(now - 3_600_000 - Math.floor(((N - i) / N) * 2 * 86_400_000));
      const issuedAt = new Date(sentAt.getTime() + 50);
      orders.push([id, customer, total, "EUR", "SENT", `req-${id}`, dt(sentAt), dt(sentAt), dt(sentAt)]);
      const voucherId = newId();
      if (qualifies) {
        if (d.missingVoucher > 0) {
          d.missingVoucher--;
          outbox.push([id, customer, total, "EUR", "delivered", 1, dt(sentAt), null, voucherId, dt(sentAt), dt(issuedAt)]);
        } else if (d.deadDelivery > 0) {
          d.deadDelivery--;
          outbox.push([id, customer, total, "EUR", "dead", 5, dt(sentAt), "INVALID_ARGUMENT: planted by the benchmark", null, dt(sentAt), null]);
        } else if (d.missingDelivery > 0) {
          d.missingDelivery--;
          vouchers.push([voucherId, code(), id, customer, total, 500, "EUR", "ISSUED", dt(issuedAt)]);
        } else {
          outbox.push([id, customer, total, "EUR", "delivered", 1, dt(sentAt), null, voucherId, dt(sentAt), dt(issuedAt)]);
          const mismatch = d.customerMismatch > 0 ? (d.customerMismatch--, true) : false;
          vouchers.push([voucherId, code(), id, mismatch ? `${customer}-x` : customer, total, 500, "EUR", "ISSUED", dt(issuedAt)]);
        }
      } else if (d.voucherForUnqualified > 0) {
        d.voucherForUnqualified--;
        vouchers.push([voucherId, code(), id, customer, total, 500, "EUR", "ISSUED", dt(issuedAt)]);
      }
    }
    for (let i = 0; i < DRIFT.voucherForUnsent; i++) {
      const id = newId();
      const at = new Date(now - 7_200_000);
      orders.push([id, "cust-pending", 20_000, "EUR", "PENDING", `req-${id}`, dt(at), dt(at), null]);
      vouchers.push([newId(), code(), id, "cust-pending", 20_000, 500, "EUR", "ISSUED", dt(at)]);
    }
    for (let i = 0; i < DRIFT.voucherWithoutOrder; i++) {
      vouchers.push([newId(), code(), newId(), "cust-ghost", 20_000, 500, "EUR", "ISSUED", dt(new Date(now - 7_200_000))]);
    }
    await Promise.all([
      insertRows(orderPool, "orders", ["id", "customer_id", "total_cents", "currency", "status", "request_id", "created_at", "updated_at", "sent_at"], orders),
      insertRows(
        orderPool,
        "voucher_outbox",
        ["order_id", "customer_id", "total_cents", "currency", "status", "attempts", "next_attempt_at", "last_error", "voucher_id", "created_at", "delivered_at"],
        outbox,
      ),
      insertRows(
        voucherPool,
        "vouchers",
        ["id", "code", "order_id", "customer_id", "order_total_cents", "amount_cents", "currency", "status", "issued_at"],
        vouchers,
      ),
    ]);
    const planted = Object.values(DRIFT).reduce((a, b) => a + b, 0);
    say(
      `inserted ${orders.length.toLocaleString("en")} orders, ${outbox.length.toLocaleString("en")} outbox rows, ` +
        `${vouchers.length.toLocaleString("en")} vouchers in ${secs(Date.now() - t0)} (${planted.toLocaleString("en")} drifted)`,
    );

    const config = loadConfig({
      ORDER_SERVICE_URL: orderGrpc,
      VOUCHER_SERVICE_URL: voucherGrpc,
      RECONCILE_STATE_FILE: path.join(dir, "state.json"),
      RECONCILE_REPORT_DIR: path.join(dir, "reports"),
      RECONCILE_TOKEN: testAuthEnv.RECONCILE_TOKEN,
    });
    const reconciler = new Reconciler(config, log);
    stops.unshift(() => reconciler.close());

    for (const label of ["first run (finds and repairs the drift)", "second run (whole window again, nothing to repair)"]) {
      // The planted drift includes a thousand vouchers to void: lift the per-run cap so the bench measures the whole repair.
      const { report } = await reconciler.run({ full: true, maxVoids: 1_000_000 });
      const rows = report.scanned.sentOrders + report.scanned.vouchers;
      say(`${label}:`);
      process.stdout.write(formatSummary(report, undefined, 0).trimEnd().replace(/^/gm, "      ") + "\n");
      say(
        `  ${secs(report.durationMs)} for ${report.scanned.sentOrders.toLocaleString("en")} sent orders + ` +
          `${report.scanned.vouchers.toLocaleString("en")} vouchers = ${Math.round(rows / (report.durationMs / 1000)).toLocaleString("en")} rows/s, ` +
          `${Math.round(report.scanned.sentOrders / (report.durationMs / 1000)).toLocaleString("en")} sent orders/s`,
      );
      say(`  calls: ${Object.entries(report.calls).map(([m, c]) => `${m} ${c.count}× ${secs(c.ms)}`).join(", ")}`);
      if (report.error) throw new Error(report.error);
      // Requeued deliveries are the relay's to finish before the second run looks.
      for (let i = 0; i < 100; i++) {
        const [rows] = (await orderPool.query("SELECT COUNT(*) AS n FROM voucher_outbox WHERE status = 'pending'")) as unknown as [Array<{ n: number }>];
        if (Number(rows[0]!.n) === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    for (const stop of stops) await Promise.resolve(stop()).catch((err) => say(`cleanup: ${(err as Error).message}`));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench-reconcile failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
