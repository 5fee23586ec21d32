import http from "node:http";
import type { AddressInfo } from "node:net";
import { Code } from "@connectrpc/connect";
import { collectDefaultMetrics, Counter, Histogram, Registry } from "prom-client";
import type { Logger } from "./logger.js";

export { Counter, Gauge, Histogram, Registry } from "prom-client";

/**
 * Seconds. Most calls here take a few milliseconds; the upper buckets catch
 * calls held up by a slow database or a long batch up to the usual deadlines.
 */
const RPC_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** gRPC's canonical names (NOT_FOUND), the form dashboards and alerts across languages use. */
export function grpcCodeName(code: Code): string {
  const name = Code[code];
  return name === undefined ? String(code) : name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

export interface RpcMetrics {
  /** rpc_server_handled_total{service,method,code}: finished calls, by their status. */
  handled: Counter<"service" | "method" | "code">;
  /** rpc_server_handling_seconds{service,method}: time from the handler's start to its answer. */
  handling: Histogram<"service" | "method">;
}

/** One process's metrics: its registry, with the process defaults and the RPC metrics on it. */
export interface ProcessMetrics {
  registry: Registry;
  rpc: RpcMetrics;
}

export interface MetricsOptions {
  /**
   * Collect Node's process metrics (CPU, memory, event loop lag, GC,
   * process_start_time_seconds). Default true; tests that start several
   * services in one process still get one set per registry.
   */
  processMetrics?: boolean;
}

/**
 * A registry for one service (not prom-client's global one, so a test can
 * run several services in one process without their metrics colliding).
 */
export function createMetrics(opts: MetricsOptions = {}): ProcessMetrics {
  const registry = new Registry();
  if (opts.processMetrics ?? true) collectDefaultMetrics({ register: registry });
  const handled = new Counter({
    name: "rpc_server_handled_total",
    help: "RPCs finished by the server, gRPC and Connect alike, by service, method and status code.",
    labelNames: ["service", "method", "code"] as const,
    registers: [registry],
  });
  const handling = new Histogram({
    name: "rpc_server_handling_seconds",
    help: "Time the server spent on an RPC, from the handler's start to its answer or error.",
    labelNames: ["service", "method"] as const,
    buckets: RPC_BUCKETS,
    registers: [registry],
  });
  return { registry, rpc: { handled, handling } };
}

/** Answers GET /metrics from `registry`; false for any other request, which the caller handles. */
export function serveMetrics(registry: Registry, logger: Logger, req: http.IncomingMessage, res: http.ServerResponse): boolean {
  if (req.method !== "GET" || (req.url !== "/metrics" && !req.url?.startsWith("/metrics?"))) return false;
  registry.metrics().then(
    (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
    (err) => {
      logger.error({ err }, "collecting metrics failed");
      res.writeHead(500, { "content-type": "text/plain" }).end("collecting metrics failed\n");
    },
  );
  return true;
}

export interface MetricsServerOptions {
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  registry: Registry;
  logger: Logger;
}

export interface RunningMetricsServer {
  port: number;
  close(): Promise<void>;
}

/**
 * GET /metrics (and /healthz) on a port of its own, for processes that serve
 * no RPCs: the reconciler's scheduler and the standalone relay.
 */
export async function startMetricsServer(opts: MetricsServerOptions): Promise<RunningMetricsServer> {
  const server = http.createServer((req, res) => {
    if (serveMetrics(opts.registry, opts.logger, req, res)) return;
    if (req.method === "GET" && req.url === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", (err) => reject(new Error(`cannot listen for metrics on ${opts.host}:${opts.port}: ${err.message}`)));
    server.listen(opts.port, opts.host, () => resolve((server.address() as AddressInfo).port));
  });
  opts.logger.info({ metricsPort: port }, `serving /metrics on ${opts.host}:${port}`);
  let closing: Promise<void> | undefined;
  return {
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
