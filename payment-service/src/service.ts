import type { AuthSettings } from "@shop/platform/auth";
import { createPool, waitForDatabase, withMigrationPool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import { startServers } from "@shop/platform/servers";
import type { ServerTls } from "@shop/platform/tls";
import { PaymentService } from "@shop/sdk/payment";
import { migratePaymentDatabase } from "./db/migrate.js";
import { PAYMENT_SERVICE_ACCESS } from "./grpc/access.js";
import { createPaymentServiceImpl } from "./grpc/routes.js";
import { createPaymentMetrics, type PaymentMetrics } from "./metrics.js";
import { Payments } from "./payments.js";

export interface PaymentServiceOptions {
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

export interface RunningPaymentService {
  grpcPort: number;
  httpPort: number;
  /** The registry served on /metrics. */
  metrics: PaymentMetrics;
  /** Stops serving (calls in flight finish), then closes the pool. Idempotent. */
  stop(): Promise<void>;
}


/**
 * Starts the whole service in this process: pool, wait for the database,
 * migrations, servers. main.ts runs it; tests run it in-process.
 */
export async function startPaymentService(opts: PaymentServiceOptions): Promise<RunningPaymentService> {
  const { logger } = opts;
  const pool = createPool({ url: opts.databaseUrl, connectionLimit: opts.poolSize ?? 10 });
  try {
    await waitForDatabase(pool, logger);
    await withMigrationPool(opts.migrationDatabaseUrl, pool, (p) => migratePaymentDatabase(p, logger));
    const payments = new Payments({ pool, logger });
    const metrics = createPaymentMetrics();
    const servers = await startServers({
      host: opts.host,
      grpcPort: opts.grpcPort,
      httpPort: opts.httpPort,
      services: [{ service: PaymentService, impl: createPaymentServiceImpl({ payments, requests: metrics.requests }), access: PAYMENT_SERVICE_ACCESS }],
      auth: opts.auth,
      tls: opts.tls,
      reflection: opts.reflection,
      maxMessageBytes: opts.maxMessageBytes,
      logger,
      metrics,
      // startServers bounds the wait (readyTimeoutMs) and answers 503 on a refusal.
      isReady: () => payments.ping().then(() => true),
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
