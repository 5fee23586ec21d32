import http from "node:http";
import https from "node:https";
import type { AddressInfo, Server as NetServer } from "node:net";
import { brotliDecompressSync, gunzipSync } from "node:zlib";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { create, fromBinary, toBinary, type DescFile, type DescMethod, type DescMethodUnary, type DescService, type Message } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createContextKey,
  createContextValues,
  createHandlerContext,
  type HandlerContext,
  type Interceptor,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { createAsyncIterable, readAllBytes, type UniversalHandler, type UniversalServerRequest, type UniversalServerResponse } from "@connectrpc/connect/protocol";
import { codeFromString, codeToHttpStatus, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { file_grpc_health_v1_health } from "@shop/sdk/grpc-health";
import { apiDocs } from "./api-docs.js";
import { Authenticator, authorize, callerKey, type AccessPolicy, type AccessRule, type AuthSettings } from "./auth.js";
import { clip, MAX_MESSAGE_CHARS } from "./clip.js";
import { toConnectError } from "./errors.js";
import { withServerSpan } from "./tracing.js";
import { checkRequest, type RequestValidator } from "./validation.js";
import { armedFailpoints } from "./failpoints.js";
import type { Logger } from "./logger.js";
import { createMetrics, grpcCodeName, serveMetrics, type ProcessMetrics } from "./metrics.js";
import { serverTlsMode, type ServerTls } from "./tls.js";

type UnaryHandler = (req: any, ctx: HandlerContext) => Promise<any> | any;

/** One service, its implementation and who may call what; the same objects serve both transports. */
export interface ServiceBinding {
  service: DescService;
  impl: Record<string, UnaryHandler>;
  /** A rule for every method served; startServers refuses to serve a method without one. */
  access: AccessPolicy;
}

export interface ServerOptions {
  host: string;
  /** gRPC (HTTP/2) port; 0 picks a free one. */
  grpcPort: number;
  /** Connect JSON over HTTP/1.1 port, also /healthz, /readyz, /metrics, /openapi.json and /docs; 0 picks a free one. */
  httpPort: number;
  services: ServiceBinding[];
  /** Keys that sign the bearer tokens every call must carry. */
  auth: AuthSettings;
  logger: Logger;
  /** Answers /readyz: false while the database is unreachable. */
  isReady: () => Promise<boolean>;
  /**
   * How long /readyz waits for isReady before answering 503. Default 2000 ms:
   * a database that hangs rather than refuses must still fail readiness,
   * well within a probe's usual timeout.
   */
  readyTimeoutMs?: number;
  /**
   * The registry served on GET /metrics, where the RPC metrics are recorded.
   * Default: a new one with process metrics; pass the service's own to add its metrics.
   */
  metrics?: ProcessMetrics;
  /** Largest request accepted, in bytes. Default 1 MiB: no request here needs more. */
  maxMessageBytes?: number;
  /** Serve gRPC server reflection. Default true. */
  reflection?: boolean;
  /**
   * TLS on both ports (gRPC and Connect/HTTP with its probes and /metrics);
   * with clientCa, mutual TLS: both ports refuse, in the handshake, clients
   * without a certificate signed by it. Default: plaintext.
   */
  tls?: ServerTls;
}

export interface RunningServers {
  grpcPort: number;
  httpPort: number;
  /** Stop accepting calls, let calls in flight finish (up to graceMs), then close. */
  close(graceMs?: number): Promise<void>;
}

/**
 * A request whose bytes could not be decoded. The transports hand it to the
 * interceptors in place of the message (gRPC from its deserializer, Connect from
 * the router's answer), so that a malformed request is refused like any bad
 * one: after the caller is checked (an unauthenticated caller learns nothing
 * more), as INVALID_ARGUMENT, logged and counted.
 */
export class MalformedRequest {
  constructor(readonly reason: string) {}
}

/** The longest decoder message quoted: enough for the field and the problem. */
const MAX_DECODE_REASON = 200;

function malformed(detail: string): MalformedRequest {
  return new MalformedRequest(`malformed request: ${clip(detail, MAX_DECODE_REASON)}`);
}


/** Labels and log name for calls to a path no service serves (the path itself is the caller's: never a label). */
const UNKNOWN = "(unknown)";

interface Refusal {
  service: string;
  method: string;
  protocol: string;
  code: Code;
  /** The message the caller got, already clipped. */
  reason: string;
  caller?: string;
  /** What the caller asked for when it is no method served here, clipped. */
  path?: string;
  err?: unknown;
}

/**
 * One log line per refused or failed call, with its status and reason:
 * unexpected failures at error with their cause, refusals of the caller's
 * identity or rights at warn, other refusals at info. Never the token.
 */
function logRefusal(logger: Logger, r: Refusal): void {
  const fields = { rpc: r.method, service: r.service, protocol: r.protocol, code: Code[r.code], reason: r.reason, caller: r.caller, path: r.path };
  const what = r.path === undefined ? r.method : `call to ${r.path}`;
  if (r.code === Code.Internal || r.code === Code.Unknown || r.code === Code.Unavailable) {
    logger.error({ ...fields, err: r.err }, `${what} failed: ${r.reason}`);
  } else if (r.code === Code.Unauthenticated || r.code === Code.PermissionDenied) {
    logger.warn(fields, `${what} refused: ${r.reason}`);
  } else {
    logger.info(fields, `${what} refused: ${r.reason}`);
  }
}

/** A call the transport refused before the interceptors ran (over-size, undecodable framing, unknown method): logged and counted all the same. */
function reportTransportRefusal(logger: Logger, metrics: ProcessMetrics, r: Refusal): void {
  metrics.rpc.handled.inc({ service: r.service, method: r.method, code: grpcCodeName(r.code) });
  logRefusal(logger, r);
}

/** The error as the caller gets it: its message clipped, as it may quote the request. */
function clipped(ce: ConnectError): ConnectError {
  if (ce.rawMessage.length <= MAX_MESSAGE_CHARS) return ce;
  // Error details are never set by this code; metadata and cause are kept.
  return new ConnectError(clip(ce.rawMessage, MAX_MESSAGE_CHARS), ce.code, ce.metadata, undefined, ce.cause);
}

/** What the interceptors note about a call, for the Connect refusals' check and the log line of a refusal. */
interface CallNotes {
  /** The interceptors ran: the answer is theirs, not the transport's own refusal. */
  reached: boolean;
  /** The verified token's subject, once known. */
  caller?: string;
}

const callNotes = createContextKey<CallNotes | undefined>(undefined, { description: "what the interceptors noted about the call" });

/**
 * Each call runs in a SERVER span continuing the caller's traceparent, so the
 * log lines of everything below (the refusal's too) carry the trace id.
 */
function traced(): Interceptor {
  return (next) => (req) => withServerSpan(`${req.service.typeName}/${req.method.name}`, req.header, () => next(req));
}

/**
 * Every outcome is timed and counted in rpc_server_handled_total, every
 * refusal and failure logged (logRefusal), and every error becomes the status
 * the caller gets: a domain error's own message, INTERNAL with a generic one
 * for anything unexpected (the cause goes to the log), never longer than
 * MAX_MESSAGE_CHARS.
 */
function observed(logger: Logger, metrics: ProcessMetrics, protocol: string): Interceptor {
  return (next) => async (req) => {
    let notes = req.contextValues.get(callNotes);
    if (notes) notes.reached = true;
    else req.contextValues.set(callNotes, (notes = { reached: true }));
    const labels = { service: req.service.typeName, method: req.method.name };
    const endTimer = metrics.rpc.handling.startTimer(labels);
    try {
      const res = await next(req);
      endTimer();
      metrics.rpc.handled.inc({ ...labels, code: "OK" });
      return res;
    } catch (err) {
      const ce = clipped(toConnectError(err));
      endTimer();
      metrics.rpc.handled.inc({ ...labels, code: grpcCodeName(ce.code) });
      logRefusal(logger, { ...labels, protocol, code: ce.code, reason: ce.rawMessage, caller: notes.caller, err: ce.cause ?? err });
      throw ce;
    }
  };
}

/**
 * The bearer token is verified (UNAUTHENTICATED) and its scopes checked
 * against the method's rule (PERMISSION_DENIED) before anything reads the
 * request, so a caller without the right learns nothing about its request,
 * not even whether it decoded. The handler finds the caller under callerKey.
 */
function authenticated(auth: Authenticator, rules: Map<DescMethod, AccessRule>): Interceptor {
  return (next) => async (req) => {
    const principal = await auth.authenticate(req.header);
    const notes = req.contextValues.get(callNotes);
    if (notes) notes.caller = principal.subject;
    const rule = rules.get(req.method);
    // startServers refuses to serve a method without a rule: one without is a method the binding does not implement.
    if (!rule) throw new ConnectError(`${req.method.name} is not served here`, Code.Unimplemented);
    req.contextValues.set(callerKey, authorize(principal, rule, req.method.name));
    return next(req);
  };
}

/**
 * The one check of a request: bytes that did not decode are refused
 * (INVALID_ARGUMENT quoting the decoder), then the message is checked against
 * the protovalidate rules in its proto and the Timestamp ranges
 * (INVALID_ARGUMENT naming each field). Handlers rely on it and do not
 * repeat it.
 */
function validated(validate: RequestValidator): Interceptor {
  return (next) => async (req) => {
    if (req.message instanceof MalformedRequest) throw new ConnectError(req.message.reason, Code.InvalidArgument);
    validate(req.method.input, req.message as Message);
    return next(req);
  };
}

interface Plumbing {
  logger: Logger;
  metrics: ProcessMetrics;
  auth: Authenticator;
  rules: Map<DescMethod, AccessRule>;
  validate: RequestValidator;
}

/**
 * The calls' plumbing, in order, as connect interceptors: connect-node runs
 * them on the Connect port, the gRPC adapter below on the gRPC port, so both
 * transports trace, count, log, authenticate and validate with the same code.
 * (grpc-js's own server interceptors see a call as metadata, message and
 * status callbacks, outside the handler's async context: the span could not
 * be the handler's, and every concern would be written a second time.)
 */
function callInterceptors(p: Plumbing, protocol: "grpc" | "connect"): Interceptor[] {
  return [traced(), observed(p.logger, p.metrics, protocol), authenticated(p.auth, p.rules), validated(p.validate)];
}

/** next wrapped in the interceptors, the first outermost (as connect applies them). */
function intercepted(interceptors: Interceptor[], next: UnaryFn): UnaryFn {
  return interceptors.reduceRight<UnaryFn>((fn, interceptor) => interceptor(fn as never) as UnaryFn, next);
}

type UnaryFn = (req: UnaryRequest) => Promise<UnaryResponse>;

/** The access rule of every method served, by method; refuses bindings that would serve a method without one, or a streaming one. */
function accessRules(bindings: ServiceBinding[]): Map<DescMethod, AccessRule> {
  const rules = new Map<DescMethod, AccessRule>();
  for (const b of bindings) {
    for (const method of b.service.methods) {
      if (!b.impl[method.localName]) continue;
      if (method.methodKind !== "unary") throw new Error(`${method.name}: only unary methods are served`);
      const rule = b.access[method.localName];
      if (!rule) throw new Error(`${b.service.typeName}/${method.name} has no access rule: every served method must say who may call it`);
      rules.set(method, rule);
    }
  }
  return rules;
}

/** Descriptors for reflection, dependencies first, each file once. */
function fileDescriptorProtos(files: DescFile[]): Buffer[] {
  const seen = new Set<string>();
  const out: Buffer[] = [];
  const visit = (f: DescFile) => {
    if (seen.has(f.name)) return;
    seen.add(f.name);
    f.dependencies.forEach(visit);
    out.push(Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)));
  };
  files.forEach(visit);
  return out;
}

