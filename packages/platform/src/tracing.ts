import {
  context,
  diag,
  DiagLogLevel,
  isSpanContextValid,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type SpanContext,
  type TextMapGetter,
  type TextMapSetter,
  type TimeInput,
} from "@opentelemetry/api";
import { parseTraceParent } from "@opentelemetry/core";
import type { Resource } from "@opentelemetry/resources";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace";
import { Code, type Interceptor } from "@connectrpc/connect";
import { ConfigError, envReader } from "./config.js";
import { toConnectError } from "./errors.js";
import type { Logger } from "./logger.js";

/**
 * Tracing on the OpenTelemetry SDK. What is this project's own: a SERVER span
 * per served call that records the gRPC status (withServerSpan), the
 * traceparent an outbox row carries from MarkOrderSent to the voucher
 * service's "voucher.issue" span, and the relay's batch span linking every
 * row it delivers (withChildSpan); the current trace id on every log line
 * (traceLogFields). Everything else (tracer provider, batch export, OTLP,
 * async context, W3C propagation, resource detection) is the SDK's.
 *
 * Only @opentelemetry/api and core load with this module; initTracing
 * imports the SDK and the exporter, so code that merely creates spans (the
 * stores, the relay) stays cheap to load in tests and tools that never trace.
 * Until initTracing runs every helper is a no-op (the API's no-op tracer).
 */

export { SpanKind, SpanStatusCode };
export type { Span };

const TRACER_NAME = "shop";

// ---------------------------------------------------------------------------
// traceparent strings

/** Longer than any traceparent worth reading; a guard against parsing junk from storage or the wire. */
const MAX_TRACEPARENT_CHARS = 512;

/**
 * Parses a W3C traceparent (https://www.w3.org/TR/trace-context/#traceparent-header)
 * with the SDK's parser; anything invalid gives undefined, never an error:
 * tracing must never fail the work it observes.
 */
export function parseTraceparent(value: string | null | undefined): SpanContext | undefined {
  if (!value || value.length > MAX_TRACEPARENT_CHARS) return undefined;
  const sc = parseTraceParent(value);
  return sc ? { ...sc, isRemote: true } : undefined;
}

