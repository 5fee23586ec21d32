import type { AuthSettings } from "./auth.js";
import { createPool, waitForDatabase, type Pool } from "./db.js";
import type { Logger } from "./logger.js";
import type { ProcessMetrics } from "./metrics.js";
import { prepareSchema, type ServiceMigrations } from "./migrations.js";
import { startServers, type ServiceBinding } from "./servers.js";
import type { ServerTls } from "./tls.js";

/** What every service that owns one database is started with. */
export interface DatabaseServiceOptions {
  databaseUrl: string;
  /** A user that may change the schema, for migrations only; default databaseUrl. */
  migrationDatabaseUrl?: string;
  /**
   * <P>_MIGRATE_ON_START: migrate at start (default true), or, when false,
   * only check that every migration is applied and refuse to start when one
   * is not (the migration job applies them; see prepareSchema).
   */
  migrateOnStart?: boolean;
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
  /**
   * Background work started once the servers listen (an outbox relay, a
   * cleanup). Default none.
   */
  start?: () => void;
  /**
   * Ends that work and what the parts own (clients, timers): called once the
   * servers have stopped taking calls, before the pool closes, and also when
   * the start fails after the parts were built. Default none.
   */
  stop?: () => Promise<void>;
}

export interface RunningDatabaseService<M extends ProcessMetrics> {
  grpcPort: number;
  httpPort: number;
  /** The registry served on /metrics. */
  metrics: M;
  /** Stops serving (calls in flight finish), then the parts' background work, then closes the pool. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts a service that owns one database, in this process: pool, wait for
 * the database, migrations (or the check that they are applied), the
 * service's parts, servers, then the parts' background work. A failure on the
 * way stops the parts built and closes the pool before it is thrown.
 */
export async function startDatabaseService<M extends ProcessMetrics>(
  opts: DatabaseServiceOptions,
  migrations: ServiceMigrations,
  build: (pool: Pool) => DatabaseServiceParts<M> | Promise<DatabaseServiceParts<M>>,
): Promise<RunningDatabaseService<M>> {
  const { logger } = opts;
  const pool = createPool({ url: opts.databaseUrl, connectionLimit: opts.poolSize ?? 10 });
  let parts: DatabaseServiceParts<M> | undefined;
  try {
    await waitForDatabase(pool, logger);
    await prepareSchema(pool, migrations, opts, logger);
    parts = await build(pool);
    const { services, metrics, isReady } = parts;
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
    const started = parts;
    started.start?.();
    let stopping: Promise<void> | undefined;
    return {
      grpcPort: servers.grpcPort,
      httpPort: servers.httpPort,
      metrics,
      stop() {
        stopping ??= (async () => {
          try {
            // Stop taking calls first, so no new work arrives for what stops next.
            await servers.close(opts.graceMs ?? 10_000);
            await started.stop?.();
          } finally {
            await pool.end();
          }
        })();
        return stopping;
      },
    };
  } catch (err) {
    await parts?.stop?.().catch((stopErr) => logger.error({ err: stopErr }, "cleaning up after a failed start failed"));
    await pool.end().catch(() => {});
    throw err;
  }
}