function grpcStatusFrom(err: unknown): Partial<grpc.StatusObject> {
  const ce = err instanceof ConnectError ? err : toConnectError(err);
  return { code: ce.code as number as grpc.status, details: ce.rawMessage };
}

/** Reason of the abort that releases a finished call's context; made once, as nothing reads it. */
const CALL_FINISHED = new ConnectError("call finished", Code.Canceled);

/** The handler context of a gRPC call, for the last step of its interceptors. */
const grpcHandlerContext = createContextKey<HandlerContext | undefined>(undefined, { description: "handler context of a gRPC call" });

/**
 * The grpc-js service for a protobuf-es one: each call becomes a connect
 * request and handler context and goes through the same interceptors as on
 * the Connect port, then to the same handler.
 */
function grpcServiceDefinition(service: DescService, impl: Record<string, UnaryHandler>, interceptors: Interceptor[]) {
  const definition: Record<string, grpc.MethodDefinition<any, any>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods as DescMethod[]) {
    const fn = impl[method.localName];
    if (!fn || method.methodKind !== "unary") continue;
    const path = `/${service.typeName}/${method.name}`;
    definition[method.localName] = {
      path,
      requestStream: false,
      responseStream: false,
      requestSerialize: (m: any) => Buffer.from(toBinary(method.input, m)),
      // grpc-js answers a throwing deserializer itself, as INTERNAL, before
      // any handler: hand the interceptors a marker instead (see MalformedRequest).
      requestDeserialize: (b: Buffer) => {
        try {
          return fromBinary(method.input, b);
        } catch (err) {
          return malformed(`cannot decode ${method.input.typeName}: ${(err as Error).message}`);
        }
      },
      responseSerialize: (m: any) => Buffer.from(toBinary(method.output, m)),
      responseDeserialize: (b: Buffer) => fromBinary(method.output, b),
    };
    const invoke = intercepted(interceptors, async (req) => ({
      stream: false,
      service,
      method: req.method,
      header: new Headers(),
      trailer: new Headers(),
      message: await fn(req.message, req.contextValues.get(grpcHandlerContext)!),
    }));
    handlers[method.localName] = (call: grpc.ServerUnaryCall<any, any>, callback: grpc.sendUnaryData<any>) => {
      const deadline = call.getDeadline();
      const deadlineMs = deadline instanceof Date ? deadline.getTime() : Number(deadline);
      const timeoutMs = Number.isFinite(deadlineMs) ? Math.max(0, deadlineMs - Date.now()) : undefined;
      const requestSignal = new AbortController();
      // grpc-js emits "cancelled" when the stream closes, also after a normal
      // answer: only a call still running is cancelled (a ConnectError per
      // call, with its stack, cost more than the handler's own mapping).
      let finished = false;
      call.on("cancelled", () => {
        if (!finished) requestSignal.abort(new ConnectError("cancelled by client", Code.Canceled));
      });
      const requestHeader = new Headers();
      for (const [k, v] of Object.entries(call.metadata.getMap())) {
        if (typeof v === "string") requestHeader.set(k, v);
      }
      const contextValues = createContextValues();
      const ctx = createHandlerContext({
        service,
        method,
        protocolName: "grpc",
        requestMethod: "POST",
        url: path,
        timeoutMs,
        requestSignal: requestSignal.signal,
        requestHeader,
        contextValues,
      });
      contextValues.set(grpcHandlerContext, ctx);
      // ctx.abort() clears the context's deadline timer, which would otherwise
      // stay armed for the whole deadline after the answer and then fire.
      const settle = () => {
        finished = true;
        ctx.abort(CALL_FINISHED);
      };
      const request: UnaryRequest = {
        stream: false,
        service,
        method: method as DescMethodUnary,
        requestMethod: "POST",
        url: path,
        signal: ctx.signal,
        header: requestHeader,
        contextValues,
        message: call.request,
      };
      // Started from a promise, so that even a synchronous throw in the chain answers the call.
      Promise.resolve(request)
        .then(invoke)
        .then(
          (res) => {
            settle();
            callback(null, create(method.output, res.message));
          },
          (err) => {
            settle();
            callback(grpcStatusFrom(err) as grpc.ServiceError);
          },
        );
    };
  }
  return { definition: definition as grpc.ServiceDefinition, handlers };
}

