import { readCallerToken } from "@shop/platform/auth";
import { envReader } from "@shop/platform/config";
import { createPool, waitForDatabase } from "@shop/platform/db";
import { createLogger } from "@shop/platform/logger";
import { createMetrics, startMetricsServer } from "@shop/platform/metrics";
import { prepareSchema } from "@shop/platform/migrations";
import { dieOnStartupError, exitOnSignals } from "@shop/platform/shutdown";
import { checkClientTlsUrls, readClientTls } from "@shop/platform/tls";
import { initTracing, traceContextInterceptor } from "@shop/platform/tracing";
import { createVoucherClient } from "@shop/sdk/clients";
import { readDeliveryServiceUrl } from "./config.js";
import { ORDER_MIGRATIONS } from "./db/migrate.js";
import { createPaymentRelayMetrics, createRelayMetrics, createShipmentRelayMetrics } from "./metrics.js";
import { startPaymentRelays } from "./outbox/payment-relays.js";
import { startShipmentRelay } from "./outbox/shipment-relay.js";
import { Relay, relayConfigFromEnv } from "./outbox/relay.js";

/**
 * The order database's relays as their own process (voucher, charge and
 * refund flows, and the shipment flow when DELIVERY_SERVICE_URL is set), for draining the outboxes with more (or fewer) replicas
 * than the order service runs. They compete safely with the relays inside
 * order-service processes and with other copies of themselves.
 */
async function main(): Promise<void> {
  const logger = createLogger("order-relay");
  try {
    const env = envReader();
    const databaseUrl = env.databaseUrl("ORDER_DATABASE_URL");
    const migrationDatabaseUrl = env.optionalDatabaseUrl("ORDER_MIGRATION_DATABASE_URL");
    // False: check that the schema is current instead of migrating (the migration job migrates).
    const migrateOnStart = env.bool("ORDER_MIGRATE_ON_START", true);
    const voucherUrl = env.string("VOUCHER_SERVICE_URL", "http://127.0.0.1:50052");
    if (!/^https?:\/\/[^/]+/.test(voucherUrl)) env.problem(`VOUCHER_SERVICE_URL=${JSON.stringify(voucherUrl)} must look like http://host:port`);
    const paymentUrl = env.string("PAYMENT_SERVICE_URL", "http://127.0.0.1:50053");
    if (!/^https?:\/\/[^/]+/.test(paymentUrl)) env.problem(`PAYMENT_SERVICE_URL=${JSON.stringify(paymentUrl)} must look like http://host:port`);
    // No default: unset, this process runs no shipment relay (and says so).
    const deliveryUrl = readDeliveryServiceUrl(env);
    const token = readCallerToken(env, "RELAY_TOKEN");
    // TLS_CA_FILE, TLS_CLIENT_CERT_FILE + TLS_CLIENT_KEY_FILE: for an https:// VOUCHER_SERVICE_URL.
    checkClientTlsUrls(env, {
      VOUCHER_SERVICE_URL: voucherUrl,
      PAYMENT_SERVICE_URL: paymentUrl,
      ...(deliveryUrl ? { DELIVERY_SERVICE_URL: deliveryUrl } : {}),
    });
    const tls = readClientTls(env);
    const relayId = env.optionalString("RELAY_ID");
    const config = relayConfigFromEnv(env);
    // Off by default: the order service's /metrics already has the outbox gauges; set a port to see this relay's counters.
    const metricsPort = env.int("RELAY_METRICS_PORT", 0, { min: 0, max: 65535 });
    const metricsHost = env.string("RELAY_METRICS_HOST", "127.0.0.1");
    env.finish();
    const tracing = await initTracing({ serviceName: "order-relay", logger });

    // One connection per loop of each relay, plus one so a claim never waits behind an ack.
    const relays = deliveryUrl ? 4 : 3;
    const pool = createPool({ url: databaseUrl, connectionLimit: relays * config.concurrency + 1 });
    await waitForDatabase(pool, logger);
    await prepareSchema(pool, ORDER_MIGRATIONS, { migrateOnStart, migrationDatabaseUrl }, logger);

    const voucher = createVoucherClient({
      baseUrl: voucherUrl,
      defaultTimeoutMs: config.callTimeoutMs,
      token,
      tls,
      interceptors: [traceContextInterceptor()],
    });
    const metrics = createMetrics();
    const relay = new Relay({ pool, voucher: voucher.client, logger, config, relayId, metrics: createRelayMetrics(metrics.registry) });
    const payments = startPaymentRelays({
      pool,
      logger,
      config,
      paymentServiceUrl: paymentUrl,
      token,
      tls,
      relayId,
      metrics: { charge: createPaymentRelayMetrics(metrics.registry, "charge"), refund: createPaymentRelayMetrics(metrics.registry, "refund") },
    });
    const shipments = deliveryUrl
      ? startShipmentRelay({
          pool,
          logger,
          config,
          deliveryServiceUrl: deliveryUrl,
          token,
          tls,
          relayId,
          metrics: createShipmentRelayMetrics(metrics.registry),
        })
      : undefined;
    const metricsServer =
      metricsPort === 0 ? undefined : await startMetricsServer({ host: metricsHost, port: metricsPort, registry: metrics.registry, logger });
    relay.start();
    payments.charge.start();
    payments.refund.start();
    shipments?.relay.start();
    logger.info(
      {
        voucherUrl,
        paymentUrl,
        deliveryUrl,
        tls: [voucherUrl, paymentUrl, deliveryUrl].some((u) => u?.startsWith("https:")),
        clientCertificate: tls?.cert !== undefined,
      },
      shipments
        ? "order relays running (voucher, charge, refund, shipment)"
        : "order relays running (voucher, charge, refund); no shipment relay: DELIVERY_SERVICE_URL is not set",
    );

    exitOnSignals(logger, async () => {
      await Promise.all([relay.stop(), payments.charge.stop(), payments.refund.stop(), shipments?.relay.stop()]);
      payments.close();
      shipments?.close();
      await metricsServer?.close();
      voucher.close();
      await pool.end();
      await tracing.shutdown();
    });
  } catch (err) {
    dieOnStartupError(logger, err);
  }
}

await main();
