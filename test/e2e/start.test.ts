import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { createOrderClient, createPaymentClient, createVoucherClient } from "@shop/sdk/clients";
import { OrderStatus, PaymentMethod, PaymentStatus, VoucherStatus, type Order } from "@shop/sdk/order";
import { MovementKind } from "@shop/sdk/payment";
import { freePort } from "@shop/testkit/ports";

/**
 * `npm start` as a user runs it (scripts/start.ts), on free ports and a
 * throwaway data folder: it starts three MariaDB servers and the services,
 * prints a token per role that the services accept with the scopes the README
 * promises, delivers a voucher, takes a paid order from charge to voucher and
 * a cancelled one to its refund, and Ctrl-C (SIGINT) stops everything.
 */
const root = path.resolve(import.meta.dirname, "../..");
const ROLES = ["shop", "relay", "payment-relay", "reconciler", "admin", "customer-alice"];

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

const PORT_SETTINGS = [
  "ORDER_GRPC_PORT",
  "ORDER_HTTP_PORT",
  "VOUCHER_GRPC_PORT",
  "VOUCHER_HTTP_PORT",
  "PAYMENT_GRPC_PORT",
  "PAYMENT_HTTP_PORT",
  "LOCAL_ORDER_DB_PORT",
  "LOCAL_VOUCHER_DB_PORT",
  "LOCAL_PAYMENT_DB_PORT",
  "RECONCILE_METRICS_PORT",
];
const tsx = createRequire(import.meta.url).resolve("tsx");

/** A free port for every setting, all different. */
async function freePorts(): Promise<Record<string, number>> {
  const ports: Record<string, number> = {};
  const taken = new Set<number>();
  for (const name of PORT_SETTINGS) {
    let port = await freePort();
    while (taken.has(port)) port = await freePort();
    taken.add(port);
    ports[name] = port;
  }
  return ports;
}

/** Runs scripts/start.ts as npm start does, on those ports and data folder, with nothing of the caller's own stack set. */
function startScript(ports: Record<string, number>, dataDir: string, extraEnv: NodeJS.ProcessEnv = {}) {
  const env: NodeJS.ProcessEnv = { ...process.env, ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])) };
  for (const name of ["ORDER_DATABASE_URL", "VOUCHER_DATABASE_URL", "PAYMENT_DATABASE_URL"]) delete env[name];
  for (const name of ["AUTH_JWKS_FILE", "AUTH_JWKS", "AUTH_PUBLIC_KEYS", "RELAY_TOKEN", "PAYMENT_RELAY_TOKEN", "RECONCILE_TOKEN"]) delete env[name];
  for (const name of ["VOUCHER_SERVICE_URL", "PAYMENT_SERVICE_URL", "ORDER_SERVICE_URL", "RELAY_ENABLED", "PAYMENT_RELAY_ENABLED"]) delete env[name];
  for (const name of ["ORDER_HOST", "VOUCHER_HOST", "PAYMENT_HOST", "RECONCILE_METRICS_HOST"]) delete env[name];
  Object.assign(env, { LOCAL_DATA_DIR: dataDir, NO_COLOR: "1", LOG_LEVEL: "warn" }, extraEnv);
  const child = spawn(process.execPath, ["--import", tsx, path.join(root, "scripts/start.ts")], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
  const run = { child, output: "", exited: new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code))) };
  child.stdout!.on("data", (d) => (run.output += d));
  child.stderr!.on("data", (d) => (run.output += d));
  return run;
}