/** "/shop.order.v1.OrderService/GetOrder" as metric labels. */
function grpcPathLabels(path: string): { service: string; method: string } {
  const m = /^\/([^/]+)\/([^/]+)$/.exec(path);
  return m ? { service: m[1]!, method: m[2]! } : { service: UNKNOWN, method: UNKNOWN };
}

/** The deserializer of the stand-in handler for unknown methods: nothing is ever decoded, and the interceptor knows the handler by it. */
const unknownMethodDeserialize = (b: Buffer) => b;

/**
 * grpc-js answers some calls itself, before any handler: a message over the
 * size limit (RESOURCE_EXHAUSTED), a malformed grpc-timeout header or
 * compressed message (INTERNAL), an unsupported grpc-encoding
 * (UNIMPLEMENTED), and it does so without a log line or a metric. This
 * interceptor sees every status a call ends with, through the call's
 * sendStatus, which grpc-js's own refusals use too; those sent before the
 * request message reached the handler are the transport's refusals. It logs
 * and counts them, answers what grpc-js calls INTERNAL (always the caller's
 * bytes here) as INVALID_ARGUMENT, and clips what it echoes.
 */
function transportRefusals(logger: Logger, metrics: ProcessMetrics): grpc.ServerInterceptor {
  return (descriptor, call) => {
    let reached = false;
    const unknownMethod = descriptor.requestDeserialize === unknownMethodDeserialize;
    const labels = unknownMethod ? { service: UNKNOWN, method: UNKNOWN } : grpcPathLabels(descriptor.path);
    const send = call.sendStatus.bind(call);
    call.sendStatus = (status) => {
      if (!reached && status.code !== grpc.status.OK && status.code !== grpc.status.CANCELLED) {
        const code = status.code === grpc.status.INTERNAL ? Code.InvalidArgument : (status.code as number as Code);
        const prefix = status.code === grpc.status.INTERNAL ? "malformed request: " : "";
        const reason = clip(`${prefix}${status.details ?? ""}`, MAX_DECODE_REASON);
        reportTransportRefusal(logger, metrics, {
          ...labels,
          protocol: "grpc",
          code,
          reason,
          path: unknownMethod ? clip(descriptor.path) : undefined,
        });
        status = { ...status, code: code as number as grpc.status, details: reason };
      }
      send(status);
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMessage: (message, nextMessage) => {
            reached = true;
            nextMessage(message);
          },
        }),
    });
  };
}

