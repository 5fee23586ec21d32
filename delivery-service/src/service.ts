import { startDatabaseService, type DatabaseServiceOptions, type RunningDatabaseService } from "@shop/platform/database-service";
import { traceContextInterceptor } from "@shop/platform/tracing";
import { createShipmentEventClient } from "@shop/sdk/clients";
import { CarrierService, DeliveryService } from "@shop/sdk/delivery";
import type { CarrierPlugin } from "./carriers/plugin.js";
import { createCarrierRegistry, type CarrierSettings } from "./carriers/registry.js";
import { CarrierWorker } from "./carriers/worker.js";
import type { DeliveryRelaySettings } from "./config.js";
import { DELIVERY_MIGRATIONS } from "./db/migrate.js";
import { CARRIER_SERVICE_ACCESS, DELIVERY_SERVICE_ACCESS } from "./grpc/access.js";
import { createCarrierServiceImpl, createDeliveryServiceImpl } from "./grpc/routes.js";
import { createDeliveryServiceMetrics, type DeliveryServiceMetrics } from "./metrics.js";
import { DeliveryRelay, OUTBOX_CLEANUP_DEFAULTS, ShipmentEventOutboxCleanup, type OutboxCleanupConfig } from "./outbox/relay.js";
import { ShipmentStore } from "./shipments.js";

export interface DeliveryServiceOptions extends DatabaseServiceOptions {
  /**
   * The relay that delivers shipment_event_outbox to the order service, run
   * in this process; false or absent runs none here (relays deployed as their
   * own processes, tests that look at the outbox themselves). main.ts passes
   * DELIVERY_RELAY_ENABLED's choice.
   */
  relay?: DeliveryRelaySettings | false;
  /** Removal of delivered shipment_event_outbox rows. Default OUTBOX_CLEANUP_DEFAULTS (7 days' retention). */
  outboxCleanup?: OutboxCleanupConfig;
  /** How long one reading of the outbox gauges serves /metrics scrapes. Default 5000 ms. */
  outboxMetricsCacheMs?: number;
  /** The carriers this service knows (CARRIERS, DEFAULT_CARRIER) and how the worker calls them. */
  carriers: CarrierSettings;
  /** Run the carrier worker in this process (CARRIER_ENABLED). Default true. */
  carrierWorker?: boolean;
  /** Plugins beyond the built-in ones (tests inject carriers that fail or hang); enabled like any other by carriers.enabled. */
  extraCarriers?: CarrierPlugin[];
  /** Names this process's carrier worker in its leases and logs. Default: host name and pid. */
  carrierWorkerId?: string;
}

export type RunningDeliveryService = RunningDatabaseService<DeliveryServiceMetrics>;

/**
 * Starts the whole service in this process: pool, wait for the database,
 * migrations, servers, then the carrier worker and the event relay (if asked
 * for) and the outbox cleanup. main.ts runs it; tests run it in-process.
 */
export function startDeliveryService(opts: DeliveryServiceOptions): Promise<RunningDeliveryService> {
  const { logger } = opts;
  return startDatabaseService(opts, DELIVERY_MIGRATIONS, (pool) => {
    const metrics = createDeliveryServiceMetrics({ pool, logger, outboxCacheMs: opts.outboxMetricsCacheMs });
    const registry = createCarrierRegistry(opts.carriers, opts.extraCarriers);
    let relay: { start(): void; wake(): void; stop(): Promise<void> } | undefined;
    let worker: CarrierWorker | undefined;
    let closeClient: (() => void) | undefined;
    if (opts.relay) {
      const orders = createShipmentEventClient({
        baseUrl: opts.relay.orderServiceUrl,
        defaultTimeoutMs: opts.relay.config.callTimeoutMs,
        token: opts.relay.token,
        tls: opts.relay.tls,
        interceptors: [traceContextInterceptor()],
      });
      closeClient = orders.close;
      try {
        relay = new DeliveryRelay({ pool, orders: orders.client, logger, config: opts.relay.config, relayId: opts.relay.relayId, metrics: metrics.relay });
      } catch (err) {
        orders.close();
        throw err;
      }
    }
    const store = new ShipmentStore({
      pool,
      logger,
      carriers: registry,
      // A commit that wrote an event wakes the relay; one that created a shipment wakes the worker, so neither waits for its poll.
      onEvent: () => relay?.wake(),
      onCreated: () => worker?.wake(),
    });
    if (opts.carrierWorker ?? true) {
      try {
        worker = new CarrierWorker({ pool, store, registry, logger, settings: opts.carriers, workerId: opts.carrierWorkerId, metrics: metrics.carriers });
      } catch (err) {
        closeClient?.();
        throw err;
      }
    }
    const cleanup = new ShipmentEventOutboxCleanup({ pool, logger, config: opts.outboxCleanup ?? OUTBOX_CLEANUP_DEFAULTS });
    const deps = { store, carriers: registry, requests: metrics.requests };
    return {
      services: [
        { service: DeliveryService, impl: createDeliveryServiceImpl(deps), access: DELIVERY_SERVICE_ACCESS },
        { service: CarrierService, impl: createCarrierServiceImpl(deps), access: CARRIER_SERVICE_ACCESS },
      ],
      metrics,
      isReady: () => store.ping().then(() => true),
      start() {
        worker?.start();
        relay?.start();
        cleanup.start();
        logger.info(
          {
            relay: relay !== undefined,
            orderServiceUrl: opts.relay ? opts.relay.orderServiceUrl : undefined,
            carrierWorker: worker !== undefined,
            carriers: registry.names(),
            defaultCarrier: registry.defaultCarrier,
          },
          `delivery service started ${relay ? "with" : "without"} its event relay and ${worker ? "with" : "without"} its carrier worker`,
        );
      },
      async stop() {
        await Promise.all([worker?.stop(), relay?.stop(), cleanup.stop()]);
        closeClient?.();
      },
    };
  });
}
