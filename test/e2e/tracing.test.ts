import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { expect } from "chai";
import type { Interceptor } from "@connectrpc/connect";
import { parseTraceparent, traceIdOf } from "@shop/platform/tracing";
import { createOrderClient, type OrderClient } from "@shop/sdk/clients";
import { allScopesToken } from "@shop/testkit/auth";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

const root = path.resolve(import.meta.dirname, "../..");

/** OTLP's span kinds as numbers (SPAN_KIND_SERVER and SPAN_KIND_CLIENT). */
const SERVER = 2;
const CLIENT = 3;

/** One span as received, with its service's name (from the resource) and attributes flattened. */
interface ReceivedSpan {
  service: string;
  resource: Record<string, unknown>;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  links: Array<{ traceId: string; spanId: string }>;
}

type OtlpAttribute = { key: string; value: Record<string, unknown> };

function flatten(attrs: OtlpAttribute[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const a of attrs ?? []) {
    const v = a.value;
    out[a.key] = v.stringValue ?? v.boolValue ?? (v.intValue !== undefined ? Number(v.intValue) : v.doubleValue);
  }
  return out;
}

/**
 * A stand-in OpenTelemetry collector: accepts OTLP/HTTP JSON trace exports
 * (what @opentelemetry/exporter-trace-otlp-http sends, Content-Type
 * application/json, hex ids) on POST /v1/traces and keeps every span.
 */
