import path from "node:path";
import { outboxCounts } from "@shop/testkit/outbox";
import { recordedVoucherIds, scrapeMetric, voucherRows, type VoucherRow } from "@shop/testkit/ledger";
import { accountState, orderEntries, orderPayments, paymentOutboxCounts, type OutboxTally } from "@shop/testkit/payments";
import { expect } from "chai";
import {
  createCarrierClient,
  createDeliveryClient,
  createOrderClient,
  createPaymentClient,
  createShipmentEventClient,
  createVoucherClient,
  type CarrierClient,
  type DeliveryClient,
  type OrderClient,
  type PaymentClient,
  type ShipmentEventClient,
  type VoucherClient,
} from "@shop/sdk/clients";
import { MariaDbServer } from "@shop/testkit/mariadb";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { checkLedger, formatLedger, runReconciler, type LedgerOptions } from "../../scripts/check-ledger.js";
import { FaultProxy } from "./fault-proxy.js";
import { allScopesToken, roleToken } from "@shop/testkit/auth";
import type { Traffic } from "./traffic.js";
import { expectShipping, shippingOutboxCounts } from "./shipping-oracle.js";

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

/** The same for the payment service's relay (outcomes to the order service). */
export const FAST_PAYMENT_RELAY: Record<string, string> = Object.fromEntries(Object.entries(FAST_RELAY).map(([k, v]) => [`PAYMENT_${k}`, v]));

/** The same for the delivery service's event relay (shipment events to the order service). */
export const FAST_DELIVERY_RELAY: Record<string, string> = Object.fromEntries(Object.entries(FAST_RELAY).map(([k, v]) => [`DELIVERY_${k}`, v]));

/**
 * The delivery service's carrier worker with short leases and backoff, and
 * the delayed carrier confirming, shipping and delivering 50, 100 and 200 ms
 * after a shipment's creation: a shipment's whole life takes a few polls.
 * CARRIER_LEASE_MS must exceed 2 × CARRIER_CALL_TIMEOUT_MS. Enough attempts
 * that a shipment is not parked by the faults a test holds for seconds.
 */
export const FAST_CARRIERS: Record<string, string> = {
  CARRIER_CALL_TIMEOUT_MS: "1000",
  CARRIER_LEASE_MS: "2500",
  CARRIER_POLL_INTERVAL_MS: "50",
  CARRIER_RETRY_BASE_MS: "100",
  CARRIER_RETRY_MAX_MS: "1000",
  CARRIER_MAX_ATTEMPTS: "60",
  DELAYED_CARRIER_CONFIRM_MS: "50",
  DELAYED_CARRIER_SHIP_MS: "100",
  DELAYED_CARRIER_DELIVER_MS: "200",
};

/** The test carrier of a cluster with slowCarrier (delivery-with-slow-carrier.ts). */
export const SLOW_CARRIER = "slow";

/**
 * The links a fault proxy can sit on: the relays' calls between services,
 * and each service's database connections. "order" is the payment relay's
 * way to the order service, "shipmentEvents" the delivery relay's, and
 * "delivery" the order relay's way to the delivery service (CreateShipment).
 */
export type Link = "voucher" | "payment" | "order" | "orderDb" | "voucherDb" | "paymentDb" | "delivery" | "shipmentEvents" | "deliveryDb";