/** Processes whose command line names the folder (a MariaDB server of that data folder, say). */
function processesUsing(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(dir)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

describe("npm start", function () {
  this.timeout(180_000);
  let dataDir: string;
  let child: ChildProcess | undefined;
  let output = "";
  let exited: Promise<number | null>;
  let ports: Record<string, number> = {};

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "npm-start-"));
    ports = await freePorts();
    const run = startScript(ports, dataDir);
    child = run.child;
    exited = run.exited;
    child.stdout!.on("data", (d) => (output += d));
    child.stderr!.on("data", (d) => (output += d));
    const deadline = Date.now() + 150_000;
    while (!output.includes("Ready.")) {
      if (child.exitCode !== null) throw new Error(`npm start exited early:\n${output}`);
      if (Date.now() > deadline) throw new Error(`npm start was not ready in time:\n${output}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  after(async () => {
    if (child && child.exitCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("prints a token for each role, the same as the one it writes to its data folder", () => {
    for (const role of ROLES) {
      const printed = new RegExp(`^\\s+${role}\\s+(\\S+)$`, "m").exec(output)?.[1];
      expect(printed, `${role}'s token in the banner`).to.match(/^[\w-]+\.[\w-]+\.[\w-]+$/);
      expect(readFileSync(path.join(dataDir, "auth", `${role}.token`), "utf8").trim()).to.equal(printed);
    }
  });

  it("serves the README's calls with those tokens: the shop's token sells, the relay delivers, alice sees only her own", async () => {
    const token = (role: string) => readFileSync(path.join(dataDir, "auth", `${role}.token`), "utf8").trim();
    const shop = createOrderClient({ baseUrl: `http://127.0.0.1:${ports.ORDER_GRPC_PORT}`, token: token("shop") });
    const alice = createOrderClient({ baseUrl: `http://127.0.0.1:${ports.ORDER_GRPC_PORT}`, token: token("customer-alice") });
    const aliceVouchers = createVoucherClient({ baseUrl: `http://127.0.0.1:${ports.VOUCHER_GRPC_PORT}`, token: token("customer-alice") });
    const anonymous = createOrderClient({ baseUrl: `http://127.0.0.1:${ports.ORDER_GRPC_PORT}` });
    try {
      const { order } = await shop.client.createOrder({ customerId: "alice", totalCents: 12_000n, currency: "EUR", requestId: "start-1" });
      const { order: bobs } = await shop.client.createOrder({ customerId: "bob", totalCents: 12_000n, currency: "EUR", requestId: "start-2" });
      await shop.client.markOrderSent({ orderId: order!.id });
      const deadline = Date.now() + 20_000;
      while ((await shop.client.getOrder({ orderId: order!.id })).order!.voucher!.status !== VoucherStatus.ISSUED) {
        if (Date.now() > deadline) throw new Error("no voucher within 20 s");
        await new Promise((r) => setTimeout(r, 100));
      }
      const { vouchers } = await aliceVouchers.client.listVouchers({ customerId: "alice" });
      expect(vouchers.map((v) => v.orderId)).to.deep.equal([order!.id]);
      const denied = await alice.client.getOrder({ orderId: bobs!.id }).catch((e) => ConnectError.from(e));
      expect((denied as ConnectError).code).to.equal(Code.PermissionDenied);
      const refused = await anonymous.client.getOrder({ orderId: order!.id }).catch((e) => ConnectError.from(e));
      expect((refused as ConnectError).code).to.equal(Code.Unauthenticated);
    } finally {
      for (const c of [shop, alice, aliceVouchers, anonymous]) c.close();
    }
  });

  it("serves the payment service with those tokens: the shop opens and reads accounts, alice reads only her own, the relay may not open one", async () => {
    const token = (role: string) => readFileSync(path.join(dataDir, "auth", `${role}.token`), "utf8").trim();
    const baseUrl = `http://127.0.0.1:${ports.PAYMENT_GRPC_PORT}`;
    const shop = createPaymentClient({ baseUrl, token: token("shop") });
    const alice = createPaymentClient({ baseUrl, token: token("customer-alice") });
    const relay = createPaymentClient({ baseUrl, token: token("relay") });
    try {
      const opened = await shop.client.openAccount({ customerId: "carol", currency: "EUR" });
      expect(opened.created).to.equal(true);
      expect(opened.account).to.include({ customerId: "carol", currency: "EUR", balanceCents: 0n });
      const again = await shop.client.openAccount({ customerId: "carol", currency: "EUR" });
      expect(again.created).to.equal(false);
      const { account } = await shop.client.getAccount({ customerId: "carol" });
      expect(account).to.include({ customerId: "carol", balanceCents: 0n });
      const denied = await alice.client.getAccount({ customerId: "carol" }).catch((e) => ConnectError.from(e));
      expect((denied as ConnectError).code).to.equal(Code.PermissionDenied);
      const refused = await relay.client.openAccount({ customerId: "mallory", currency: "EUR" }).catch((e) => ConnectError.from(e));
      expect((refused as ConnectError).code).to.equal(Code.PermissionDenied);
    } finally {
      for (const c of [shop, alice, relay]) c.close();
    }
  });

  it("runs the README's paid-order walkthrough: charged, sent and given a voucher; refused when the balance cannot cover it; refunded when cancelled after the charge", async () => {
    const token = (role: string) => readFileSync(path.join(dataDir, "auth", `${role}.token`), "utf8").trim();
    const orders = createOrderClient({ baseUrl: `http://127.0.0.1:${ports.ORDER_GRPC_PORT}`, token: token("shop") });
    const payments = createPaymentClient({ baseUrl: `http://127.0.0.1:${ports.PAYMENT_GRPC_PORT}`, token: token("shop") });
    const alicePayments = createPaymentClient({ baseUrl: `http://127.0.0.1:${ports.PAYMENT_GRPC_PORT}`, token: token("customer-alice") });
    /** The order once `done` holds for it, polled; the relays deliver within seconds (bounded at 30 s). */
    const until = async (orderId: string, done: (o: Order) => boolean, what: string): Promise<Order> => {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const { order } = await orders.client.getOrder({ orderId });
        if (done(order!)) return order!;
        if (Date.now() > deadline) throw new Error(`order ${orderId}: not ${what} within 30 s (status ${OrderStatus[order!.status]}, payment ${PaymentStatus[order!.payment!.status]})`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const balance = async () => (await payments.client.getAccount({ customerId: "alice" })).account!.balanceCents;
    const paidOrder = (requestId: string, totalCents: bigint) =>
      orders.client.createOrder({ customerId: "alice", totalCents, currency: "EUR", requestId, paymentMethod: PaymentMethod.ACCOUNT });
    try {
      await payments.client.openAccount({ customerId: "alice", currency: "EUR" });
      const topUp = await payments.client.topUp({ customerId: "alice", amountCents: 15_000n, currency: "EUR", requestId: "walkthrough-topup-1" });
      expect(topUp.applied).to.equal(true);
      expect(topUp.account!.balanceCents).to.equal(15_000n);

      // 120.00 EUR from the account: awaiting payment, then PAID; sent; a voucher.
      const { order: first } = await paidOrder("walkthrough-paid-1", 12_000n);
      expect(first!.status).to.equal(OrderStatus.AWAITING_PAYMENT);
      expect(first!.payment).to.include({ method: PaymentMethod.ACCOUNT, status: PaymentStatus.AWAITING });
      const paid = await until(first!.id, (o) => o.status !== OrderStatus.AWAITING_PAYMENT, "charged");
      expect(paid.status).to.equal(OrderStatus.PAID);
      expect(paid.payment!.status).to.equal(PaymentStatus.CHARGED);
      expect(paid.payment!.chargedAt).to.not.equal(undefined);
      expect(await balance()).to.equal(3_000n);
      const sent = await orders.client.markOrderSent({ orderId: first!.id });
      expect(sent.order!.status).to.equal(OrderStatus.SENT);
      const withVoucher = await until(first!.id, (o) => o.voucher!.status === VoucherStatus.ISSUED, "given its voucher");
      expect(withVoucher.voucher!.voucherId).to.not.equal("");

      // 80.00 EUR with 30.00 EUR left: refused, final, and it cannot be sent; nothing was debited.
      const { order: second } = await paidOrder("walkthrough-paid-2", 8_000n);
      const failed = await until(second!.id, (o) => o.status !== OrderStatus.AWAITING_PAYMENT, "decided");
      expect(failed.status).to.equal(OrderStatus.PAYMENT_FAILED);
      expect(failed.payment).to.include({ status: PaymentStatus.REFUSED, refusalReason: "INSUFFICIENT_FUNDS" });
      const notSent = await orders.client.markOrderSent({ orderId: second!.id }).catch((e) => ConnectError.from(e));
      expect((notSent as ConnectError).code).to.equal(Code.FailedPrecondition);
      expect(await balance()).to.equal(3_000n);

      // 20.00 EUR: PAID, then cancelled: the refund comes back and the balance with it.
      const { order: third } = await paidOrder("walkthrough-paid-3", 2_000n);
      await until(third!.id, (o) => o.status === OrderStatus.PAID, "paid");
      expect(await balance()).to.equal(1_000n);
      const { order: cancelled } = await orders.client.cancelOrder({ orderId: third!.id });
      expect(cancelled!.status).to.equal(OrderStatus.CANCELLED);
      const refunded = await until(third!.id, (o) => o.payment!.status === PaymentStatus.REFUNDED, "refunded");
      expect(refunded.status).to.equal(OrderStatus.CANCELLED);
      expect(refunded.payment!.refundedAt).to.not.equal(undefined);
      expect(await balance()).to.equal(3_000n);

      // Alice's own statement, newest first: every movement once.
      const { movements } = await alicePayments.client.listStatement({ customerId: "alice" });
      expect(movements.map((m) => [MovementKind[m.kind], m.amountCents, m.orderId])).to.deep.equal([
        ["REFUND", 2_000n, third!.id],
        ["CHARGE", -2_000n, third!.id],
        ["CHARGE", -12_000n, first!.id],
        ["TOP_UP", 15_000n, ""],
      ]);
    } finally {
      for (const c of [orders, payments, alicePayments]) c.close();
    }
  });

  it("has the reconciler's scheduler serving its metrics port by the time it says Ready", async () => {
    const res = await fetch(`http://127.0.0.1:${ports.RECONCILE_METRICS_PORT}/metrics`);
    expect(res.status).to.equal(200);
    expect(await res.text()).to.contain("reconciler_runs_total");
  });

  it("writes the shell variables the README's commands use, for the ports and folder it was given", async () => {
    const file = path.join(dataDir, "env");
    expect(output).to.contain(`. ${file}`);
    const { stdout } = await promisify(execFile)("sh", [
      "-c",
      '. "$1" && printf "%s\\n" "$DATA" "$ORDER_GRPC" "$ORDER_HTTP" "$VOUCHER_GRPC" "$VOUCHER_HTTP" "$PAYMENT_GRPC" "$PAYMENT_HTTP" "$ORDER_DB" "$VOUCHER_DB" "$PAYMENT_DB"',
      "sh",
      file,
    ]);
    const [data, orderGrpc, orderHttp, voucherGrpc, voucherHttp, paymentGrpc, paymentHttp, orderDb, voucherDb, paymentDb] = stdout.split("\n");
    expect(data).to.equal(dataDir);
    expect([orderGrpc, orderHttp, voucherGrpc, voucherHttp, paymentGrpc, paymentHttp]).to.deep.equal(
      ["ORDER_GRPC_PORT", "ORDER_HTTP_PORT", "VOUCHER_GRPC_PORT", "VOUCHER_HTTP_PORT", "PAYMENT_GRPC_PORT", "PAYMENT_HTTP_PORT"].map(
        (k) => `127.0.0.1:${ports[k]}`,
      ),
    );
    expect(orderDb).to.match(new RegExp(`^mysql://orders:[^@]+@127\\.0\\.0\\.1:${ports.LOCAL_ORDER_DB_PORT}/orders$`));
    expect(voucherDb).to.match(new RegExp(`^mysql://vouchers:[^@]+@127\\.0\\.0\\.1:${ports.LOCAL_VOUCHER_DB_PORT}/vouchers$`));
    expect(paymentDb).to.match(new RegExp(`^mysql://payments:[^@]+@127\\.0\\.0\\.1:${ports.LOCAL_PAYMENT_DB_PORT}/payments$`));
    // The walkthrough's first Connect call, built from those variables alone.
    const token = readFileSync(path.join(data!, "auth", "shop.token"), "utf8").trim();
    const res = await fetch(`http://${orderHttp}/shop.order.v1.OrderService/ListOrders`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ customer_id: "alice" }),
    });
    expect(res.status).to.equal(200);
    // And the payment service's, on its own port.
    const account = await fetch(`http://${paymentHttp}/shop.payment.v1.PaymentService/GetAccount`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ customer_id: "carol" }),
    });
    expect(account.status).to.equal(200);
    const body = (await account.json()) as { account: Record<string, unknown> };
    expect(body.account).to.include({ customerId: "carol", currency: "EUR" });
  });

  it("stops the services and the three databases on Ctrl-C", async () => {
    child!.kill("SIGINT");
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r("timeout"), 60_000))]);
    expect(code, output.slice(-2000)).to.equal(0);
    for (const [name, port] of Object.entries(ports)) expect(await portOpen(port), `${name} ${port} still open`).to.equal(false);
  });
});

