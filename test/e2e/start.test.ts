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
import { VoucherStatus } from "@shop/sdk/order";
import { freePort } from "@shop/testkit/ports";
import { gatewayUnavailable } from "@shop/gateway/nginx";

/**
 * `npm start` as a user runs it (scripts/start.ts), on free ports and a
 * throwaway data folder: it starts four MariaDB servers and the services,
 * prints a token per role that the services accept with the scopes the README
 * promises, delivers a voucher, takes a paid order from charge through its
 * shipment (shipped by the delayed carrier, so sent and given its voucher,
 * then delivered) and a declined shipment to its refund, with the README's
 * own commands, and Ctrl-C (SIGINT) stops everything.
 */
const root = path.resolve(import.meta.dirname, "../..");
const ROLES = ["shop", "relay", "payment-relay", "delivery-relay", "carrier", "reconciler", "admin", "customer-alice"];

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
  "DELIVERY_GRPC_PORT",
  "DELIVERY_HTTP_PORT",
  "LOCAL_ORDER_DB_PORT",
  "LOCAL_VOUCHER_DB_PORT",
  "LOCAL_PAYMENT_DB_PORT",
  "LOCAL_DELIVERY_DB_PORT",
  "RECONCILE_METRICS_PORT",
  "GATEWAY_GRPC_PORT",
  "GATEWAY_HTTP_PORT",
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
  for (const name of ["ORDER_DATABASE_URL", "VOUCHER_DATABASE_URL", "PAYMENT_DATABASE_URL", "DELIVERY_DATABASE_URL"]) delete env[name];
  for (const name of ["AUTH_JWKS_FILE", "AUTH_JWKS", "AUTH_PUBLIC_KEYS", "RELAY_TOKEN", "PAYMENT_RELAY_TOKEN", "DELIVERY_RELAY_TOKEN", "RECONCILE_TOKEN"]) delete env[name];
  for (const name of ["VOUCHER_SERVICE_URL", "PAYMENT_SERVICE_URL", "ORDER_SERVICE_URL", "DELIVERY_SERVICE_URL"]) delete env[name];
  for (const name of ["RELAY_ENABLED", "PAYMENT_RELAY_ENABLED", "DELIVERY_RELAY_ENABLED", "CARRIER_ENABLED"]) delete env[name];
  for (const name of ["SHIP_PAID_ORDERS", "RECONCILE_SHIPPING", "RECONCILE_PAYMENTS", "CARRIERS", "DEFAULT_CARRIER"]) delete env[name];
  for (const name of ["DELAYED_CARRIER_CONFIRM_MS", "DELAYED_CARRIER_SHIP_MS", "DELAYED_CARRIER_DELIVER_MS"]) delete env[name];
  for (const name of ["ORDER_HOST", "VOUCHER_HOST", "PAYMENT_HOST", "DELIVERY_HOST", "RECONCILE_METRICS_HOST"]) delete env[name];
  // The gateway with its defaults (on when nginx is installed, TLS from the local CA) on the ports given above.
  for (const name of Object.keys(env)) if (name.startsWith("GATEWAY") && !PORT_SETTINGS.includes(name)) delete env[name];
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
    // Killed mid-way, the script cannot stop what it started: the gateway (nginx -p <data>/gateway) among them.
    for (const pid of processesUsing(dataDir)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
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

  // The README's paid-order walkthrough, in the order the README tells it (each step builds on the one before):
  // every call made with the command the README shows (npx buf curl for gRPC, curl for Connect JSON), in a shell
  // that loaded the env file from the project folder as the README says. ${…} in a command is an id of this run.
  const GRPC = "npx buf curl --protocol grpc --http2-prior-knowledge";
  const CONNECT = "curl -s -H 'content-type: application/json'";
  const CARRIER_AUTH = `-H "authorization: Bearer $(cat "$DATA"/auth/carrier.token)"`;
  const ALICE_AUTH = `-H "authorization: Bearer $(cat "$DATA"/auth/customer-alice.token)"`;

  /** Runs one command in `sh` with the README's preamble: the env file loaded from the project folder, and AUTH. */
  const shell = (command: string) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const preamble = `. "\${LOCAL_DATA_DIR:-.data}/env" && AUTH="authorization: Bearer $(cat "$DATA"/auth/shop.token)" && `;
      execFile("sh", ["-c", preamble + command], { cwd: root, env: { ...process.env, LOCAL_DATA_DIR: dataDir } }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  /** A command that must succeed: its JSON answer. */
  const answer = async (command: string): Promise<any> => {
    const r = await shell(command);
    if (r.code !== 0) throw new Error(`exit ${r.code}: ${command}\n${r.stdout}${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  const getOrder = async (id: string) => (await answer(`${GRPC} -H "$AUTH" -d '{"order_id":"${id}"}' http://$ORDER_GRPC/shop.order.v1.OrderService/GetOrder`)).order;
  const balance = async () =>
    (await answer(`${CONNECT} -H "$AUTH" -d '{"customer_id":"alice"}' http://$PAYMENT_HTTP/shop.payment.v1.PaymentService/GetAccount`)).account.balanceCents;
  /** Polls GetOrder until `done` holds; the relays and the delayed carrier get there within seconds (bounded at 30 s). */
  const until = async (id: string, done: (o: any) => boolean, what: string): Promise<any> => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const order = await getOrder(id);
      if (done(order)) return order;
      if (Date.now() > deadline) throw new Error(`order ${id}: not ${what} within 30 s: ${JSON.stringify(order)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  let shipped: string;
  let refused: string;
  let declined: string;

  it("walkthrough: opens alice's account and tops it up with 150.00 EUR", async () => {
    const opened = await answer(`${GRPC} -H "$AUTH" -d '{"customer_id":"alice","currency":"EUR"}' http://$PAYMENT_GRPC/shop.payment.v1.PaymentService/OpenAccount`);
    expect(opened.account).to.include({ customerId: "alice", currency: "EUR" });
    const topUp = await answer(
      `${GRPC} -H "$AUTH" -d '{"customer_id":"alice","amount_cents":15000,"currency":"EUR","request_id":"walkthrough-topup-1"}' http://$PAYMENT_GRPC/shop.payment.v1.PaymentService/TopUp`,
    );
    expect(topUp.applied).to.equal(true);
    expect(topUp.account.balanceCents).to.equal("15000");
  });

  it("walkthrough: takes an order of 120.00 EUR paid from the account through its shipment: PAID, shipped by the delayed carrier (SENT by SHIPMENT), its voucher ISSUED, then DELIVERED", async () => {
    const created = await answer(
      `${GRPC} -H "$AUTH" -d '{"customer_id":"alice","total_cents":12000,"currency":"EUR","request_id":"walkthrough-paid-1","payment_method":"PAYMENT_METHOD_ACCOUNT"}' http://$ORDER_GRPC/shop.order.v1.OrderService/CreateOrder`,
    );
    expect(created.created).to.equal(true);
    expect(created.order.status).to.equal("ORDER_STATUS_AWAITING_PAYMENT");
    expect(created.order.payment).to.deep.equal({ method: "PAYMENT_METHOD_ACCOUNT", status: "PAYMENT_STATUS_AWAITING" });
    shipped = created.order.id;

    // Charged: PAID, and in the same transaction released for shipping (the delayed carrier ships 3 s after the
    // shipment is created, so it is still PAID here unless the machine stalls; then it is already further on).
    const paid = await until(shipped, (o) => o.status !== "ORDER_STATUS_AWAITING_PAYMENT", "charged");
    expect(paid.status).to.be.oneOf(["ORDER_STATUS_PAID", "ORDER_STATUS_SENT", "ORDER_STATUS_DELIVERED"]);
    expect(paid.payment.status).to.equal("PAYMENT_STATUS_CHARGED");
    expect(paid.shipping.status).to.be.oneOf(["SHIPPING_STATUS_REQUESTED", "SHIPPING_STATUS_SHIPPED", "SHIPPING_STATUS_DELIVERED"]);
    expect(paid.shipping.requestedAt).to.be.a("string");
    expect(await balance()).to.equal("3000");

    // The carrier shipped it: the shipment's SHIPPED event marked the order sent, and the voucher rule fired.
    const sent = await until(shipped, (o) => o.status !== "ORDER_STATUS_PAID", "sent by its shipment");
    expect(sent.status).to.be.oneOf(["ORDER_STATUS_SENT", "ORDER_STATUS_DELIVERED"]);
    expect(sent.sentBy).to.equal("SENT_BY_SHIPMENT");
    expect(sent.sentAt).to.be.a("string");
    const withVoucher = await until(shipped, (o) => o.voucher.status === "VOUCHER_STATUS_ISSUED", "given its voucher");
    expect(withVoucher.voucher.voucherId).to.be.a("string").and.not.equal("");

    const delivered = await until(shipped, (o) => o.status === "ORDER_STATUS_DELIVERED", "delivered");
    expect(delivered.shipping.status).to.equal("SHIPPING_STATUS_DELIVERED");
    expect(delivered.sentBy).to.equal("SENT_BY_SHIPMENT");
    expect(delivered.deliveredAt).to.be.a("string");

    // The delivery service's side: one shipment with the delayed carrier, every step recorded once.
    const { shipment } = await answer(`${GRPC} -H "$AUTH" -d '{"order_id":"${shipped}"}' http://$DELIVERY_GRPC/shop.delivery.v1.DeliveryService/GetShipment`);
    expect(shipment).to.include({ orderId: shipped, customerId: "alice", totalCents: "12000", currency: "EUR", carrier: "delayed", status: "SHIPMENT_STATUS_DELIVERED" });
    expect(shipment.trackingNumber).to.be.a("string").and.not.equal("");
    expect(shipment.transitions.map((t: { to: string }) => t.to)).to.deep.equal([
      "SHIPMENT_STATUS_CREATED",
      "SHIPMENT_STATUS_CONFIRMED",
      "SHIPMENT_STATUS_SHIPPED",
      "SHIPMENT_STATUS_DELIVERED",
    ]);
  });

  it("walkthrough: refuses an order of 80.00 EUR with 30.00 EUR left: PAYMENT_FAILED, never shipped, and it cannot be sent", async () => {
    const created = await answer(
      `${GRPC} -H "$AUTH" -d '{"customer_id":"alice","total_cents":8000,"currency":"EUR","request_id":"walkthrough-paid-2","payment_method":"PAYMENT_METHOD_ACCOUNT"}' http://$ORDER_GRPC/shop.order.v1.OrderService/CreateOrder`,
    );
    refused = created.order.id;
    const failed = await until(refused, (o) => o.status !== "ORDER_STATUS_AWAITING_PAYMENT", "decided");
    expect(failed.status).to.equal("ORDER_STATUS_PAYMENT_FAILED");
    expect(failed.payment).to.include({ status: "PAYMENT_STATUS_REFUSED", refusalReason: "INSUFFICIENT_FUNDS" });
    expect(failed.shipping?.status ?? "SHIPPING_STATUS_NONE").to.equal("SHIPPING_STATUS_NONE");
    const notSent = await shell(`${GRPC} -H "$AUTH" -d '{"order_id":"${refused}"}' http://$ORDER_GRPC/shop.order.v1.OrderService/MarkOrderSent`);
    expect(notSent.code).to.not.equal(0);
    expect(JSON.parse(notSent.stdout + notSent.stderr)).to.include({ code: "failed_precondition" });
    expect(await balance()).to.equal("3000");
  });

  it("walkthrough: declines a paid order's shipment with the carrier's token (carrier manual, with plain curl): the order is CANCELLED and its payment REFUNDED", async () => {
    const created = await answer(
      `${CONNECT} -H "$AUTH" -d '{"customer_id":"alice","total_cents":2000,"currency":"EUR","request_id":"walkthrough-paid-3","payment_method":"PAYMENT_METHOD_ACCOUNT","carrier":"manual"}' http://$ORDER_HTTP/shop.order.v1.OrderService/CreateOrder`,
    );
    expect(created.order.shipping).to.include({ carrier: "manual" });
    declined = created.order.id;
    const paid = await until(declined, (o) => o.status === "ORDER_STATUS_PAID", "paid");
    expect(paid.shipping.status).to.equal("SHIPPING_STATUS_REQUESTED");
    expect(await balance()).to.equal("1000");

    // In shipping, the shop may no longer cancel it: its shipment decides.
    const notCancelled = await shell(`${CONNECT} -w ' HTTP %{http_code}' -H "$AUTH" -d '{"order_id":"${declined}"}' http://$ORDER_HTTP/shop.order.v1.OrderService/CancelOrder`);
    expect(notCancelled.stdout).to.match(/^\{"code":"failed_precondition",.*\} HTTP 400$/);

    // The relay has created the shipment at the delivery service; the manual carrier waits for a report.
    const deadline = Date.now() + 30_000;
    let shipment: any;
    while (!(shipment = (await answer(`${CONNECT} -H "$AUTH" -d '{"order_id":"${declined}"}' http://$DELIVERY_HTTP/shop.delivery.v1.DeliveryService/GetShipment`)).shipment)) {
      if (Date.now() > deadline) throw new Error(`no shipment for order ${declined} within 30 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(shipment).to.include({ carrier: "manual", status: "SHIPMENT_STATUS_CREATED" });

    // The shop's token may not report for a carrier; the carrier's may.
    const notCarrier = await shell(
      `${CONNECT} -w ' HTTP %{http_code}' -H "$AUTH" -d '{"order_id":"${declined}","reason":"OUT_OF_STOCK"}' http://$DELIVERY_HTTP/shop.delivery.v1.CarrierService/DeclineShipment`,
    );
    expect(notCarrier.stdout).to.match(/^\{"code":"permission_denied",.*\} HTTP 403$/);
    const decline = await answer(
      `${CONNECT} ${CARRIER_AUTH} -d '{"order_id":"${declined}","reason":"OUT_OF_STOCK"}' http://$DELIVERY_HTTP/shop.delivery.v1.CarrierService/DeclineShipment`,
    );
    expect(decline.changed).to.equal(true);
    expect(decline.shipment).to.include({ status: "SHIPMENT_STATUS_DECLINED", declineReason: "OUT_OF_STOCK" });

    const refunded = await until(declined, (o) => o.payment.status === "PAYMENT_STATUS_REFUNDED", "refunded");
    expect(refunded.status).to.equal("ORDER_STATUS_CANCELLED");
    expect(refunded.shipping).to.include({ status: "SHIPPING_STATUS_DECLINED", declineReason: "OUT_OF_STOCK" });
    expect(refunded.payment.refundedAt).to.be.a("string");
    expect(await balance()).to.equal("3000");
  });

  it("walkthrough: shows alice her own statement: every movement once, newest first", async () => {
    const { movements } = await answer(`${CONNECT} ${ALICE_AUTH} -d '{"customer_id":"alice"}' http://$PAYMENT_HTTP/shop.payment.v1.PaymentService/ListStatement`);
    expect(movements.map((m: { kind: string; amountCents: string; orderId?: string }) => [m.kind, m.amountCents, m.orderId ?? ""])).to.deep.equal([
      ["MOVEMENT_KIND_REFUND", "2000", declined],
      ["MOVEMENT_KIND_CHARGE", "-2000", declined],
      ["MOVEMENT_KIND_CHARGE", "-12000", shipped],
      ["MOVEMENT_KIND_TOP_UP", "15000", ""],
    ]);
  });

  // The README's "Through the gateway": the same calls on the gateway's two ports, over TLS with the local CA.
  const GW_GRPC = `npx buf curl --schema proto --protocol grpc --cacert "$GATEWAY_CA"`;
  const GW_CONNECT = `curl -s --cacert "$GATEWAY_CA" -H 'content-type: application/json'`;
  const gatewayMissing = gatewayUnavailable();

  /** Skips a gateway test where nginx is missing; CI installs nginx and its njs module (.ci/run), so there it fails. */
  const needGateway = (ctx: Mocha.Context) => {
    if (!gatewayMissing) return;
    if (process.env.CI === "true") throw new Error(`the gateway cannot run under CI: ${gatewayMissing}`);
    console.log(`      (skipped: ${gatewayMissing})`);
    ctx.skip();
  };
  {

    it("says where the gateway listens, with TLS from its local CA", function () {
      needGateway(this);
      expect(output).to.match(new RegExp(`gateway +gRPC 127\\.0\\.0\\.1:${ports.GATEWAY_GRPC_PORT} +Connect/JSON https://127\\.0\\.0\\.1:${ports.GATEWAY_HTTP_PORT}`));
    });

    it("walkthrough: reads the shipped order over gRPC and alice's vouchers over Connect JSON through the gateway", async function () {
      needGateway(this);
      const { order } = await answer(`${GW_GRPC} -H "$AUTH" -d '{"order_id":"${shipped}"}' https://$GATEWAY_GRPC/shop.order.v1.OrderService/GetOrder`);
      expect(order).to.include({ id: shipped, status: "ORDER_STATUS_DELIVERED" });
      const { vouchers } = await answer(`${GW_CONNECT} ${ALICE_AUTH} -d '{"customer_id":"alice"}' https://$GATEWAY_HTTP/shop.voucher.v1.VoucherService/ListVouchers`);
      // Hers only (the customer token), the shipped order's among them once.
      expect(vouchers.map((v: { customerId: string }) => v.customerId)).to.satisfy((ids: string[]) => ids.every((c) => c === "alice"));
      expect(vouchers.filter((v: { orderId: string }) => v.orderId === shipped)).to.have.length(1);
    });

    it("walkthrough: sells through the gateway: an order of 130.00 EUR created over gRPC, marked sent over Connect JSON, gets its voucher", async function () {
      needGateway(this);
      const created = await answer(
        `${GW_GRPC} -H "$AUTH" -d '{"customer_id":"alice","total_cents":13000,"currency":"EUR","request_id":"walkthrough-gateway-1"}' https://$GATEWAY_GRPC/shop.order.v1.OrderService/CreateOrder`,
      );
      expect(created.created).to.equal(true);
      const id = created.order.id as string;
      const sent = await answer(`${GW_CONNECT} -H "$AUTH" -d '{"order_id":"${id}"}' https://$GATEWAY_HTTP/shop.order.v1.OrderService/MarkOrderSent`);
      expect(sent.order.status).to.equal("ORDER_STATUS_SENT");
      const withVoucher = await until(id, (o) => o.voucher.status === "VOUCHER_STATUS_ISSUED", "given its voucher");
      expect(withVoucher.voucher.voucherId).to.be.a("string").and.not.equal("");
    });

    it("walkthrough: the gateway does not route the internal RPCs, even for a token that may call them", async function () {
      needGateway(this);
      const r = await shell(
        `${GW_GRPC} -H "authorization: Bearer $(cat "$DATA"/auth/relay.token)" -d '{"order_id":"01M857EKDVR7NPENZW03FFTYKB","customer_id":"alice","order_total_cents":12000,"currency":"EUR"}' https://$GATEWAY_GRPC/shop.voucher.v1.VoucherService/IssueVoucher`,
      );
      expect(r.code).to.not.equal(0);
      expect(JSON.parse(r.stdout + r.stderr)).to.deep.equal({ code: "unimplemented", message: "unimplemented: the gateway does not serve this method" });
      const connect = await shell(
        `${GW_CONNECT} -w ' HTTP %{http_code}' -H "authorization: Bearer $(cat "$DATA"/auth/relay.token)" -d '{"order_id":"${shipped}"}' https://$GATEWAY_HTTP/shop.payment.v1.PaymentService/ChargeOrder`,
      );
      expect(connect.stdout).to.equal('{"code":"unimplemented","message":"unimplemented: the gateway does not serve this method"} HTTP 404');
    });

    it("logs each call through the gateway as one JSON line with the caller and the trace id", async function () {
      needGateway(this);
      const accessLines = () =>
        output
          .split("\n")
          .filter((l) => l.startsWith("gateway   │ {"))
          .map((l) => JSON.parse(l.slice("gateway   │ ".length)) as Record<string, string | number>);
      // npm start prints the access log as nginx writes it (read every 100 ms): wait for the last call's line.
      const deadline = Date.now() + 5_000;
      while (!accessLines().some((l) => l.path === "/shop.payment.v1.PaymentService/ChargeOrder") && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      const lines = accessLines();
      const refused = lines.find((l) => l.path === "/shop.voucher.v1.VoucherService/IssueVoucher");
      expect(refused, JSON.stringify(lines.slice(-5))).to.include({ protocol: "grpc", caller: "relay", refusal: "not_routed", grpcStatus: "12" });
      const read = lines.find((l) => l.path === "/shop.voucher.v1.VoucherService/ListVouchers");
      expect(read).to.include({ protocol: "connect", caller: "customer:alice", status: 200, refusal: "" });
      expect(read!.traceId).to.match(/^[0-9a-f]{32}$/);
    });
  }

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
      '. "$1" && printf "%s\\n" "$DATA" "$ORDER_GRPC" "$ORDER_HTTP" "$VOUCHER_GRPC" "$VOUCHER_HTTP" "$PAYMENT_GRPC" "$PAYMENT_HTTP" "$DELIVERY_GRPC" "$DELIVERY_HTTP" "$ORDER_DB" "$VOUCHER_DB" "$PAYMENT_DB" "$DELIVERY_DB"',
      "sh",
      file,
    ]);
    const [data, orderGrpc, orderHttp, voucherGrpc, voucherHttp, paymentGrpc, paymentHttp, deliveryGrpc, deliveryHttp, orderDb, voucherDb, paymentDb, deliveryDb] =
      stdout.split("\n");
    expect(data).to.equal(dataDir);
    expect([orderGrpc, orderHttp, voucherGrpc, voucherHttp, paymentGrpc, paymentHttp, deliveryGrpc, deliveryHttp]).to.deep.equal(
      [
        "ORDER_GRPC_PORT",
        "ORDER_HTTP_PORT",
        "VOUCHER_GRPC_PORT",
        "VOUCHER_HTTP_PORT",
        "PAYMENT_GRPC_PORT",
        "PAYMENT_HTTP_PORT",
        "DELIVERY_GRPC_PORT",
        "DELIVERY_HTTP_PORT",
      ].map((k) => `127.0.0.1:${ports[k]}`),
    );
    expect(orderDb).to.match(new RegExp(`^mysql://orders:[^@]+@127\\.0\\.0\\.1:${ports.LOCAL_ORDER_DB_PORT}/orders$`));
    expect(voucherDb).to.match(new RegExp(`^mysql://vouchers:[^@]+@127\\.0\\.0\\.1:${ports.LOCAL_VOUCHER_DB_PORT}/vouchers$`));
    expect(paymentDb).to.match(new RegExp(`^mysql://payments:[^@]+@127\\.0\\.0\\.1:${ports.LOCAL_PAYMENT_DB_PORT}/payments$`));
    expect(deliveryDb).to.match(new RegExp(`^mysql://deliveries:[^@]+@127\\.0\\.0\\.1:${ports.LOCAL_DELIVERY_DB_PORT}/deliveries$`));
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
    // And the delivery service's, on its own: ready, and answering with the shop's token.
    expect((await fetch(`http://${deliveryHttp}/readyz`)).status).to.equal(200);
    const shipments = await fetch(`http://${deliveryHttp}/shop.delivery.v1.DeliveryService/ListShipments`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ status: "SHIPMENT_STATUS_DELIVERED" }),
    });
    expect(shipments.status).to.equal(200);
  });

  it("writes the gateway's addresses and its CA to the shell variables", async function () {
    needGateway(this);
    const { stdout } = await promisify(execFile)("sh", ["-c", '. "$1" && printf "%s\\n" "$GATEWAY_GRPC" "$GATEWAY_HTTP" "$GATEWAY_CA"', "sh", path.join(dataDir, "env")]);
    const [grpc, http, ca] = stdout.split("\n");
    expect([grpc, http]).to.deep.equal([`127.0.0.1:${ports.GATEWAY_GRPC_PORT}`, `127.0.0.1:${ports.GATEWAY_HTTP_PORT}`]);
    expect(ca).to.equal(path.join(dataDir, "gateway", "tls", "ca.crt"));
    expect(readFileSync(ca!, "utf8")).to.match(/^-----BEGIN CERTIFICATE-----/);
  });

  it("stops the services and the four databases on Ctrl-C", async () => {
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
      title: "the delivery database's port",
      setting: "LOCAL_DELIVERY_DB_PORT",
      expected: (p) => `port ${p} for the delivery database is in use on 127.0.0.1; free it or set LOCAL_DELIVERY_DB_PORT to another port`,
    },
    {
      title: "the delivery service's HTTP port",
      setting: "DELIVERY_HTTP_PORT",
      expected: (p) => `port ${p} for the delivery service's HTTP is in use on 127.0.0.1; free it or set DELIVERY_HTTP_PORT to another port`,
    },
    ...(gatewayUnavailable() && process.env.CI !== "true"
      ? []
      : [
          {
            title: "the gateway's gRPC port",
            setting: "GATEWAY_GRPC_PORT",
            expected: (p: number) => `port ${p} for the gateway's gRPC is in use on 127.0.0.1; free it or set GATEWAY_GRPC_PORT to another port`,
          },
        ]),
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
      expect(run.output).to.contain("not every database URL is set; set VOUCHER_DATABASE_URL, PAYMENT_DATABASE_URL and DELIVERY_DATABASE_URL too");
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
