import { expect } from "chai";
import { MariaDbServer } from "@shop/testkit/mariadb";
import { startVoucherService, type RunningVoucherService } from "@shop/voucher-service/service";
import { startOrderService, type RunningOrderService } from "../../src/service.js";
import { silentLogger } from "../db/helpers.js";
import { eventually } from "../outbox/outbox-db.js";
import { testAuth } from "@shop/testkit/auth";

async function get(httpPort: number, path: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${httpPort}${path}`, { signal: AbortSignal.timeout(5_000) });
  await res.text();
  return res.status;
}

describe("readiness and liveness", function () {
  // A server of its own: this test kills it.
  const server = new MariaDbServer();
  let orderService: RunningOrderService;
  let voucherService: RunningVoucherService;

  before(async () => {
    await server.start();
    const [orderUrl, voucherUrl] = await Promise.all([server.createDatabase("ready_orders"), server.createDatabase("ready_vouchers")]);
    orderService = await startOrderService({
      config: { databaseUrl: orderUrl, host: "127.0.0.1", grpcPort: 0, httpPort: 0, poolSize: 2, voucherServiceUrl: "http://127.0.0.1:1", relayEnabled: false, auth: testAuth },
      relay: false,
      logger: silentLogger,
      shutdownGraceMs: 200,
    });
    voucherService = await startVoucherService({ auth: testAuth, databaseUrl: voucherUrl, host: "127.0.0.1", grpcPort: 0, httpPort: 0, logger: silentLogger, graceMs: 200, poolSize: 2 });
  });

  after(async () => {
    await orderService?.stop();
    await voucherService?.stop();
    await server.stop();
  });

  it("/readyz turns 503 when the database is killed while /healthz stays 200, and recovers when it is back", async () => {
    const ports = [orderService.httpPort, voucherService.httpPort];
    for (const p of ports) {
      expect(await get(p, "/readyz")).to.equal(200);
      expect(await get(p, "/healthz")).to.equal(200);
    }

    await server.kill();
    for (const p of ports) {
      const started = Date.now();
      expect(await get(p, "/readyz")).to.equal(503);
      expect(Date.now() - started).to.be.below(3_000);
      expect(await get(p, "/healthz")).to.equal(200);
      // /metrics still answers: a scrape during an outage keeps the process metrics.
      expect(await get(p, "/metrics")).to.equal(200);
    }

    await server.start();
    for (const p of ports) await eventually(`/readyz on :${p} is 200 again`, async () => (await get(p, "/readyz")) === 200, 15_000);
  });
});
