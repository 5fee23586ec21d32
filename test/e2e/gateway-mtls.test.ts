import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { gatewayUnavailable, startGateway, type RunningGateway } from "@shop/gateway/nginx";
import { DEFAULT_LIMITS, type GatewayConfig } from "@shop/gateway/render";
import { createOrderClient, createVoucherClient } from "@shop/sdk/clients";
import { roleToken } from "@shop/testkit/auth";
import { makeTestCerts, type TestCerts } from "@shop/testkit/certs";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

/**
 * Mutual TLS behind the gateway (GATEWAY_UPSTREAM_TLS_*): the order and voucher services as processes that
 * require a client certificate from the test CA on both ports, and gateways in front of them with TLS at the edge.
 * With the client certificate the gateway's calls go through on gRPC and Connect; without one, the services
 * refuse the gateway's handshake and callers get UNAVAILABLE, and nothing is written.
 */
describe("gateway with mutual TLS to the services", function () {
  this.timeout(120_000);
  let certs: TestCerts;
  let orderDb: TestDatabase;
  let voucherDb: TestDatabase;
  const services: ServiceProcess[] = [];
  const gateways: RunningGateway[] = [];
  let dir: string;
  let withCert: RunningGateway;
  let withoutCert: RunningGateway;
  /** Both gateways' error logs, printed when a test fails. */
  const errorLog: string[] = [];

  before(async function () {
    const missing = gatewayUnavailable();
    if (missing) {
      if (process.env.CI === "true") throw new Error(`the gateway cannot run under CI: ${missing}`);
      console.log(`      (skipped: ${missing})`);
      this.skip();
    }
    certs = makeTestCerts();
    dir = mkdtempSync(path.join(tmpdir(), "gateway-mtls-"));
    [orderDb, voucherDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher")]);
    const [og, oh, vg, vh] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    const serverTls = (p: string) => ({
      [`${p}_TLS_CERT_FILE`]: certs.server.certFile,
      [`${p}_TLS_KEY_FILE`]: certs.server.keyFile,
      [`${p}_TLS_CLIENT_CA_FILE`]: certs.ca.certFile,
    });
    services.push(
      new ServiceProcess({
        name: "gw-mtls-voucher",
        entry: path.resolve(import.meta.dirname, "../../voucher-service/src/main.ts"),
        env: { VOUCHER_DATABASE_URL: voucherDb.url, VOUCHER_GRPC_PORT: String(vg), VOUCHER_HTTP_PORT: String(vh), ...serverTls("VOUCHER") },
      }),
      new ServiceProcess({
        name: "gw-mtls-order",
        entry: path.resolve(import.meta.dirname, "../../order-service/src/main.ts"),
        env: {
          ORDER_DATABASE_URL: orderDb.url,
          ORDER_GRPC_PORT: String(og),
          ORDER_HTTP_PORT: String(oh),
          ...serverTls("ORDER"),
          VOUCHER_SERVICE_URL: `https://127.0.0.1:${vg}`,
          TLS_CA_FILE: certs.ca.certFile,
          TLS_CLIENT_CERT_FILE: certs.client.certFile,
          TLS_CLIENT_KEY_FILE: certs.client.keyFile,
        },
      }),
    );
    await Promise.all(services.map((s) => s.start()));
    // /readyz needs a client certificate too, which ServiceProcess's probe does not have.
    await Promise.all([readyOverMtls(vh, "gw-mtls-voucher"), readyOverMtls(oh, "gw-mtls-order")]);
    const one = (port: number) => [{ host: "127.0.0.1", port }];
    const voucher = { grpc: one(vg), http: one(vh) };
    const config = async (upstreamTls: GatewayConfig["upstreamTls"]) => ({
      host: "127.0.0.1",
      grpcPort: await freePort(),
      httpPort: await freePort(),
      workers: 1 as const,
      tls: { certFile: certs.server.certFile, keyFile: certs.server.keyFile },
      upstreamTls,
      limits: DEFAULT_LIMITS,
      upstreams: { order: { grpc: one(og), http: one(oh) }, voucher, payment: voucher, delivery: voucher },
    });
    withCert = await startGateway({
      onLine: (line, stream) => stream === "error" && errorLog.push(line),
      dir: path.join(dir, "with-cert"),
      // The replicas are addressed by IP; nginx checks DNS names only: the test certificate's is localhost.
      config: await config({ caFile: certs.ca.certFile, certFile: certs.client.certFile, keyFile: certs.client.keyFile, serverName: "localhost" }),
    });
    gateways.push(withCert);
    withoutCert = await startGateway({ onLine: (line, stream) => stream === "error" && errorLog.push(line), dir: path.join(dir, "without-cert"), config: await config({ caFile: certs.ca.certFile, serverName: "localhost" }) });
    gateways.push(withoutCert);
  });

  afterEach(function () {
    if (this.currentTest?.state === "failed") console.log(errorLog.slice(-10).join("\n"));
  });

  after(async () => {
    await Promise.all(gateways.map((g) => g.stop()));
    await Promise.all(services.map((s) => s.stop()));
    await Promise.all([orderDb?.drop(), voucherDb?.drop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
    certs?.cleanup();
  });

  /** Polls https://127.0.0.1:port/readyz with the test client certificate until it answers 200 (bounded). */
  async function readyOverMtls(port: number, name: string): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const status = await new Promise<number | undefined>((resolve) => {
        const req = https.get(
          { host: "127.0.0.1", port, path: "/readyz", ca: certs.ca.cert, cert: certs.client.cert, key: certs.client.key, timeout: 1000 },
          (res) => {
            res.resume();
            resolve(res.statusCode);
          },
        );
        req.on("error", () => resolve(undefined));
        req.on("timeout", () => req.destroy());
      });
      if (status === 200) return;
      if (Date.now() > deadline) throw new Error(`${name} not ready over mTLS within 30 s (last status ${status})`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  const clients = (g: RunningGateway, protocol: "grpc" | "connect") => {
    const port = protocol === "grpc" ? g.grpcPort : g.httpPort;
    const opts = { token: roleToken("shop"), baseUrl: `https://127.0.0.1:${port}`, protocol, tls: { ca: certs.ca.cert } };
    return { orders: createOrderClient(opts), vouchers: createVoucherClient(opts) };
  };

  for (const protocol of ["grpc", "connect"] as const) {
    it(`passes calls on over mTLS with its client certificate (${protocol}): an order sold and sent gets its voucher`, async () => {
      const { orders, vouchers } = clients(withCert, protocol);
      try {
        const { order } = await orders.client.createOrder({ requestId: `mtls-${protocol}`, customerId: `mtls-${protocol}`, totalCents: 12_000n, currency: "EUR" });
        await orders.client.markOrderSent({ orderId: order!.id });
        // The order service's relay reaches the voucher service over mTLS too; wait for it (bounded).
        const deadline = Date.now() + 20_000;
        for (;;) {
          const { vouchers: found } = await vouchers.client.listVouchers({ customerId: `mtls-${protocol}` });
          if (found.length === 1) {
            expect(found[0]!.orderId).to.equal(order!.id);
            break;
          }
          if (Date.now() > deadline) throw new Error(`no voucher for ${order!.id} within 20 s: ${JSON.stringify(found)}`);
          await new Promise((r) => setTimeout(r, 200));
        }
      } finally {
        orders.close();
        vouchers.close();
      }
    });

    it(`is refused by the services without a client certificate (${protocol}): UNAVAILABLE, nothing written`, async () => {
      const { orders, vouchers } = clients(withoutCert, protocol);
      try {
        const err = await orders.client
          .createOrder({ requestId: `mtls-refused-${protocol}`, customerId: `mtls-refused-${protocol}`, totalCents: 12_000n, currency: "EUR" })
          .then(
            () => undefined,
            (e: unknown) => e,
          );
        expect(err, "the call went through without a client certificate").to.be.instanceOf(ConnectError);
        expect((err as ConnectError).code, (err as ConnectError).message).to.equal(Code.Unavailable);
        expect((await orderDb.sql(`SELECT COUNT(*) FROM orders WHERE customer_id = 'mtls-refused-${protocol}'`)).trim()).to.equal("0");
      } finally {
        orders.close();
        vouchers.close();
      }
      // nginx says why in its error log.
      expect(readFileSync(path.join(withoutCert.dir, "access.log"), "utf8")).to.contain(`"upstreamStatus":"502"`);
    });
  }
});
