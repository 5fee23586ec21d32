import path from "node:path";
import { outboxCounts } from "@shop/testkit/outbox";
import { recordedVoucherIds, scrapeMetric, voucherRows, type VoucherRow } from "@shop/testkit/ledger";
import { expect } from "chai";
import { createOrderClient, createVoucherClient, type OrderClient, type VoucherClient } from "@shop/sdk/clients";
import { MariaDbServer } from "@shop/testkit/mariadb";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { checkLedger, formatLedger, runReconciler } from "../../scripts/check-ledger.js";
import { FaultProxy } from "./fault-proxy.js";
import { allScopesToken, roleToken } from "@shop/testkit/auth";
import type { Traffic } from "./traffic.js";

const root = path.resolve(import.meta.dirname, "../..");

/** Short leases and backoff so a crash heals within seconds. RELAY_LEASE_MS must exceed 2 × RELAY_CALL_TIMEOUT_MS. */
export const FAST_RELAY: Record<string, string> = {
  RELAY_BATCH_SIZE: "10",
  RELAY_CALL_TIMEOUT_MS: "1000",
  RELAY_LEASE_MS: "2500",
  RELAY_POLL_INTERVAL_MS: "200",
  RELAY_RETRY_BASE_MS: "100",
  RELAY_RETRY_MAX_MS: "1000",
};

export interface ClusterOptions {
  name: string;
  /** Own MariaDB servers (that a test may kill -9) instead of databases on the shared ones. Default false. */
  dedicatedDatabases?: boolean;
  /** Run the relay inside the order service. Default true. */
  inProcessRelay?: boolean;
  /** Standalone relay processes (relay-main). Default 0. */
  relays?: number;
  /** Relays reach the voucher service through a FaultProxy. Default false. */
  proxy?: boolean;
  orderEnv?: Record<string, string>;
  voucherEnv?: Record<string, string>;
  /** Env of standalone relay i. */
  relayEnv?: (i: number) => Record<string, string>;
  /** Run `reconcile --once` over and over while the test runs. Default true. */
  reconciler?: boolean;
}

interface Db {
  url: string;
  sql(statement: string): Promise<string>;
  drop(): Promise<void>;
  server: MariaDbServer;
}

/**
 * The whole system as real processes, with handles to crash and restart each
 * part: the voucher service, the order service, standalone relays, the two
 * MariaDB servers (when dedicated), and a fault proxy in front of the voucher
 * service for the relays.
 */
export class Cluster {
  orderDb!: Db;
  voucherDb!: Db;
  voucher!: ServiceProcess;
  order!: ServiceProcess;
  relays: ServiceProcess[] = [];
  proxy?: FaultProxy;
  orders!: OrderClient;
  vouchers!: VoucherClient;
  readonly reconcileRuns: number[] = [];
  private ports!: { vg: number; vh: number; og: number; oh: number };
  private restarts = 0;
  private closers: Array<() => void> = [];
  private ownServers: MariaDbServer[] = [];
  private reconcileLoop?: Promise<void>;
  private stopping = false;

  constructor(readonly opts: ClusterOptions) {}

  get orderServiceUrl(): string {
    return `http://127.0.0.1:${this.ports.og}`;
  }

  get voucherServiceUrl(): string {
    return `http://127.0.0.1:${this.ports.vg}`;
  }

  /** The voucher service's Connect/HTTP port, which also serves /metrics. */
  get voucherHttpUrl(): string {
    return `http://127.0.0.1:${this.ports.vh}`;
  }

  /** What the relays dial: the proxy when there is one. */
  get relayVoucherUrl(): string {
    return this.proxy ? `http://127.0.0.1:${this.proxy.port}` : this.voucherServiceUrl;
  }

  async start(): Promise<void> {
    [this.orderDb, this.voucherDb] = await Promise.all([this.database("order"), this.database("voucher")]);
    const [vg, vh, og, oh] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    this.ports = { vg, vh, og, oh };
    if (this.opts.proxy) {
      this.proxy = new FaultProxy({ port: vg });
      await this.proxy.start();
    }
    this.voucher = this.voucherProcess(this.opts.voucherEnv ?? {});
    this.order = this.orderProcess(this.opts.orderEnv ?? {});
    // The voucher service first: it creates its schema, and the relay's first calls find it up.
    await this.voucher.start();
    await this.order.start();
    for (let i = 0; i < (this.opts.relays ?? 0); i++) {
      this.relays.push(this.relayProcess(i, this.opts.relayEnv?.(i) ?? {}));
    }
    await Promise.all(this.relays.map((r) => r.start()));
    const o = createOrderClient({ token: allScopesToken, baseUrl: this.orderServiceUrl, defaultTimeoutMs: 3_000 });
    const v = createVoucherClient({ token: allScopesToken, baseUrl: this.voucherServiceUrl, defaultTimeoutMs: 3_000 });
    this.orders = o.client;
    this.vouchers = v.client;
    this.closers.push(o.close, v.close);
    if (this.opts.reconciler ?? true) this.reconcileLoop = this.reconcileForever();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.reconcileLoop;
    this.closers.forEach((c) => c());
    await Promise.all([this.order?.kill(), this.voucher?.kill(), ...this.relays.map((r) => r.kill())]);
    await this.proxy?.stop();
    await Promise.allSettled([this.orderDb?.drop(), this.voucherDb?.drop()]);
    await Promise.allSettled(this.ownServers.map((s) => s.stop()));
  }

