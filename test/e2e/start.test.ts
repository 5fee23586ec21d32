import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { createOrderClient, createVoucherClient } from "@shop/sdk/clients";
import { VoucherStatus } from "@shop/sdk/order";
import { freePort } from "@shop/testkit/ports";

/**
 * `npm start` as a user runs it (scripts/start.ts), on free ports and a
 * throwaway data folder: it starts two MariaDB servers and the services,
 * prints a token per role that the services accept with the scopes the README
 * promises, delivers a voucher, and Ctrl-C (SIGINT) stops everything.
 */
const root = path.resolve(import.meta.dirname, "../..");
const ROLES = ["shop", "relay", "reconciler", "admin", "customer-alice"];

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

describe("npm start", function () {
  this.timeout(180_000);
  let dataDir: string;
  let child: ChildProcess | undefined;
  let output = "";
  let exited: Promise<number | null>;
  const ports: Record<string, number> = {};

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "npm-start-"));
    for (const name of ["ORDER_GRPC_PORT", "ORDER_HTTP_PORT", "VOUCHER_GRPC_PORT", "VOUCHER_HTTP_PORT", "LOCAL_ORDER_DB_PORT", "LOCAL_VOUCHER_DB_PORT"]) {
      ports[name] = await freePort();
    }
    const env: NodeJS.ProcessEnv = { ...process.env, ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])) };
    for (const name of ["ORDER_DATABASE_URL", "VOUCHER_DATABASE_URL", "AUTH_PUBLIC_KEYS", "RELAY_TOKEN", "RECONCILE_TOKEN", "VOUCHER_SERVICE_URL"]) delete env[name];
    Object.assign(env, { LOCAL_DATA_DIR: dataDir, RECONCILE_METRICS_PORT: "0", NO_COLOR: "1", LOG_LEVEL: "warn" });
    const tsx = createRequire(import.meta.url).resolve("tsx");
    child = spawn(process.execPath, ["--import", tsx, path.join(root, "scripts/start.ts")], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.on("data", (d) => (output += d));
    child.stderr!.on("data", (d) => (output += d));
    exited = new Promise((resolve) => child!.once("exit", (code) => resolve(code)));
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

  it("stops the services and both databases on Ctrl-C", async () => {
    child!.kill("SIGINT");
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r("timeout"), 60_000))]);
    expect(code, output.slice(-2000)).to.equal(0);
    for (const [name, port] of Object.entries(ports)) expect(await portOpen(port), `${name} ${port} still open`).to.equal(false);
  });
});