export interface ClusterOptions {
  name: string;
  /**
   * Own MariaDB servers (that a test may kill -9) instead of databases on the
   * shared ones: true for every database, or the ones listed (each MariaDB
   * server started costs seconds). Default false.
   */
  dedicatedDatabases?: boolean | Array<"order" | "voucher" | "payment" | "delivery">;
  /** Run the relay inside the order service. Default true. */
  inProcessRelay?: boolean;
  /** Standalone relay processes (relay-main). Default 0. */
  relays?: number;
  /**
   * A FaultProxy on every link that talks: the order relay to the voucher
   * service (cluster.proxy, as before) and to the payment service, the
   * payment relay to the order service, and each service to its database.
   * Default false.
   */
  proxy?: boolean;
  /** Run the payment service (its relay delivering outcomes to the order service) on its own database. Default true. */
  payment?: boolean;
  orderEnv?: Record<string, string>;
  voucherEnv?: Record<string, string>;
  paymentEnv?: Record<string, string>;
  /**
   * Ship orders through the delivery service: it runs (its carrier worker
   * and event relay in process, on its own database), the order service and
   * relays get DELIVERY_SERVICE_URL, and the order service releases every
   * PAID order for shipping itself (SHIP_PAID_ORDERS=true). Default false:
   * the tests that mark paid orders sent by hand keep doing so.
   */
  shipping?: boolean;
  deliveryEnv?: Record<string, string>;
  /**
   * Start the delivery service with the test carrier "slow" registered
   * beside the built-in ones (delivery-with-slow-carrier.ts: every call
   * takes SLOW_CARRIER_CALL_MS). Default false.
   */
  slowCarrier?: boolean;
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
 * part: the voucher service, the order service, the payment service,
 * standalone relays, the MariaDB servers (when dedicated), and fault proxies
 * on every link between them (with `proxy`).
 */
export class Cluster {
  orderDb!: Db;
  voucherDb!: Db;
  paymentDb?: Db;
  deliveryDb?: Db;
  voucher!: ServiceProcess;
  order!: ServiceProcess;
  payment?: ServiceProcess;
  delivery?: ServiceProcess;
  relays: ServiceProcess[] = [];
  /** The proxy between the relays and the voucher service (proxies.voucher). */
  proxy?: FaultProxy;
  readonly proxies: Partial<Record<Link, FaultProxy>> = {};
  orders!: OrderClient;
  vouchers!: VoucherClient;
  /** Payment calls as the shop backend: accounts, top-ups, reads. */
  payments!: PaymentClient;
  /** Shipment reads as the shop backend (with shipping). */
  deliveries!: DeliveryClient;
  /** Carrier reports as a business with the carrier role (the manual carrier's shipments). */
  carriers!: CarrierClient;
  /** RecordShipmentEvent straight to the order service with the delivery relay's token (no proxy): for replays on purpose. */
  shipmentEvents!: ShipmentEventClient;
  readonly reconcileRuns: number[] = [];
  private ports!: { vg: number; vh: number; og: number; oh: number; pg: number; ph: number; dg: number; dh: number };
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

  get paymentServiceUrl(): string {
    return `http://127.0.0.1:${this.ports.pg}`;
  }

  /** The payment service's Connect/HTTP port (/metrics). */
  get paymentHttpUrl(): string {
    return `http://127.0.0.1:${this.ports.ph}`;
  }

  /** What the order relays dial for charges and refunds: the proxy when there is one. */
  get relayPaymentUrl(): string {
    return this.proxies.payment ? `http://127.0.0.1:${this.proxies.payment.port}` : this.paymentServiceUrl;
  }

  /** What the payment relay dials to record outcomes: the proxy when there is one. */
  get relayOrderUrl(): string {
    return this.proxies.order ? `http://127.0.0.1:${this.proxies.order.port}` : this.orderServiceUrl;
  }

  get deliveryServiceUrl(): string {
    return `http://127.0.0.1:${this.ports.dg}`;
  }

  /** The delivery service's Connect/HTTP port (/metrics). */
  get deliveryHttpUrl(): string {
    return `http://127.0.0.1:${this.ports.dh}`;
  }

  /** What the order relays dial for CreateShipment: the proxy when there is one. */
  get relayDeliveryUrl(): string {
    return this.proxies.delivery ? `http://127.0.0.1:${this.proxies.delivery.port}` : this.deliveryServiceUrl;
  }

  /** What the delivery relay dials to record shipment events: the proxy when there is one. */
  get relayShipmentEventUrl(): string {
    return this.proxies.shipmentEvents ? `http://127.0.0.1:${this.proxies.shipmentEvents.port}` : this.orderServiceUrl;
  }