class Collector {
  readonly spans: ReceivedSpan[] = [];
  readonly contentTypes = new Set<string>();
  private server = http.createServer((req, res) => this.receive(req, res));
  port = 0;

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private receive(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/v1/traces") {
        res.writeHead(404).end();
        return;
      }
      this.contentTypes.add(String(req.headers["content-type"]));
      let body = Buffer.concat(chunks);
      if (req.headers["content-encoding"] === "gzip") body = gunzipSync(body);
      const payload = JSON.parse(body.toString("utf8"));
      for (const rs of payload.resourceSpans ?? []) {
        const resource = flatten(rs.resource?.attributes);
        const service = String(resource["service.name"]);
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            this.spans.push({
              service,
              resource,
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId || undefined,
              name: s.name,
              kind: s.kind,
              attributes: flatten(s.attributes),
              links: (s.links ?? []).map((l: { traceId: string; spanId: string }) => ({ traceId: l.traceId, spanId: l.spanId })),
            });
          }
        }
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  }

  /** The first span matching, waiting for the services' next exports (they export every 100 ms here). */
  async waitFor(what: string, match: (s: ReceivedSpan) => boolean, timeoutMs = 15_000): Promise<ReceivedSpan> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.spans.find(match);
      if (found) return found;
      if (Date.now() > deadline) {
        const seen = this.spans.map((s) => `${s.service}:${s.name}:${s.traceId}`).join("\n  ");
        throw new Error(`no ${what} span exported within ${timeoutMs} ms; received:\n  ${seen}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The JSON lines of a service's log that mention `orderId`. */
function logLinesAbout(proc: ServiceProcess, orderId: string): Array<Record<string, unknown>> {
  return readFileSync(proc.logFile, "utf8")
    .split("\n")
    .filter((l) => l.startsWith("{") && l.includes(orderId))
    .map((l) => JSON.parse(l));
}

/** Sends a fixed traceparent with every call, as an instrumented caller of the order service would. */
function sendTraceparent(traceparent: string): Interceptor {
  return (next) => (req) => {
    req.header.set("traceparent", traceparent);
    return next(req);
  };
}

async function outboxTraceparent(db: TestDatabase, orderId: string): Promise<string> {
  return (await db.sql(`SELECT traceparent FROM voucher_outbox WHERE order_id = '${orderId}'`)).trim();
}

async function createSentOrder(orders: OrderClient, totalCents: bigint): Promise<string> {
  const { order } = await orders.createOrder({ customerId: "trace-cust", totalCents, currency: "EUR", requestId: randomUUID() });
  await orders.markOrderSent({ orderId: order!.id });
  return order!.id;
}

describe("tracing end to end: caller → MarkOrderSent → outbox row → relay → voucher service", function () {
  this.timeout(120_000);
  const collector = new Collector();
  let orderDb: TestDatabase;
  let voucherDb: TestDatabase;
  let order: ServiceProcess;
  let voucher: ServiceProcess;
  const closers: Array<() => void> = [];

  before(async () => {
    await collector.start();
    [orderDb, voucherDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher")]);
    const [vg, vh, og, oh] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    const otel = {
      OTEL_TRACES_EXPORTER: "otlp",
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.port}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_BSP_SCHEDULE_DELAY: "100",
      OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=e2e",
    };
    voucher = new ServiceProcess({
      name: "tracing-voucher",
      entry: path.join(root, "voucher-service/src/main.ts"),
      // debug: the per-item line of a batch issue is a debug line.
      env: { ...otel, LOG_LEVEL: "debug", VOUCHER_DATABASE_URL: voucherDb.url, VOUCHER_GRPC_PORT: String(vg), VOUCHER_HTTP_PORT: String(vh) },
      readyUrl: `http://127.0.0.1:${vh}/readyz`,
    });
    order = new ServiceProcess({
      name: "tracing-order",
      entry: path.join(root, "order-service/src/main.ts"),
      env: {
        ...otel,
        ORDER_DATABASE_URL: orderDb.url,
        ORDER_GRPC_PORT: String(og),
        ORDER_HTTP_PORT: String(oh),
        VOUCHER_SERVICE_URL: `http://127.0.0.1:${vg}`,
      },
      readyUrl: `http://127.0.0.1:${oh}/readyz`,
    });
    await Promise.all([voucher.start(), order.start()]);
  });

  after(async () => {
    closers.forEach((c) => c());
    await Promise.all([order?.stop(), voucher?.stop()]);
    await collector.close();
    await Promise.all([orderDb?.drop(), voucherDb?.drop()]);
  });

  function ordersClient(extra: Interceptor[] = []): OrderClient {
    const c = createOrderClient({ baseUrl: `http://127.0.0.1:${order.opts.env.ORDER_GRPC_PORT}`, token: allScopesToken, interceptors: extra });
    closers.push(c.close);
    return c.client;
  }

  it("the caller's trace id reaches the outbox row, the server span and the voucher's issue span", async () => {
    const traceId = randomBytes(16).toString("hex");
    const callerSpanId = randomBytes(8).toString("hex");
    const orders = ordersClient([sendTraceparent(`00-${traceId}-${callerSpanId}-01`)]);
    const orderId = await createSentOrder(orders, 12_000n);

    // The row stores the traceparent of MarkOrderSent's server span: same trace, that span as parent.
    const stored = parseTraceparent(await outboxTraceparent(orderDb, orderId));
    expect(stored, "the outbox row's traceparent").to.not.equal(undefined);
    expect(stored!.traceId).to.equal(traceId);

    const markSent = await collector.waitFor(
      "MarkOrderSent",
      (s) => s.name === "shop.order.v1.OrderService/MarkOrderSent" && s.traceId === traceId,
    );
    expect(markSent).to.include({ service: "order-service", kind: SERVER, parentSpanId: callerSpanId, spanId: stored!.spanId });
    expect(markSent.resource).to.include({ "deployment.environment": "e2e", "telemetry.sdk.name": "opentelemetry" });

    // The voucher's issue continues the stored context, though it came through the relay's batch call.
    const issue = await collector.waitFor("voucher.issue", (s) => s.name === "voucher.issue" && s.attributes["order.id"] === orderId);
    expect(issue).to.include({ service: "voucher-service", traceId, parentSpanId: stored!.spanId });
    expect(issue.resource).to.include({ "deployment.environment": "e2e" });
    expect(issue.attributes).to.include({ "voucher.created": true, "voucher.outcome": "created" });

    // The relay's one span per batch links the row's context and is the parent of the voucher service's call span.
    const deliver = await collector.waitFor(
      "relay.deliver",
      (s) => s.name === "relay.deliver" && s.links.some((l) => l.traceId === traceId),
    );
    expect(deliver).to.include({ service: "order-service", kind: CLIENT });
    expect(deliver.links).to.deep.include({ traceId, spanId: stored!.spanId });
    const call = await collector.waitFor("BatchIssueVouchers", (s) => s.traceId === deliver.traceId && s.service === "voucher-service");
    expect(call).to.include({ name: "shop.voucher.v1.VoucherService/BatchIssueVouchers", kind: SERVER, parentSpanId: deliver.spanId });
    expect(issue.links).to.deep.include({ traceId: call.traceId, spanId: call.spanId });

    // Both services' log lines about the order carry the trace id.
    const sentLine = logLinesAbout(order, orderId).find((l) => String(l.msg).includes("is now SENT"));
    expect(sentLine, "the order service's 'is now SENT' line").to.include({ traceId, spanId: stored!.spanId });
    const issueLine = logLinesAbout(voucher, orderId).find((l) => l.msg === "batch item answered");
    expect(issueLine, "the voucher service's line about the issue").to.include({ traceId, spanId: issue.spanId });

    expect([...collector.contentTypes]).to.deep.equal(["application/json"]);
  });

  it("a call without a traceparent starts its own trace, which the row and the issue still share", async () => {
    const orderId = await createSentOrder(ordersClient(), 15_000n);
    const traceId = traceIdOf(await outboxTraceparent(orderDb, orderId));
    expect(traceId, "the outbox row's trace id").to.be.a("string");
    const markSent = await collector.waitFor("MarkOrderSent", (s) => s.name.endsWith("/MarkOrderSent") && s.traceId === traceId);
    expect(markSent.parentSpanId).to.equal(undefined);
    await collector.waitFor("voucher.issue", (s) => s.name === "voucher.issue" && s.attributes["order.id"] === orderId && s.traceId === traceId);
  });

  it("an order that does not qualify writes no outbox row and needs no trace to be sent", async () => {
    const orderId = await createSentOrder(ordersClient(), 10_000n);
    expect(await outboxTraceparent(orderDb, orderId)).to.equal("");
  });
});

