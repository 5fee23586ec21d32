/**
 * `npm start`: the whole system on this machine, in one terminal.
 *
 * Without database URLs it runs four private MariaDB servers with their data
 * in .data/ (so orders, vouchers, payments and shipments survive a restart),
 * then the voucher service, the payment service (with the relay that reports
 * charge and refund outcomes to the order service), the delivery service (with
 * its carrier worker on the delayed carrier, and the relay that reports
 * shipment events to the order service) and the order service (with its relay
 * for vouchers, charges, refunds and shipment requests; paid orders are
 * shipped) as child processes, their output prefixed with their name; then,
 * when nginx is installed, the API gateway in front of them (TLS with a local
 * CA, one port for gRPC and one for Connect JSON). Ctrl-C stops the gateway
 * and the services gracefully, then the databases; a second Ctrl-C forces.
 *
 * Every port it will use is checked before anything starts, and "Ready." is
 * printed only once every process, the reconciler's scheduler included,
 * listens; then <data>/env holds shell variables for the README's commands.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import path from "node:path";
import { createInterface } from "node:readline";
import { jwksJson, newSigningKey, signingKeyFromJwk, signingKeyToJwk, tokenForRole, type Role } from "@shop/platform/auth";
import { MariaDbServer } from "@shop/testkit/mariadb";
import { ConfigError } from "@shop/platform/config";
import { loadGatewaySettings, type GatewaySettings } from "@shop/gateway/config";
import { localCertificates } from "@shop/gateway/local-tls";
import { gatewayUnavailable, startGateway, type RunningGateway } from "@shop/gateway/nginx";

const root = path.resolve(import.meta.dirname, "..");
/** Where the local databases, keys, tokens and reconciler state live: LOCAL_DATA_DIR, default .data in the project. */
const dataDir = process.env.LOCAL_DATA_DIR ? path.resolve(process.env.LOCAL_DATA_DIR) : path.join(root, ".data");
/** How the banner names a file under dataDir: relative to the project when it is inside it. */
const shown = (file: string) => (file.startsWith(root + path.sep) ? path.relative(root, file) : file);
const require = createRequire(import.meta.url);

const useColour = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: number, text: string) => (useColour ? `\x1b[${code}m${text}\x1b[0m` : text);
const bold = (t: string) => paint(1, t);
const dim = (t: string) => paint(2, t);

function say(message: string): void {
  process.stdout.write(`${paint(35, "start     │")} ${message}\n`);
}

function fail(message: string): never {
  process.stderr.write(`${paint(31, "start     │")} ${message}\n`);
  process.exit(1);
}

function intSetting(name: string, fallback: number, min = 1): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > 65535) fail(`${name}=${raw} is not a port number (${min}-65535)`);
  return n;
}

/** /readyz must be polled on an address we can reach; 0.0.0.0 and :: mean "all interfaces", so use loopback. */
function reachableHost(host: string): string {
  return host === "0.0.0.0" || host === "::" || host === "" ? "127.0.0.1" : host;
}

const voucherHost = process.env.VOUCHER_HOST || "127.0.0.1";
const voucherGrpcPort = intSetting("VOUCHER_GRPC_PORT", 50052);
const voucherHttpPort = intSetting("VOUCHER_HTTP_PORT", 8082);
const orderHost = process.env.ORDER_HOST || "127.0.0.1";
const orderGrpcPort = intSetting("ORDER_GRPC_PORT", 50051);
const orderHttpPort = intSetting("ORDER_HTTP_PORT", 8081);
const paymentHost = process.env.PAYMENT_HOST || "127.0.0.1";
const paymentGrpcPort = intSetting("PAYMENT_GRPC_PORT", 50053);
const paymentHttpPort = intSetting("PAYMENT_HTTP_PORT", 8083);
const deliveryHost = process.env.DELIVERY_HOST || "127.0.0.1";
const deliveryGrpcPort = intSetting("DELIVERY_GRPC_PORT", 50054);
const deliveryHttpPort = intSetting("DELIVERY_HTTP_PORT", 8084);
/** A duration in milliseconds from the environment, else the fallback. */
function msSetting(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) fail(`${name}=${raw} is not a duration in milliseconds (0 or more)`);
  return n;
}
/**
 * The delayed carrier's steps, each measured from the shipment's creation: slower than the delivery service's
 * defaults (1 s, 2 s, 4 s) so that a paid order can be watched going SENT and then DELIVERED by hand.
 */
