import { runStandaloneRelay } from "@shop/engine/standalone";
import { traceContextInterceptor } from "@shop/platform/tracing";
import { createPaymentOutcomeClient } from "@shop/sdk/clients";
import { readPaymentRelaySettings } from "./config.js";
import { PAYMENT_MIGRATIONS } from "./db/migrate.js";
import { createPaymentRelayMetrics } from "./metrics.js";
import { PaymentRelay } from "./outbox/relay.js";

/**
 * The payment relay as its own process (`npm run start:payment-relay`): delivers
 * payment outcomes to the order service beside, or instead of, the relays inside
 * payment service processes (PAYMENT_RELAY_ENABLED=false there). Reads
 * PAYMENT_DATABASE_URL, PAYMENT_MIGRATION_DATABASE_URL, PAYMENT_MIGRATE_ON_START, the relay's settings and
 * PAYMENT_RELAY_METRICS_PORT / _HOST (see @shop/engine/standalone).
 */
await runStandaloneRelay({
  name: "payment-relay",
  prefix: "PAYMENT",
  readSettings: readPaymentRelaySettings,
  migrations: PAYMENT_MIGRATIONS,
  create({ pool, logger, settings, registry }) {
    const orders = createPaymentOutcomeClient({
      baseUrl: settings.orderServiceUrl,
      defaultTimeoutMs: settings.config.callTimeoutMs,
      token: settings.token,
      tls: settings.tls,
      interceptors: [traceContextInterceptor()],
    });
    try {
      const relay = new PaymentRelay({
        pool,
        orders: orders.client,
        logger,
        config: settings.config,
        relayId: settings.relayId,
        metrics: createPaymentRelayMetrics(registry),
      });
      const describe = {
        orderServiceUrl: settings.orderServiceUrl,
        tls: settings.orderServiceUrl.startsWith("https:"),
        clientCertificate: settings.tls?.cert !== undefined,
      };
      return { relay, close: orders.close, describe };
    } catch (err) {
      orders.close();
      throw err;
    }
  },
});
