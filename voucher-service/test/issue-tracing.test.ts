import { Writable } from "node:stream";
import { expect } from "chai";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace";
import { createPool, type Pool } from "@shop/platform/db";
import { DomainError } from "@shop/platform/errors";
import { createLogger } from "@shop/platform/logger";
import { initTracing, SpanStatusCode, withServerSpan, type Tracing } from "@shop/platform/tracing";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { migrateVoucherDatabase } from "../src/db/migrate.js";
import { VoucherStore } from "../src/db/voucher-store.js";
import { createVouchers, type Vouchers } from "../src/vouchers.js";
import { captureLogger, issueRequest } from "./helpers.js";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT = "00f067aa0ba902b7";
const VALID = `00-${TRACE}-${PARENT}-01`;

describe("voucher.issue spans", () => {
  const exporter = new InMemorySpanExporter();
  const lines: Array<Record<string, unknown>> = [];
  let tracing: Tracing;
  let db: TestDatabase;
  let pool: Pool;
  let vouchers: Vouchers;

  const spans = async (): Promise<ReadableSpan[]> => {
    await tracing.flush();
    return exporter.getFinishedSpans().filter((s) => s.name === "voucher.issue");
  };

  before(async () => {
    tracing = await initTracing({ serviceName: "voucher-test", logger: captureLogger().logger, env: {}, exporter });
    db = await freshDatabase("voucher");
    pool = createPool({ url: db.url, connectionLimit: 2 });
    await migrateVoucherDatabase(pool, captureLogger().logger);
    // The service's own logger (with the trace mixin), its lines kept.
    const sink = new Writable({
      write(chunk, _enc, done) {
        for (const l of String(chunk).split("\n")) if (l) lines.push(JSON.parse(l));
        done();
      },
    });
    vouchers = createVouchers({ store: new VoucherStore(pool), logger: createLogger("voucher-service", sink) });
  });
  after(async () => {
    await tracing?.shutdown();
    await pool?.end();
    await db?.drop();
  });
  beforeEach(async () => {
    await tracing.flush();
    exporter.reset();
    lines.length = 0;
  });

  it("each batch item's span continues its own traceparent; an invalid or missing one falls back to the call's span", async () => {
    const items = [
      { ...issueRequest(), traceparent: VALID },
      { ...issueRequest(), traceparent: "00-this-is-not-a-traceparent" },
      issueRequest(),
    ];
    const results = await withServerSpan("shop.voucher.v1.VoucherService/BatchIssueVouchers", new Headers(), () => vouchers.issueBatch(items));
    // Tracing never fails an issue: every item got its voucher.
    expect(results.map((r) => "voucher" in r && r.created)).to.deep.equal([true, true, true]);

    const all = await spans();
    const byOrder = new Map(all.map((s) => [s.attributes["order.id"], s]));
    const call = exporter.getFinishedSpans().find((s) => s.name.endsWith("/BatchIssueVouchers"))!;
    const stored = byOrder.get(items[0]!.orderId)!;
    expect(stored.spanContext().traceId).to.equal(TRACE);
    expect(stored.parentSpanContext?.spanId).to.equal(PARENT);
    expect(stored.links.map((l) => l.context.spanId)).to.deep.equal([call.spanContext().spanId]);
    expect(stored.attributes).to.include({ "voucher.outcome": "created", "voucher.created": true });
    for (const fallback of [byOrder.get(items[1]!.orderId)!, byOrder.get(items[2]!.orderId)!]) {
      expect(fallback.spanContext().traceId).to.equal(call.spanContext().traceId);
      expect(fallback.parentSpanContext?.spanId).to.equal(call.spanContext().spanId);
    }
  });

  it("IssueVoucher's span says replayed, its log line carries the trace id, and a conflict marks it an error", async () => {
    const req = { ...issueRequest(), traceparent: VALID };
    await vouchers.issueOne(req);
    await vouchers.issueOne(req);
    const conflict = await vouchers.issueOne({ ...req, customerId: "someone-else" }).catch((err: unknown) => err);
    expect(conflict).to.be.instanceOf(DomainError);

    const [created, replayed, refused] = await spans();
    expect(created!.attributes).to.include({ "order.id": req.orderId, "voucher.outcome": "created", "voucher.created": true });
    expect(replayed!.attributes).to.include({ "voucher.outcome": "replayed", "voucher.created": false });
    expect(refused!.attributes).to.include({ "voucher.outcome": "conflict" });
    expect(refused!.status.code).to.equal(SpanStatusCode.ERROR);
    for (const s of [created!, replayed!, refused!]) expect(s.spanContext().traceId).to.equal(TRACE);

    const issued = lines.find((l) => l.msg === "voucher issued" && l.orderId === req.orderId);
    expect(issued).to.include({ traceId: TRACE, spanId: created!.spanContext().spanId });
  });
});
