import { AsyncLocalStorage } from "node:async_hooks";
import { hostname } from "node:os";
import {
  context,
  diag,
  DiagLogLevel,
  isSpanContextValid,
  isValidSpanId,
  isValidTraceId,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type AttributeValue,
  type Context,
  type ContextManager,
  type Link,
  type Span,
  type SpanContext,
  type TextMapGetter,
  type TextMapSetter,
  type TimeInput,
} from "@opentelemetry/api";
import type { ReadableSpan, SpanExporter, TracerProviderOptions } from "@opentelemetry/sdk-trace";
import { Code, type Interceptor } from "@connectrpc/connect";
import { envReader } from "./config.js";
import { toConnectError } from "./errors.js";
import type { Logger } from "./logger.js";

/**
 * W3C trace context for the services: one tracer provider per process, spans
 * for every served call (withServerSpan), stored traceparents turned back
 * into parents or links (withChildSpan), and the current trace id on every
 * log line (traceLogFields, used by createLogger).
 *
 * This module loads only @opentelemetry/api; the SDK and the OTLP exporter
 * are imported by initTracing, so the code that merely creates spans (the
 * stores, the relay) stays cheap to load in tests and tools that never trace.
 * Until initTracing runs, every helper here is a no-op (the API's no-op
 * tracer), so code using them works unchanged in-process in tests.
 */

export { SpanKind, SpanStatusCode };
export type { Span };

const TRACER_NAME = "shop";

// ---------------------------------------------------------------------------
// traceparent strings (pure)

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
/** Longer than any traceparent worth reading; a guard against parsing junk from the wire. */
const MAX_TRACEPARENT_CHARS = 512;

/**
 * Parses a W3C traceparent (https://www.w3.org/TR/trace-context/#traceparent-header).
 * Anything invalid gives undefined, never an error: tracing must never fail
 * the work it observes. Version 00 must be exactly 55 characters; a higher
 * version may carry more fields after the fourth (read and ignored, as the
 * spec says); version ff, upper-case hex and all-zero ids are invalid.
 */