/**
 * Calls to a path no service serves get a stand-in handler, so they pass the
 * interceptor (logged and counted under "(unknown)") and the answer quotes the
 * path clipped; grpc-js would answer them itself, silently, quoting the whole
 * path. It is a bidi handler so that it answers at once, whatever kind of call
 * the caller meant, without waiting for a message. grpc-js has no public hook
 * for this: the lookup it uses is replaced on this server only, and if a
 * grpc-js version lacks it, startServers says so and unknown paths go back to
 * being answered by grpc-js.
 */
function answerUnknownMethods(server: grpc.Server, logger: Logger): void {
  const internals = server as unknown as { _retrieveHandler?: (path: string) => unknown };
  const lookup = internals._retrieveHandler?.bind(server);
  if (typeof lookup !== "function") {
    logger.warn("this grpc-js has no _retrieveHandler: calls to unknown gRPC methods are answered by grpc-js, without a log line or a metric");
    return;
  }
  internals._retrieveHandler = (path: string) =>
    lookup(path) ?? {
      type: "bidi",
      path,
      serialize: (b: Buffer) => b,
      deserialize: unknownMethodDeserialize,
      func: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        call.emit("error", { code: grpc.status.UNIMPLEMENTED, details: `unknown method ${clip(path)}` });
      },
    };
}