describe("npm start with a port it needs taken", function () {
  this.timeout(60_000);

  /**
   * Each setting in turn: its port held by another program, or given twice.
   * npm start must refuse before starting anything, name the port and the
   * setting that moves it, never say Ready, and leave nothing running.
   */
  const cases: Array<{ title: string; setting: string; twin?: string; expected: (port: number) => string }> = [
    {
      title: "the reconciler's metrics port",
      setting: "RECONCILE_METRICS_PORT",
      expected: (p) => `port ${p} for the reconciler's metrics is in use on 127.0.0.1; free it or set RECONCILE_METRICS_PORT to another port (0 for none)`,
    },
    {
      title: "the order service's gRPC port",
      setting: "ORDER_GRPC_PORT",
      expected: (p) => `port ${p} for the order service's gRPC is in use on 127.0.0.1; free it or set ORDER_GRPC_PORT to another port`,
    },
    {
      title: "the voucher database's port",
      setting: "LOCAL_VOUCHER_DB_PORT",
      expected: (p) => `port ${p} for the voucher database is in use on 127.0.0.1; free it or set LOCAL_VOUCHER_DB_PORT to another port`,
    },
    {
      title: "the payment database's port",
      setting: "LOCAL_PAYMENT_DB_PORT",
      expected: (p) => `port ${p} for the payment database is in use on 127.0.0.1; free it or set LOCAL_PAYMENT_DB_PORT to another port`,
    },
    {
      title: "one port given to two settings",
      setting: "VOUCHER_HTTP_PORT",
      twin: "ORDER_HTTP_PORT",
      expected: (p) => `ORDER_HTTP_PORT and VOUCHER_HTTP_PORT are both ${p}; set one of them to another port`,
    },
  ];

  for (const c of cases) {
    it(`refuses to start when ${c.title} is taken, before Ready and with nothing left running`, async () => {
      const dataDir = mkdtempSync(path.join(tmpdir(), "npm-start-taken-"));
      const ports = await freePorts();
      let holder: net.Server | undefined;
      if (c.twin) {
        ports[c.setting] = ports[c.twin]!;
      } else {
        holder = net.createServer();
        await new Promise<void>((resolve) => holder!.listen(ports[c.setting], "127.0.0.1", resolve));
      }
      const run = startScript(ports, dataDir);
      try {
        const code = await Promise.race([run.exited, new Promise((r) => setTimeout(() => r("timeout"), 45_000))]);
        expect(code, run.output).to.equal(1);
        // Which of two settings is named first is not part of the promise.
        const said = run.output.replace(/(\w+_PORT) and (\w+_PORT) are both/, (_, a: string, b: string) => `${[a, b].sort().join(" and ")} are both`);
        expect(said).to.contain(c.expected(ports[c.setting]!));
        expect(run.output).to.not.contain("Ready.");
        for (const [name, port] of Object.entries(ports)) {
          if (name === c.setting && !c.twin) continue; // ours
          expect(await portOpen(port), `${name} ${port} open`).to.equal(false);
        }
        expect(processesUsing(dataDir), "processes left using the data folder").to.deep.equal([]);
      } finally {
        if (run.child.exitCode === null) run.child.kill("SIGKILL");
        await new Promise<void>((resolve) => (holder ? holder.close(() => resolve()) : resolve()));
        rmSync(dataDir, { recursive: true, force: true });
      }
    });
  }
});