  /** The database URL a service is given: through its proxy when there is one (the tests' own reads go direct). */
  serviceDbUrl(which: "order" | "voucher" | "payment" | "delivery"): string {
    const db = which === "order" ? this.orderDb : which === "voucher" ? this.voucherDb : which === "payment" ? this.paymentDb! : this.deliveryDb!;
    const proxy = this.proxies[`${which}Db`];
    if (!proxy) return db.url;
    const u = new URL(db.url);
    u.hostname = "127.0.0.1";
    u.port = String(proxy.port);
    return u.toString();
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
    const withPayment = this.opts.payment ?? true;
    [this.orderDb, this.voucherDb, this.paymentDb, this.deliveryDb] = await Promise.all([
      this.database("order"),
      this.database("voucher"),
      withPayment ? this.database("payment") : undefined,
      this.opts.shipping ? this.database("delivery") : undefined,
    ]);
    // The proxies listen first (on ports the OS picks and they keep), so no
    // service port picked below can be one of theirs.
    if (this.opts.proxy) {
      const links: Link[] = [
        "voucher",
        "order",
        "orderDb",
        "voucherDb",
        ...(this.paymentDb ? (["payment", "paymentDb"] as const) : []),
        ...(this.deliveryDb ? (["delivery", "shipmentEvents", "deliveryDb"] as const) : []),
      ];
      for (const link of links) {
        const p = new FaultProxy({ port: 0 });
        await p.start();
        this.proxies[link] = p;
      }
      this.proxy = this.proxies.voucher;
    }
    const [vg, vh, og, oh, pg, ph, dg, dh] = await Promise.all(Array.from({ length: 8 }, () => freePort()));
    this.ports = { vg: vg!, vh: vh!, og: og!, oh: oh!, pg: pg!, ph: ph!, dg: dg!, dh: dh! };
    const dbPort = (db: Db) => Number(new URL(db.url).port);
    const targets: Partial<Record<Link, number>> = {
      voucher: vg,
      order: og,
      payment: pg,
      orderDb: dbPort(this.orderDb),
      voucherDb: dbPort(this.voucherDb),
      paymentDb: this.paymentDb ? dbPort(this.paymentDb) : undefined,
      delivery: dg,
      shipmentEvents: og,
      deliveryDb: this.deliveryDb ? dbPort(this.deliveryDb) : undefined,
    };
    for (const [link, p] of Object.entries(this.proxies) as Array<[Link, FaultProxy]>) p.setTarget(targets[link]!);
    this.voucher = this.voucherProcess(this.opts.voucherEnv ?? {});
    this.order = this.orderProcess(this.opts.orderEnv ?? {});
    if (this.paymentDb) this.payment = this.paymentProcess(this.opts.paymentEnv ?? {});
    if (this.deliveryDb) this.delivery = this.deliveryProcess(this.opts.deliveryEnv ?? {});
    // The voucher, payment and delivery services first: they create their schemas, and the relay's first calls find them up.
    await Promise.all([this.voucher.start(), this.payment?.start(), this.delivery?.start()]);
    await this.order.start();
    for (let i = 0; i < (this.opts.relays ?? 0); i++) {
      this.relays.push(this.relayProcess(i, this.opts.relayEnv?.(i) ?? {}));
    }
    await Promise.all(this.relays.map((r) => r.start()));
    const o = createOrderClient({ token: allScopesToken, baseUrl: this.orderServiceUrl, defaultTimeoutMs: 3_000 });
    const v = createVoucherClient({ token: allScopesToken, baseUrl: this.voucherServiceUrl, defaultTimeoutMs: 3_000 });
    const p = createPaymentClient({ token: roleToken("shop"), baseUrl: this.paymentServiceUrl, defaultTimeoutMs: 3_000 });
    this.orders = o.client;
    this.vouchers = v.client;
    this.payments = p.client;
    this.closers.push(o.close, v.close, p.close);
    if (this.deliveryDb) {
      const d = createDeliveryClient({ token: roleToken("shop"), baseUrl: this.deliveryServiceUrl, defaultTimeoutMs: 3_000 });
      const c = createCarrierClient({ token: roleToken("carrier"), baseUrl: this.deliveryServiceUrl, defaultTimeoutMs: 3_000 });
      const e = createShipmentEventClient({ token: roleToken("delivery-relay"), baseUrl: this.orderServiceUrl, defaultTimeoutMs: 3_000 });
      this.deliveries = d.client;
      this.carriers = c.client;
      this.shipmentEvents = e.client;
      this.closers.push(d.close, c.close, e.close);
    }
    if (this.opts.reconciler ?? true) this.reconcileLoop = this.reconcileForever();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.reconcileLoop;
    this.closers.forEach((c) => c());
    await Promise.all([this.order?.kill(), this.voucher?.kill(), this.payment?.kill(), this.delivery?.kill(), ...this.relays.map((r) => r.kill())]);
    await Promise.allSettled(Object.values(this.proxies).map((p) => p.stop()));
    await Promise.allSettled([this.orderDb?.drop(), this.voucherDb?.drop(), this.paymentDb?.drop(), this.deliveryDb?.drop()]);
    await Promise.allSettled(this.ownServers.map((s) => s.stop()));
  }