export function parseTraceparent(value: string | null | undefined): SpanContext | undefined {
  if (!value || value.length > MAX_TRACEPARENT_CHARS) return undefined;
  const m = TRACEPARENT.exec(value);
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined;
  if (!isValidTraceId(traceId) || !isValidSpanId(spanId)) return undefined;
  return { traceId, spanId, traceFlags: parseInt(flags, 16), isRemote: true };
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
  const sc = trace.getSpan(ctx)?.spanContext();
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
  const span = trace.getTracer(TRACER_NAME).startSpan(
    rpcFullName,
    {
      kind: SpanKind.SERVER,
      attributes: slash > 0 ? { "rpc.service": rpcFullName.slice(0, slash), "rpc.method": rpcFullName.slice(slash + 1) } : undefined,
    },
    parent,
  );
  return context.with(trace.setSpan(parent, span), async () => {
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
  const span = trace
    .getTracer(TRACER_NAME)
    .startSpan(name, { kind: opts.kind ?? SpanKind.INTERNAL, attributes: opts.attributes, links, startTime: opts.startTime }, parent);
  return context.with(trace.setSpan(parent, span), () => runInSpan(span, fn));
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

export interface TracingSettings {
  /** OTEL_TRACES_EXPORTER: none (default), otlp or console (one log line per span). */
  exporter: TracesExporter;
  /** OTEL_SERVICE_NAME, default the service's own name. */
  serviceName: string;
  /**
   * Where OTLP/HTTP spans go: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given, else
   * OTEL_EXPORTER_OTLP_ENDPOINT + "/v1/traces", else http://localhost:4318/v1/traces.
   */
  otlpUrl: string;
  /** OTEL_RESOURCE_ATTRIBUTES (key=value,...), added to every span's resource. */
  resourceAttributes: Record<string, string>;
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

function parseResourceAttributes(raw: string | undefined, problem: (m: string) => void): Record<string, string> {
  const out: Record<string, string> = {};
  if (!raw) return out;
  for (const pair of raw.split(",")) {
    if (pair.trim() === "") continue;
    const eq = pair.indexOf("=");
    if (eq <= 0) {
      problem(`OTEL_RESOURCE_ATTRIBUTES: ${JSON.stringify(pair)} is not key=value`);
      continue;
    }
    try {
      out[decodeURIComponent(pair.slice(0, eq).trim())] = decodeURIComponent(pair.slice(eq + 1).trim());
    } catch {
      problem(`OTEL_RESOURCE_ATTRIBUTES: ${JSON.stringify(pair)} is not valid percent-encoding`);
    }
  }
  return out;
}

/**
 * Reads the standard OTEL_* settings this service honours; throws a
 * ConfigError naming every bad one. Pure apart from reading `env`.
 */
export function readTracingSettings(env: NodeJS.ProcessEnv, defaultServiceName: string): TracingSettings {
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
    serviceName: r.string("OTEL_SERVICE_NAME", defaultServiceName),
    otlpUrl,
    resourceAttributes: parseResourceAttributes(r.optionalString("OTEL_RESOURCE_ATTRIBUTES"), r.problem),
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
 * Async context for Node: the active context follows the code through
 * awaits and callbacks (AsyncLocalStorage). The SDK package ships only a
 * synchronous StackContextManager, which loses the span at the first await.
 */
export class AsyncLocalContextManager implements ContextManager {
  private readonly storage = new AsyncLocalStorage<Context>();

  active(): Context {
    return this.storage.getStore() ?? ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    const cb = thisArg == null ? fn : fn.bind(thisArg);
    return this.storage.run(ctx, cb as (...args: A) => ReturnType<F>, ...args);
  }

  /** Functions only: event emitters are returned as they are (nothing here binds them). */
  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== "function") return target;
    const manager = this;
    const fn = target as unknown as (...args: unknown[]) => unknown;
    return function (this: unknown, ...args: unknown[]) {
      return manager.with(ctx, () => fn.apply(this, args));
    } as unknown as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.storage.disable();
    return this;
  }
}

type Resource = NonNullable<TracerProviderOptions["resource"]>;

/** The Resource interface over plain attributes: all the SDK and the OTLP serializer read. */
function plainResource(attributes: Attributes): Resource {
  return {
    attributes,
    merge(other: Resource | null): Resource {
      return plainResource({ ...attributes, ...(other?.attributes ?? {}) });
    },
    getRawAttributes() {
      return Object.entries(attributes) as Array<[string, AttributeValue | undefined]>;
    },
  };
}

const KIND_NAMES = ["internal", "server", "client", "producer", "consumer"];

/**
 * OTEL_TRACES_EXPORTER=console: each span as one log line, so stdout stays
 * JSON lines (the SDK's ConsoleSpanExporter prints multi-line objects).
 */
class LogSpanExporter implements SpanExporter {
  constructor(private readonly logger: Logger) {}

  export(spans: ReadableSpan[], done: (result: { code: number }) => void): void {
    for (const s of spans) {
      const sc = s.spanContext();
      const durationMs = s.duration[0] * 1e3 + s.duration[1] / 1e6;
      this.logger.info(
        {
          traceId: sc.traceId,
          spanId: sc.spanId,
          parentSpanId: s.parentSpanContext?.spanId,
          kind: KIND_NAMES[s.kind] ?? String(s.kind),
          durationMs: Math.round(durationMs * 1000) / 1000,
          status: s.status.code === SpanStatusCode.ERROR ? "error" : "ok",
          statusMessage: s.status.message,
          attributes: s.attributes,
          links: s.links.length > 0 ? s.links.map((l) => formatTraceparent(l.context)) : undefined,
        },
        `span ${s.name}`,
      );
    }
    done({ code: 0 });
  }

  async shutdown(): Promise<void> {}
}

export interface TracingOptions {
  /** Default OTEL_SERVICE_NAME, e.g. "order-service". */
  serviceName: string;
  logger: Logger;
  /** Default process.env. */
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
 * a tracer provider that samples every new trace (and follows the caller's
 * sampled flag), the W3C TraceContext propagator, async context, and the
 * exporter named by OTEL_TRACES_EXPORTER. With "none" spans are still made,
 * with real ids, and simply not exported: trace ids still reach the logs,
 * the outbox rows and the voucher service. Throws a ConfigError on bad settings.
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
  const settings = readTracingSettings(opts.env ?? process.env, opts.serviceName);
  const [{ TracerProvider, BatchSpanProcessor }, { W3CTraceContextPropagator }] = await Promise.all([
    import("@opentelemetry/sdk-trace"),
    import("@opentelemetry/core"),
  ]);
  for (const w of settings.warnings) logger.warn(w);
  const log = logger.child({ component: "tracing" });
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
    exporter = new LogSpanExporter(log);
  }
  const provider = new TracerProvider({
    resource: plainResource({
      "service.name": settings.serviceName,
      "telemetry.sdk.language": "nodejs",
      "telemetry.sdk.name": "opentelemetry",
      "host.name": hostname(),
      "process.pid": process.pid,
      ...settings.resourceAttributes,
    }),
    spanLimits: { linkCountLimit: MAX_LINKS },
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
  const contextManager = new AsyncLocalContextManager();
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  log.info(
    {
      exporter: opts.exporter ? "custom" : settings.exporter,
      serviceName: settings.serviceName,
      otlpUrl: settings.exporter === "otlp" && !opts.exporter ? settings.otlpUrl : undefined,
    },
    `tracing on (exporter ${opts.exporter ? "custom" : settings.exporter})`,
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
