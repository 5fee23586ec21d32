import { hostname } from "node:os";
import { Writable } from "node:stream";
import { expect } from "chai";
import { InMemorySpanExporter, type ReadableSpan, type SpanExporter } from "@opentelemetry/sdk-trace";
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { ConfigError } from "@shop/platform/config";
import { notFound } from "@shop/platform/errors";
import { createLogger } from "@shop/platform/logger";
import {
  currentTraceparent,
  formatTraceparent,
  initTracing,
  normalizeTraceparent,
  parseTraceparent,
  readTracingSettings,
  traceContextInterceptor,
  traceIdOf,
  tracingResource,
  withChildSpan,
  withServerSpan,
  type Tracing,
} from "@shop/platform/tracing";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN = "00f067aa0ba902b7";
const VALID = `00-${TRACE}-${SPAN}-01`;

/** A logger whose lines land in an array, parsed. */
function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n")) if (l.trim()) lines.push(JSON.parse(l));
      done();
    },
  });
  return { logger: createLogger("tracing-test", stream), lines };
}

describe("traceparent parsing", () => {
  it("reads a version-00 traceparent", () => {
    expect(parseTraceparent(VALID)).to.deep.equal({ traceId: TRACE, spanId: SPAN, traceFlags: 1, isRemote: true });
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-00`)?.traceFlags).to.equal(0);
  });

  it("refuses malformed or invalid values rather than throwing", () => {
    const bad = [
      undefined,
      null,
      "",
      "garbage",
      VALID.toUpperCase(),
      `00-${"0".repeat(32)}-${SPAN}-01`, // all-zero trace id
      `00-${TRACE}-${"0".repeat(16)}-01`, // all-zero span id
      `ff-${TRACE}-${SPAN}-01`, // version ff is forbidden
      `00-${TRACE}-${SPAN}-01-extra`, // version 00 has exactly four fields
      `00-${TRACE.slice(1)}-${SPAN}-01`,
      `00-${TRACE}-${SPAN}-1`,
      `00-${TRACE}-${SPAN.replace("a", "g")}-01`,
      `  ${VALID}`,
      `${VALID}\n\n`,
      `01-${TRACE}-${SPAN}-01-${"x".repeat(600)}`, // absurdly long
    ];
    for (const value of bad) expect(parseTraceparent(value), String(value)).to.equal(undefined);
  });

  it("accepts a later version's extra fields, and the one space of padding the SDK's propagator allows, and normalizes to version 00", () => {
    const future = `01-${TRACE}-${SPAN}-03-what-comes-next`;
    expect(parseTraceparent(future)?.traceId).to.equal(TRACE);
    expect(normalizeTraceparent(future)).to.equal(`00-${TRACE}-${SPAN}-03`);
    expect(normalizeTraceparent(VALID)).to.equal(VALID);
    expect(normalizeTraceparent(` ${VALID} `)).to.equal(VALID);
    expect(normalizeTraceparent("nope")).to.equal(undefined);
  });

  it("formats a span context back to the same 55 characters", () => {
    const sc = parseTraceparent(VALID)!;
    expect(formatTraceparent(sc)).to.equal(VALID).and.to.have.length(55);
    expect(formatTraceparent({ ...sc, traceFlags: 0 })).to.equal(`00-${TRACE}-${SPAN}-00`);
  });

  it("traceIdOf gives the trace id of a valid traceparent only", () => {
    expect(traceIdOf(VALID)).to.equal(TRACE);
    expect(traceIdOf(undefined)).to.equal(undefined);
    expect(traceIdOf(`00-${TRACE}-${SPAN}`)).to.equal(undefined);
  });
});

describe("tracing settings", () => {
  it("default to no exporter, the local collector and the SDK's batch defaults", () => {
    const s = readTracingSettings({});
    expect(s).to.include({
      exporter: "none",
      otlpUrl: "http://localhost:4318/v1/traces",
      scheduleDelayMs: 5000,
      exportTimeoutMs: 30000,
      maxQueueSize: 2048,
      maxExportBatchSize: 512,
    });
    expect(s.warnings).to.deep.equal([]);
  });

  it("take the traces endpoint as given and add /v1/traces to the base endpoint", () => {
    expect(readTracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/" }).otlpUrl).to.equal(
      "http://collector:4318/v1/traces",
    );
    const both = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://a:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://b:9999/custom" };
    expect(readTracingSettings(both).otlpUrl).to.equal("http://b:9999/custom");
  });

  it("read the batch settings, which SDK 3.x leaves to the application, and warn of a protocol other than http/json", () => {
    const s = readTracingSettings({
      OTEL_TRACES_EXPORTER: "otlp",
      OTEL_BSP_SCHEDULE_DELAY: "200",
      OTEL_BSP_EXPORT_TIMEOUT: "1000",
      OTEL_BSP_MAX_QUEUE_SIZE: "100",
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "50",
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
    });
    expect(s).to.include({ exporter: "otlp", scheduleDelayMs: 200, exportTimeoutMs: 1000, maxQueueSize: 100, maxExportBatchSize: 50 });
    expect(s.warnings.join()).to.contain("http/json");
    expect(readTracingSettings({ OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" }).warnings).to.deep.equal([]);
  });

  it("name every bad setting at once", () => {
    let err: unknown;
    try {
      readTracingSettings({
        OTEL_TRACES_EXPORTER: "jaeger",
        OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318",
        OTEL_BSP_MAX_QUEUE_SIZE: "10",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "20",
      });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(ConfigError);
    const problems = (err as ConfigError).problems.join("\n");
    expect(problems).to.contain("OTEL_TRACES_EXPORTER").and.contain("OTEL_EXPORTER_OTLP_ENDPOINT").and.contain("OTEL_BSP_MAX_EXPORT_BATCH_SIZE");
  });
});

/** Runs fn with these variables set in process.env (undefined: unset), then puts the old values back. */
async function withProcessEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const put = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  put(vars);
  try {
    return await fn();
  } finally {
    put(saved);
  }
}

describe("the tracing resource", () => {
  const unset = { OTEL_SERVICE_NAME: undefined, OTEL_RESOURCE_ATTRIBUTES: undefined };

  it("names the service, the SDK, the host and the process", async () => {
    const r = await withProcessEnv(unset, () => tracingResource("order-service"));
    expect(r.attributes).to.include({
      "service.name": "order-service",
      "telemetry.sdk.name": "opentelemetry",
      "telemetry.sdk.language": "nodejs",
      "host.name": hostname(),
      "process.pid": process.pid,
    });
  });

  it("takes OTEL_RESOURCE_ATTRIBUTES over the default name, and OTEL_SERVICE_NAME over both", async () => {
    const attrs = "deployment.environment=prod,team=shop%20core,service.name=from-attributes";
    const r = await withProcessEnv({ ...unset, OTEL_RESOURCE_ATTRIBUTES: attrs }, () => tracingResource("order-service"));
    expect(r.attributes).to.include({ "deployment.environment": "prod", team: "shop core", "service.name": "from-attributes" });
    const named = await withProcessEnv({ OTEL_RESOURCE_ATTRIBUTES: attrs, OTEL_SERVICE_NAME: "orders-eu" }, () => tracingResource("order-service"));
    expect(named.attributes).to.include({ "service.name": "orders-eu", team: "shop core" });
  });

  it("refuses an OTEL_RESOURCE_ATTRIBUTES the SDK would discard, naming it", async () => {
    for (const bad of ["team", "team=a=b", "=x", "team=%zz", `team=${"x".repeat(256)}`]) {
      const err = await withProcessEnv({ ...unset, OTEL_RESOURCE_ATTRIBUTES: bad }, () => tracingResource("x")).catch((e: unknown) => e);
      expect(err, bad).to.be.instanceOf(ConfigError);
      expect((err as ConfigError).problems.join(), bad).to.contain("OTEL_RESOURCE_ATTRIBUTES");
    }
    const blank = await withProcessEnv({ ...unset, OTEL_RESOURCE_ATTRIBUTES: " , " }, () => tracingResource("x"));
    expect(blank.attributes["service.name"]).to.equal("x");
  });
});

describe("tracing helpers before initTracing", () => {
  it("are no-ops that still run the work", async () => {
    const headers = new Headers({ traceparent: VALID });
    const inside = await withServerSpan("x.v1.S/M", headers, async () => currentTraceparent());
    expect(inside).to.equal(undefined);
    expect(withChildSpan("child", VALID, () => 42)).to.equal(42);
  });
});

describe("tracing with the SDK installed", () => {
  const exporter = new InMemorySpanExporter();
  let tracing: Tracing;
  const spans = async (): Promise<ReadableSpan[]> => {
    await tracing.flush();
    return exporter.getFinishedSpans();
  };

  before(async () => {
    tracing = await initTracing({ serviceName: "tracing-test", logger: capturingLogger().logger, env: {}, exporter });
  });
  after(async () => {
    await tracing.shutdown();
  });
  beforeEach(async () => {
    await tracing.flush();
    exporter.reset();
  });

  it("initTracing is once per process: a second call gets the same handle", async () => {
    expect(await initTracing({ serviceName: "other", logger: capturingLogger().logger, env: {} })).to.equal(tracing);
  });

  it("exported spans carry the service's resource", async () => {
    await withServerSpan("a.B/C", new Headers(), async () => {});
    const [span] = await spans();
    expect(span!.resource.attributes).to.include({ "service.name": "tracing-test", "telemetry.sdk.name": "opentelemetry" });
    expect(span!.instrumentationScope.name).to.equal("shop");
  });

  it("a server span continues the caller's traceparent and stays active across awaits", async () => {
    const headers = new Headers({ traceparent: VALID, tracestate: "vendor=1" });
    const seen = await withServerSpan("shop.order.v1.OrderService/MarkOrderSent", headers, async () => {
      await new Promise((r) => setTimeout(r, 5));
      await Promise.resolve();
      return currentTraceparent();
    });
    const [span] = await spans();
    expect(span!.name).to.equal("shop.order.v1.OrderService/MarkOrderSent");
    expect(span!.kind).to.equal(SpanKind.SERVER);
    expect(span!.spanContext().traceId).to.equal(TRACE);
    expect(span!.parentSpanContext?.spanId).to.equal(SPAN);
    expect(span!.spanContext().traceState?.get("vendor")).to.equal("1");
    expect(span!.attributes).to.include({ "rpc.service": "shop.order.v1.OrderService", "rpc.method": "MarkOrderSent", "rpc.grpc.status_code": 0 });
    expect(seen).to.equal(formatTraceparent(span!.spanContext()));
  });

  it("a server span without (or with a bad) traceparent starts a new sampled trace", async () => {
    const seen = await withServerSpan("a.B/C", new Headers({ traceparent: "00-bad" }), async () => currentTraceparent());
    const [span] = await spans();
    expect(parseTraceparent(seen)).to.include({ traceId: span!.spanContext().traceId, traceFlags: 1 });
    expect(span!.parentSpanContext).to.equal(undefined);
  });

  it("a refusal leaves the server span's status unset; a server fault marks it an error", async () => {
    await withServerSpan("a.B/NotFound", new Headers(), async () => {
      throw notFound("no such order");
    }).catch(() => {});
    await withServerSpan("a.B/Broken", new Headers(), async () => {
      throw new Error("database on fire");
    }).catch(() => {});
    const byName = new Map((await spans()).map((s) => [s.name, s]));
    expect(byName.get("a.B/NotFound")!.status.code).to.equal(SpanStatusCode.UNSET);
    expect(byName.get("a.B/NotFound")!.attributes["rpc.grpc.status_code"]).to.equal(5);
    expect(byName.get("a.B/Broken")!.status.code).to.equal(SpanStatusCode.ERROR);
    expect(byName.get("a.B/Broken")!.attributes["rpc.grpc.status_code"]).to.equal(13);
  });

  it("a child span takes a stored traceparent as parent and links the call it runs in", async () => {
    await withServerSpan("v.S/Batch", new Headers(), async () => {
      withChildSpan("voucher.issue", VALID, (span) => span.setAttribute("order.id", "o1"));
      withChildSpan("voucher.issue", "not-a-traceparent", () => {});
    });
    const all = await spans();
    const call = all.find((s) => s.name === "v.S/Batch")!;
    const [stored, fallback] = all.filter((s) => s.name === "voucher.issue");
    expect(stored!.spanContext().traceId).to.equal(TRACE);
    expect(stored!.parentSpanContext?.spanId).to.equal(SPAN);
    expect(stored!.links.map((l) => l.context.spanId)).to.deep.equal([call.spanContext().spanId]);
    expect(stored!.attributes["order.id"]).to.equal("o1");
    // An invalid traceparent is ignored: the span is the call's child.
    expect(fallback!.spanContext().traceId).to.equal(call.spanContext().traceId);
    expect(fallback!.parentSpanContext?.spanId).to.equal(call.spanContext().spanId);
  });

  it("a batch span links every valid stored traceparent, beyond the SDK's default 128, and ends when its promise settles", async () => {
    const stored = Array.from({ length: 300 }, (_, i) => `00-${TRACE.slice(0, 24)}${i.toString(16).padStart(8, "0")}-${SPAN}-01`);
    const result = await withChildSpan(
      "relay.deliver",
      undefined,
      async () => {
        await new Promise((r) => setTimeout(r, 2));
        throw new Error("voucher service down");
      },
      { kind: SpanKind.CLIENT, links: [...stored, undefined, "junk"] },
    ).catch((err: Error) => err.message);
    expect(result).to.equal("voucher service down");
    const [span] = await spans();
    expect(span!.kind).to.equal(SpanKind.CLIENT);
    expect(span!.links).to.have.length(300);
    expect(span!.status).to.deep.include({ code: SpanStatusCode.ERROR, message: "voucher service down" });
  });

  it("the client interceptor sends the active span's traceparent", async () => {
    const sent = new Headers();
    const call = traceContextInterceptor()(async (req) => ({ ...req }) as never);
    let expected: string | undefined;
    await withChildSpan("relay.deliver", undefined, async () => {
      expected = currentTraceparent();
      await call({ header: sent } as never);
    });
    expect(sent.get("traceparent")).to.equal(expected).and.not.equal(undefined);
  });

  it("log lines carry traceId and spanId inside a span, and nothing outside", async () => {
    const { logger, lines } = capturingLogger();
    logger.info({ orderId: "o1" }, "outside");
    await withServerSpan("a.B/C", new Headers({ traceparent: VALID }), async () => {
      await Promise.resolve();
      logger.child({ component: "relay" }).info({ orderId: "o2" }, "inside");
      logger.info({ traceId: "mine" }, "own field wins");
    });
    const [span] = await spans();
    expect(lines[0]).to.not.have.property("traceId");
    expect(lines[0]).to.not.have.property("spanId");
    expect(lines[1]).to.include({ traceId: TRACE, spanId: span!.spanContext().spanId, orderId: "o2", component: "relay", msg: "inside" });
    expect(lines[2]).to.include({ traceId: "mine" });
  });
});

describe("tracing shutdown", () => {
  it("exports the spans still waiting in the batch processor", async () => {
    const exported: ReadableSpan[] = [];
    const exporter: SpanExporter = {
      export: (batch, done) => {
        exported.push(...batch);
        done({ code: 0 });
      },
      shutdown: async () => {},
    };
    // An hour between scheduled exports: only shutdown can send this span.
    const tracing = await initTracing({ serviceName: "t", logger: capturingLogger().logger, env: { OTEL_BSP_SCHEDULE_DELAY: "3600000" }, exporter });
    try {
      await withServerSpan("a.B/Last", new Headers(), async () => {});
      expect(exported).to.have.length(0);
    } finally {
      await tracing.shutdown();
    }
    expect(exported.map((s) => s.name)).to.deep.equal(["a.B/Last"]);
  });
});

describe("tracing with exporter console", () => {
  it("writes each span as one JSON log line", async () => {
    const { logger, lines } = capturingLogger();
    const tracing = await initTracing({ serviceName: "t", logger, env: { OTEL_TRACES_EXPORTER: "console" } });
    let traceparent: string | undefined;
    try {
      await withServerSpan("a.B/C", new Headers({ traceparent: VALID }), async () => {
        withChildSpan("relay.deliver", undefined, () => (traceparent = currentTraceparent()), { kind: SpanKind.CLIENT, links: [VALID] });
      });
      await tracing.flush();
    } finally {
      await tracing.shutdown();
    }
    const spanLines = lines.filter((l) => String(l.msg).startsWith("span "));
    expect(spanLines.map((l) => l.msg)).to.deep.equal(["span relay.deliver", "span a.B/C"]);
    const [deliver, call] = spanLines;
    expect(call).to.include({ traceId: TRACE, parentSpanId: SPAN, kind: "server", status: "ok", component: "tracing" });
    expect(deliver).to.include({ traceId: TRACE, spanId: parseTraceparent(traceparent)!.spanId, parentSpanId: call!.spanId, kind: "client" });
    expect(deliver!.links).to.deep.equal([VALID]);
  });
});

describe("tracing with exporter none", () => {
  it("still makes spans with real ids, then uninstalls on shutdown", async () => {
    const tracing = await initTracing({ serviceName: "t", logger: capturingLogger().logger, env: { OTEL_TRACES_EXPORTER: "none" } });
    let seen: string | undefined;
    try {
      seen = await withServerSpan("a.B/C", new Headers(), async () => currentTraceparent());
    } finally {
      await tracing.shutdown();
    }
    expect(parseTraceparent(seen)).to.not.equal(undefined);
    expect(await withServerSpan("a.B/C", new Headers(), async () => currentTraceparent())).to.equal(undefined);
  });
});