/**
 * Connect answers some calls itself before any interceptor: a body it cannot
 * decode (binary: INTERNAL, JSON: INVALID_ARGUMENT quoting the value whole), a
 * body over readMaxBytes, an unsupported content type or HTTP method. This
 * wraps each route so that such an answer is noticed (the interceptors never
 * ran) and made like their own: a decoding failure goes through the
 * interceptors as a MalformedRequest (so the caller is checked first, and the
 * refusal is INVALID_ARGUMENT, logged and counted there); anything else is
 * logged and counted here, its message clipped.
 */
function connectTransportRefusals(handler: UniversalHandler, interceptors: Interceptor[], logger: Logger, metrics: ProcessMetrics): UniversalHandler {
  const refuseMalformed = intercepted(interceptors, () => {
    throw new ConnectError("internal error: a malformed request was not refused", Code.Internal);
  });
  const route = async (req: UniversalServerRequest): Promise<UniversalServerResponse> => {
    const notes: CallNotes = { reached: false };
    const contextValues = (req.contextValues ?? createContextValues()).set(callNotes, notes);
    const res = await handler({ ...req, contextValues });
    if (notes.reached || (res.status >= 200 && res.status < 300)) return res;
    const body = res.body ? await readAllBytes(res.body, 0xffffffff) : undefined;
    const answered = errorOf(res, body);
    const decoding =
      answered.json && (answered.code === Code.Internal || answered.code === Code.InvalidArgument || answered.code === Code.Unknown);
    if (decoding) {
      try {
        await refuseMalformed({
          stream: false,
          service: handler.service,
          method: handler.method as DescMethodUnary,
          requestMethod: req.method,
          url: req.url,
          signal: req.signal,
          header: req.header,
          contextValues,
          message: malformed(answered.message) as never,
        });
        throw new ConnectError("internal error: a malformed request was not refused", Code.Internal);
      } catch (err) {
        return errorResponse(toConnectError(err));
      }
    }
    const ce = new ConnectError(clip(answered.message, MAX_DECODE_REASON), answered.code);
    reportTransportRefusal(logger, metrics, {
      service: handler.service.typeName,
      method: handler.method.name,
      protocol: "connect",
      code: ce.code,
      reason: ce.rawMessage,
    });
    return answered.json ? errorResponse(ce, res.header) : { ...res, body: body && createAsyncIterable([body]) };
  };
  return Object.assign(route, handler);
}

