/**
 * `npm run bench:payments` (`-- --quick` for a smoke run of a few seconds per scenario).
 *
 * Starts a private MariaDB server (1 GiB buffer pool, durable commits:
 * innodb_flush_log_at_trx_commit=1, the default) and the payment service as
 * a real process (its outcome relay off: top-ups write no outcome), and
 * measures TopUp over gRPC at 32 concurrent clients for a fixed time:
 *   1. on 32 distinct accounts (each client its own account)
 *   2. on one hot account (every client the same account: each top-up waits
 *      for the row lock of the one before on that account's balance)
 * then checks the ledger (every movement's entries sum to zero, balances equal
 * their entries) and that each account's balance is the sum of its top-ups.
 * Prints a table and writes bench-results/payments-<timestamp>.json. It
 * reports figures; it asserts none.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createPool } from "@shop/platform/db";
import { newId } from "@shop/platform/ids";
import { createPaymentClient, type PaymentClient } from "@shop/sdk/clients";
import { roleToken } from "@shop/testkit/auth";
import { MariaDbServer } from "@shop/testkit/mariadb";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { checkPaymentLedger } from "@shop/payment-service/ledger-check";
import { peakRssMb, round, summarize, type Latency } from "./load.js";

const QUICK = process.argv.includes("--quick");
const ROOT = path.resolve(import.meta.dirname, "../..");
const CLIENTS = 32;
const P = QUICK ? { durationMs: 2_000, warmupMs: 300 } : { durationMs: 10_000, warmupMs: 1_000 };
const DB_ARGS = ["--innodb-buffer-pool-size=1G", "--innodb-flush-log-at-trx-commit=1", "--innodb-log-file-size=512M"];
const AMOUNT = 100n;
const say = (m: string) => process.stdout.write(`bench:payments │ ${m}\n`);

interface ScenarioResult {
  clients: number;
  accounts: number;
  calls: number;
  errors: number;
  firstError?: string;
  seconds: number;
  perSecond: number;
  latencyMs: Latency;
  loadAverage1m: number;
}

/**
 * `CLIENTS` workers, worker i topping up accountOf(i) with a fresh request id
 * as soon as its previous call returns, for durationMs after a warm-up that is
 * not counted. Returns the figures and the top-ups that were applied, per account.
 */