/** The version-00 traceparent of a span context: "00-<trace id>-<span id>-<flags>", 55 characters. */
export function formatTraceparent(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, "0")}`;
}

/**
 * A valid traceparent rewritten as version 00 (what IssueVoucherRequest.traceparent
 * accepts), or undefined for anything invalid: safe to send on.
 */
export function normalizeTraceparent(value: string | null | undefined): string | undefined {
  const sc = parseTraceparent(value);
  return sc ? formatTraceparent(sc) : undefined;
}

/** The trace id of a traceparent string; undefined when it is missing or invalid. */
export function traceIdOf(traceparent: string | null | undefined): string | undefined {
  return parseTraceparent(traceparent)?.traceId;
}

// ---------------------------------------------------------------------------
// The active span

function activeSpanContext(ctx: Context = context.active()): SpanContext | undefined {
  const sc = trace.getSpanContext(ctx);
  return sc && isSpanContextValid(sc) ? sc : undefined;
}

/**
 * The traceparent of the span active here, to store with work that continues
 * later elsewhere (the outbox row); undefined outside any span or before initTracing.
 */
export function currentTraceparent(): string | undefined {
  const sc = activeSpanContext();
  return sc ? formatTraceparent(sc) : undefined;
}

const NO_TRACE_FIELDS: Record<string, string> = Object.freeze({}) as Record<string, string>;

/**
 * pino mixin: traceId and spanId of the active span, or a shared empty object
 * outside any span. It runs on every log line, so it does one context lookup
 * and allocates only when there is something to add.
 */
export function traceLogFields(): Record<string, string> {
  const sc = activeSpanContext();
  return sc ? { traceId: sc.traceId, spanId: sc.spanId } : NO_TRACE_FIELDS;
}

/**
 * pino mixinMergeStrategy for traceLogFields: a line outside any span is left
 * as it was (no copy); otherwise the trace fields come first and the line's own
 * fields win on a clash. The mixin's object is fresh per line, so filling it is safe.
 */
export function mergeTraceLogFields(line: object, fields: object): object {
  return fields === NO_TRACE_FIELDS ? line : Object.assign(fields, line);
}

// ---------------------------------------------------------------------------
// Spans

const headerGetter: TextMapGetter<Headers> = {
  get: (h, key) => h.get(key) ?? undefined,
  keys: (h) => [...h.keys()],
};

const headerSetter: TextMapSetter<Headers> = {
  set: (h, key, value) => h.set(key, value),
};

/** Codes that mean the server failed, as opposed to refusing a bad or unlucky request (OTel's gRPC server rule). */
const SERVER_FAULTS = new Set<Code>([Code.Unknown, Code.DeadlineExceeded, Code.Unimplemented, Code.Internal, Code.Unavailable, Code.DataLoss]);

/**
 * Runs one served call in a SERVER span named after it
 * ("shop.order.v1.OrderService/MarkOrderSent"), a child of the caller's
 * traceparent/tracestate headers when they are valid, else a new trace. The
 * span records the gRPC status code; only server faults (INTERNAL,
 * UNAVAILABLE, ...) mark it as an error, a refusal like NOT_FOUND does not.
 * The error is rethrown unchanged.
 */
export function withServerSpan<T>(rpcFullName: string, headers: Headers, fn: () => Promise<T>): Promise<T> {
  const parent = propagation.extract(ROOT_CONTEXT, headers, headerGetter);
  const slash = rpcFullName.lastIndexOf("/");
  const attributes = slash > 0 ? { "rpc.service": rpcFullName.slice(0, slash), "rpc.method": rpcFullName.slice(slash + 1) } : undefined;
  return trace.getTracer(TRACER_NAME).startActiveSpan(rpcFullName, { kind: SpanKind.SERVER, attributes }, parent, async (span) => {
    try {
      const result = await fn();
      span.setAttribute("rpc.grpc.status_code", 0);
      return result;
    } catch (err) {
      const ce = toConnectError(err);
      span.setAttribute("rpc.grpc.status_code", ce.code);
      if (SERVER_FAULTS.has(ce.code)) span.setStatus({ code: SpanStatusCode.ERROR, message: `${Code[ce.code]}: ${ce.rawMessage}` });
      throw err;
    } finally {
      span.end();
    }
  });
}

export interface ChildSpanOptions {
  /** Default INTERNAL. */
  kind?: SpanKind;
  attributes?: Attributes;
  /** Stored traceparents to link to (the outbox rows a relay batch carries); invalid ones are skipped. */
  links?: Iterable<string | null | undefined>;
  /** When the work began, if before this call (e.g. the start of a database round shared by many items). */
  startTime?: TimeInput;
}

/**
 * Runs fn in a new span. With a valid `parentTraceparent` (read back from
 * storage or a request field) the span continues that trace, and links to the
 * span active here (the call that carried it); with none, or an invalid one,
 * the span is a child of the active span (or a new trace). fn may be sync or
 * async; the span ends when it returns or settles, marked as an error if it
 * throws. Returns what fn returns.
 */
export function withChildSpan<T>(
  name: string,
  parentTraceparent: string | null | undefined,
  fn: (span: Span) => T,
  options: SpanKind | ChildSpanOptions = {},
): T {
  const opts: ChildSpanOptions = typeof options === "number" ? { kind: options } : options;
  const active = context.active();
  const links: Link[] = [];
  if (opts.links) {
    for (const tp of opts.links) {
      const sc = parseTraceparent(tp);
      if (sc) links.push({ context: sc });
    }
  }
  let parent = active;
  const stored = parseTraceparent(parentTraceparent);
  if (stored) {
    parent = trace.setSpanContext(active, stored);
    const caller = activeSpanContext(active);
    if (caller) links.push({ context: caller });
  }
  const spanOptions = { kind: opts.kind ?? SpanKind.INTERNAL, attributes: opts.attributes, links, startTime: opts.startTime };
  return trace.getTracer(TRACER_NAME).startActiveSpan(name, spanOptions, parent, (span) => runInSpan(span, fn));
}

function runInSpan<T>(span: Span, fn: (span: Span) => T): T {
  let result: T;
  try {
    result = fn(span);
  } catch (err) {
    failed(span, err);
    span.end();
    throw err;
  }
  if (result instanceof Promise) {
    return result.then(
      (value) => {
        span.end();
        return value;
      },
      (err) => {
        failed(span, err);
        span.end();
        throw err;
      },
    ) as T;
  }
  span.end();
  return result;
}

function failed(span: Span, err: unknown): void {
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
}

/**
 * A connect client interceptor that sends the active span's traceparent (and
 * tracestate) with every call, so the server's span joins the caller's trace.
 * Sends nothing outside a span or before initTracing.
 */
export function traceContextInterceptor(): Interceptor {
  return (next) => (req) => {
    propagation.inject(context.active(), req.header, headerSetter);
    return next(req);
  };
}

// ---------------------------------------------------------------------------
// Set-up

export const TRACES_EXPORTERS = ["none", "otlp", "console"] as const;
export type TracesExporter = (typeof TRACES_EXPORTERS)[number];

/**
 * The OTEL_* settings read here; the SDK reads the rest itself from
 * process.env: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (resource
 * detectors), OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION and the
 * certificate files (the OTLP exporter).
 */
export interface TracingSettings {
  /** OTEL_TRACES_EXPORTER: none (default), otlp or console (one log line per span). */
  exporter: TracesExporter;
  /**
   * Where OTLP/HTTP spans go: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given, else
   * OTEL_EXPORTER_OTLP_ENDPOINT + "/v1/traces", else http://localhost:4318/v1/traces.
   * Checked here so that a bad URL stops the service at start (the exporter would only warn).
   */
  otlpUrl: string;
  /** OTEL_BSP_SCHEDULE_DELAY, default 5000 ms: how often ended spans are exported. */
  scheduleDelayMs: number;
  /** OTEL_BSP_EXPORT_TIMEOUT, default 30000 ms. */
  exportTimeoutMs: number;
  /** OTEL_BSP_MAX_QUEUE_SIZE, default 2048: spans beyond it are dropped, never waited for. */
  maxQueueSize: number;
  /** OTEL_BSP_MAX_EXPORT_BATCH_SIZE, default 512, at most maxQueueSize. */
  maxExportBatchSize: number;
  /** Warnings to log once the logger is at hand (settings accepted but not fully honoured). */
  warnings: string[];
}

/** OTLP/HTTP's default local collector address. */
const DEFAULT_OTLP_URL = "http://localhost:4318/v1/traces";

function validHttpUrl(value: string): boolean {
  try {
    const u = new URL(value);
    return u.protocol === "http:" || u.protocol === "https:";
  } catch {
    return false;
  }
}

/**
 * Reads the OTEL_* settings the SDK 3.x no longer reads itself (the exporter
 * choice, the batch processor's OTEL_BSP_*) and the endpoint; throws a
 * ConfigError naming every bad one. Pure apart from reading `env`.
 */
export function readTracingSettings(env: NodeJS.ProcessEnv): TracingSettings {
  const r = envReader(env);
  const warnings: string[] = [];
  const exporter = r.oneOf("OTEL_TRACES_EXPORTER", "none", TRACES_EXPORTERS);
  const specific = r.optionalString("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  const base = r.optionalString("OTEL_EXPORTER_OTLP_ENDPOINT");
  const otlpUrl = specific ?? (base ? `${base.replace(/\/+$/, "")}/v1/traces` : DEFAULT_OTLP_URL);
  if (!validHttpUrl(otlpUrl)) {
    r.problem(
      `${specific ? "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" : "OTEL_EXPORTER_OTLP_ENDPOINT"}=${JSON.stringify(specific ?? base)} must be an http:// or https:// URL`,
    );
  }
  const protocol = r.optionalString("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") ?? r.optionalString("OTEL_EXPORTER_OTLP_PROTOCOL");
  if (exporter === "otlp" && protocol !== undefined && protocol !== "http/json") {
    warnings.push(`OTEL_EXPORTER_OTLP_PROTOCOL=${protocol} is not supported; spans are sent as OTLP/HTTP JSON (http/json)`);
  }
  const maxQueueSize = r.int("OTEL_BSP_MAX_QUEUE_SIZE", 2048, { min: 1, max: 1_000_000 });
  const maxExportBatchSize = r.int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, { min: 1, max: 1_000_000 });
  if (maxExportBatchSize > maxQueueSize) {
    r.problem(`OTEL_BSP_MAX_EXPORT_BATCH_SIZE=${maxExportBatchSize} must not exceed OTEL_BSP_MAX_QUEUE_SIZE=${maxQueueSize}`);
  }
  const settings: TracingSettings = {
    exporter,
    otlpUrl,
    scheduleDelayMs: r.int("OTEL_BSP_SCHEDULE_DELAY", 5_000, { min: 1, max: 3_600_000 }),
    exportTimeoutMs: r.int("OTEL_BSP_EXPORT_TIMEOUT", 30_000, { min: 1, max: 3_600_000 }),
    maxQueueSize,
    maxExportBatchSize,
    warnings,
  };
  r.finish();
  return settings;
}