describe("npm start with only some of the database URLs", function () {
  this.timeout(60_000);

  it("refuses before starting anything, naming the URLs still missing", async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "npm-start-urls-"));
    const ports = await freePorts();
    const run = startScript(ports, dataDir, { ORDER_DATABASE_URL: `mysql://orders:x@127.0.0.1:${ports.LOCAL_ORDER_DB_PORT}/orders` });
    try {
      const code = await Promise.race([run.exited, new Promise((r) => setTimeout(() => r("timeout"), 45_000))]);
      expect(code, run.output).to.equal(1);
      expect(run.output).to.contain("not every database URL is set; set VOUCHER_DATABASE_URL and PAYMENT_DATABASE_URL too");
      expect(run.output).to.not.contain("Ready.");
      for (const [name, port] of Object.entries(ports)) expect(await portOpen(port), `${name} ${port} open`).to.equal(false);
      expect(processesUsing(dataDir), "processes left using the data folder").to.deep.equal([]);
    } finally {
      if (run.child.exitCode === null) run.child.kill("SIGKILL");
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe("npm run auth, as the README runs it", function () {
  this.timeout(60_000);
  const npm = (args: string[]) => promisify(execFile)("npm", args, { cwd: root });

  it("prints its usage for --help and exits 0", async () => {
    const { stdout } = await npm(["run", "--silent", "auth", "--", "--help"]);
    expect(stdout).to.match(/^usage:\n  npm run auth -- keygen /);
    expect(stdout).to.contain("npm run --silent auth");
  });

  it("prints nothing but the token under npm run --silent, so it can be captured", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "npm-auth-"));
    try {
      const key = path.join(dir, "key.json");
      const { stdout: entry } = await npm(["run", "--silent", "auth", "--", "keygen", "--kid", "k1", "--out", key]);
      expect(entry).to.match(/^k1=[\w-]{43}\n$/);
      const { stdout: token } = await npm(["run", "--silent", "auth", "--", "token", "--key", key, "--role", "customer", "--customer", "alice"]);
      expect(token).to.match(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("lists the payment service's relay among the roles and mints its token, addressed to the order service alone", async () => {
    const { stdout: usage } = await npm(["run", "--silent", "auth", "--", "--help"]);
    expect(usage).to.match(/^  payment-relay +order-service$/m);
    const dir = mkdtempSync(path.join(tmpdir(), "npm-auth-"));
    try {
      const key = path.join(dir, "key.json");
      await npm(["run", "--silent", "auth", "--", "keygen", "--kid", "k1", "--out", key]);
      const { stdout: token } = await npm(["run", "--silent", "auth", "--", "token", "--key", key, "--role", "payment-relay"]);
      const claims = JSON.parse(Buffer.from(token.trim().split(".")[1]!, "base64url").toString("utf8")) as Record<string, unknown>;
      expect(claims).to.include({ sub: "payment-relay", aud: "order-service", scope: "orders:payment-outcome" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
