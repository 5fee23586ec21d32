import path from "node:path";
import cron from "node-cron";
import { readCallerToken, type TokenSource } from "@shop/platform/auth";
import { envReader } from "@shop/platform/config";
import { checkClientTlsUrls, readClientTls, type ClientTls } from "@shop/platform/tls";

export interface ReconcilerConfig {
  /** gRPC address of the order service. Default http://127.0.0.1:50051 (the order service's default port). */
  orderServiceUrl: string;
  /** gRPC address of the voucher service. Default http://127.0.0.1:50052. */
  voucherServiceUrl: string;
  /**
   * RECONCILE_PAYMENTS: also compare every order's payment with the payment
   * service's decision and repair payment drift. Default false, so a shop
   * without the payment service keeps reconciling vouchers alone.
   */
  payments?: boolean;
  /** PAYMENT_SERVICE_URL: gRPC address of the payment service (read with RECONCILE_PAYMENTS). Default http://127.0.0.1:50053. */
  paymentServiceUrl?: string;
  /**
   * RECONCILE_MAX_PAYMENT_REPAIRS: the most orders one run may repair the
   * payment of (an outcome delivered, a charge or refund request requeued).
   * Default 10, like the void cap: past it the run stops repairing payments,
   * reports it and exits 2. 0: never repair a payment.
   */
  maxPaymentRepairs?: number;
  /**
   * RECONCILE_SHIPPING: also compare every order in shipping with its
   * shipment at the delivery service and repair shipping drift. Default
   * false, so a shop without the delivery service reconciles as before.
   */
  shipping?: boolean;
  /** DELIVERY_SERVICE_URL: gRPC address of the delivery service (read with RECONCILE_SHIPPING). Default http://127.0.0.1:50054. */
  deliveryServiceUrl?: string;
  /**
   * RECONCILE_MAX_SHIPPING_REPAIRS: the most orders one run may repair the
   * shipping of (shipment events delivered, a shipment request requeued).
   * Default 10, like the other caps: past it the run stops repairing
   * shipping, reports it and exits 2. 0: never repair shipping.
   */
  maxShippingRepairs?: number;
  /**
   * RECONCILE_TOKEN or RECONCILE_TOKEN_FILE, required: the reconciler's bearer
   * token (role reconciler), sent to both services. Default: the file
   * $LOCAL_DATA_DIR/auth/reconciler.token (default .data) when it exists (npm start writes it).
   */
  token: TokenSource;
  /**
   * TLS_CA_FILE, TLS_CLIENT_CERT_FILE + TLS_CLIENT_KEY_FILE: how the calls to
   * https:// service URLs are made (the same for both). Optional so configs
   * built in code may leave it out: system roots, no client certificate.
   */
  tls?: ClientTls;
  /** When the scheduler runs, a node-cron expression (5 or 6 fields). Default "30 2 * * *": nightly, after the day's traffic. */
  cron: string;
  /** IANA timezone the cron expression is read in. Default UTC, so daylight saving never skips or doubles a run. */
  timezone: string;
  /**
   * Orders sent (and vouchers issued) more recently than this are left for the
   * next run. Default 600000 (10 minutes): far longer than the relay needs, so
   * the reconciler never races a delivery that is simply still on its way.
   */
  graceMs: number;
  /**
   * How far the default window reaches back before the end of the last
   * successful run. Default 3600000 (1 hour): rows whose timestamps were
   * written late (clock skew, a long transaction) are still looked at.
   */
  overlapMs: number;
  /**
   * How far back a run looks when there is no state file (a first run, or the
   * file was lost): from now − grace − this. Default 259200000 (3 days): more
   * than a weekend without runs, far less than all of history. --since or
   * --full reach further, explicitly.
   */
  initialLookbackMs: number;
  /**
   * The most vouchers one run may void (the one repair that takes something
   * from a customer). Default 10: a night's real drift is a handful, and a
   * wrong rule or a bug would otherwise void everything in sight before anyone
   * looked. Past it the run stops voiding, reports it and exits 2. 0: never void.
   */
  maxVoids: number;
  /** Where the end of the last successful window is kept. Default $LOCAL_DATA_DIR/reconciler/state.json (LOCAL_DATA_DIR: .data, as npm start). */
  stateFile: string;
  /** Where each run's JSON report is written. Default $LOCAL_DATA_DIR/reconciler/reports. */
  reportDir: string;
  /** Deadline of each call to a service. Default 30000: a page of 5000 rows is one call. */
  callTimeoutMs: number;
  /** Rows per listing page and per batch lookup. Default 5000, the most the APIs accept. */
  pageSize: number;
  /** Repair calls (RequeueVoucher, VoidVoucher) in flight at once. Default 16. */
  repairConcurrency: number;
  /**
   * Port of the scheduler's GET /metrics. Default 9464 (the usual port of a
   * Prometheus exporter with no server of its own); 0 serves none. A --once
   * run never serves metrics: it is over before a scrape would come.
   */
  metricsPort: number;
  /** Address the metrics port listens on. Default 127.0.0.1; 0.0.0.0 in containers. */
  metricsHost: string;
}