  /** Stops the background reconciler (before the final checks, so it cannot hide drift). */
  async quiesce(): Promise<void> {
    this.stopping = true;
    await this.reconcileLoop;
  }

  /** Starts the background reconciler again after quiesce (a cluster that several tests share), if this cluster runs one. */
  resumeReconciler(): void {
    if (!(this.opts.reconciler ?? true) || !this.stopping) return;
    this.stopping = false;
    this.reconcileLoop = this.reconcileForever();
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

  /** Starts a fresh payment service process on the same ports, with `env` instead of the original extra env. */
  async restartPayment(env: Record<string, string> = {}): Promise<void> {
    await this.payment!.kill();
    this.payment = this.paymentProcess(env);
    await this.payment.start();
  }

  /** Starts a fresh delivery service process on the same ports, with `env` instead of the original extra env. */
  async restartDelivery(env: Record<string, string> = {}): Promise<void> {
    await this.delivery!.kill();
    this.delivery = this.deliveryProcess(env);
    await this.delivery.start();
  }

  /** One sample of the delivery service's /metrics. */
  deliveryMetric(name: string, labels: Record<string, string> = {}): Promise<number> {
    return scrapeMetric(`${this.deliveryHttpUrl}/metrics`, name, labels);
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

  /**
   * Waits until no row of any outbox is pending (voucher, charge and refund
   * rows in the order database, outcome rows in the payment database); fails
   * the test if that takes longer than timeoutMs. The two databases are read
   * one after the other, and a delivery moves the pending row from one to the
   * other (a charge's outcome row is written before the charge row is acked):
   * "drained" is two reads in a row with nothing pending and nothing
   * delivered in between. Returns the voucher outbox's counts, as before.
   */
  async drained(timeoutMs = 30_000): Promise<Record<string, number>> {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    for (;;) {
      const tally = await this.allOutboxes();
      const shape = JSON.stringify(tally.byTable);
      if (tally.pending === 0 && shape === last) return tally.byTable.voucher_outbox ?? (await this.outboxCounts());
      last = tally.pending === 0 ? shape : "";
      if (Date.now() > deadline) throw new Error(`outboxes not drained after ${timeoutMs} ms: ${shape}`);
      await sleep(150);
    }
  }

  /**
   * Rows by status of every outbox, all databases: with shipping also
   * shipment_outbox (order database) and shipment_event_outbox (delivery
   * database), and the carrier work still due counted as pending under
   * "carrier_work" (shipments the worker has yet to hand off or poll: it may
   * still write events).
   */
  async allOutboxes(): Promise<OutboxTally> {
    const tally = await paymentOutboxCounts(this.orderDb, this.paymentDb);
    if (!this.deliveryDb) return tally;
    const shipping = await shippingOutboxCounts(this.orderDb, this.deliveryDb);
    for (const [table, counts] of Object.entries(shipping.byTable)) tally.byTable[table] = counts;
    tally.pending += shipping.pending;
    tally.dead += shipping.dead;
    return tally;
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
    if (traffic && !Array.isArray(traffic) && traffic.payments.size > 0) await this.expectPayments(traffic);
    if (traffic && !Array.isArray(traffic) && (traffic.shipping?.size ?? 0) > 0) await this.expectShipping(traffic);
    const r = await checkLedger(this.ledgerOptions({ acknowledgedSent }));
    const text = formatLedger(r);
    if (process.env.FAULT_VERBOSE || !r.ok) console.log(text.replace(/^/gm, "      "));
    expect(r.ok, text).to.equal(true);
    if (this.deliveryDb) {
      // With shipping, the shipping invariants must have been judged, not skipped for want of a database.
      const shippingResults = r.results.filter((x) => /^S\d/.test(x.id));
      expect(shippingResults.map((x) => x.id), `S1–S7 ran:\n${text}`).to.include.members(["S1", "S2", "S3", "S4", "S5", "S6", "S7"]);
      expect(shippingResults.filter((x) => x.verdict === "SKIP").map((x) => `${x.id}: ${x.detail}`), text).to.deep.equal([]);
    }
  }

  /** check:ledger's options for this cluster: every database and service it has (I*, and P* and S* when it runs those services). */
  ledgerOptions(more: Partial<LedgerOptions> = {}): LedgerOptions {
    return {
      orderDatabaseUrl: this.orderDb.url,
      voucherDatabaseUrl: this.voucherDb.url,
      paymentDatabaseUrl: this.paymentDb?.url,
      deliveryDatabaseUrl: this.deliveryDb?.url,
      orderServiceUrl: this.orderServiceUrl,
      voucherServiceUrl: this.voucherServiceUrl,
      paymentServiceUrl: this.paymentDb ? this.paymentServiceUrl : undefined,
      deliveryServiceUrl: this.deliveryDb ? this.deliveryServiceUrl : undefined,
      lagTargetMs: 60_000,
      token: roleToken("reconciler"),
      ...more,
    };
  }

  /** The shipping oracle (see shipping-oracle.ts) over the traffic's shipped orders. */
  expectShipping(t: Traffic): Promise<void> {
    expect(this.deliveryDb, "shipping traffic needs the delivery service").to.not.equal(undefined);
    return expectShipping(this.orderDb, this.deliveryDb!, t);
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

  /**
   * The payment oracle, independent of the code under test and of the ledger
   * check: every paid order of the traffic ended as the test saw it, with the
   * entries that ending means (sent or kept: one debit of its total for its
   * customer and no refund; refused: no entry; cancelled after it was paid:
   * one debit and one refund; cancelled while awaiting: both or neither);
   * each customer's balance is what was topped up less the totals of the
   * orders kept charged, and equals its entries' sum; no payment outbox row
   * is left dead.
   */
  async expectPayments(t: Traffic): Promise<void> {
    expect(this.paymentDb, "paid traffic needs the payment service").to.not.equal(undefined);
    const orders = await orderPayments(this.orderDb);
    const entries = await orderEntries(this.paymentDb!);
    const problems: string[] = [];
    const kept = new Map<string, bigint>();
    for (const [id, p] of t.payments) {
      const o = orders.get(id);
      const mine = entries.get(id) ?? [];
      const debits = mine.filter((e) => e.kind === "CHARGE");
      const refunds = mine.filter((e) => e.kind === "REFUND");
      const oneDebit = debits.length === 1 && debits[0]!.amountCents === -p.totalCents && debits[0]!.customerId === p.customerId;
      const oneRefund = refunds.length === 1 && refunds[0]!.amountCents === p.totalCents;
      const shape = `${o?.status}/${o?.paymentStatus} with ${debits.length} debit(s), ${refunds.length} refund(s)`;
      if (!o) {
        problems.push(`${id}: not in the order database`);
        continue;
      }
      switch (p.end) {
        case "sent":
        case "paid":
          if (!(["SENT", "DELIVERED", ...(p.end === "paid" ? ["PAID"] : [])].includes(o.status) && o.paymentStatus === "CHARGED" && oneDebit && refunds.length === 0)) {
            problems.push(`${id} (${p.end}): ${shape}`);
          }
          kept.set(p.customerId, (kept.get(p.customerId) ?? 0n) + p.totalCents);
          break;
        case "refused":
          if (!(o.status === "PAYMENT_FAILED" && o.paymentStatus === "REFUSED" && mine.length === 0)) problems.push(`${id} (refused): ${shape}`);
          break;
        case "cancelled-paid":
          if (!(o.status === "CANCELLED" && o.paymentStatus === "REFUNDED" && oneDebit && oneRefund)) problems.push(`${id} (cancelled when paid): ${shape}`);
          break;
        case "cancelled-awaiting":
          if (!(o.status === "CANCELLED" && ((o.paymentStatus === "REFUNDED" && oneDebit && oneRefund) || (o.paymentStatus === "REFUSED" && mine.length === 0)))) {
            problems.push(`${id} (cancelled while awaiting): ${shape}`);
          }
          break;
      }
    }
    for (const [customerId, funded] of t.funding) {
      const a = await accountState(this.paymentDb!, customerId);
      const want = funded - (kept.get(customerId) ?? 0n);
      if (!a) problems.push(`${customerId}: no account`);
      else if (a.balance !== want || a.entriesSum !== a.balance) problems.push(`${customerId}: balance ${a.balance}, entries ${a.entriesSum}, want ${want} (topped up ${funded})`);
    }
    const tally = await this.allOutboxes();
    for (const table of ["charge_outbox", "refund_outbox", "payment_outbox"]) {
      if (tally.byTable[table]?.dead) problems.push(`${table}: ${tally.byTable[table]!.dead} dead rows`);
    }
    expect(problems, `${problems.length} problems over ${t.payments.size} paid orders: ${problems.slice(0, 6).join("; ")}`).to.deep.equal([]);
  }

  private async database(which: "order" | "voucher" | "payment" | "delivery"): Promise<Db> {
    const dedicated = this.opts.dedicatedDatabases;
    if (!dedicated || (Array.isArray(dedicated) && !dedicated.includes(which))) {
      // The payment database lives on the voucher database's server, the delivery database on the order
      // database's: two services per server, each its own database.
      const db: TestDatabase = await freshDatabase(which === "payment" ? "voucher" : which === "delivery" ? "order" : which);
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
        VOUCHER_DATABASE_URL: this.serviceDbUrl("voucher"),
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
        ORDER_DATABASE_URL: this.serviceDbUrl("order"),
        ORDER_GRPC_PORT: String(this.ports.og),
        ORDER_HTTP_PORT: String(this.ports.oh),
        VOUCHER_SERVICE_URL: this.relayVoucherUrl,
        PAYMENT_SERVICE_URL: this.relayPaymentUrl,
        RELAY_ENABLED: String(this.opts.inProcessRelay ?? true),
        ...FAST_RELAY,
        ...this.shippingEnv(),
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
        ORDER_DATABASE_URL: this.serviceDbUrl("order"),
        VOUCHER_SERVICE_URL: this.relayVoucherUrl,
        PAYMENT_SERVICE_URL: this.relayPaymentUrl,
        RELAY_ID: `relay-${i}`,
        ...FAST_RELAY,
        ...this.shippingEnv(),
        ...env,
      },
    });
  }

  private paymentProcess(env: Record<string, string>): ServiceProcess {
    return new ServiceProcess({
      name: `faults-${this.opts.name}-payment-${this.restarts++}`,
      entry: path.join(root, "payment-service/src/main.ts"),
      env: {
        PAYMENT_DATABASE_URL: this.serviceDbUrl("payment"),
        PAYMENT_GRPC_PORT: String(this.ports.pg),
        PAYMENT_HTTP_PORT: String(this.ports.ph),
        ORDER_SERVICE_URL: this.relayOrderUrl,
        PAYMENT_RELAY_TOKEN: roleToken("payment-relay"),
        ...FAST_PAYMENT_RELAY,
        ...env,
      },
      readyUrl: `http://127.0.0.1:${this.ports.ph}/readyz`,
    });
  }

  /** The order service's and relays' shipping settings: none without shipping (their defaults, as before). */
  private shippingEnv(): Record<string, string> {
    return this.deliveryDb ? { SHIP_PAID_ORDERS: "true", DELIVERY_SERVICE_URL: this.relayDeliveryUrl } : {};
  }

  private deliveryProcess(env: Record<string, string>): ServiceProcess {
    return new ServiceProcess({
      name: `faults-${this.opts.name}-delivery-${this.restarts++}`,
      entry: this.opts.slowCarrier ? path.join(import.meta.dirname, "delivery-with-slow-carrier.ts") : path.join(root, "delivery-service/src/main.ts"),
      env: {
        DELIVERY_DATABASE_URL: this.serviceDbUrl("delivery"),
        DELIVERY_GRPC_PORT: String(this.ports.dg),
        DELIVERY_HTTP_PORT: String(this.ports.dh),
        ORDER_SERVICE_URL: this.relayShipmentEventUrl,
        DELIVERY_RELAY_TOKEN: roleToken("delivery-relay"),
        ...FAST_DELIVERY_RELAY,
        ...FAST_CARRIERS,
        ...env,
      },
      readyUrl: `http://127.0.0.1:${this.ports.dh}/readyz`,
    });
  }

  /** The reconciler repairing for real, concurrently with everything else; its exit codes are kept. */
  private async reconcileForever(): Promise<void> {
    while (!this.stopping) {
      const run = await runReconciler({
        orderServiceUrl: this.orderServiceUrl,
        voucherServiceUrl: this.voucherServiceUrl,
        paymentServiceUrl: this.paymentDb ? this.paymentServiceUrl : undefined,
        dryRun: false,
        graceMs: 3_000,
        timeoutMs: 30_000,
        token: roleToken("reconciler"),
        env: this.deliveryDb ? { RECONCILE_SHIPPING: "true", DELIVERY_SERVICE_URL: this.deliveryServiceUrl } : undefined,
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