/** Shipments without a carrier of their own (every paid order's, unless CreateOrder names one) go to this one. */
const defaultCarrier = process.env.DEFAULT_CARRIER || "delayed";
const delayedCarrier = {
  confirmMs: msSetting("DELAYED_CARRIER_CONFIRM_MS", 1000),
  shipMs: msSetting("DELAYED_CARRIER_SHIP_MS", 3000),
  deliverMs: msSetting("DELAYED_CARRIER_DELIVER_MS", 6000),
};
// The reconciler's scheduler reads these itself (reconciler/src/config.ts); read here with the same defaults
// so the port is checked before anything starts and the scheduler is awaited on it.
const reconcilerMetricsPort = intSetting("RECONCILE_METRICS_PORT", 9464, 0);
const reconcilerMetricsHost = process.env.RECONCILE_METRICS_HOST || "127.0.0.1";
/**
 * The API gateway: on unless GATEWAY=false, when nginx and its njs module are installed (said so, and skipped,
 * when they are not). Its settings are the GATEWAY_* ones (gateway/src/config.ts); TLS with the local CA unless
 * GATEWAY_TLS=false or GATEWAY_TLS_CERT_FILE/GATEWAY_TLS_KEY_FILE name certificates of your own.
 */
function gatewayPlan(): { settings: GatewaySettings; tls: boolean } | { skipped: string } {
  const raw = (process.env.GATEWAY ?? "").trim().toLowerCase();
  if (!["", "true", "false"].includes(raw)) fail(`GATEWAY=${process.env.GATEWAY} is not true or false`);
  if (raw === "false") return { skipped: "GATEWAY=false" };
  let settings: GatewaySettings;
  try {
    settings = loadGatewaySettings(process.env);
  } catch (err) {
    fail(err instanceof ConfigError ? err.message : String(err));
  }
  const tlsRaw = (process.env.GATEWAY_TLS ?? "").trim().toLowerCase();
  if (!["", "true", "false"].includes(tlsRaw)) fail(`GATEWAY_TLS=${process.env.GATEWAY_TLS} is not true or false`);
  const missing = gatewayUnavailable();
  if (missing) {
    if (raw === "true") fail(`GATEWAY=true but ${missing}`);
    return { skipped: missing };
  }
  return { settings, tls: tlsRaw !== "false" };
}
const gatewayPlanned = gatewayPlan();
const gatewayDir = path.join(dataDir, "gateway");
let gateway: RunningGateway | undefined;
/** The services' own database settings: all four given, or none (then private local servers). */
const DATABASE_URL_SETTINGS = ["ORDER_DATABASE_URL", "VOUCHER_DATABASE_URL", "PAYMENT_DATABASE_URL", "DELIVERY_DATABASE_URL"] as const;
const useLocalDatabases = DATABASE_URL_SETTINGS.every((name) => !process.env[name]);
const orderDbPort = intSetting("LOCAL_ORDER_DB_PORT", 3316);
const voucherDbPort = intSetting("LOCAL_VOUCHER_DB_PORT", 3317);
const paymentDbPort = intSetting("LOCAL_PAYMENT_DB_PORT", 3318);
const deliveryDbPort = intSetting("LOCAL_DELIVERY_DB_PORT", 3319);

// ---------------------------------------------------------------------------
// Databases

const databases: MariaDbServer[] = [];

/** Whether a server could listen on host:port now (binding is the only sure test; connecting misses some listeners). */
async function portIsFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once("error", () => resolve(false));
    probe.listen(port, host, () => probe.close(() => resolve(true)));
  });
}

interface PortUse {
  setting: string;
  port: number;
  host: string;
  what: string;
}

/** Every port this script will have something listen on, with the setting that moves it. */
function plannedPorts(): PortUse[] {
  const uses: PortUse[] = [];
  if (useLocalDatabases) {
    uses.push(
      { setting: "LOCAL_ORDER_DB_PORT", port: orderDbPort, host: "127.0.0.1", what: "the order database" },
      { setting: "LOCAL_VOUCHER_DB_PORT", port: voucherDbPort, host: "127.0.0.1", what: "the voucher database" },
      { setting: "LOCAL_PAYMENT_DB_PORT", port: paymentDbPort, host: "127.0.0.1", what: "the payment database" },
      { setting: "LOCAL_DELIVERY_DB_PORT", port: deliveryDbPort, host: "127.0.0.1", what: "the delivery database" },
    );
  }
  uses.push(
    { setting: "VOUCHER_GRPC_PORT", port: voucherGrpcPort, host: voucherHost, what: "the voucher service's gRPC" },
    { setting: "VOUCHER_HTTP_PORT", port: voucherHttpPort, host: voucherHost, what: "the voucher service's HTTP" },
    { setting: "PAYMENT_GRPC_PORT", port: paymentGrpcPort, host: paymentHost, what: "the payment service's gRPC" },
    { setting: "PAYMENT_HTTP_PORT", port: paymentHttpPort, host: paymentHost, what: "the payment service's HTTP" },
    { setting: "DELIVERY_GRPC_PORT", port: deliveryGrpcPort, host: deliveryHost, what: "the delivery service's gRPC" },
    { setting: "DELIVERY_HTTP_PORT", port: deliveryHttpPort, host: deliveryHost, what: "the delivery service's HTTP" },
    { setting: "ORDER_GRPC_PORT", port: orderGrpcPort, host: orderHost, what: "the order service's gRPC" },
    { setting: "ORDER_HTTP_PORT", port: orderHttpPort, host: orderHost, what: "the order service's HTTP" },
  );
  if ("settings" in gatewayPlanned) {
    const g = gatewayPlanned.settings;
    uses.push(
      { setting: "GATEWAY_GRPC_PORT", port: g.grpcPort, host: g.host, what: "the gateway's gRPC" },
      { setting: "GATEWAY_HTTP_PORT", port: g.httpPort, host: g.host, what: "the gateway's Connect JSON" },
    );
  }
  if (reconcilerMetricsPort !== 0) {
    uses.push({ setting: "RECONCILE_METRICS_PORT", port: reconcilerMetricsPort, host: reconcilerMetricsHost, what: "the reconciler's metrics" });
  }
  return uses;
}