/**
 * The resource on every span, by the spec's precedence: the SDK's defaults
 * (telemetry.sdk.*), `defaultServiceName`, host and process, then
 * OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME (both from process.env).
 * Throws a ConfigError for an OTEL_RESOURCE_ATTRIBUTES the SDK would discard
 * (it says so only at debug level): a service starts with the resource it was given, or not at all.
 */
export async function tracingResource(defaultServiceName: string): Promise<Resource> {
  const { defaultResource, detectResources, hostDetector, processDetector, resourceAttributesEnvDetector, resourceFromAttributes, serviceNameEnvDetector } =
    await import("@opentelemetry/resources");
  const raw = process.env.OTEL_RESOURCE_ATTRIBUTES ?? "";
  if (raw.split(",").some((pair) => pair.trim() !== "") && Object.keys(resourceAttributesEnvDetector.detect().attributes ?? {}).length === 0) {
    throw new ConfigError([
      `OTEL_RESOURCE_ATTRIBUTES=${JSON.stringify(raw)} must be key=value pairs separated by commas, percent-encoded, each key and value at most 255 characters`,
    ]);
  }
  const resource = defaultResource()
    .merge(resourceFromAttributes({ "service.name": defaultServiceName }))
    .merge(detectResources({ detectors: [hostDetector, processDetector, resourceAttributesEnvDetector, serviceNameEnvDetector] }));
  // host.id is read from a file; settle it here (a millisecond) so that reading the attributes never races it.
  await resource.waitForAsyncAttributes?.();
  return resource;
}