/** True when the runtime knows the IANA timezone name. */
export function isValidTimezone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** Reads and validates the reconciler's settings; throws a ConfigError naming every bad one. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): ReconcilerConfig {
  // npm start's data folder, where it writes the reconciler's token and keeps its state.
  const dataDir = path.resolve(cwd, env.LOCAL_DATA_DIR || ".data");
  const r = envReader(env);
  const url = (name: string, def: string): string => {
    const v = r.string(name, def);
    try {
      const u = new URL(v);
      if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme");
    } catch {
      r.problem(`${name}=${JSON.stringify(v)} must be an http:// or https:// URL, like ${def}`);
    }
    return v;
  };
  const config: ReconcilerConfig = {
    orderServiceUrl: url("ORDER_SERVICE_URL", "http://127.0.0.1:50051"),
    voucherServiceUrl: url("VOUCHER_SERVICE_URL", "http://127.0.0.1:50052"),
    payments: r.bool("RECONCILE_PAYMENTS", false),
    paymentServiceUrl: url("PAYMENT_SERVICE_URL", "http://127.0.0.1:50053"),
    maxPaymentRepairs: r.int("RECONCILE_MAX_PAYMENT_REPAIRS", 10, { min: 0, max: 1_000_000 }),
    shipping: r.bool("RECONCILE_SHIPPING", false),
    deliveryServiceUrl: url("DELIVERY_SERVICE_URL", "http://127.0.0.1:50054"),
    maxShippingRepairs: r.int("RECONCILE_MAX_SHIPPING_REPAIRS", 10, { min: 0, max: 1_000_000 }),
    // Falls back on the token npm start writes, so a one-off run against the local stack needs no setting.
    token: readCallerToken(r, "RECONCILE_TOKEN", path.join(dataDir, "auth/reconciler.token")),
    tls: readClientTls(r),
    cron: r.string("RECONCILE_CRON", "30 2 * * *"),
    timezone: r.string("RECONCILE_TIMEZONE", "UTC"),
    graceMs: r.int("RECONCILE_GRACE_MS", 600_000, { min: 0, max: 7 * 24 * 3_600_000 }),
    overlapMs: r.int("RECONCILE_OVERLAP_MS", 3_600_000, { min: 0, max: 30 * 24 * 3_600_000 }),
    initialLookbackMs: r.int("RECONCILE_INITIAL_LOOKBACK_MS", 3 * 24 * 3_600_000, { min: 0, max: 366 * 24 * 3_600_000 }),
    maxVoids: r.int("RECONCILE_MAX_VOIDS", 10, { min: 0, max: 1_000_000 }),
    stateFile: path.resolve(cwd, r.string("RECONCILE_STATE_FILE", path.join(dataDir, "reconciler/state.json"))),
    reportDir: path.resolve(cwd, r.string("RECONCILE_REPORT_DIR", path.join(dataDir, "reconciler/reports"))),
    callTimeoutMs: r.int("RECONCILE_CALL_TIMEOUT_MS", 30_000, { min: 100, max: 600_000 }),
    pageSize: r.int("RECONCILE_PAGE_SIZE", 5000, { min: 1, max: 5000 }),
    repairConcurrency: r.int("RECONCILE_REPAIR_CONCURRENCY", 16, { min: 1, max: 256 }),
    metricsPort: r.int("RECONCILE_METRICS_PORT", 9464, { min: 0, max: 65535 }),
    metricsHost: r.string("RECONCILE_METRICS_HOST", "127.0.0.1"),
  };
  checkClientTlsUrls(r, {
    ORDER_SERVICE_URL: config.orderServiceUrl,
    VOUCHER_SERVICE_URL: config.voucherServiceUrl,
    ...(config.payments ? { PAYMENT_SERVICE_URL: config.paymentServiceUrl! } : {}),
    ...(config.shipping ? { DELIVERY_SERVICE_URL: config.deliveryServiceUrl! } : {}),
  });
  if (!cron.validate(config.cron)) {
    r.problem(`RECONCILE_CRON=${JSON.stringify(config.cron)} is not a valid cron expression (for example "30 2 * * *")`);
  }
  if (!isValidTimezone(config.timezone)) {
    r.problem(`RECONCILE_TIMEZONE=${JSON.stringify(config.timezone)} is not a known IANA timezone (for example "UTC", "Europe/Berlin")`);
  }
  r.finish();
  return config;
}
