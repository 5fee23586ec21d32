import path from "node:path";
import { expect } from "chai";
import { createMetrics } from "@shop/platform/metrics";
import { createVoucherClient, type ClosableClient, type VoucherClient } from "@shop/sdk/clients";
import { allScopesToken, roleToken, testSigningKey } from "@shop/testkit/auth";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { createRelayMetrics } from "@shop/order-service/metrics";
import { Relay, RELAY_DEFAULTS } from "@shop/order-service/outbox/relay";
import { sampleValue } from "../../order-service/test/ops/metrics-text.js";
import { allDelivered, eventually, freshOutboxDb, insertOutboxRows, outboxRows, recordingLogger, type OutboxDb } from "../../order-service/test/outbox/outbox-db.js";

const root = path.resolve(import.meta.dirname, "../..");

const b64 = (v: object) => Buffer.from(JSON.stringify(v)).toString("base64url");

/** A token that looks like the relay's but carries no signature at all. */
const unsignedToken = `${b64({ alg: "none", typ: "JWT", kid: testSigningKey.kid })}.${b64({
  sub: "relay",
  scope: "vouchers:issue",
  iat: Math.floor(Date.now() / 1000),
  exp: Math.floor(Date.now() / 1000) + 3600,
})}.`;

/**
 * A relay the real voucher service refuses (a token without the scope, or one
 * without a signature) keeps its rows pending with backoff, parks none, says
 * so loudly and counts it; given the right token, the same relay delivers
 * every row, once.
 */
describe("end to end: a relay with the wrong token or scope against the real voucher service", function () {
  this.timeout(120_000);

  let voucherDb: TestDatabase;
  let voucher: ServiceProcess;
  let o: OutboxDb;
  let client: ClosableClient<VoucherClient>;
  let reader: ClosableClient<VoucherClient>;
  let token = roleToken("shop"); // the shop backend's token: it lacks vouchers:issue
  let relay: Relay | undefined;

  before(async () => {
    [voucherDb, o] = await Promise.all([freshDatabase("voucher"), freshOutboxDb()]);
    const [grpcPort, httpPort] = await Promise.all([freePort(), freePort()]);
    voucher = new ServiceProcess({
      name: "relay-auth-voucher",
      entry: path.join(root, "voucher-service/src/main.ts"),
      env: { VOUCHER_DATABASE_URL: voucherDb.url, VOUCHER_GRPC_PORT: String(grpcPort), VOUCHER_HTTP_PORT: String(httpPort) },
      readyUrl: `http://127.0.0.1:${httpPort}/readyz`,
    });
    await voucher.start();
    client = createVoucherClient({ baseUrl: `http://127.0.0.1:${grpcPort}`, token: () => token });
    reader = createVoucherClient({ baseUrl: `http://127.0.0.1:${grpcPort}`, token: allScopesToken });
  });

  after(async () => {
    await relay?.stop();
    client?.close();
    reader?.close();
    await voucher?.stop();
    await Promise.all([o?.close(), voucherDb?.drop()]);
  });

  it("keeps every row pending while refused, then delivers each once with the right token", async () => {
    const orders = await insertOutboxRows(o.pool, 6);
    const { logger, records } = recordingLogger();
    const metrics = createMetrics();
    relay = new Relay({
      pool: o.pool,
      voucher: client.client,
      logger,
      // maxAttempts 2: the rows are refused far more often than that, and none may be parked for it.
      config: { ...RELAY_DEFAULTS, batchSize: 4, concurrency: 2, pollIntervalMs: 20, retryBaseMs: 10, retryMaxMs: 100, maxAttempts: 2 },
      metrics: createRelayMetrics(metrics.registry),
    });
    relay.start();
    const metric = async (labels: Record<string, string>) => sampleValue(await metrics.registry.metrics(), "relay_call_failures_total", labels);

    for (const [wrong, code, says] of [
      [roleToken("shop"), "PERMISSION_DENIED", "lacks the scope"],
      [unsignedToken, "UNAUTHENTICATED", "does not accept the relay's token"],
    ] as const) {
      token = wrong;
      const seenBefore = records.length;
      await eventually(
        `every row has been refused with ${code} more often than maxAttempts`,
        async () => {
          const rows = await outboxRows(o.pool);
          return rows.every((r) => r.attempts >= 3 && r.lastError?.includes(code)) && (await metric({ code, cause: "misconfigured" }))! >= 2;
        },
        30_000,
      );
      const rows = await outboxRows(o.pool);
      expect(rows.map((r) => r.status)).to.deep.equal(Array(6).fill("pending"));
      const loud = records.slice(seenBefore).filter((r) => r.level === 50 && r.code === code);
      expect(loud.length, `an error line naming ${code}`).to.be.above(0);
      expect(loud[0]!.msg).to.include(says);
      const logged = JSON.stringify(records);
      expect(logged, "the token is never logged").not.to.include(wrong);
      expect(logged).not.to.include(wrong.split(".")[1]!);
      expect(await metric({ code, cause: "misconfigured" })).to.be.at.least(2);
    }
    expect(sampleValue(await metrics.registry.metrics(), "relay_deliveries_total", { result: "dead" })).to.equal(0);
    expect(await voucherDb.sql("SELECT COUNT(*) FROM vouchers")).to.match(/^0\s*$/);

    token = roleToken("relay");
    await eventually("every row is delivered", () => allDelivered(o.pool), 30_000);

    // One voucher per order, each the one the row was acked with.
    const perOrder = await voucherDb.sql("SELECT order_id, COUNT(*) FROM vouchers GROUP BY order_id ORDER BY order_id");
    expect(perOrder.trim().split("\n").map((l) => l.split("\t"))).to.deep.equal([...orders].sort().map((id) => [id, "1"]));
    const { vouchers } = await reader.client.batchGetVouchersByOrder({ orderIds: orders });
    const rows = await outboxRows(o.pool);
    for (const r of rows) expect(r.voucherId).to.equal(vouchers.find((v) => v.orderId === r.orderId)!.id);
  });
});
