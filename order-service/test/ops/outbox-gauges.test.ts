import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import { newId } from "@shop/platform/ids";
import { createMetrics } from "@shop/platform/metrics";
import type { Pool } from "@shop/platform/db";
import { registerOutboxGauges } from "../../src/metrics.js";
import { OUTBOX_STATS_SQL } from "../../src/outbox/stats.js";
import { startOrderService, type RunningOrderService } from "../../src/service.js";
import { silentLogger } from "../db/helpers.js";
import { freshOutboxDb, type OutboxDb } from "../outbox/outbox-db.js";
import { sampleValue, scrape } from "./metrics-text.js";
import { testAuth } from "@shop/testkit/auth";

/** Outbox rows in `status`, created `ageSeconds` ago on the database clock. */
async function insertRows(pool: Pool, status: string, count: number, ageSeconds: number): Promise<void> {
  const rows = Array.from({ length: count }, () => [newId(), "cust-g", 12_000, "EUR", status, ageSeconds * 1000]);
  for (const r of rows) {
    await pool.query(
      `INSERT INTO voucher_outbox (order_id, customer_id, total_cents, currency, status, next_attempt_at, created_at)
       VALUES (?, ?, ?, ?, ?, NOW(3), NOW(3) - INTERVAL ? * 1000 MICROSECOND)`,
      r,
    );
  }
}

async function tableCounts(pool: Pool): Promise<Record<string, number>> {
  const [rows] = await pool.query<RowDataPacket[]>("SELECT status, COUNT(*) AS n FROM voucher_outbox GROUP BY status");
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
}

describe("outbox gauges", () => {
  let o: OutboxDb;
  beforeEach(async () => {
    o = await freshOutboxDb();
  });
  afterEach(async () => {
    await o.close();
  });

  it("read pending and dead counts from the claim index alone, with no filesort or temporary table", async () => {
    await insertRows(o.pool, "pending", 50, 10);
    await insertRows(o.pool, "delivered", 200, 10);
    await insertRows(o.pool, "dead", 5, 10);
    await o.pool.query("ANALYZE TABLE voucher_outbox");
    const [plan] = await o.pool.query<RowDataPacket[]>(`EXPLAIN ${OUTBOX_STATS_SQL}`);
    const inner = plan.find((r) => r.select_type === "DERIVED")!;
    expect(inner.key).to.equal("voucher_outbox_claim_idx");
    expect(inner.type).to.equal("range");
    expect(String(inner.Extra)).to.match(/Using index/);
    const extras = plan.map((r) => String(r.Extra ?? "")).join(" | ");
    expect(extras).not.to.match(/filesort|temporary/i);
    const outer = plan.find((r) => r.table === "o")!;
    expect(outer.key).to.equal("PRIMARY");
  });

  describe("served by the order service", () => {
    let service: RunningOrderService;
    beforeEach(async () => {
      service = await startOrderService({
        config: { databaseUrl: o.db.url, host: "127.0.0.1", grpcPort: 0, httpPort: 0, poolSize: 4, voucherServiceUrl: "http://127.0.0.1:1", relayEnabled: false, auth: testAuth },
        relay: false,
        logger: silentLogger,
        shutdownGraceMs: 200,
        outboxMetricsCacheMs: 0,
      });
    });
    afterEach(async () => {
      await service?.stop();
    });

    it("match the table: pending, dead, and the age of the oldest pending row", async () => {
      let text = await scrape(service.httpPort);
      expect(sampleValue(text, "voucher_outbox_pending")).to.equal(0);
      expect(sampleValue(text, "voucher_outbox_dead")).to.equal(0);
      expect(sampleValue(text, "voucher_outbox_oldest_pending_age_seconds")).to.equal(0);

      // Inserted oldest first, as MarkOrderSent does: ids follow created_at.
      await insertRows(o.pool, "delivered", 4, 900);
      await insertRows(o.pool, "dead", 2, 600);
      await insertRows(o.pool, "pending", 1, 120);
      await insertRows(o.pool, "pending", 2, 30);
      const table = await tableCounts(o.pool);
      text = await scrape(service.httpPort);
      expect(sampleValue(text, "voucher_outbox_pending")).to.equal(table.pending).and.equal(3);
      expect(sampleValue(text, "voucher_outbox_dead")).to.equal(table.dead).and.equal(2);
      const age = sampleValue(text, "voucher_outbox_oldest_pending_age_seconds")!;
      expect(age).to.be.at.least(120).and.below(130);
    });
  });

  it("cost one query per cache period however often they are scraped", async () => {
    const metrics = createMetrics({ processMetrics: false });
    registerOutboxGauges({ registry: metrics.registry, pool: o.pool, logger: silentLogger, cacheMs: 60_000 });
    await insertRows(o.pool, "pending", 1, 1);
    expect(sampleValue(await metrics.registry.metrics(), "voucher_outbox_pending")).to.equal(1);
    await insertRows(o.pool, "pending", 4, 1);
    expect(sampleValue(await metrics.registry.metrics(), "voucher_outbox_pending")).to.equal(1);
  });
});