  /** Stops the background reconciler (before the final checks, so it cannot hide drift). */
  async quiesce(): Promise<void> {
    this.stopping = true;
    await this.reconcileLoop;
  }

  /** Starts a fresh voucher service process on the same ports, with `env` instead of the original extra env. */
  async restartVoucher(env: Record<string, string> = {}): Promise<void> {
    await this.voucher.kill();
    this.voucher = this.voucherProcess(env);
    await this.voucher.start();
  }

  async restartOrder(env: Record<string, string> = {}): Promise<void> {
    await this.order.kill();
    this.order = this.orderProcess(env);
    await this.order.start();
  }

  /** Starts one more standalone relay; returns its index. */
  async addRelay(env: Record<string, string> = {}): Promise<number> {
    const i = this.relays.length;
    this.relays.push(this.relayProcess(i, env));
    await this.relays[i]!.start();
    return i;
  }

  async restartRelay(i: number, env: Record<string, string> = {}): Promise<void> {
    await this.relays[i]!.kill();
    this.relays[i] = this.relayProcess(i, env);
    await this.relays[i]!.start();
  }

  /** Outbox rows by status. */
  outboxCounts(): Promise<Record<string, number>> {
    return outboxCounts(this.orderDb);
  }

  async voucherCount(): Promise<number> {
    return Number((await this.voucherDb.sql("SELECT COUNT(*) FROM vouchers")).trim());
  }

  /** Every voucher row, voided ones included, straight from the voucher database. */
  voucherRows(): Promise<VoucherRow[]> {
    return voucherRows(this.voucherDb);
  }

  /** One sample of the voucher service's /metrics, e.g. metric("vouchers_issued_total", { result: "conflict" }). */
  voucherMetric(name: string, labels: Record<string, string> = {}): Promise<number> {
    return scrapeMetric(`${this.voucherHttpUrl}/metrics`, name, labels);
  }

