/**
 * The gateway's settings from the environment (GATEWAY_*), for npm start and
 * for `npm run gateway:render`. Where the replicas are comes from the caller:
 * npm start knows the local ports, the compose and Kubernetes targets name
 * their services.
 */
import { envReader } from "@shop/platform/config";
import { DEFAULT_LIMITS, type GatewayConfig, type GatewayLimits } from "./render.js";

/** Ports the gateway listens on by default: gRPC, and Connect JSON (with the gateway's /healthz). */
export const DEFAULT_GATEWAY_GRPC_PORT = 50443;
export const DEFAULT_GATEWAY_HTTP_PORT = 8443;

export type GatewaySettings = Pick<GatewayConfig, "host" | "grpcPort" | "httpPort" | "tls" | "upstreamTls" | "limits" | "workers">;

/** Reads GATEWAY_*; throws a ConfigError naming every bad setting. `defaults` are the target's (host, TLS files). */
export function loadGatewaySettings(env: NodeJS.ProcessEnv = process.env, defaults: Partial<GatewaySettings> = {}): GatewaySettings {
  const r = envReader(env);
  const limit = (name: string, key: keyof GatewayLimits, min: number, max: number) =>
    r.int(name, defaults.limits?.[key] ?? DEFAULT_LIMITS[key], { min, max });
  const limits: GatewayLimits = {
    ratePerCaller: limit("GATEWAY_RATE_PER_CALLER", "ratePerCaller", 1, 1_000_000),
    burstPerCaller: limit("GATEWAY_BURST_PER_CALLER", "burstPerCaller", 0, 1_000_000),
    ratePerAddress: limit("GATEWAY_RATE_PER_ADDRESS", "ratePerAddress", 1, 1_000_000),
    burstPerAddress: limit("GATEWAY_BURST_PER_ADDRESS", "burstPerAddress", 0, 1_000_000),
    maxRequestBytes: limit("GATEWAY_MAX_REQUEST_BYTES", "maxRequestBytes", 1024, 16 * 1024 * 1024),
    upstreamTimeoutMs: limit("GATEWAY_UPSTREAM_TIMEOUT_MS", "upstreamTimeoutMs", 100, 3_600_000),
    connectTimeoutMs: limit("GATEWAY_CONNECT_TIMEOUT_MS", "connectTimeoutMs", 50, 60_000),
    maxFails: limit("GATEWAY_MAX_FAILS", "maxFails", 0, 100),
    failTimeoutSeconds: limit("GATEWAY_FAIL_TIMEOUT_SECONDS", "failTimeoutSeconds", 1, 3600),
    clientTimeoutMs: limit("GATEWAY_CLIENT_TIMEOUT_MS", "clientTimeoutMs", 100, 3_600_000),
  };
  const certFile = r.optionalString("GATEWAY_TLS_CERT_FILE");
  const keyFile = r.optionalString("GATEWAY_TLS_KEY_FILE");
  if (Boolean(certFile) !== Boolean(keyFile)) r.problem("GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE go together: set both or neither");
  const caFile = r.optionalString("GATEWAY_UPSTREAM_TLS_CA_FILE");
  const clientCert = r.optionalString("GATEWAY_UPSTREAM_TLS_CERT_FILE");
  const clientKey = r.optionalString("GATEWAY_UPSTREAM_TLS_KEY_FILE");
  if (Boolean(clientCert) !== Boolean(clientKey)) {
    r.problem("GATEWAY_UPSTREAM_TLS_CERT_FILE and GATEWAY_UPSTREAM_TLS_KEY_FILE go together: set both or neither");
  }
  if (clientCert && !caFile) r.problem("GATEWAY_UPSTREAM_TLS_CERT_FILE needs GATEWAY_UPSTREAM_TLS_CA_FILE (TLS to the services)");
  const serverName = r.optionalString("GATEWAY_UPSTREAM_TLS_SERVER_NAME");
  if (serverName && !caFile) r.problem("GATEWAY_UPSTREAM_TLS_SERVER_NAME needs GATEWAY_UPSTREAM_TLS_CA_FILE (TLS to the services)");
  if (serverName && !/^[A-Za-z0-9.-]{1,253}$/.test(serverName)) r.problem(`GATEWAY_UPSTREAM_TLS_SERVER_NAME=${JSON.stringify(serverName)} is not a DNS name`);
  const workersRaw = r.string("GATEWAY_WORKERS", String(defaults.workers ?? "auto"));
  let workers: number | "auto" = "auto";
  if (workersRaw !== "auto") {
    workers = Number(workersRaw);
    if (!Number.isInteger(workers) || workers < 1 || workers > 256) r.problem(`GATEWAY_WORKERS=${JSON.stringify(workersRaw)} is not "auto" or 1-256`);
  }
  const settings: GatewaySettings = {
    host: r.string("GATEWAY_HOST", defaults.host ?? "127.0.0.1"),
    grpcPort: r.port("GATEWAY_GRPC_PORT", defaults.grpcPort ?? DEFAULT_GATEWAY_GRPC_PORT),
    httpPort: r.port("GATEWAY_HTTP_PORT", defaults.httpPort ?? DEFAULT_GATEWAY_HTTP_PORT),
    tls: certFile && keyFile ? { certFile, keyFile } : defaults.tls,
    upstreamTls: caFile ? { caFile, certFile: clientCert, keyFile: clientKey, serverName } : defaults.upstreamTls,
    limits,
    workers,
  };
  if (settings.grpcPort !== 0 && settings.grpcPort === settings.httpPort) r.problem(`GATEWAY_GRPC_PORT and GATEWAY_HTTP_PORT are both ${settings.grpcPort}`);
  r.finish();
  return settings;
}