/**
 * Checks, before anything is started, that no earlier run's database is still
 * up and that every port is free and used once: a taken port found only when
 * the last process binds it would stop everything after "Ready.". A port taken
 * in the moment between this check and the bind still stops the start, before
 * "Ready." too, as main() waits for every process to listen.
 */
async function preflight(): Promise<void> {
  if (useLocalDatabases) {
    for (const folder of ["order-db", "voucher-db", "payment-db", "delivery-db"]) {
      const dir = path.join(dataDir, folder);
      const stale = leftoverServer(dir);
      if (stale) fail(`a MariaDB server from an earlier run still uses ${dir} (pid ${stale}); stop it with: kill ${stale}`);
    }
  }
  const uses = plannedPorts();
  const problems: string[] = [];
  for (const [i, use] of uses.entries()) {
    const twin = uses.slice(0, i).find((u) => u.port === use.port);
    if (twin) problems.push(`${use.setting} and ${twin.setting} are both ${use.port}; set one of them to another port`);
  }
  for (const use of uses) {
    if (problems.some((p) => p.startsWith(`${use.setting} and `))) continue;
    if (!(await portIsFree(use.host, use.port))) {
      const off = use.setting === "RECONCILE_METRICS_PORT" ? " (0 for none)" : "";
      problems.push(`port ${use.port} for ${use.what} is in use on ${use.host}; free it or set ${use.setting} to another port${off}`);
    }
  }
  if (problems.length) fail([...problems, "nothing was started"].join(`\n${" ".repeat(12)}`));
}

/** A pid file left by a server that is still running means an earlier `npm start` did not stop (it was killed). */
function leftoverServer(dir: string): number | undefined {
  const pidFile = path.join(dir, "mysqld.pid");
  if (!existsSync(pidFile)) return undefined;
  const pid = Number(readFileSync(pidFile, "utf8").trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
  } catch {
    return undefined;
  }
  // After a kill -9 the pid file stays behind and its pid may since belong to another program.
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir) ? pid : undefined;
  } catch {
    return pid; // no /proc: trust the pid file
  }
}

async function startLocalDatabase(label: string, folder: string, port: number, database: string, user: string) {
  const dir = path.join(dataDir, folder);
  const server = new MariaDbServer({ dir, port });
  databases.push(server);
  await server.start();
  // Idempotent: the second start finds the database and the user already there.
  const url = await server.createDatabase(database, user, `${user}-local`);
  say(`${label} database ready at 127.0.0.1:${port} ${dim(`(data in ${shown(dir)})`)}`);
  return url;
}

async function stopDatabases(): Promise<void> {
  await Promise.all(databases.map((db) => db.stop().catch(() => undefined)));
}

function mariadbInstalled(): boolean {
  try {
    MariaDbServer.binary();
    return true;
  } catch {
    return false;
  }
}

interface DatabaseUrls {
  orderUrl: string;
  voucherUrl: string;
  paymentUrl: string;
  deliveryUrl: string;
}