async function topUps(client: PaymentClient, accountOf: (worker: number) => string, tag: string): Promise<{ result: Omit<ScenarioResult, "accounts" | "loadAverage1m">; applied: Map<string, number> }> {
  const applied = new Map<string, number>();
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const warmupEnd = performance.now() + P.warmupMs;
  const deadline = warmupEnd + P.durationMs;
  const worker = async (i: number) => {
    const customerId = accountOf(i);
    while (performance.now() < deadline) {
      const t = performance.now();
      try {
        await client.topUp({ customerId, amountCents: AMOUNT, currency: "EUR", requestId: `${tag}-${newId()}` });
        applied.set(customerId, (applied.get(customerId) ?? 0) + 1);
        if (t >= warmupEnd) latencies.push(performance.now() - t);
      } catch (err) {
        if (t >= warmupEnd) errors++;
        firstError ??= String((err as Error).message ?? err);
      }
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => worker(i)));
  const seconds = P.durationMs / 1000;
  return {
    result: { clients: CLIENTS, calls: latencies.length, errors, firstError, seconds, perSecond: round(latencies.length / seconds, 0), latencyMs: summarize(latencies) },
    applied,
  };
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
  const results: Record<string, unknown> = { quick: QUICK, machine: machine(), clients: CLIENTS, durationMs: P.durationMs, databaseArgs: DB_ARGS };
  const db = new MariaDbServer({ args: DB_ARGS });
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  try {
    say(`${QUICK ? "quick run" : "full run"} on ${JSON.stringify(results.machine)}`);
    await db.start();
    cleanups.push(() => db.stop());
    const url = await db.createDatabase("payments");
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const service = new ServiceProcess({
      name: "bench-payment-service",
      entry: path.join(ROOT, "payment-service/src/main.ts"),
      env: {
        PAYMENT_DATABASE_URL: url,
        PAYMENT_GRPC_PORT: String(grpcPort),
        PAYMENT_HTTP_PORT: String(httpPort),
        // Top-ups write no outcome; the order side is not part of this bench.
        PAYMENT_RELAY_ENABLED: "false",
        LOG_LEVEL: "warn",
      },
      readyUrl: `http://127.0.0.1:${httpPort}/readyz`,
    });
    await service.start();
    cleanups.push(() => service.stop());
    const { client, close } = createPaymentClient({ token: roleToken("shop"), baseUrl: `http://127.0.0.1:${grpcPort}`, defaultTimeoutMs: 30_000 });
    cleanups.push(close);
    const pool = createPool({ url, connectionLimit: 2 });
    cleanups.push(() => pool.end());

    const distinct = Array.from({ length: CLIENTS }, (_, i) => `bench-acct-${i}`);
    const hot = "bench-hot";
    for (const customerId of [...distinct, hot]) await client.openAccount({ customerId, currency: "EUR" });

    const scenarios: Record<string, ScenarioResult> = {};
    const balancesOk: Record<string, boolean> = {};
    for (const [name, accountOf, accounts] of [
      ["distinctAccounts", (i: number) => distinct[i]!, CLIENTS],
      ["hotAccount", () => hot, 1],
    ] as const) {
      say(`TopUp, ${CLIENTS} clients on ${accounts} account(s), ${P.durationMs / 1000} s…`);
      const { result, applied } = await topUps(client, accountOf, name);
      scenarios[name] = { ...result, accounts, loadAverage1m: round(os.loadavg()[0]!, 2) };
      say(`  ${result.perSecond} top-ups/s · p50 ${result.latencyMs.p50} ms · p99 ${result.latencyMs.p99} ms · errors ${result.errors}`);
      // Every applied top-up is in its account's balance, once.
      let ok = true;
      for (const [customerId, n] of applied) {
        const balance = (await client.getAccount({ customerId })).account!.balanceCents;
        if (balance !== BigInt(n) * AMOUNT) ok = false;
      }
      balancesOk[name] = ok;
    }
    results.topUp = scenarios;
    results.balancesMatchTopUps = balancesOk;
    results.ledgerProblems = await checkPaymentLedger(pool);
    results.peakRssMb = { "payment-service": peakRssMb(service.pid) };
    results.totalSeconds = round((Date.now() - started) / 1000, 1);
    printTable(results, scenarios);
    mkdirSync(path.join(ROOT, "bench-results"), { recursive: true });
    const file = path.join(ROOT, "bench-results", `payments-${new Date().toISOString().replace(/[:.]/g, "-")}${QUICK ? "-quick" : ""}.json`);
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

function printTable(r: Record<string, any>, scenarios: Record<string, ScenarioResult>): void {
  const rows: Array<[string, string, string]> = [];
  for (const s of Object.values(scenarios)) {
    rows.push([
      `TopUp gRPC, ${s.clients} clients on ${s.accounts === 1 ? "one hot account" : `${s.accounts} accounts`}`,
      `${s.perSecond} rows/s`,
      `p50 ${s.latencyMs.p50} ms · p99 ${s.latencyMs.p99} ms · max ${s.latencyMs.max} ms · errors ${s.errors} · load ${s.loadAverage1m}`,
    ]);
  }
  rows.push(["balances = their top-ups", Object.values<boolean>(r.balancesMatchTopUps).every(Boolean) ? "yes" : "NO", JSON.stringify(r.balancesMatchTopUps)]);
  rows.push(["ledger check", (r.ledgerProblems as string[]).length === 0 ? "sound" : "PROBLEMS", (r.ledgerProblems as string[]).join("; ")]);
  rows.push(["peak RSS payment-service", `${r.peakRssMb["payment-service"]} MB`, ""]);
  const w = [0, 1, 2].map((i) => Math.max(...rows.map((row) => row[i].length)));
  process.stdout.write("\n" + rows.map((row) => row.map((c, i) => c.padEnd(w[i]!)).join("  │  ")).join("\n") + "\n\n");
}

await main();
