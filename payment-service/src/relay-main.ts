import { envReader } from "@shop/platform/config";
import { createPool, waitForDatabase, withMigrationPool } from "@shop/platform/db";
import { createLogger } from "@shop/platform/logger";
import { createMetrics, startMetricsServer } from "@shop/platform/metrics";
import { dieOnStartupError, exitOnSignals } from "@shop/platform/shutdown";
import { initTracing, traceContextInterceptor } from "@shop/platform/tracing";
import { createPaymentOutcomeClient } from "@shop/sdk/clients";
import { readPaymentRelaySettings } from "./config.js";
import { migratePaymentDatabase } from "./db/migrate.js";
import { createPaymentRelayMetrics } from "./metrics.js";
import { PaymentRelay } from "./outbox/relay.js";

/**
 * The payment relay as its own process (`npm run start:payment-relay`), for
 * delivering payment outcomes with more (or fewer) replicas than the payment
 * service runs, or with PAYMENT_RELAY_ENABLED=false there. It competes safely
 * with the relays inside payment service processes and with other copies of
 * itself. The outbox cleanup and gauges stay with the payment service.
 */
async function main(): Promise<void> {
  const logger = createLogger("payment-relay");
  try {
    const env = envReader();
    const databaseUrl = env.databaseUrl("PAYMENT_DATABASE_URL");
    const migrationDatabaseUrl = env.optionalDatabaseUrl("PAYMENT_MIGRATION_DATABASE_URL");
    const settings = readPaymentRelaySettings(env);
    // Off by default: the payment service's /metrics has the outbox gauges; set a port to see this relay's counters.
    const metricsPort = env.int("PAYMENT_RELAY_METRICS_PORT", 0, { min: 0, max: 65535 });
    const metricsHost = env.string("PAYMENT_RELAY_METRICS_HOST", "127.0.0.1");
    env.finish();
    const tracing = await initTracing({ serviceName: "payment-relay", logger });

    // One connection per loop, plus one so a claim never waits behind an ack.
    const pool = createPool({ url: databaseUrl, connectionLimit: settings.config.concurrency + 1 });
    await waitForDatabase(pool, logger);
    await withMigrationPool(migrationDatabaseUrl, pool, (p) => migratePaymentDatabase(p, logger));

    const orders = createPaymentOutcomeClient({
      baseUrl: settings.orderServiceUrl,
      defaultTimeoutMs: settings.config.callTimeoutMs,
      token: settings.token,
      tls: settings.tls,
      interceptors: [traceContextInterceptor()],
    });
    const metrics = createMetrics();
    const relay = new PaymentRelay({
      pool,
      orders: orders.client,
      logger,
      config: settings.config,
      relayId: settings.relayId,
      metrics: createPaymentRelayMetrics(metrics.registry),
    });
    const metricsServer =
      metricsPort === 0 ? undefined : await startMetricsServer({ host: metricsHost, port: metricsPort, registry: metrics.registry, logger });
    relay.start();
    logger.info(
      { orderServiceUrl: settings.orderServiceUrl, tls: settings.orderServiceUrl.startsWith("https:"), clientCertificate: settings.tls?.cert !== undefined },
      "payment relay running",
    );

    exitOnSignals(logger, async () => {
      await relay.stop();
      await metricsServer?.close();
      orders.close();
      await pool.end();
      await tracing.shutdown();
    });
  } catch (err) {
    dieOnStartupError(logger, err);
  }
}

await main();