  /** Waits until no outbox row is pending; fails the test if that takes longer than timeoutMs. */
  async drained(timeoutMs = 30_000): Promise<Record<string, number>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const counts = await this.outboxCounts();
      if (counts.pending === 0) return counts;
      if (Date.now() > deadline) throw new Error(`outbox not drained after ${timeoutMs} ms: ${JSON.stringify(counts)}`);
      await sleep(150);
    }
  }

  /**
   * Drains, stops the background reconciler, then checks I1–I9 and fails the
   * test on any violation. Given the traffic that was driven, it first checks
   * that traffic against the test's own statement of the rule (expectLiveVouchers).
   */
  async expectLedgerClean(traffic?: Traffic | string[], opts: { voidedOnPurpose?: string[] } = {}): Promise<void> {
    await this.drained();
    await this.quiesce();
    const acknowledgedSent = Array.isArray(traffic) ? traffic : traffic?.acknowledgedSent;
    if (traffic && !Array.isArray(traffic)) await this.expectLiveVouchers(traffic, opts.voidedOnPurpose);
    const r = await checkLedger({
      orderDatabaseUrl: this.orderDb.url,
      voucherDatabaseUrl: this.voucherDb.url,
      orderServiceUrl: this.orderServiceUrl,
      voucherServiceUrl: this.voucherServiceUrl,
      acknowledgedSent,
      lagTargetMs: 60_000,
      token: roleToken("reconciler"),
    });
    const text = formatLedger(r);
    if (process.env.FAULT_VERBOSE || !r.ok) console.log(text.replace(/^/gm, "      "));
    expect(r.ok, text).to.equal(true);
  }

  /**
   * The oracle of the fault tests, independent of the code under test and of
   * the ledger check: for every order the test created, the number of ISSUED
   * vouchers is 1 when the test marked it sent (MarkOrderSent returned OK) and
   * its total is over 100.00 EUR (every order here is in EUR), else 0; the
   * live voucher is for the order's customer and total; and the voucher id the
   * order records (outbox row, or orders.voucher_id after retention) is that
   * live voucher. No voucher of these orders is voided, except those of the
   * orders the test voided on purpose: nothing in the traffic gives the
   * reconciler a reason to void, so a void here took a voucher from a customer.
   */
  async expectLiveVouchers(t: Traffic, voidedOnPurpose: string[] = []): Promise<void> {
    const mayBeVoided = new Set(voidedOnPurpose);
    const vouchers = await this.voucherRows();
    const recorded = await recordedVoucherIds(this.orderDb);
    const sent = new Set(t.acknowledgedSent);
    const problems: string[] = [];
    for (const id of t.orderIds) {
      const { customerId, totalCents } = t.facts.get(id)!;
      const owed = sent.has(id) && totalCents > 10_000n;
      const live = vouchers.filter((v) => v.orderId === id && v.status === "ISSUED");
      const voided = vouchers.filter((v) => v.orderId === id && v.status !== "ISSUED");
      if (voided.length > 0 && !mayBeVoided.has(id)) problems.push(`${id} has ${voided.length} voided voucher(s): ${voided.map((v) => v.id).join(", ")}`);
      if (live.length !== (owed ? 1 : 0)) {
        problems.push(`${id} (${owed ? "owed" : "not owed"}) has ${live.length} ISSUED voucher(s)`);
        continue;
      }
      if (!owed) continue;
      const v = live[0]!;
      if (v.customerId !== customerId || v.orderTotalCents !== totalCents) problems.push(`${id}: voucher ${v.id} is for ${v.customerId}/${v.orderTotalCents}, the order ${customerId}/${totalCents}`);
      if (recorded.get(id) !== v.id) problems.push(`${id}: the order records voucher ${recorded.get(id) ?? "none"}, the live one is ${v.id}`);
    }
    expect(problems, `${problems.length} of ${t.orderIds.length} orders break "exactly one live voucher per owed order": ${problems.slice(0, 5).join("; ")}`).to.deep.equal([]);
  }

  private async database(which: "order" | "voucher"): Promise<Db> {
    if (!this.opts.dedicatedDatabases) {
      const db: TestDatabase = await freshDatabase(which);
      return db;
    }
    const server = new MariaDbServer();
    this.ownServers.push(server);
    await server.start();
    const name = `${which}_faults`;
    const url = await server.createDatabase(name, `u_${which}`);
    return { url, server, sql: (s) => server.sql(s, name), drop: async () => {} };
  }

  private voucherProcess(env: Record<string, string>): ServiceProcess {
    return new ServiceProcess({
      name: `faults-${this.opts.name}-voucher-${this.restarts++}`,
      entry: path.join(root, "voucher-service/src/main.ts"),
      env: {
        VOUCHER_DATABASE_URL: this.voucherDb.url,
        VOUCHER_GRPC_PORT: String(this.ports.vg),
        VOUCHER_HTTP_PORT: String(this.ports.vh),
        ...env,
      },
      readyUrl: `http://127.0.0.1:${this.ports.vh}/readyz`,
    });
  }

  private orderProcess(env: Record<string, string>): ServiceProcess {
    return new ServiceProcess({
      name: `faults-${this.opts.name}-order-${this.restarts++}`,
      entry: path.join(root, "order-service/src/main.ts"),
      env: {
        ORDER_DATABASE_URL: this.orderDb.url,
        ORDER_GRPC_PORT: String(this.ports.og),
        ORDER_HTTP_PORT: String(this.ports.oh),
        VOUCHER_SERVICE_URL: this.relayVoucherUrl,
        RELAY_ENABLED: String(this.opts.inProcessRelay ?? true),
        ...FAST_RELAY,
        ...env,
      },
      readyUrl: `http://127.0.0.1:${this.ports.oh}/readyz`,
    });
  }

  private relayProcess(i: number, env: Record<string, string>): ServiceProcess {
    return new ServiceProcess({
      name: `faults-${this.opts.name}-relay${i}-${this.restarts++}`,
      entry: path.join(root, "order-service/src/relay-main.ts"),
      env: {
        ORDER_DATABASE_URL: this.orderDb.url,
        VOUCHER_SERVICE_URL: this.relayVoucherUrl,
        RELAY_ID: `relay-${i}`,
        ...FAST_RELAY,
        ...env,
      },
    });
  }

  /** The reconciler repairing for real, concurrently with everything else; its exit codes are kept. */
  private async reconcileForever(): Promise<void> {
    while (!this.stopping) {
      const run = await runReconciler({
        orderServiceUrl: this.orderServiceUrl,
        voucherServiceUrl: this.voucherServiceUrl,
        dryRun: false,
        graceMs: 3_000,
        timeoutMs: 30_000,
        token: roleToken("reconciler"),
      });
      this.reconcileRuns.push(run.exitCode);
      for (let i = 0; i < 10 && !this.stopping; i++) await sleep(100);
    }
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls check every 50 ms until it holds; fails the test if it does not within timeoutMs. */
export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** True when the process ends within timeoutMs (a failpoint killed it). */
export async function diesWithin(p: ServiceProcess, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
  const died = await Promise.race([p.exited().then(() => true as const), timedOut]);
  clearTimeout(timer);
  return died;
}