const KIND_NAMES = ["internal", "server", "client", "producer", "consumer"];

/**
 * OTEL_TRACES_EXPORTER=console: each span as one log line, so stdout stays
 * JSON lines (the SDK's ConsoleSpanExporter prints multi-line objects).
 */
function logSpanExporter(logger: Logger): SpanExporter {
  return {
    export(spans: ReadableSpan[], done) {
      for (const s of spans) {
        const sc = s.spanContext();
        logger.info(
          {
            traceId: sc.traceId,
            spanId: sc.spanId,
            parentSpanId: s.parentSpanContext?.spanId,
            kind: KIND_NAMES[s.kind] ?? String(s.kind),
            durationMs: Math.round(s.duration[0] * 1e6 + s.duration[1] / 1e3) / 1e3,
            status: s.status.code === SpanStatusCode.ERROR ? "error" : "ok",
            statusMessage: s.status.message,
            attributes: s.attributes,
            links: s.links.length > 0 ? s.links.map((l) => formatTraceparent(l.context)) : undefined,
          },
          `span ${s.name}`,
        );
      }
      done({ code: 0 });
    },
    async shutdown() {},
  };
}

export interface TracingOptions {
  /** The service's name unless OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) gives one, e.g. "order-service". */
  serviceName: string;
  logger: Logger;
  /** Where the settings in TracingSettings are read; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Replaces the exporter OTEL_TRACES_EXPORTER names (tests: an InMemorySpanExporter). */
  exporter?: SpanExporter;
}

export interface Tracing {
  readonly settings: TracingSettings;
  /** Exports every span ended so far (tests). */
  flush(): Promise<void>;
  /** Exports what is left (at most SHUTDOWN_MS), then uninstalls: the helpers are no-ops again. Idempotent. */
  shutdown(): Promise<void>;
}

