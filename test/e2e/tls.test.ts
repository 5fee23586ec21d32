import { randomUUID } from "node:crypto";
import https from "node:https";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { Code, ConnectError } from "@connectrpc/connect";
import { createOrderClient, createVoucherClient, type ClientOptions, type OrderClient, type VoucherClient } from "@shop/sdk/clients";
import { VoucherStatus } from "@shop/sdk/order";
import { allScopesToken, roleToken } from "@shop/testkit/auth";
import { makeTestCerts, type TestCerts } from "@shop/testkit/certs";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { loadConfig } from "../../reconciler/src/config.js";
import { Reconciler } from "../../reconciler/src/job.js";

const root = path.resolve(import.meta.dirname, "../..");

interface TlsParts {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** One request with node:https (fetch cannot be given a CA): status and body, or the connection's error. */
function httpsRequest(url: string, tls: TlsParts, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = https.request(url, { method: init.method ?? "GET", headers: init.headers, ...tls, agent: false, timeout: 5_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode!, body }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end(init.body);
  });
}

/** ServiceProcess polls readiness with fetch, which cannot trust our CA: this polls over https instead. */
async function startOverTls(proc: ServiceProcess, readyUrl: string | undefined, tls: TlsParts): Promise<void> {
  await proc.start();
  if (!readyUrl) return;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (!proc.running) throw new Error(`${proc.opts.name} exited during start; see ${proc.logFile}`);
    const res = await httpsRequest(readyUrl, tls).catch(() => undefined);
    if (res?.status === 200) return;
    if (Date.now() > deadline) throw new Error(`${proc.opts.name} not ready within 30 s; see ${proc.logFile}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * How a call ends when the connection is refused (the server closing the
 * stream or the handshake failing, depending on who notices first), as
 * opposed to an answer from a handler (NOT_FOUND, UNAUTHENTICATED, ...).
 */
const CONNECTION_REFUSED = [Code.Canceled, Code.Unknown, Code.Aborted, Code.Internal, Code.Unavailable];

/** The error a call fails with; fails the test if the call succeeds. */
async function callError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  expect.fail("the call should have been refused");
}

/** The first answer of a gRPC reflection ListServices call, made with grpc-js (a second client implementation). */
function listServices(port: number, creds: grpc.ChannelCredentials): Promise<string> {
  // The certificate's name for 127.0.0.1 too; an IP as TLS server name is deprecated (RFC 6066).
  const client = new grpc.Client(`127.0.0.1:${port}`, creds, { "grpc.ssl_target_name_override": "localhost" });
  const id = (b: Buffer) => b;
  return new Promise<string>((resolve, reject) => {
    const meta = new grpc.Metadata();
    const call = client.makeBidiStreamRequest("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", id, id, meta, {
      deadline: Date.now() + 5_000,
    });
    call.on("data", (b: Buffer) => {
      resolve(b.toString("latin1"));
      call.cancel();
    });
    call.on("error", reject);
    // ServerReflectionRequest{ list_services: "" }: field 7, length-delimited, empty.
    call.write(Buffer.from([0x3a, 0x00]));
    call.end();
  }).finally(() => client.close());
}

describe("TLS and mutual TLS between the services, as processes", function () {
  this.timeout(120_000);

  let certs: TestCerts;
  let orderDb: TestDatabase;
  let relayOrderDb: TestDatabase;
  let voucherDb: TestDatabase;
  let voucher: ServiceProcess;
  /** Order service with its in-process relay; reflection off, a 4 KiB request limit. */
  let order: ServiceProcess;
  /** Order service without a relay, drained by the standalone relay process. */
  let orderNoRelay: ServiceProcess;
  let relay: ServiceProcess;
  const ports: Record<string, number> = {};
  let orders: OrderClient;
  let ordersOfStandaloneRelay: OrderClient;
  let vouchers: VoucherClient;
  const closers: Array<() => void> = [];
  let reconcileDir: string;

  /** What the relay, the reconciler and the test present to the mTLS voucher service. */
  const withClientCert = (): TlsParts => ({ ca: certs.ca.cert, cert: certs.client.cert, key: certs.client.key });
  const client = <C>(make: (o: ClientOptions) => { client: C; close(): void }, baseUrl: string, tls: TlsParts | undefined, token = allScopesToken): C => {
    const c = make({ baseUrl, tls, token, defaultTimeoutMs: 5_000 });
    closers.push(c.close);
    return c.client;
  };

  before(async () => {
    certs = makeTestCerts();
    reconcileDir = mkdtempSync(path.join(tmpdir(), "reconcile-tls-"));
    [orderDb, relayOrderDb, voucherDb] = await Promise.all([freshDatabase("order"), freshDatabase("order"), freshDatabase("voucher")]);
    for (const name of ["vg", "vh", "og", "oh", "ng", "nh"]) ports[name] = await freePort();
    const relayClientTls = {
      TLS_CA_FILE: certs.ca.certFile,
      TLS_CLIENT_CERT_FILE: certs.client.certFile,
      TLS_CLIENT_KEY_FILE: certs.client.keyFile,
    };
    const relaySpeed = { RELAY_POLL_INTERVAL_MS: "200", RELAY_RETRY_BASE_MS: "100", RELAY_RETRY_MAX_MS: "1000" };
    const serverTls = (prefix: string) => ({ [`${prefix}_TLS_CERT_FILE`]: certs.server.certFile, [`${prefix}_TLS_KEY_FILE`]: certs.server.keyFile });
    voucher = new ServiceProcess({
      name: "tls-voucher",
      entry: path.join(root, "voucher-service/src/main.ts"),
      env: {
        VOUCHER_DATABASE_URL: voucherDb.url,
        VOUCHER_GRPC_PORT: String(ports.vg),
        VOUCHER_HTTP_PORT: String(ports.vh),
        ...serverTls("VOUCHER"),
        VOUCHER_TLS_CLIENT_CA_FILE: certs.ca.certFile,
      },
    });
    order = new ServiceProcess({
      name: "tls-order",
      entry: path.join(root, "order-service/src/main.ts"),
      env: {
        ORDER_DATABASE_URL: orderDb.url,
        ORDER_GRPC_PORT: String(ports.og),
        ORDER_HTTP_PORT: String(ports.oh),
        ...serverTls("ORDER"),
        ORDER_GRPC_REFLECTION: "false",
        ORDER_MAX_REQUEST_BYTES: "4096",
        VOUCHER_SERVICE_URL: `https://127.0.0.1:${ports.vg}`,
        ...relayClientTls,
        ...relaySpeed,
      },
    });
    orderNoRelay = new ServiceProcess({
      name: "tls-order-no-relay",
      entry: path.join(root, "order-service/src/main.ts"),
      env: {
        ORDER_DATABASE_URL: relayOrderDb.url,
        ORDER_GRPC_PORT: String(ports.ng),
        ORDER_HTTP_PORT: String(ports.nh),
        ...serverTls("ORDER"),
        RELAY_ENABLED: "false",
      },
    });
    relay = new ServiceProcess({
      name: "tls-relay",
      entry: path.join(root, "order-service/src/relay-main.ts"),
      env: { ORDER_DATABASE_URL: relayOrderDb.url, VOUCHER_SERVICE_URL: `https://127.0.0.1:${ports.vg}`, ...relayClientTls, ...relaySpeed },
    });
    await Promise.all([
      startOverTls(voucher, `https://127.0.0.1:${ports.vh}/readyz`, withClientCert()),
      startOverTls(order, `https://127.0.0.1:${ports.oh}/readyz`, { ca: certs.ca.cert }),
      // The relay migrates the database it shares with this order service: start it once the service has.
      startOverTls(orderNoRelay, `https://127.0.0.1:${ports.nh}/readyz`, { ca: certs.ca.cert }).then(() => relay.start()),
    ]);
    orders = client(createOrderClient, `https://127.0.0.1:${ports.og}`, { ca: certs.ca.cert });
    ordersOfStandaloneRelay = client(createOrderClient, `https://127.0.0.1:${ports.ng}`, { ca: certs.ca.cert });
    vouchers = client(createVoucherClient, `https://127.0.0.1:${ports.vg}`, withClientCert());
  });

  after(async () => {
    closers.forEach((c) => c());
    await Promise.all([relay?.stop(), order?.stop(), orderNoRelay?.stop(), voucher?.stop()]);
    await Promise.all([orderDb?.drop(), relayOrderDb?.drop(), voucherDb?.drop()]);
    if (reconcileDir) rmSync(reconcileDir, { recursive: true, force: true });
    certs?.cleanup();
  });

  /** Creates a qualifying order, marks it sent, and polls GetOrder until its voucher is issued (or 20 s pass). */
  async function orderWithVoucher(c: OrderClient) {
    const { order: created } = await c.createOrder({ customerId: "cust-tls", totalCents: 12_000n, currency: "EUR", requestId: randomUUID() });
    expect((await c.markOrderSent({ orderId: created!.id })).changed).to.equal(true);
    const deadline = Date.now() + 20_000;
    for (;;) {
      const { order: o } = await c.getOrder({ orderId: created!.id });
      if (o!.voucher?.status === VoucherStatus.ISSUED || Date.now() > deadline) return o!;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it("log at start which of TLS and mTLS each server runs", () => {
    const line = (p: ServiceProcess) => readFileSync(p.logFile, "utf8").split("\n").reverse().find((l) => l.includes("serving gRPC on"))!;
    expect(JSON.parse(line(voucher))).to.include({ tls: "mTLS", reflection: true, maxRequestBytes: 1024 * 1024 });
    expect(JSON.parse(line(order))).to.include({ tls: "TLS", reflection: false, maxRequestBytes: 4096 });
  });

  it("a qualifying order marked sent over TLS gets its voucher from the in-process relay over mTLS", async () => {
    const o = await orderWithVoucher(orders);
    expect(o.voucher!.status).to.equal(VoucherStatus.ISSUED);
    const { voucher: v } = await vouchers.getVoucher({ voucherId: o.voucher!.voucherId });
    expect(v).to.include({ orderId: o.id, amountCents: 500n });
  });

  it("the standalone relay delivers over mTLS too", async () => {
    const o = await orderWithVoucher(ordersOfStandaloneRelay);
    expect(o.voucher!.status).to.equal(VoucherStatus.ISSUED);
    const { vouchers: found } = await vouchers.batchGetVouchersByOrder({ orderIds: [o.id] });
    expect(found.map((v) => v.orderId)).to.deep.equal([o.id]);
  });

  it("the reconciler reads both services over TLS with its client certificate, and cannot without it", async () => {
    await orderWithVoucher(orders);
    const env = {
      ORDER_SERVICE_URL: `https://127.0.0.1:${ports.og}`,
      VOUCHER_SERVICE_URL: `https://127.0.0.1:${ports.vg}`,
      RECONCILE_TOKEN: roleToken("reconciler"),
      RECONCILE_GRACE_MS: "0",
      RECONCILE_STATE_FILE: path.join(reconcileDir, "state.json"),
      RECONCILE_REPORT_DIR: path.join(reconcileDir, "reports"),
      TLS_CA_FILE: certs.ca.certFile,
    };
    const run = async (extra: Record<string, string>) => {
      const reconciler = new Reconciler(loadConfig({ ...env, ...extra }), pino({ level: "silent" }));
      try {
        return (await reconciler.run({ dryRun: true })).report;
      } finally {
        reconciler.close();
      }
    };
    const ok = await run({ TLS_CLIENT_CERT_FILE: certs.client.certFile, TLS_CLIENT_KEY_FILE: certs.client.keyFile });
    expect(ok.error).to.equal(null);
    expect(ok.scanned.sentOrders).to.be.at.least(1);
    expect(ok.scanned.vouchers).to.be.at.least(1);
    const refused = await run({});
    expect(refused.error).to.be.a("string");
  });

  it("a plaintext client gets nothing from a TLS port, on either transport", async () => {
    const plain = client(createOrderClient, `http://127.0.0.1:${ports.og}`, undefined);
    const err = await callError(plain.getOrder({ orderId: "o-1" }));
    expect(err.code).to.be.oneOf(CONNECTION_REFUSED);
    let httpError: unknown;
    await fetch(`http://127.0.0.1:${ports.oh}/readyz`).then(
      (res) => expect.fail(`plaintext HTTP to the TLS port answered ${res.status}`),
      (e) => (httpError = e),
    );
    expect(httpError).to.be.instanceOf(Error);
  });

  it("a client that does not trust the servers' CA refuses their certificate", async () => {
    const distrustful = client(createOrderClient, `https://127.0.0.1:${ports.og}`, { ca: certs.untrustedCa.cert });
    const err = await callError(distrustful.getOrder({ orderId: "o-1" }));
    expect(err.message).to.match(/certificate/i);
    const httpErr = await httpsRequest(`https://127.0.0.1:${ports.oh}/readyz`, { ca: certs.untrustedCa.cert }).then(
      () => expect.fail("answered"),
      (e: Error) => e,
    );
    expect(httpErr.message).to.match(/certificate/i);
  });

  it("the mTLS service refuses a client without a certificate, and one from another CA, on both transports", async () => {
    const noCert = client(createVoucherClient, `https://127.0.0.1:${ports.vg}`, { ca: certs.ca.cert });
    const intruder = client(createVoucherClient, `https://127.0.0.1:${ports.vg}`, {
      ca: certs.ca.cert,
      cert: certs.untrustedClient.cert,
      key: certs.untrustedClient.key,
    });
    for (const c of [noCert, intruder]) {
      const err = await callError(c.batchGetVouchersByOrder({ orderIds: ["o-1"] }));
      expect(err.code).to.be.oneOf(CONNECTION_REFUSED);
    }
    // The same call with the trusted client certificate is answered: the refusals above are the certificates' doing.
    expect((await vouchers.batchGetVouchersByOrder({ orderIds: ["o-1"] })).vouchers).to.deep.equal([]);

    const readyz = `https://127.0.0.1:${ports.vh}/readyz`;
    for (const tls of [{ ca: certs.ca.cert }, { ca: certs.ca.cert, cert: certs.untrustedClient.cert, key: certs.untrustedClient.key }]) {
      await httpsRequest(readyz, tls).then(
        (res) => expect.fail(`answered ${res.status} without a trusted client certificate`),
        (e: Error) => expect(e).to.be.instanceOf(Error),
      );
    }
    expect((await httpsRequest(readyz, withClientCert())).status).to.equal(200);
    // Refused handshakes are logged by the server.
    expect(readFileSync(voucher.logFile, "utf8")).to.contain("TLS handshake on the Connect/HTTP port refused");
  });

  it("Connect JSON over https answers /readyz and a call with a token, and refuses one without", async () => {
    const { order: created } = await orders.createOrder({ customerId: "cust-json", totalCents: 500n, currency: "EUR", requestId: randomUUID() });
    const base = `https://127.0.0.1:${ports.oh}`;
    expect(await httpsRequest(`${base}/readyz`, { ca: certs.ca.cert })).to.deep.equal({ status: 200, body: "ready\n" });
    const call = (headers: Record<string, string>) =>
      httpsRequest(`${base}/shop.order.v1.OrderService/GetOrder`, { ca: certs.ca.cert }, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify({ orderId: created!.id }),
      });
    const res = await call({ authorization: `Bearer ${allScopesToken}` });
    expect(res.status).to.equal(200);
    expect(JSON.parse(res.body).order).to.include({ id: created!.id, customerId: "cust-json" });
    const anonymous = await call({});
    expect(anonymous.status).to.equal(401);
    expect(JSON.parse(anonymous.body).code).to.equal("unauthenticated");

    // The mTLS service's Connect port, with the client certificate.
    const v = await httpsRequest(`https://127.0.0.1:${ports.vh}/shop.voucher.v1.VoucherService/BatchGetVouchersByOrder`, withClientCert(), {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${allScopesToken}` },
      body: JSON.stringify({ orderIds: [created!.id] }),
    });
    expect(v).to.deep.equal({ status: 200, body: "{}" });
  });

  it("serve gRPC reflection only where it is on, and refuse requests over the size limit", async () => {
    const mtlsCreds = grpc.credentials.createSsl(certs.ca.cert, certs.client.key, certs.client.cert);
    expect(await listServices(ports.vg, mtlsCreds)).to.contain("shop.voucher.v1.VoucherService");
    const off = await listServices(ports.og, grpc.credentials.createSsl(certs.ca.cert)).then(
      () => expect.fail("reflection answered with ORDER_GRPC_REFLECTION=false"),
      (e: grpc.ServiceError) => e,
    );
    expect(off.code).to.equal(grpc.status.UNIMPLEMENTED);

    // ORDER_MAX_REQUEST_BYTES=4096, on both transports; a request under the limit passes.
    const big = "x".repeat(5_000);
    const err = await callError(orders.createOrder({ customerId: big, totalCents: 1n, currency: "EUR", requestId: randomUUID() }));
    expect(err.code).to.equal(Code.ResourceExhausted);
    const res = await httpsRequest(`https://127.0.0.1:${ports.oh}/shop.order.v1.OrderService/GetOrder`, { ca: certs.ca.cert }, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${allScopesToken}` },
      body: JSON.stringify({ orderId: big }),
    });
    expect(JSON.parse(res.body).code).to.equal("resource_exhausted");
    await orders.createOrder({ customerId: "x".repeat(50), totalCents: 1n, currency: "EUR", requestId: randomUUID() });
  });
});
