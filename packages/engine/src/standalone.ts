import { envReader } from "@shop/platform/config";
import { createPool, waitForDatabase, type Pool } from "@shop/platform/db";
import { createLogger, type Logger } from "@shop/platform/logger";
import { prepareSchema, type ServiceMigrations } from "@shop/platform/migrations";
import { createMetrics, startMetricsServer, type Registry } from "@shop/platform/metrics";
import { dieOnStartupError, exitOnSignals } from "@shop/platform/shutdown";
import { readCallerToken, type TokenSource } from "@shop/platform/auth";
import { checkClientTlsUrls, readClientTls, type ClientTls } from "@shop/platform/tls";
import { initTracing } from "@shop/platform/tracing";
import type { RelayConfig } from "./relay.js";

type EnvReader = ReturnType<typeof envReader>;

/** A relay process: what differs between the services' standalone relays. */
export interface StandaloneRelay<Settings extends { config: RelayConfig }> {
  /** The process's name: its logger, its tracing service name, its log lines. */
  name: string;
  /**
   * The prefix of its own settings: <prefix>_DATABASE_URL (required),
   * <prefix>_MIGRATION_DATABASE_URL, <prefix>_MIGRATE_ON_START (default true;
   * false: check the schema instead of migrating), <prefix>_RELAY_METRICS_PORT
   * (default 0: none; the service's /metrics has the outbox gauges) and _METRICS_HOST.
   */
  prefix: string;
  /** Reads the relay's own settings into `env` (problems recorded there, reported together). */
  readSettings(env: EnvReader): Settings;
  /** The service's migrations: applied at start, or checked when <prefix>_MIGRATE_ON_START=false. */
  migrations: ServiceMigrations;
  /** Builds the relay on the pool; `close` releases what it holds (its client). `describe` goes in the start-up line. */
  create(deps: { pool: Pool; logger: Logger; settings: Settings; registry: Registry }): {
    relay: { start(): void; stop(): Promise<void> };
    close(): void;
    describe: Record<string, unknown>;
  };
}

/**
 * Runs a service's relay as its own process (`npm run start:payment-relay`,
 * `start:delivery-relay`): for more (or fewer) relay replicas than the service
 * runs, or with the service's own relay switched off. It competes safely with
 * the relays inside the service's processes and with other copies of itself;
 * the outbox cleanup and gauges stay with the service. Bad settings exit 1
 * naming each; SIGTERM and SIGINT stop it gracefully.
 */
export async function runStandaloneRelay<Settings extends { config: RelayConfig }>(spec: StandaloneRelay<Settings>): Promise<void> {
  const logger = createLogger(spec.name);
  try {
    const env = envReader();
    const databaseUrl = env.databaseUrl(`${spec.prefix}_DATABASE_URL`);
    const migrationDatabaseUrl = env.optionalDatabaseUrl(`${spec.prefix}_MIGRATION_DATABASE_URL`);
    const migrateOnStart = env.bool(`${spec.prefix}_MIGRATE_ON_START`, true);
    const settings = spec.readSettings(env);
    const metricsPort = env.int(`${spec.prefix}_RELAY_METRICS_PORT`, 0, { min: 0, max: 65535 });
    const metricsHost = env.string(`${spec.prefix}_RELAY_METRICS_HOST`, "127.0.0.1");
    env.finish();
    const tracing = await initTracing({ serviceName: spec.name, logger });

    // One connection per loop, plus one so a claim never waits behind an ack.
    const pool = createPool({ url: databaseUrl, connectionLimit: settings.config.concurrency + 1 });
    await waitForDatabase(pool, logger);
    await prepareSchema(pool, spec.migrations, { migrateOnStart, migrationDatabaseUrl }, logger);

    const metrics = createMetrics();
    const { relay, close, describe } = spec.create({ pool, logger, settings, registry: metrics.registry });
    const metricsServer =
      metricsPort === 0 ? undefined : await startMetricsServer({ host: metricsHost, port: metricsPort, registry: metrics.registry, logger });
    relay.start();
    logger.info(describe, `${spec.name} running`);

    exitOnSignals(logger, async () => {
      await relay.stop();
      await metricsServer?.close();
      close();
      await pool.end();
      await tracing.shutdown();
    });
  } catch (err) {
    dieOnStartupError(logger, err);
  }
}

/** How a service's relay reaches the order service (the payment and the delivery relays), and its engine settings. */
export interface OrderServiceRelaySettings {
  /** ORDER_SERVICE_URL, default http://127.0.0.1:50051 (the order service's default gRPC port). */
  orderServiceUrl: string;
  /** <prefix>_RELAY_TOKEN or <prefix>_RELAY_TOKEN_FILE, required: a token of the relay's role. */
  token: TokenSource;
  /** TLS_CA_FILE, TLS_CLIENT_CERT_FILE + TLS_CLIENT_KEY_FILE: for an https:// ORDER_SERVICE_URL (refused for http://). */
  tls?: ClientTls;
  /** <prefix>_RELAY_BATCH_SIZE, _CONCURRENCY, _LEASE_MS, ... (see RelayConfig). */
  config: RelayConfig;
  /** <prefix>_RELAY_ID: names this relay in claim tokens and logs; default host name and pid. */
  relayId?: string;
}

/**
 * Reads a relay's settings for the order service into `r` without finishing
 * (problems recorded there): for the service when its relay runs inside it,
 * and for its standalone relay. `config` reads the engine settings under the
 * relay's prefix.
 */
export function readOrderServiceRelaySettings(
  r: EnvReader,
  o: { prefix: string; config: (r: EnvReader) => RelayConfig },
): OrderServiceRelaySettings {
  const orderServiceUrl = r.string("ORDER_SERVICE_URL", "http://127.0.0.1:50051");
  try {
    const u = new URL(orderServiceUrl);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme");
  } catch {
    r.problem(`ORDER_SERVICE_URL=${JSON.stringify(orderServiceUrl)} must be an http:// or https:// URL, like http://127.0.0.1:50051`);
  }
  const token = readCallerToken(r, `${o.prefix}_RELAY_TOKEN`);
  checkClientTlsUrls(r, { ORDER_SERVICE_URL: orderServiceUrl });
  const tls = readClientTls(r);
  return { orderServiceUrl, token, tls, config: o.config(r), relayId: r.optionalString(`${o.prefix}_RELAY_ID`) };
}