/** "A", "A and B", "A, B and C". */
function listed(names: readonly string[]): string {
  return names.length <= 1 ? names.join("") : `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
}

async function resolveDatabaseUrls(): Promise<DatabaseUrls> {
  const orderUrl = process.env.ORDER_DATABASE_URL;
  const voucherUrl = process.env.VOUCHER_DATABASE_URL;
  const paymentUrl = process.env.PAYMENT_DATABASE_URL;
  const deliveryUrl = process.env.DELIVERY_DATABASE_URL;
  if (orderUrl && voucherUrl && paymentUrl && deliveryUrl) {
    say(`using ${listed(DATABASE_URL_SETTINGS)} from the environment`);
    return { orderUrl, voucherUrl, paymentUrl, deliveryUrl };
  }
  if (orderUrl || voucherUrl || paymentUrl || deliveryUrl) {
    const missing = DATABASE_URL_SETTINGS.filter((name) => !process.env[name]);
    fail(
      `not every database URL is set; set ${listed(missing)} too, or unset all four to run four local MariaDB servers in .data/`,
    );
  }
  if (!mariadbInstalled()) {
    fail(
      "MariaDB server binaries (mariadbd) are not installed. Install them with\n" +
        "    sudo apt-get update && sudo apt-get install -y mariadb-server\n" +
        `  or point ${listed(DATABASE_URL_SETTINGS)} at existing servers.`,
    );
  }
  // allSettled: if one fails, the others have finished starting before shutdown stops them.
  const [o, v, p, d] = await Promise.allSettled([
    startLocalDatabase("order", "order-db", orderDbPort, "orders", "orders"),
    startLocalDatabase("voucher", "voucher-db", voucherDbPort, "vouchers", "vouchers"),
    startLocalDatabase("payment", "payment-db", paymentDbPort, "payments", "payments"),
    startLocalDatabase("delivery", "delivery-db", deliveryDbPort, "deliveries", "deliveries"),
  ]);
  for (const r of [o, v, p, d]) if (r.status === "rejected") throw r.reason;
  return {
    orderUrl: (o as PromiseFulfilledResult<string>).value,
    voucherUrl: (v as PromiseFulfilledResult<string>).value,
    paymentUrl: (p as PromiseFulfilledResult<string>).value,
    deliveryUrl: (d as PromiseFulfilledResult<string>).value,
  };
}

// ---------------------------------------------------------------------------
// Keys and tokens

const AUTH_DIR = path.join(dataDir, "auth");
const LOCAL_CUSTOMER = "alice";
const TOKEN_TTL_SECONDS = 7 * 86_400;

interface LocalAuth {
  /** Settings for the services. */
  env: Record<string, string>;
  /** Where each role's token was written, by role. */
  tokenFiles: Array<[label: string, file: string]>;
}

/**
 * The local stack's signing key (made once, kept in .data/auth), its public
 * half as the services' JWK set (jwks.json), and a fresh token for every
 * role, each in its own file and addressed to the services its role calls;
 * the services get the JWK set and the token files of the order service's
 * relay, the payment service's relay, the delivery service's relay and the
 * reconciler (the carrier's token is for whoever drives the "manual"
 * carrier's shipments). Unless AUTH_JWKS_FILE, AUTH_JWKS or AUTH_PUBLIC_KEYS
 * is set: then the caller's own keys and tokens (RELAY_TOKEN,
 * PAYMENT_RELAY_TOKEN, DELIVERY_RELAY_TOKEN, RECONCILE_TOKEN or their _FILE
 * forms) pass through untouched.
 */
async function localAuth(): Promise<LocalAuth | undefined> {
  const own = ["AUTH_JWKS_FILE", "AUTH_JWKS", "AUTH_PUBLIC_KEYS"].find((name) => process.env[name]);
  if (own) {
    say(`using ${own} and the relays' and reconciler's tokens from the environment`);
    return undefined;
  }
  mkdirSync(AUTH_DIR, { recursive: true, mode: 0o700 });
  const keyFile = path.join(AUTH_DIR, "signing-key.json");
  let key;
  if (existsSync(keyFile)) {
    key = signingKeyFromJwk(readFileSync(keyFile, "utf8"));
  } else {
    key = newSigningKey("local");
    writeFileSync(keyFile, signingKeyToJwk(key), { mode: 0o600 });
  }
  const roles: Array<[label: string, role: Role, customerId?: string]> = [
    ["shop", "shop"],
    ["relay", "relay"],
    ["payment-relay", "payment-relay"],
    ["delivery-relay", "delivery-relay"],
    ["carrier", "carrier"],
    ["reconciler", "reconciler"],
    ["admin", "admin"],
    [`customer-${LOCAL_CUSTOMER}`, "customer", LOCAL_CUSTOMER],
  ];
  const jwksFile = path.join(AUTH_DIR, "jwks.json");
  writeFileSync(jwksFile, jwksJson([key.publicJwk]));
  const tokenFiles: Array<[string, string]> = [];
  for (const [label, role, customerId] of roles) {
    const file = path.join(AUTH_DIR, `${label}.token`);
    writeFileSync(file, (await tokenForRole(key, role, { ttlSeconds: TOKEN_TTL_SECONDS, customerId })) + "\n", { mode: 0o600 });
    tokenFiles.push([label, file]);
  }
  say(`signing key ${key.kid} in ${shown(AUTH_DIR)}; tokens for each role written there ${dim("(valid 7 days, renewed at every start)")}`);
  return {
    env: {
      AUTH_JWKS_FILE: jwksFile,
      RELAY_TOKEN_FILE: path.join(AUTH_DIR, "relay.token"),
      PAYMENT_RELAY_TOKEN_FILE: path.join(AUTH_DIR, "payment-relay.token"),
      DELIVERY_RELAY_TOKEN_FILE: path.join(AUTH_DIR, "delivery-relay.token"),
      RECONCILE_TOKEN_FILE: path.join(AUTH_DIR, "reconciler.token"),
    },
    tokenFiles,
  };
}

// ---------------------------------------------------------------------------
// Services

interface Service {
  name: string;
  colour: number;
  entry: string;
  env: Record<string, string>;
  /** Polled until it answers 200; none for a process without an HTTP port. */
  readyUrl?: string;
  child?: ChildProcess;
  exited?: Promise<void>;
}

let stopping = false;

function pipeLines(stream: NodeJS.ReadableStream, prefix: string, out: NodeJS.WriteStream): void {
  createInterface({ input: stream, crlfDelay: Infinity }).on("line", (line) => out.write(`${prefix} ${line}\n`));
}

function spawnService(service: Service): void {
  const prefix = paint(service.colour, `${service.name.padEnd(10)}│`);
  const child = spawn(process.execPath, ["--import", require.resolve("tsx"), service.entry], {
    cwd: root,
    env: {
      ...process.env,
      LOG_FORMAT: process.env.LOG_FORMAT ?? "pretty",
      // The output goes through a pipe; keep pino-pretty's colours when we are on a terminal.
      ...(useColour && !process.env.FORCE_COLOR ? { FORCE_COLOR: "1" } : {}),
      ...service.env,
    },
    stdio: ["ignore", "pipe", "pipe"],
    // Its own process group: a Ctrl-C in the terminal reaches only this script,
    // which then stops the services in order (order service first, as it calls
    // the voucher service) instead of all of them at once.
    detached: true,
  });
  service.child = child;
  pipeLines(child.stdout!, prefix, process.stdout);
  pipeLines(child.stderr!, prefix, process.stderr);
  service.exited = new Promise((resolve) => {
    child.once("exit", (code, signal) => {
      resolve();
      if (stopping) return;
      say(paint(31, `${service.name} exited unexpectedly (${signal ?? `code ${code}`}); stopping everything`));
      void shutdown(1);
    });
  });
}

async function waitReady(service: Service, timeoutMs = 60_000): Promise<void> {
  if (!service.readyUrl) return;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (stopping) throw new Error("stopped while starting");
    try {
      const res = await fetch(service.readyUrl!, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${service.name} not ready after ${timeoutMs / 1000} s (${service.readyUrl})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** SIGTERM, then SIGKILL if it has not exited after graceMs (the services themselves give up after 20 s). */
async function stopService(service: Service, graceMs = 25_000): Promise<void> {
  const child = service.child;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await service.exited;
  clearTimeout(timer);
}

function killEverything(): void {
  gateway?.process.kill("SIGKILL");
  for (const s of services) if (s.child?.exitCode === null && s.child.signalCode === null) s.child.kill("SIGKILL");
  // Private MariaDB servers are killed with SIGKILL when this process exits (see MariaDbServer); InnoDB recovers.
}

const services: Service[] = [];
let shuttingDown: Promise<void> | undefined;

function shutdown(code: number): Promise<void> {
  shuttingDown ??= (async () => {
    stopping = true;
    if (gateway) {
      say("stopping the gateway…");
      await gateway.stop().catch(() => undefined);
    }
    say("stopping the services…");
    for (const s of [...services].reverse()) await stopService(s);
    if (databases.length) say("stopping the databases…");
    await stopDatabases();
    say(code === 0 ? "stopped" : "stopped after an error");
    process.exit(code);
  })();
  return shuttingDown;
}

// npm and tsx pass on the signal that the terminal already delivered to the
// whole process group, so one Ctrl-C can arrive here two or three times within
// milliseconds. Only a signal well after the first counts as a second Ctrl-C.
let firstSignalAt = 0;
function onSignal(signal: NodeJS.Signals): void {
  const now = Date.now();
  if (!firstSignalAt) {
    firstSignalAt = now;
    say(`${signal}: shutting down (press Ctrl-C again to force)`);
    void shutdown(0);
    return;
  }
  if (now - firstSignalAt < 1000) return;
  say(paint(31, `${signal} again: killing everything`));
  killEverything();
  process.exit(1);
}
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
// The services run in their own process groups, so a closed terminal would not reach them.
process.on("SIGHUP", onSignal);
process.on("exit", killEverything);

/**
 * `kill <pid of npm>` reaches npm's shell, which dies without passing the
 * signal on, and would leave this script and everything it started running
 * as orphans. So watch the chain of processes that started us (tsx, its
 * shell, npm) and stop as on SIGTERM when one of them is gone.
 */
function watchAncestors(): void {
  const ancestors: number[] = [];
  let pid = process.ppid;
  for (let i = 0; i < 3 && pid > 1; i++) {
    ancestors.push(pid);
    try {
      // /proc/<pid>/stat: "pid (comm) state ppid …"; comm may contain spaces, so split after the last ")".
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      pid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    } catch {
      break; // no /proc (not Linux): watch the direct parent only
    }
  }
  const alive = (p: number) => {
    try {
      process.kill(p, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === "EPERM";
    }
  };
  setInterval(() => {
    if (firstSignalAt || ancestors.every(alive)) return;
    firstSignalAt = Date.now();
    say("the process that started this script is gone; shutting down");
    void shutdown(0);
  }, 1000).unref();
}
watchAncestors();

// ---------------------------------------------------------------------------

function tokenLines(auth: LocalAuth | undefined): string[] {
  if (!auth) return [];
  return [
    `  Tokens (send as authorization: Bearer <token>; also in ${shown(AUTH_DIR)}/<role>.token):`,
    ...auth.tokenFiles.map(([label, file]) => `    ${label.padEnd(14)} ${dim(readFileSync(file, "utf8").trim())}`),
    "",
  ];
}

/** The gateway's addresses and the CA its certificate chains to (undefined: plaintext, or certificates of your own). */
interface GatewayShown {
  grpc: string;
  http: string;
  tls: boolean;
  caFile?: string;
}
let gatewayShown: GatewayShown | undefined;

/**
 * Starts nginx in front of the services (one replica each here), with TLS from the local CA unless told
 * otherwise; its access log (JSON) and error log go to this terminal. Says why when there is no gateway.
 */
async function startLocalGateway(): Promise<void> {
  if (!("settings" in gatewayPlanned)) {
    say(`no API gateway: ${gatewayPlanned.skipped}; the services answer on their own ports`);
    return;
  }
  const { settings } = gatewayPlanned;
  let tls = settings.tls;
  let caFile: string | undefined;
  if (!tls && gatewayPlanned.tls) {
    const certs = localCertificates(path.join(gatewayDir, "tls"));
    tls = { certFile: certs.certFile, keyFile: certs.keyFile };
    caFile = certs.caFile;
  }
  const replica = (host: string, port: number) => [{ host: reachableHost(host), port }];
  const prefix = paint(92, `${"gateway".padEnd(10)}│`);
  gateway = await startGateway({
    dir: gatewayDir,
    config: {
      ...settings,
      tls,
      upstreams: {
        order: { grpc: replica(orderHost, orderGrpcPort), http: replica(orderHost, orderHttpPort) },
        voucher: { grpc: replica(voucherHost, voucherGrpcPort), http: replica(voucherHost, voucherHttpPort) },
        payment: { grpc: replica(paymentHost, paymentGrpcPort), http: replica(paymentHost, paymentHttpPort) },
        delivery: { grpc: replica(deliveryHost, deliveryGrpcPort), http: replica(deliveryHost, deliveryHttpPort) },
      },
    },
    onLine: (line, stream) => (stream === "error" ? process.stderr : process.stdout).write(`${prefix} ${line}\n`),
  });
  gateway.process.once("exit", (code, signal) => {
    if (stopping) return;
    say(paint(31, `the gateway (nginx) exited unexpectedly (${signal ?? `code ${code}`}); stopping everything`));
    void shutdown(1);
  });
  const host = reachableHost(settings.host);
  gatewayShown = { grpc: `${host}:${settings.grpcPort}`, http: `${host}:${settings.httpPort}`, tls: Boolean(tls), caFile };
  say(`gateway (nginx) in front of the services ${dim(`(config in ${shown(gatewayDir)}/nginx.conf)`)}`);
}

const ENV_FILE = path.join(dataDir, "env");

/** A value for a POSIX shell, single-quoted. */
const shellQuote = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;

/**
 * Shell variables for the README's commands, so they work with moved ports and
 * data folder: `. .data/env`. Names no program reads, so sourcing the file
 * changes nothing but those commands. The database URLs only for the local
 * databases (the caller's own URLs, with their passwords, are not copied).
 */
function writeEnvFile(databases: DatabaseUrls | undefined): void {
  const vars: Array<[string, string]> = [
    ["DATA", dataDir],
    ["ORDER_GRPC", `${reachableHost(orderHost)}:${orderGrpcPort}`],
    ["ORDER_HTTP", `${reachableHost(orderHost)}:${orderHttpPort}`],
    ["VOUCHER_GRPC", `${reachableHost(voucherHost)}:${voucherGrpcPort}`],
    ["VOUCHER_HTTP", `${reachableHost(voucherHost)}:${voucherHttpPort}`],
    ["PAYMENT_GRPC", `${reachableHost(paymentHost)}:${paymentGrpcPort}`],
    ["PAYMENT_HTTP", `${reachableHost(paymentHost)}:${paymentHttpPort}`],
    ["DELIVERY_GRPC", `${reachableHost(deliveryHost)}:${deliveryGrpcPort}`],
    ["DELIVERY_HTTP", `${reachableHost(deliveryHost)}:${deliveryHttpPort}`],
    ...(gatewayShown
      ? ([
          ["GATEWAY_GRPC", gatewayShown.grpc],
          ["GATEWAY_HTTP", gatewayShown.http],
          ...(gatewayShown.caFile ? [["GATEWAY_CA", gatewayShown.caFile]] : []),
        ] as Array<[string, string]>)
      : []),
    ...(databases
      ? ([
          ["ORDER_DB", databases.orderUrl],
          ["VOUCHER_DB", databases.voucherUrl],
          ["PAYMENT_DB", databases.paymentUrl],
          ["DELIVERY_DB", databases.deliveryUrl],
        ] as Array<[string, string]>)
      : []),
  ];
  const text = [
    `# Written by npm start for the stack it runs (rewritten at every start). In a shell: . ${shown(ENV_FILE)}`,
    ...vars.map(([k, v]) => `${k}=${shellQuote(v)}`),
    "",
  ].join("\n");
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(ENV_FILE, text, { mode: 0o600 });
}

