import type { AuthSettings } from "./auth.js";
import { createPool, waitForDatabase, withMigrationPool, type Pool } from "./db.js";
import type { Logger } from "./logger.js";
import type { ProcessMetrics } from "./metrics.js";
import { startServers, type ServiceBinding } from "./servers.js";
import type { ServerTls } from "./tls.js";

/** What every service that owns one database is started with. */
export interface DatabaseServiceOptions {
  databaseUrl: string;
  /** A user that may change the schema, for migrations only; default databaseUrl. */
  migrationDatabaseUrl?: string;
  host: string;
  /** 0 picks a free port (tests). */
  grpcPort: number;
  /** 0 picks a free port (tests). */
  httpPort: number;
  logger: Logger;
  /** Public keys whose bearer tokens are accepted. */
  auth: AuthSettings;
  /** Database connections. Default 10. */
  poolSize?: number;
  /** How long stop() lets calls in flight finish. Default 10 s. */
  graceMs?: number;
  /** TLS on both ports, mTLS when it has a client CA. Default plaintext. */
  tls?: ServerTls;
  /** Serve gRPC reflection. Default true. */
  reflection?: boolean;
  /** Largest request accepted. Default 1 MiB. */
  maxMessageBytes?: number;
}

/** The service's own parts, built on the migrated database's pool. */
export interface DatabaseServiceParts<M extends ProcessMetrics> {
  services: ServiceBinding[];
  metrics: M;
  /** Answers /readyz; startServers bounds the wait and answers 503 on a refusal. */
  isReady: () => Promise<boolean>;
}

export interface RunningDatabaseService<M extends ProcessMetrics> {
  grpcPort: number;
  httpPort: number;
  /** The registry served on /metrics. */
  metrics: M;
  /** Stops serving (calls in flight finish), then closes the pool. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts a service that owns one database, in this process: pool, wait for
 * the database, migrations, the service's parts, servers. A failure on the
 * way closes the pool before it is thrown.
 */
export async function startDatabaseService<M extends ProcessMetrics>(
  opts: DatabaseServiceOptions,
  migrate: (pool: Pool, logger: Logger) => Promise<void>,
  build: (pool: Pool) => DatabaseServiceParts<M>,
): Promise<RunningDatabaseService<M>> {
  const { logger } = opts;
  const pool = createPool({ url: opts.databaseUrl, connectionLimit: opts.poolSize ?? 10 });
  try {
    await waitForDatabase(pool, logger);
    await withMigrationPool(opts.migrationDatabaseUrl, pool, (p) => migrate(p, logger));
    const { services, metrics, isReady } = build(pool);
    const servers = await startServers({
      host: opts.host,
      grpcPort: opts.grpcPort,
      httpPort: opts.httpPort,
      services,
      auth: opts.auth,
      tls: opts.tls,
      reflection: opts.reflection,
      maxMessageBytes: opts.maxMessageBytes,
      logger,
      metrics,
      isReady,
    });
    let stopping: Promise<void> | undefined;
    return {
      grpcPort: servers.grpcPort,
      httpPort: servers.httpPort,
      metrics,
      stop() {
        stopping ??= (async () => {
          try {
            await servers.close(opts.graceMs ?? 10_000);
          } finally {
            await pool.end();
          }
        })();
        return stopping;
      },
    };
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
}