/** How long shutdown waits for the last export: shutdown must not hang on an unreachable collector. */
const SHUTDOWN_MS = 5_000;

/**
 * Links above the SDK's default cap of 128 would be dropped; the relay links
 * every row of a batch (at most 1000, RELAY_BATCH_SIZE's maximum) to its span.
 */
const MAX_LINKS = 1000;

let installed: Promise<Tracing> | undefined;

/**
 * Sets tracing up for this process, once (later calls get the same handle):
 * the SDK's tracer provider (every new trace sampled, a caller's sampled flag
 * followed), the W3C TraceContext propagator, AsyncLocalStorage context, and
 * a batch processor feeding the exporter OTEL_TRACES_EXPORTER names. With
 * "none" spans are still made, with real ids, and simply not exported: trace
 * ids still reach the logs, the outbox rows and the voucher service. Throws a
 * ConfigError on bad settings.
 */
export function initTracing(opts: TracingOptions): Promise<Tracing> {
  installed ??= install(opts).catch((err) => {
    installed = undefined;
    throw err;
  });
  return installed;
}

async function install(opts: TracingOptions): Promise<Tracing> {
  const { logger } = opts;
  const settings = readTracingSettings(opts.env ?? process.env);
  const [{ TracerProvider, BatchSpanProcessor }, { W3CTraceContextPropagator }, { AsyncLocalStorageContextManager }, resource] =
    await Promise.all([
      import("@opentelemetry/sdk-trace"),
      import("@opentelemetry/core"),
      import("@opentelemetry/context-async-hooks"),
      tracingResource(opts.serviceName),
    ]);
  for (const w of settings.warnings) logger.warn(w);
  const log = logger.child({ component: "tracing" });
  // The SDK reports export failures and dropped spans through diag: into the service's log.
  diag.setLogger(
    {
      error: (message, ...args) => log.error({ details: args.length > 0 ? args.map(String) : undefined }, message),
      warn: (message, ...args) => log.warn({ details: args.length > 0 ? args.map(String) : undefined }, message),
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true },
  );

  let exporter = opts.exporter;
  if (!exporter && settings.exporter === "otlp") {
    const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http");
    exporter = new OTLPTraceExporter({ url: settings.otlpUrl });
  } else if (!exporter && settings.exporter === "console") {
    exporter = logSpanExporter(log);
  }
  const provider = new TracerProvider({
    resource,
    spanLimits: { linkCountLimit: MAX_LINKS },
    // SDK 3.x reads no OTEL_BSP_* itself: they come from readTracingSettings.
    spanProcessors: exporter
      ? [
          new BatchSpanProcessor({
            exporter,
            scheduledDelayMillis: settings.scheduleDelayMs,
            exportTimeoutMillis: settings.exportTimeoutMs,
            maxQueueSize: settings.maxQueueSize,
            maxExportBatchSize: settings.maxExportBatchSize,
          }),
        ]
      : [],
  });
  // What NodeTracerProvider.register() did before SDK 3.x: the provider does not register itself.
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  const exporterName = opts.exporter ? "custom" : settings.exporter;
  log.info(
    { exporter: exporterName, serviceName: resource.attributes["service.name"], otlpUrl: exporterName === "otlp" ? settings.otlpUrl : undefined },
    `tracing on (exporter ${exporterName})`,
  );

  let stopping: Promise<void> | undefined;
  return {
    settings,
    flush: () => provider.forceFlush(),
    shutdown() {
      stopping ??= (async () => {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<"late">((resolve) => {
          timer = setTimeout(() => resolve("late"), SHUTDOWN_MS);
        });
        try {
          const outcome = await Promise.race([provider.shutdown().then(() => "done" as const), late]);
          if (outcome === "late") log.warn({ waitedMs: SHUTDOWN_MS }, "tracing shutdown: the last spans were not exported in time; dropped");
        } catch (err) {
          log.error({ err }, "tracing shutdown: exporting the last spans failed; dropped");
        } finally {
          clearTimeout(timer);
          trace.disable();
          propagation.disable();
          context.disable();
          diag.disable();
          installed = undefined;
        }
      })();
      return stopping;
    },
  };
}