function banner(auth: LocalAuth | undefined): string {
  const og = `${reachableHost(orderHost)}:${orderGrpcPort}`;
  const oh = `${reachableHost(orderHost)}:${orderHttpPort}`;
  const vg = `${reachableHost(voucherHost)}:${voucherGrpcPort}`;
  const vh = `${reachableHost(voucherHost)}:${voucherHttpPort}`;
  const pg = `${reachableHost(paymentHost)}:${paymentGrpcPort}`;
  const ph = `${reachableHost(paymentHost)}:${paymentHttpPort}`;
  const dg = `${reachableHost(deliveryHost)}:${deliveryGrpcPort}`;
  const dh = `${reachableHost(deliveryHost)}:${deliveryHttpPort}`;
  return [
    "",
    bold("Ready."),
    `  order service    gRPC ${og}   Connect/JSON http://${oh}   health http://${oh}/readyz`,
    `  voucher service  gRPC ${vg}   Connect/JSON http://${vh}   health http://${vh}/readyz`,
    `  payment service  gRPC ${pg}   Connect/JSON http://${ph}   health http://${ph}/readyz`,
    `  delivery service gRPC ${dg}   Connect/JSON http://${dh}   health http://${dh}/readyz`,
    ...(gatewayShown
      ? [
          `  gateway          gRPC ${gatewayShown.grpc}   Connect/JSON ${gatewayShown.tls ? "https" : "http"}://${gatewayShown.http}   ` +
            `(the shop's and customers' calls; ${gatewayShown.caFile ? `TLS, CA ${shown(gatewayShown.caFile)}` : gatewayShown.tls ? "TLS" : "plaintext"})`,
        ]
      : []),
    defaultCarrier === "delayed"
      ? `  Paid orders are shipped by the delayed carrier: confirmed ${delayedCarrier.confirmMs / 1000} s, shipped ${delayedCarrier.shipMs / 1000} s, delivered ${delayedCarrier.deliverMs / 1000} s after the shipment is created.`
      : `  Paid orders are shipped by the ${defaultCarrier} carrier.`,
    "",
    ...tokenLines(auth),
    `  Shell variables for the README's commands (DATA, ORDER_GRPC, ORDER_HTTP, VOUCHER_GRPC, PAYMENT_GRPC, DELIVERY_GRPC, …): . ${shown(ENV_FILE)}`,
    "",
    "  Try it (see README.md for the full walkthrough):",
    dim(`    TOKEN=$(cat ${shown(path.join(AUTH_DIR, "shop.token"))})`),
    dim(`    npx buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer $TOKEN" \\`),
    dim(`      -d '{"customer_id":"alice","total_cents":12000,"currency":"EUR","request_id":"r-1"}' \\`),
    dim(`      http://${og}/shop.order.v1.OrderService/CreateOrder`),
    dim(`    curl -s -H 'content-type: application/json' -H "authorization: Bearer $TOKEN" \\`),
    dim(`      -d '{"customer_id":"alice","page_size":10}' \\`),
    dim(`      http://${oh}/shop.order.v1.OrderService/ListOrders`),
    "",
    "  Ctrl-C stops everything.",
    "",
  ].join("\n");
}

