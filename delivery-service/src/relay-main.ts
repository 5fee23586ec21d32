import { runStandaloneRelay } from "@shop/engine/standalone";
import { traceContextInterceptor } from "@shop/platform/tracing";
import { createShipmentEventClient } from "@shop/sdk/clients";
import { readDeliveryRelaySettings } from "./config.js";
import { DELIVERY_MIGRATIONS } from "./db/migrate.js";
import { createDeliveryRelayMetrics } from "./metrics.js";
import { DeliveryRelay } from "./outbox/relay.js";

/**
 * The delivery relay as its own process (`npm run start:delivery-relay`): delivers
 * shipment events to the order service beside, or instead of, the relays inside
 * delivery service processes (DELIVERY_RELAY_ENABLED=false there). Reads
 * DELIVERY_DATABASE_URL, DELIVERY_MIGRATION_DATABASE_URL, DELIVERY_MIGRATE_ON_START, the relay's settings and
 * DELIVERY_RELAY_METRICS_PORT / _HOST (see @shop/engine/standalone).
 */
await runStandaloneRelay({
  name: "delivery-relay",
  prefix: "DELIVERY",
  readSettings: readDeliveryRelaySettings,
  migrations: DELIVERY_MIGRATIONS,
  create({ pool, logger, settings, registry }) {
    const orders = createShipmentEventClient({
      baseUrl: settings.orderServiceUrl,
      defaultTimeoutMs: settings.config.callTimeoutMs,
      token: settings.token,
      tls: settings.tls,
      interceptors: [traceContextInterceptor()],
    });
    try {
      const relay = new DeliveryRelay({
        pool,
        orders: orders.client,
        logger,
        config: settings.config,
        relayId: settings.relayId,
        metrics: createDeliveryRelayMetrics(registry),
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
