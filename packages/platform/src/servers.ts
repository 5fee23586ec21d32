import http from "node:http";
import https from "node:https";
import type { AddressInfo, Server as NetServer } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { create, fromBinary, toBinary, type DescFile, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createHandlerContext, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { file_grpc_health_v1_health } from "@shop/sdk/gen/grpc/health/v1/health_pb";
import { Authenticator, authorize, callerKey, type AccessPolicy, type AuthSettings, type Principal } from "./auth.js";
import { toConnectError } from "./errors.js";
import { withServerSpan } from "./tracing.js";
import { requestValidator, type RequestValidator } from "./validation.js";
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
  /** Connect JSON over HTTP/1.1 port, also /healthz, /readyz and /metrics; 0 picks a free one. */
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
 * Wraps every method so both transports check the caller and the request and
 * log and map errors the same way: the bearer token is verified
 * (UNAUTHENTICATED), its scopes checked against the method's rule
 * (PERMISSION_DENIED), and the request against the protovalidate rules in the
 * protos (INVALID_ARGUMENT) before the handler runs; refusals are logged at info with their status and reason,
 * anything unexpected at error with its cause; the caller never sees an
 * internal message, and the token itself is never logged.
 */
function guarded(
  binding: ServiceBinding,
  auth: Authenticator,
  validate: RequestValidator,
  logger: Logger,
  metrics: ProcessMetrics,
): Record<string, UnaryHandler> {
  const out: Record<string, UnaryHandler> = {};
  const service = binding.service.typeName;
  for (const method of binding.service.methods) {
    const impl = binding.impl[method.localName];
    if (!impl) continue;
    if (method.methodKind !== "unary") throw new Error(`${method.name}: only unary methods are served`);
    const rule = binding.access[method.localName];
    if (!rule) throw new Error(`${service}/${method.name} has no access rule: every served method must say who may call it`);
    const labels = { service, method: method.name };
    const rpcFullName = `${service}/${method.name}`;
    // Each call runs in a SERVER span continuing the caller's traceparent, so its log lines carry the trace id.
    out[method.localName] = (req, ctx) =>
      withServerSpan(rpcFullName, ctx.requestHeader, async () => {
        const endTimer = metrics.rpc.handling.startTimer(labels);
        let principal: Principal | undefined;
        try {
          principal = auth.authenticate(ctx.requestHeader);
          ctx.values.set(callerKey, authorize(principal, rule, method.name));
          validate(method, req);
          const res = await impl(req, ctx);
          endTimer();
          metrics.rpc.handled.inc({ ...labels, code: "OK" });
          return res;
        } catch (err) {
          const ce = toConnectError(err);
          endTimer();
          metrics.rpc.handled.inc({ ...labels, code: grpcCodeName(ce.code) });
          const fields = { rpc: method.name, protocol: ctx.protocolName, code: Code[ce.code], caller: principal?.subject };
          if (ce.code === Code.Internal || ce.code === Code.Unknown || ce.code === Code.Unavailable) {
            logger.error({ ...fields, err: ce.cause ?? err }, `${method.name} failed: ${ce.rawMessage}`);
          } else if (ce.code === Code.Unauthenticated || ce.code === Code.PermissionDenied) {
            logger.warn(fields, `${method.name} refused: ${ce.rawMessage}`);
          } else {
            logger.info(fields, `${method.name} refused: ${ce.rawMessage}`);
          }
          throw ce;
        }
      });
  }
  return out;
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

function grpcServiceDefinition(service: DescService, impl: Record<string, UnaryHandler>) {
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
      requestDeserialize: (b: Buffer) => fromBinary(method.input, b),
      responseSerialize: (m: any) => Buffer.from(toBinary(method.output, m)),
      responseDeserialize: (b: Buffer) => fromBinary(method.output, b),
    };
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
      const ctx = createHandlerContext({
        service,
        method,
        protocolName: "grpc",
        requestMethod: "POST",
        url: path,
        timeoutMs,
        requestSignal: requestSignal.signal,
        requestHeader,
      });
      // ctx.abort() clears the context's deadline timer, which would otherwise
      // stay armed for the whole deadline after the answer and then fire.
      const settle = () => {
        finished = true;
        ctx.abort(CALL_FINISHED);
      };
      Promise.resolve()
        .then(() => fn(call.request, ctx))
        .then(
          (res) => {
            settle();
            callback(null, create(method.output, res));
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
 * and on connect-node (Connect JSON over HTTP/1.1, plus /healthz, /readyz and /metrics).
 */
export async function startServers(opts: ServerOptions): Promise<RunningServers> {
  const maxBytes = opts.maxMessageBytes ?? 1024 * 1024;
  const reflection = opts.reflection ?? true;
  const log = opts.logger;
  const armed = armedFailpoints();
  if (armed.length > 0) log.warn({ failpoints: armed }, `fault injection armed: ${armed.join(", ")}`);
  const metrics = opts.metrics ?? createMetrics();
  const auth = new Authenticator(opts.auth);
  const validate = requestValidator();
  // The validator compiles each message's rules on first use (about 100 ms for
  // all of them): do it now rather than in the first callers' latency.
  for (const b of opts.services) {
    for (const m of b.service.methods) {
      try {
        validate(m, create(m.input));
      } catch {
        // An empty request breaks most rules; only the compiling matters here.
      }
    }
  }
  const bindings = opts.services.map((b) => ({ service: b.service, impl: guarded(b, auth, validate, log, metrics) }));

  const grpcServer = new grpc.Server({
    "grpc.max_receive_message_length": maxBytes,
    "grpc.max_send_message_length": 16 * 1024 * 1024,
    "grpc.keepalive_permit_without_calls": 1,
  });
  for (const b of bindings) {
    const { definition, handlers } = grpcServiceDefinition(b.service, b.impl);
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
    },
    readMaxBytes: maxBytes,
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
