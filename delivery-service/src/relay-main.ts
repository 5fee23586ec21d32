import { envReader } from "@shop/platform/config";
import { createPool, waitForDatabase, withMigrationPool } from "@shop/platform/db";
import { createLogger } from "@shop/platform/logger";
import { createMetrics, startMetricsServer } from "@shop/platform/metrics";
import { dieOnStartupError, exitOnSignals } from "@shop/platform/shutdown";
import { initTracing, traceContextInterceptor } from "@shop/platform/tracing";
import { createShipmentEventClient } from "@shop/sdk/clients";
import { readDeliveryRelaySettings } from "./config.js";
import { migrateDeliveryDatabase } from "./db/migrate.js";
import { createDeliveryRelayMetrics } from "./metrics.js";
import { DeliveryRelay } from "./outbox/relay.js";

/**
 * The delivery relay as its own process (`npm run start:delivery-relay`), for
 * delivering shipment events with more (or fewer) replicas than the delivery
 * service runs, or with DELIVERY_RELAY_ENABLED=false there. It competes
 * safely with the relays inside delivery service processes and with other
 * copies of itself. The outbox cleanup and gauges stay with the delivery
 * service.
 */
async function main(): Promise<void> {
  const logger = createLogger("delivery-relay");
  try {
    const env = envReader();
    const databaseUrl = env.databaseUrl("DELIVERY_DATABASE_URL");
    const migrationDatabaseUrl = env.optionalDatabaseUrl("DELIVERY_MIGRATION_DATABASE_URL");
    const settings = readDeliveryRelaySettings(env);
    // Off by default: the delivery service's /metrics has the outbox gauges; set a port to see this relay's counters.
    const metricsPort = env.int("DELIVERY_RELAY_METRICS_PORT", 0, { min: 0, max: 65535 });
    const metricsHost = env.string("DELIVERY_RELAY_METRICS_HOST", "127.0.0.1");
    env.finish();
    const tracing = await initTracing({ serviceName: "delivery-relay", logger });

    // One connection per loop, plus one so a claim never waits behind an ack.
    const pool = createPool({ url: databaseUrl, connectionLimit: settings.config.concurrency + 1 });
    await waitForDatabase(pool, logger);
    await withMigrationPool(migrationDatabaseUrl, pool, (p) => migrateDeliveryDatabase(p, logger));

    const orders = createShipmentEventClient({
      baseUrl: settings.orderServiceUrl,
      defaultTimeoutMs: settings.config.callTimeoutMs,
      token: settings.token,
      tls: settings.tls,
      interceptors: [traceContextInterceptor()],
    });
    const metrics = createMetrics();
    const relay = new DeliveryRelay({
      pool,
      orders: orders.client,
      logger,
      config: settings.config,
      relayId: settings.relayId,
      metrics: createDeliveryRelayMetrics(metrics.registry),
    });
    const metricsServer =
      metricsPort === 0 ? undefined : await startMetricsServer({ host: metricsHost, port: metricsPort, registry: metrics.registry, logger });
    relay.start();
    logger.info(
      { orderServiceUrl: settings.orderServiceUrl, tls: settings.orderServiceUrl.startsWith("https:"), clientCertificate: settings.tls?.cert !== undefined },
      "delivery relay running",
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