/**
 * The code and message of an error answer: Connect's JSON error body (read
 * whole: connect made it in memory, and it may quote the request at length;
 * compressed when the caller accepts it and it is long), or (for 405, 415,
 * ...) what the HTTP status means.
 */
function errorOf(res: UniversalServerResponse, bytes: Uint8Array | undefined): { code: Code; message: string; json: boolean } {
  const contentType = res.header?.get("content-type") ?? "";
  if (bytes && contentType.startsWith("application/json")) {
    try {
      const encoding = res.header?.get("content-encoding") ?? "identity";
      const plain = encoding === "gzip" ? gunzipSync(bytes) : encoding === "br" ? brotliDecompressSync(bytes) : encoding === "identity" ? bytes : undefined;
      if (!plain) throw new Error(`unknown content-encoding ${encoding}`);
      const body = JSON.parse(new TextDecoder().decode(plain)) as { code?: unknown; message?: unknown };
      const code = typeof body.code === "string" ? codeFromString(body.code) : undefined;
      if (code !== undefined) return { code, message: typeof body.message === "string" ? body.message : "", json: true };
    } catch {
      // not a Connect error body: judged by the status below
    }
  }
  switch (res.status) {
    case 404:
    case 405:
      return { code: Code.Unimplemented, message: `HTTP ${res.status}: no such method for this HTTP method`, json: false };
    case 413:
      return { code: Code.ResourceExhausted, message: "HTTP 413: request too large", json: false };
    case 415:
      return { code: Code.InvalidArgument, message: "HTTP 415: unsupported content type (application/json or application/proto)", json: false };
    default:
      return { code: Code.Unknown, message: `HTTP ${res.status}`, json: false };
  }
}

