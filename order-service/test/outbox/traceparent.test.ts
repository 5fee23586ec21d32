import { randomUUID } from "node:crypto";
import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace";
import { currentTraceparent, initTracing, withServerSpan, type Tracing } from "@shop/platform/tracing";
import { OrderStore } from "../../src/db/order-store.js";
import { claimDueRows } from "../../src/outbox/claim.js";
import { requestFor } from "../../src/outbox/deliver.js";
import { quietLogger } from "./fake-voucher-service.js";
import { freshOutboxDb, insertOutboxRows, type OutboxDb } from "./outbox-db.js";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const VALID = `00-${TRACE}-00f067aa0ba902b7-01`;

async function storedTraceparent(o: OutboxDb, orderId: string): Promise<string | null> {
  const [rows] = await o.pool.query<RowDataPacket[]>("SELECT traceparent FROM voucher_outbox WHERE order_id = ?", [orderId]);
  return rows[0]!.traceparent;
}

describe("outbox traceparent", () => {
  let o: OutboxDb;
  beforeEach(async () => {
    o = await freshOutboxDb();
  });
  afterEach(() => o.close());

  it("the claim reads each row's stored traceparent; a row without one has none", async () => {
    const [withTrace, without] = await insertOutboxRows(o.pool, 2);
    await o.pool.query("UPDATE voucher_outbox SET traceparent = ? WHERE order_id = ?", [VALID, withTrace]);
    const rows = await claimDueRows(o.pool, { limit: 10, leaseMs: 10_000, token: "t:1" });
    const byOrder = new Map(rows.map((r) => [r.orderId, r]));
    expect(byOrder.get(withTrace!)!.traceparent).to.equal(VALID);
    expect(byOrder.get(without!)!.traceparent).to.equal(undefined);
  });

  it("the request carries a valid traceparent, normalized to version 00, and never an invalid one", () => {
    const row = { id: 1, orderId: "o1", customerId: "c1", totalCents: 12_000, currency: "EUR", attempts: 1 };
    expect(requestFor({ ...row, traceparent: VALID }).traceparent).to.equal(VALID);
    expect(requestFor({ ...row, traceparent: `01-${TRACE}-00f067aa0ba902b7-01-more` }).traceparent).to.equal(VALID);
    // IssueVoucher refuses a malformed traceparent (INVALID_ARGUMENT would park the row as dead): it is dropped.
    expect(requestFor({ ...row, traceparent: "00-NOT-A-TRACE" }).traceparent).to.equal("");
    expect(requestFor(row).traceparent).to.equal("");
  });

  describe("MarkOrderSent with tracing installed", () => {
    let tracing: Tracing;
    before(async () => {
      tracing = await initTracing({ serviceName: "outbox-test", logger: quietLogger, env: {}, exporter: new InMemorySpanExporter() });
    });
    after(() => tracing.shutdown());

    it("stores the traceparent of the span it runs in, in the row it inserts", async () => {
      const store = new OrderStore({ pool: o.pool, logger: quietLogger });
      const { order } = await store.create({ customerId: "c1", totalCents: 12_000, currency: "EUR", requestId: randomUUID() });
      const headers = new Headers({ traceparent: VALID });
      const spanTraceparent = await withServerSpan("shop.order.v1.OrderService/MarkOrderSent", headers, async () => {
        await store.markSent(order.id);
        return currentTraceparent();
      });
      const stored = await storedTraceparent(o, order.id);
      expect(stored).to.equal(spanTraceparent).and.to.have.length(55);
      expect(stored!.slice(3, 35)).to.equal(TRACE);
    });

    it("stores NULL when called outside any span", async () => {
      const store = new OrderStore({ pool: o.pool, logger: quietLogger });
      const { order } = await store.create({ customerId: "c1", totalCents: 12_000, currency: "EUR", requestId: randomUUID() });
      await store.markSent(order.id);
      expect(await storedTraceparent(o, order.id)).to.equal(null);
    });
  });
});