describe("tracing at shutdown", function () {
  this.timeout(60_000);
  const collector = new Collector();
  let db: TestDatabase;
  let order: ServiceProcess;

  before(async () => {
    await collector.start();
    db = await freshDatabase("order");
    const [og, oh] = await Promise.all([freePort(), freePort()]);
    order = new ServiceProcess({
      name: "tracing-shutdown-order",
      entry: path.join(root, "order-service/src/main.ts"),
      env: {
        ORDER_DATABASE_URL: db.url,
        ORDER_GRPC_PORT: String(og),
        ORDER_HTTP_PORT: String(oh),
        RELAY_ENABLED: "false",
        OTEL_TRACES_EXPORTER: "otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.port}`,
        // An hour between scheduled exports: a span arrives only when the service flushes as it stops.
        OTEL_BSP_SCHEDULE_DELAY: "3600000",
        OTEL_SERVICE_NAME: "orders-eu",
      },
      readyUrl: `http://127.0.0.1:${oh}/readyz`,
    });
    await order.start();
  });

  after(async () => {
    await order?.stop();
    await collector.close();
    await db?.drop();
  });

  it("a service stopped with SIGTERM exports the spans it still holds, under OTEL_SERVICE_NAME", async () => {
    const traceId = randomBytes(16).toString("hex");
    const c = createOrderClient({
      baseUrl: `http://127.0.0.1:${order.opts.env.ORDER_GRPC_PORT}`,
      token: allScopesToken,
      interceptors: [sendTraceparent(`00-${traceId}-${randomBytes(8).toString("hex")}-01`)],
    });
    try {
      await c.client.createOrder({ customerId: "trace-cust", totalCents: 1_000n, currency: "EUR", requestId: randomUUID() });
    } finally {
      c.close();
    }
    expect(collector.spans.filter((s) => s.traceId === traceId)).to.deep.equal([]);
    expect(await order.stop()).to.equal(0);
    // The collector answered the last export before the process exited: the span is here already, no waiting.
    const span = collector.spans.find((s) => s.traceId === traceId);
    expect(span).to.include({ service: "orders-eu", name: "shop.order.v1.OrderService/CreateOrder", kind: SERVER });
  });
});

describe("tracing with the default exporter (none)", function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let order: ServiceProcess;
  let close = () => {};

  before(async () => {
    db = await freshDatabase("order");
    const [og, oh] = await Promise.all([freePort(), freePort()]);
    order = new ServiceProcess({
      name: "tracing-none-order",
      entry: path.join(root, "order-service/src/main.ts"),
      // No relay: the row stays pending and is read as written.
      env: { ORDER_DATABASE_URL: db.url, ORDER_GRPC_PORT: String(og), ORDER_HTTP_PORT: String(oh), RELAY_ENABLED: "false", OTEL_TRACES_EXPORTER: "" },
      readyUrl: `http://127.0.0.1:${oh}/readyz`,
    });
    await order.start();
  });

  after(async () => {
    close();
    await order?.stop();
    await db?.drop();
  });

  it("still stores a valid traceparent and puts its trace id on the log lines", async () => {
    const c = createOrderClient({ baseUrl: `http://127.0.0.1:${order.opts.env.ORDER_GRPC_PORT}`, token: allScopesToken });
    close = c.close;
    const orderId = await createSentOrder(c.client, 20_000n);
    const stored = parseTraceparent(await outboxTraceparent(db, orderId));
    expect(stored, "the outbox row's traceparent").to.not.equal(undefined);
    const sentLine = logLinesAbout(order, orderId).find((l) => String(l.msg).includes("is now SENT"));
    expect(sentLine).to.include({ traceId: stored!.traceId, spanId: stored!.spanId });
  });
});
