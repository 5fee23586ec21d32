import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { expect } from "chai";
import type { Interceptor } from "@connectrpc/connect";
import { parseTraceparent, traceIdOf } from "@shop/platform/tracing";
import { createDeliveryClient, createOrderClient, createPaymentClient, type DeliveryClient, type OrderClient, type PaymentClient } from "@shop/sdk/clients";
import { ShipmentStatus } from "@shop/sdk/delivery";
import { OrderStatus, PaymentMethod, SentBy, VoucherStatus } from "@shop/sdk/order";
import { allScopesToken, roleToken } from "@shop/testkit/auth";
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

/** The traceparent stored on one row, "" when there is none. */
async function storedTraceparent(db: TestDatabase, sql: string): Promise<string> {
  return (await db.sql(sql)).trim();
}

describe("tracing the shipping chain: one paid order, CreateOrder → charge → PAID → shipment → carrier → SHIPPED → SENT → voucher", function () {
  // The four services as processes exporting to one collector; the order is paid, released by SHIP_PAID_ORDERS,
  // shipped and delivered by the delayed carrier, sent by its shipment and given its voucher, nobody acting by hand.
  this.timeout(180_000);
  const collector = new Collector();
  const dbs: Record<"order" | "voucher" | "payment" | "delivery", TestDatabase> = {} as never;
  const procs: ServiceProcess[] = [];
  const closers: Array<() => void> = [];
  let order: ServiceProcess;
  let orders: OrderClient;
  let payments: PaymentClient;
  let deliveries: DeliveryClient;

  before(async () => {
    await collector.start();
    [dbs.order, dbs.voucher, dbs.payment, dbs.delivery] = await Promise.all([freshDatabase("order"), freshDatabase("voucher"), freshDatabase("voucher"), freshDatabase("voucher")]);
    const [og, oh, vg, vh, pg, ph, dg, dh] = await Promise.all(Array.from({ length: 8 }, () => freePort()));
    const otel = {
      OTEL_TRACES_EXPORTER: "otlp",
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.port}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_BSP_SCHEDULE_DELAY: "100",
    };
    const fast = { RETRY_BASE_MS: "100", RETRY_MAX_MS: "1000" };
    order = new ServiceProcess({
      name: "tracing-ship-order",
      entry: path.join(root, "order-service/src/main.ts"),
      env: {
        ...otel,
        ORDER_DATABASE_URL: dbs.order.url,
        ORDER_GRPC_PORT: String(og),
        ORDER_HTTP_PORT: String(oh),
        VOUCHER_SERVICE_URL: `http://127.0.0.1:${vg}`,
        PAYMENT_SERVICE_URL: `http://127.0.0.1:${pg}`,
        DELIVERY_SERVICE_URL: `http://127.0.0.1:${dg}`,
        SHIP_PAID_ORDERS: "true",
        RELAY_RETRY_BASE_MS: fast.RETRY_BASE_MS,
        RELAY_RETRY_MAX_MS: fast.RETRY_MAX_MS,
      },
      readyUrl: `http://127.0.0.1:${oh}/readyz`,
    });
    const voucher = new ServiceProcess({
      name: "tracing-ship-voucher",
      entry: path.join(root, "voucher-service/src/main.ts"),
      env: { ...otel, VOUCHER_DATABASE_URL: dbs.voucher.url, VOUCHER_GRPC_PORT: String(vg), VOUCHER_HTTP_PORT: String(vh) },
      readyUrl: `http://127.0.0.1:${vh}/readyz`,
    });
    const payment = new ServiceProcess({
      name: "tracing-ship-payment",
      entry: path.join(root, "payment-service/src/main.ts"),
      env: {
        ...otel,
        PAYMENT_DATABASE_URL: dbs.payment.url,
        PAYMENT_GRPC_PORT: String(pg),
        PAYMENT_HTTP_PORT: String(ph),
        ORDER_SERVICE_URL: `http://127.0.0.1:${og}`,
        PAYMENT_RELAY_TOKEN: roleToken("payment-relay"),
        PAYMENT_RELAY_RETRY_BASE_MS: fast.RETRY_BASE_MS,
        PAYMENT_RELAY_RETRY_MAX_MS: fast.RETRY_MAX_MS,
      },
      readyUrl: `http://127.0.0.1:${ph}/readyz`,
    });
    const delivery = new ServiceProcess({
      name: "tracing-ship-delivery",
      entry: path.join(root, "delivery-service/src/main.ts"),
      env: {
        ...otel,
        DELIVERY_DATABASE_URL: dbs.delivery.url,
        DELIVERY_GRPC_PORT: String(dg),
        DELIVERY_HTTP_PORT: String(dh),
        ORDER_SERVICE_URL: `http://127.0.0.1:${og}`,
        DELIVERY_RELAY_TOKEN: roleToken("delivery-relay"),
        DELIVERY_RELAY_RETRY_BASE_MS: fast.RETRY_BASE_MS,
        DELIVERY_RELAY_RETRY_MAX_MS: fast.RETRY_MAX_MS,
        DELAYED_CARRIER_CONFIRM_MS: "50",
        DELAYED_CARRIER_SHIP_MS: "100",
        DELAYED_CARRIER_DELIVER_MS: "200",
      },
      readyUrl: `http://127.0.0.1:${dh}/readyz`,
    });
    procs.push(order, voucher, payment, delivery);
    await Promise.all(procs.map((p) => p.start()));
    const o = createOrderClient({ baseUrl: `http://127.0.0.1:${og}`, token: allScopesToken });
    const p = createPaymentClient({ baseUrl: `http://127.0.0.1:${pg}`, token: roleToken("shop") });
    const d = createDeliveryClient({ baseUrl: `http://127.0.0.1:${dg}`, token: roleToken("shop") });
    closers.push(o.close, p.close, d.close);
    [orders, payments, deliveries] = [o.client, p.client, d.client];
  });

  after(async () => {
    closers.forEach((c) => c());
    await Promise.all(procs.map((p) => p.stop()));
    await collector.close();
    await Promise.all(Object.values(dbs).map((db) => db.drop()));
  });

  /** The paid order, run through the whole chain once (in before), and the caller's trace it started in. */
  const run = { orderId: "", traceId: "", callerSpanId: "" };
  /** The traceparent each hop stored for the next one to continue, by hop. */
  let stored: Record<string, string> = {};

  before(async () => {
    await payments.openAccount({ customerId: "trace-payer", currency: "EUR" });
    await payments.topUp({ customerId: "trace-payer", amountCents: 50_000n, currency: "EUR", requestId: "trace-funding" });
    run.traceId = randomBytes(16).toString("hex");
    run.callerSpanId = randomBytes(8).toString("hex");
    const traced = createOrderClient({
      baseUrl: `http://127.0.0.1:${order.opts.env.ORDER_GRPC_PORT}`,
      token: allScopesToken,
      interceptors: [sendTraceparent(`00-${run.traceId}-${run.callerSpanId}-01`)],
    });
    closers.push(traced.close);
    const { order: created } = await traced.client.createOrder({
      customerId: "trace-payer",
      totalCents: 15_000n,
      currency: "EUR",
      requestId: randomUUID(),
      paymentMethod: PaymentMethod.ACCOUNT,
    });
    const orderId = (run.orderId = created!.id);

    // The whole chain, with nobody marking anything by hand: PAID, shipped by the delayed carrier (SENT, sent by the shipment), DELIVERED, its voucher issued.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const { order: o } = await orders.getOrder({ orderId });
      if (o!.status === OrderStatus.DELIVERED && o!.voucher!.status === VoucherStatus.ISSUED) {
        expect(SentBy[o!.sentBy]).to.equal("SHIPMENT");
        break;
      }
      if (Date.now() > deadline) throw new Error(`order ${orderId} is ${OrderStatus[o!.status]}, voucher ${VoucherStatus[o!.voucher!.status]} after 60 s; see ${procs.map((p) => p.logFile).join(", ")}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const { shipment } = await deliveries.getShipment({ orderId });
    expect(ShipmentStatus[shipment!.status]).to.equal("DELIVERED");
    stored = {
      charge: await storedTraceparent(dbs.order, `SELECT traceparent FROM charge_outbox WHERE order_id = '${orderId}'`),
      outcome: await storedTraceparent(dbs.payment, `SELECT traceparent FROM payment_outbox WHERE order_id = '${orderId}'`),
      shipmentRequest: await storedTraceparent(dbs.order, `SELECT traceparent FROM shipment_outbox WHERE order_id = '${orderId}'`),
      shipment: await storedTraceparent(dbs.delivery, `SELECT traceparent FROM shipments WHERE order_id = '${orderId}'`),
      shippedEvent: await storedTraceparent(dbs.delivery, `SELECT traceparent FROM shipment_event_outbox WHERE order_id = '${orderId}' AND event = 'SHIPPED'`),
      voucherRequest: await storedTraceparent(dbs.order, `SELECT traceparent FROM voucher_outbox WHERE order_id = '${orderId}'`),
    };
    // Wait for the last hop's span, then one more export round, so spans ended beside it are in too.
    await collector.waitFor("voucher.issue", (s) => s.name === "voucher.issue" && s.attributes["order.id"] === orderId);
    await collector.waitFor("carrier.poll", (s) => s.name === "carrier.poll" && s.service === "delivery-service");
    // The spans that end beside the last hop's: each hop's own span, and both shipment events (SHIPPED, DELIVERED).
    for (const name of ["payment.charge", "delivery.create-shipment", "order.record-payment-outcome"]) {
      await collector.waitFor(name, (s) => s.name === name && s.traceId === run.traceId);
    }
    const eventsBy = Date.now() + 15_000;
    while (collector.spans.filter((s) => s.name === "order.record-shipment-event" && s.traceId === run.traceId).length < 2 && Date.now() < eventsBy) {
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  const where = (s: ReceivedSpan) => `${s.service}:${s.name}:${s.traceId === run.traceId ? "caller's trace" : s.traceId}`;
  const spansReport = () => JSON.stringify({ stored, spans: collector.spans.map(where) }, null, 2);

  it("each hop that stores a traceparent stores the one it was given, and the next hop's span continues it", async () => {
    const { orderId, traceId, callerSpanId } = run;
    const spanOf = (match: (s: ReceivedSpan) => boolean, what: string) => {
      const found = collector.spans.find(match);
      expect(found, `${what}: ${spansReport()}`).to.not.equal(undefined);
      return found!;
    };
    // CreateOrder continues the caller; its charge request carries CreateOrder's span, and the payment service's outcome that trace.
    const createOrder = spanOf((s) => s.traceId === traceId && s.name === "shop.order.v1.OrderService/CreateOrder", "CreateOrder in the caller's trace");
    expect(createOrder).to.include({ service: "order-service", kind: SERVER, parentSpanId: callerSpanId });
    expect(parseTraceparent(stored.charge), "charge_outbox").to.deep.include({ traceId, spanId: createOrder.spanId });
    expect(traceIdOf(stored.outcome), "payment_outbox").to.equal(traceId);
    // The delivery service keeps the trace the shipment request carried, and the carrier's calls continue the shipment's span.
    const request = parseTraceparent(stored.shipmentRequest)!;
    expect(request, "shipment_outbox").to.not.equal(undefined);
    const kept = parseTraceparent(stored.shipment)!;
    expect(kept?.traceId, "shipments").to.equal(request.traceId);
    for (const call of ["carrier.accept", "carrier.poll"]) {
      const span = spanOf((s) => s.name === call && s.traceId === request.traceId, `${call} in the shipment's trace`);
      expect(span, call).to.include({ service: "delivery-service", parentSpanId: kept.spanId });
    }
    expect(traceIdOf(stored.shippedEvent), "shipment_event_outbox").to.equal(request.traceId);
    // The relays' batch spans link to the rows they carry.
    const shipmentRelay = spanOf((s) => s.name === "shipment-relay.deliver" && s.links.some((l) => l.spanId === request.spanId), "shipment-relay.deliver linking the request");
    expect(shipmentRelay).to.include({ service: "order-service", kind: CLIENT });
    const event = parseTraceparent(stored.shippedEvent)!;
    spanOf((s) => s.name === "delivery-relay.deliver" && s.links.some((l) => l.traceId === event.traceId && l.spanId === event.spanId), "delivery-relay.deliver linking the event");
    // The voucher's issue continues the voucher request's traceparent.
    const voucherRequest = parseTraceparent(stored.voucherRequest)!;
    const issue = spanOf((s) => s.name === "voucher.issue" && s.attributes["order.id"] === orderId, "voucher.issue");
    expect(issue).to.include({ service: "voucher-service", traceId: voucherRequest.traceId, parentSpanId: voucherRequest.spanId });
  });

  /** Each hop's span in the caller's trace, by what the hop is. */
  const HOPS: Array<[string, (s: ReceivedSpan) => boolean]> = [
    ["CreateOrder at the order service", (s) => s.service === "order-service" && s.name === "shop.order.v1.OrderService/CreateOrder"],
    ["the charge outcome (PAID) at the order service", (s) => s.service === "order-service" && s.name === "order.record-payment-outcome"],
    ["the carrier's handoff", (s) => s.service === "delivery-service" && s.name === "carrier.accept"],
    ["the carrier's progress (SHIPPED, DELIVERED)", (s) => s.service === "delivery-service" && s.name === "carrier.poll"],
    ["the SHIPPED event (SENT) at the order service", (s) => s.service === "order-service" && s.name === "order.record-shipment-event"],
    ["the voucher's issue", (s) => s.service === "voucher-service" && s.name === "voucher.issue" && s.attributes["order.id"] === run.orderId],
  ];

  it("every hop's span and every stored traceparent of one paid order share the caller's trace id", () => {
    const { traceId } = run;
    const inTrace = collector.spans.filter((s) => s.traceId === traceId);
    const storedTraces = Object.fromEntries(Object.entries(stored).map(([hop, tp]) => [hop, traceIdOf(tp) ?? `(none: ${JSON.stringify(tp)})`]));
    expect(storedTraces, spansReport()).to.deep.equal(Object.fromEntries(Object.keys(stored).map((hop) => [hop, traceId])));
    expect(HOPS.filter(([, match]) => !inTrace.some(match)).map(([hop]) => hop), spansReport()).to.deep.equal([]);
    // Both shipment events (SHIPPED, DELIVERED) reach the order in the trace.
    expect(inTrace.filter((s) => s.name === "order.record-shipment-event").length, spansReport()).to.equal(2);
  });

  // The relays' server spans at the payment and delivery services belong to the relay's batch trace; the
  // charge and the shipment's creation each open a span continuing the traceparent their request carries.
  it("the charge and the shipment's creation name their hop in the order's trace too", () => {
    const inTrace = collector.spans.filter((s) => s.traceId === run.traceId);
    const named: Array<[string, (s: ReceivedSpan) => boolean]> = [
      ["the charge at the payment service", (s) => s.service === "payment-service" && /charge/i.test(s.name)],
      ["the shipment's creation at the delivery service", (s) => s.service === "delivery-service" && /create/i.test(s.name)],
    ];
    expect(named.filter(([, match]) => !inTrace.some(match)).map(([hop]) => hop), spansReport()).to.deep.equal([]);
  });
});