function errorResponse(ce: ConnectError, header?: Headers): UniversalServerResponse {
  const out = new Headers(header);
  out.set("content-type", "application/json");
  out.delete("content-length");
  // Written uncompressed: short, and made here.
  out.delete("content-encoding");
  ce.metadata.forEach((value, key) => out.set(key, value));
  return { status: codeToHttpStatus(ce.code), header: out, body: createAsyncIterable([errorToJsonBytes(ce, {})]) };
}

/** false once timeoutMs has passed without an answer. */
function withTimeout(ready: Promise<boolean>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  return Promise.race([ready, late]).finally(() => clearTimeout(timer));
}

function listen(server: NetServer, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Plaintext, TLS, or TLS that requires (and checks) a client certificate signed by tls.clientCa. */
function grpcCredentials(tls: ServerTls | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(tls.clientCa ?? null, [{ cert_chain: tls.cert, private_key: tls.key }], tls.clientCa !== undefined);
}

/**
 * The Connect/HTTP server, over TLS when configured. With a client CA the
 * handshake itself refuses clients without a certificate it signed, so no
 * path (not even /metrics) is reachable without one; refused handshakes are
 * logged, as a client that cannot get in sees only a closed connection.
 */
function createHttpServer(tls: ServerTls | undefined, log: Logger, handler: http.RequestListener): http.Server | https.Server {
  if (!tls) return http.createServer(handler);
  const mtls = tls.clientCa !== undefined;
  const server = https.createServer({ cert: tls.cert, key: tls.key, ca: tls.clientCa, requestCert: mtls, rejectUnauthorized: mtls }, handler);
  server.on("tlsClientError", (err, socket) => {
    log.info({ err: err.message, remote: socket.remoteAddress }, `TLS handshake on the Connect/HTTP port refused: ${err.message}`);
  });
  return server;
}

/**
 * Serves the given services on grpc-js (with reflection and grpc.health.v1)
 * and on connect-node (Connect JSON over HTTP/1.1, plus /healthz, /readyz and /metrics,
 * and the OpenAPI document of the services hosted, /openapi.json, with Swagger UI on /docs).
 */
export async function startServers(opts: ServerOptions): Promise<RunningServers> {
  const maxBytes = opts.maxMessageBytes ?? 1024 * 1024;
  const reflection = opts.reflection ?? true;
  const log = opts.logger;
  const armed = armedFailpoints();
  if (armed.length > 0) log.warn({ failpoints: armed }, `fault injection armed: ${armed.join(", ")}`);
  const metrics = opts.metrics ?? createMetrics();
  const rules = accessRules(opts.services);
  const validate = checkRequest;
  // The validator compiles each message's rules on first use (about 100 ms for
  // all of them): do it now rather than in the first callers' latency.
  for (const method of rules.keys()) {
    try {
      validate(method.input, create(method.input));
    } catch {
      // An empty request breaks most rules; only the compiling matters here.
    }
  }
  const plumbing: Plumbing = { logger: log, metrics, auth: new Authenticator(opts.auth), rules, validate };
  const grpcInterceptors = callInterceptors(plumbing, "grpc");
  const connectInterceptors = callInterceptors(plumbing, "connect");
  const bindings = opts.services;
  const docs = apiDocs(
    bindings.map((b) => b.service.typeName),
    log,
  );

  const grpcServer = new grpc.Server({
    "grpc.max_receive_message_length": maxBytes,
    "grpc.max_send_message_length": 16 * 1024 * 1024,
    "grpc.keepalive_permit_without_calls": 1,
    interceptors: [transportRefusals(log, metrics)],
  });
  answerUnknownMethods(grpcServer, log);
  for (const b of bindings) {
    const { definition, handlers } = grpcServiceDefinition(b.service, b.impl, grpcInterceptors);
    grpcServer.addService(definition, handlers);
  }
  const health = new HealthImplementation({
    "": "SERVING",
    ...Object.fromEntries(bindings.map((b) => [b.service.typeName, "SERVING" as const])),
  });
  health.addToServer(grpcServer);
  if (reflection) {
    const files = [...bindings.map((b) => b.service.file), file_grpc_health_v1_health];
    const pkg = { reflection: { fileDescriptorProtos: fileDescriptorProtos(files) } } as any;
    new ReflectionService(pkg).addToServer(grpcServer);
  }
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync(`${opts.host}:${opts.grpcPort}`, grpcCredentials(opts.tls), (err, port) =>
      err ? reject(new Error(`cannot listen for gRPC on ${opts.host}:${opts.grpcPort}: ${err.message}`)) : resolve(port),
    ),
  );

  const connectHandler = connectNodeAdapter({
    routes: (router) => {
      for (const b of bindings) router.service(b.service, b.impl as any);
      router.handlers.forEach((h, i) => {
        router.handlers[i] = connectTransportRefusals(h, connectInterceptors, log, metrics);
      });
    },
    interceptors: connectInterceptors,
    readMaxBytes: maxBytes,
    // Connect only (JSON and binary proto) on this port: gRPC needs HTTP/2,
    // which is the other port's, and gRPC-web is used by nothing here; fewer
    // protocols, fewer parsers facing hostile bytes.
    grpc: false,
    grpcWeb: false,
    fallback: (req, res) => {
      reportTransportRefusal(log, metrics, {
        service: UNKNOWN,
        method: UNKNOWN,
        protocol: "connect",
        code: Code.Unimplemented,
        reason: "no such method",
        path: clip(`${req.method ?? "?"} ${req.url ?? ""}`),
      });
      (res as http.ServerResponse)
        .writeHead(404, { "content-type": "application/json" })
        .end(JSON.stringify({ code: "unimplemented", message: "no such method" }));
    },
  });
  const httpServer = createHttpServer(opts.tls, log, (req, res) => {
    if (req.method === "GET" && req.url === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      return;
    }
    if (req.method === "GET" && req.url === "/readyz") {
      withTimeout(opts.isReady(), opts.readyTimeoutMs ?? 2_000).then(
        (ready) => res.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(ready ? "ready\n" : "database unreachable\n"),
        () => res.writeHead(503, { "content-type": "text/plain" }).end("database unreachable\n"),
      );
      return;
    }
    if (serveMetrics(metrics.registry, log, req, res)) return;
    if (docs.serve(req, res)) return;
    connectHandler(req, res);
  });
  let httpPort: number;
  try {
    httpPort = await listen(httpServer, opts.httpPort, opts.host);
  } catch (err) {
    grpcServer.forceShutdown();
    throw new Error(`cannot listen for HTTP on ${opts.host}:${opts.httpPort}: ${(err as Error).message}`);
  }
  const tls = serverTlsMode(opts.tls);
  log.info(
    { grpcPort, httpPort, host: opts.host, tls, reflection, maxRequestBytes: maxBytes },
    `serving gRPC on ${opts.host}:${grpcPort}, Connect/HTTP on ${opts.host}:${httpPort}, ` +
      (tls === "off" ? "TLS off (plaintext)" : tls === "mTLS" ? "TLS on, client certificates required (mTLS)" : "TLS on"),
  );

  let closing: Promise<void> | undefined;
  return {
    grpcPort,
    httpPort,
    close(graceMs = 10_000) {
      closing ??= (async () => {
        for (const b of bindings) health.setStatus(b.service.typeName, "NOT_SERVING");
        health.setStatus("", "NOT_SERVING");
        const grpcDone = new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            grpcServer.forceShutdown();
            resolve();
          }, graceMs);
          grpcServer.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
        const httpDone = new Promise<void>((resolve) => {
          httpServer.close(() => resolve());
          httpServer.closeIdleConnections();
          setTimeout(() => {
            httpServer.closeAllConnections();
          }, graceMs).unref();
        });
        await Promise.all([grpcDone, httpDone]);
      })();
      return closing;
    },
  };
}