async function main(): Promise<void> {
  await preflight();
  const databaseUrls = await resolveDatabaseUrls();
  const { orderUrl, voucherUrl, paymentUrl, deliveryUrl } = databaseUrls;
  if (stopping) return;
  const auth = await localAuth();
  const authEnv = auth?.env ?? {};
  const orderGrpcUrl = `http://${reachableHost(orderHost)}:${orderGrpcPort}`;
  const voucherGrpcUrl = `http://${reachableHost(voucherHost)}:${voucherGrpcPort}`;
  const paymentGrpcUrl = `http://${reachableHost(paymentHost)}:${paymentGrpcPort}`;
  const deliveryGrpcUrl = `http://${reachableHost(deliveryHost)}:${deliveryGrpcPort}`;

  // Stopped in the reverse order: the order service first (it calls the other three), the voucher service last.
  services.push(
    {
      name: "voucher",
      colour: 36,
      entry: path.join(root, "voucher-service/src/main.ts"),
      env: { VOUCHER_DATABASE_URL: voucherUrl, ...authEnv },
      readyUrl: `http://${reachableHost(voucherHost)}:${voucherHttpPort}/readyz`,
    },
    {
      name: "payment",
      colour: 34,
      entry: path.join(root, "payment-service/src/main.ts"),
      // Its relay reports each charge's and refund's outcome to the order service (PaymentOutcomeService).
      env: { PAYMENT_DATABASE_URL: paymentUrl, ...authEnv, ORDER_SERVICE_URL: orderGrpcUrl },
      readyUrl: `http://${reachableHost(paymentHost)}:${paymentHttpPort}/readyz`,
    },
    {
      name: "delivery",
      colour: 95,
      entry: path.join(root, "delivery-service/src/main.ts"),
      env: {
        DELIVERY_DATABASE_URL: deliveryUrl,
        ...authEnv,
        // Its relay reports each shipment's SHIPPED, DELIVERED or DECLINED to the order service (ShipmentEventService).
        ORDER_SERVICE_URL: orderGrpcUrl,
        // Shipments without a carrier of their own go to the delayed carrier, slowed to a pace one can follow by
        // hand; the manual carrier's shipments wait for CarrierService calls (the carrier token).
        DEFAULT_CARRIER: defaultCarrier,
        DELAYED_CARRIER_CONFIRM_MS: String(delayedCarrier.confirmMs),
        DELAYED_CARRIER_SHIP_MS: String(delayedCarrier.shipMs),
        DELAYED_CARRIER_DELIVER_MS: String(delayedCarrier.deliverMs),
      },
      readyUrl: `http://${reachableHost(deliveryHost)}:${deliveryHttpPort}/readyz`,
    },
    {
      name: "order",
      colour: 33,
      entry: path.join(root, "order-service/src/main.ts"),
      env: {
        ORDER_DATABASE_URL: orderUrl,
        ...authEnv,
        VOUCHER_SERVICE_URL: process.env.VOUCHER_SERVICE_URL || voucherGrpcUrl,
        // Where its relay sends charges and refunds.
        PAYMENT_SERVICE_URL: process.env.PAYMENT_SERVICE_URL || paymentGrpcUrl,
        // Where its relay sends shipment requests; an order that becomes PAID is released for shipping at once.
        DELIVERY_SERVICE_URL: process.env.DELIVERY_SERVICE_URL || deliveryGrpcUrl,
        SHIP_PAID_ORDERS: process.env.SHIP_PAID_ORDERS || "true",
      },
      readyUrl: `http://${reachableHost(orderHost)}:${orderHttpPort}/readyz`,
    },
  );
  // The nightly reconciler's scheduler (RECONCILE_CRON, default 02:30 UTC),
  // started once the services answer; it is stopped first on Ctrl-C.
  const reconciler: Service = {
    name: "reconciler",
    colour: 32,
    entry: path.join(root, "reconciler/src/main.ts"),
    env: {
      ORDER_SERVICE_URL: orderGrpcUrl,
      VOUCHER_SERVICE_URL: voucherGrpcUrl,
      PAYMENT_SERVICE_URL: paymentGrpcUrl,
      DELIVERY_SERVICE_URL: deliveryGrpcUrl,
      // The payment and delivery services run here too: compare and repair payments and shipments as well as vouchers.
      RECONCILE_PAYMENTS: process.env.RECONCILE_PAYMENTS || "true",
      RECONCILE_SHIPPING: process.env.RECONCILE_SHIPPING || "true",
      RECONCILE_STATE_FILE: process.env.RECONCILE_STATE_FILE || path.join(dataDir, "reconciler", "state.json"),
      RECONCILE_REPORT_DIR: process.env.RECONCILE_REPORT_DIR || path.join(dataDir, "reconciler", "reports"),
      RECONCILE_METRICS_PORT: String(reconcilerMetricsPort),
      RECONCILE_METRICS_HOST: reconcilerMetricsHost,
      ...authEnv,
    },
    // It listens there once its settings are read and its port is bound: a scheduler that cannot start stops
    // everything here, before "Ready.", not after.
    readyUrl: reconcilerMetricsPort ? `http://${reachableHost(reconcilerMetricsHost)}:${reconcilerMetricsPort}/healthz` : undefined,
  };

  for (const s of [...services, reconciler]) {
    if (!existsSync(s.entry)) throw new Error(`${path.relative(root, s.entry)} does not exist`);
  }
  // All start at once; each relay retries until the service it calls answers.
  for (const s of services) spawnService(s);
  await Promise.all(services.map((s) => waitReady(s)));
  if (stopping) return;
  services.push(reconciler);
  spawnService(reconciler);
  await waitReady(reconciler);
  if (stopping) return;
  await startLocalGateway();
  if (stopping) return;
  writeEnvFile(useLocalDatabases ? databaseUrls : undefined);
  process.stdout.write(banner(auth));
}

main().catch((err: Error) => {
  if (stopping) return;
  process.stderr.write(`${paint(31, "start     │")} ${err.message}\n`);
  void shutdown(1);
});
