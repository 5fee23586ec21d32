import { createPool, waitForDatabase, type Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import { prepareSchema } from "@shop/platform/migrations";
import { startServers, type RunningServers } from "@shop/platform/servers";
import { traceContextInterceptor } from "@shop/platform/tracing";
import { createVoucherClient } from "@shop/sdk/clients";
import { OrderService, PaymentOutcomeService, ShipmentEventService } from "@shop/sdk/order";
import { OrderAdminService } from "@shop/sdk/order-admin";
import { DEFAULT_PAYMENT_SERVICE_URL, type OrderServiceConfig } from "./config.js";
import { ORDER_MIGRATIONS } from "./db/migrate.js";
import { OrderStore } from "./db/order-store.js";
import { ORDER_ADMIN_ACCESS, ORDER_SERVICE_ACCESS, PAYMENT_OUTCOME_ACCESS, SHIPMENT_EVENT_ACCESS } from "./grpc/access.js";
import { createPaymentOutcomeServiceImpl } from "./grpc/payment-outcome-routes.js";
import { createShipmentEventServiceImpl } from "./grpc/shipment-event-routes.js";
import { createOrderAdminServiceImpl } from "./grpc/admin-routes.js";
import { createOrderServiceImpl } from "./grpc/routes.js";
import { createOrderMetrics, type OrderMetrics } from "./metrics.js";
import { OutboxCleanup, OUTBOX_CLEANUP_DEFAULTS } from "./outbox/cleanup.js";
import { OutboxCleanup as FlowCleanup } from "@shop/engine/cleanup";
import { chargeOutbox, refundOutbox } from "./outbox/payment-flows.js";
import { shipmentOutbox } from "./outbox/shipment-flow.js";
import type { RelayConfig } from "./outbox/relay.js";

export interface StartOrderServiceOptions {
  config: OrderServiceConfig;
  logger: Logger;
  /**
   * The relay's settings, or false to run no relay in this process whatever
   * RELAY_ENABLED says (tests that look at the outbox themselves; relays
   * deployed as their own processes).
   */
  relay: RelayConfig | false;
  /** How long stop() lets calls in flight finish. Default 10000 ms. */
  shutdownGraceMs?: number;
  /** How long one reading of the outbox gauges serves /metrics scrapes. Default 5000 ms (see registerOutboxGauges). */
  outboxMetricsCacheMs?: number;
}

export interface RunningOrderService {
  grpcPort: number;
  httpPort: number;
  pool: Pool;
  store: OrderStore;
  /** The registry served on /metrics. */
  metrics: OrderMetrics;
  /** Idempotent: stop taking calls, stop the relays (waiting for their calls) and the outbox cleanups, close the clients, end the pool. */
  stop(): Promise<void>;
}

interface RelayHandle {
  start(): void;
  wake(): void;
  stop(): Promise<void>;
}

/** Everything the order service is, minus signals and process exit: main.ts adds those, tests run it in-process. */
export async function startOrderService(opts: StartOrderServiceOptions): Promise<RunningOrderService> {
  const { config, logger } = opts;
  const pool = createPool({ url: config.databaseUrl, connectionLimit: config.poolSize });
  const metrics = createOrderMetrics({ pool, logger, outboxCacheMs: opts.outboxMetricsCacheMs });
  let relay: RelayHandle | undefined;
  let chargeRelay: RelayHandle | undefined;
  let refundRelay: RelayHandle | undefined;
  let shipmentRelay: RelayHandle | undefined;
  const cleanups: Array<{ start(): void; stop(): Promise<void> }> = [];
  let closeVoucherClient: (() => void) | undefined;
  let closePaymentClient: (() => void) | undefined;
  let closeDeliveryClient: (() => void) | undefined;
  let servers: RunningServers | undefined;

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      // Stop taking calls first, so no new outbox row arrives after the relay is gone.
      await servers?.close(opts.shutdownGraceMs ?? 10_000);
      await Promise.all([relay?.stop(), chargeRelay?.stop(), refundRelay?.stop(), shipmentRelay?.stop(), ...cleanups.map((c) => c.stop())]);
      closeVoucherClient?.();
      closePaymentClient?.();
      closeDeliveryClient?.();
      await pool.end();
    })());

  try {
    await waitForDatabase(pool, logger);
    await prepareSchema(pool, ORDER_MIGRATIONS, config, logger);
    if (opts.relay !== false) {
      // Loaded only by processes that run the relay.
      const { Relay } = await import("./outbox/relay.js");
      if (!config.relayToken) throw new Error("the relay needs a token for the voucher service: set RELAY_TOKEN or RELAY_TOKEN_FILE");
      const voucher = createVoucherClient({
        baseUrl: config.voucherServiceUrl,
        token: config.relayToken,
        tls: config.voucherTls,
        interceptors: [traceContextInterceptor()],
      });
      closeVoucherClient = voucher.close;
      relay = new Relay({ pool, voucher: voucher.client, logger, config: opts.relay, metrics: metrics.relay });
      const { startPaymentRelays } = await import("./outbox/payment-relays.js");
      const paymentRelays = startPaymentRelays({
        pool,
        logger,
        config: opts.relay,
        paymentServiceUrl: config.paymentServiceUrl ?? DEFAULT_PAYMENT_SERVICE_URL,
        token: config.relayToken,
        tls: config.voucherTls,
        metrics: { charge: metrics.chargeRelay, refund: metrics.refundRelay },
      });
      chargeRelay = paymentRelays.charge;
      refundRelay = paymentRelays.refund;
      closePaymentClient = paymentRelays.close;
      // The shipment flow runs wherever DELIVERY_SERVICE_URL is set; unset, this process requests no shipments.
      if (config.deliveryServiceUrl) {
        const { startShipmentRelay } = await import("./outbox/shipment-relay.js");
        const shipments = startShipmentRelay({
          pool,
          logger,
          config: opts.relay,
          deliveryServiceUrl: config.deliveryServiceUrl,
          token: config.relayToken,
          tls: config.voucherTls,
          metrics: metrics.shipmentRelay,
        });
        shipmentRelay = shipments.relay;
        closeDeliveryClient = shipments.close;
      }
    }
    const store = new OrderStore({
      pool,
      logger,
      onVoucherRequested: () => relay?.wake(),
      onPaymentRequested: (kind) => (kind === "charge" ? chargeRelay : refundRelay)?.wake(),
      onShipmentRequested: () => shipmentRelay?.wake(),
      shipPaidOrders: config.shipPaidOrders ?? false,
    });
    servers = await startServers({
      host: config.host,
      grpcPort: config.grpcPort,
      httpPort: config.httpPort,
      services: [
        { service: OrderService, impl: createOrderServiceImpl({ store, logger }), access: ORDER_SERVICE_ACCESS },
        { service: OrderAdminService, impl: createOrderAdminServiceImpl({ pool, store, logger }), access: ORDER_ADMIN_ACCESS },
        { service: PaymentOutcomeService, impl: createPaymentOutcomeServiceImpl({ store, logger }), access: PAYMENT_OUTCOME_ACCESS },
        { service: ShipmentEventService, impl: createShipmentEventServiceImpl({ store, logger }), access: SHIPMENT_EVENT_ACCESS },
      ],
      auth: config.auth,
      tls: config.tls,
      reflection: config.reflection,
      maxMessageBytes: config.maxMessageBytes,
      logger,
      metrics,
      isReady: async () => {
        await pool.query("SELECT 1");
        return true;
      },
    });
    relay?.start();
    chargeRelay?.start();
    refundRelay?.start();
    shipmentRelay?.start();
    // Configs built by hand (tests, older callers) may leave it out: the defaults apply.
    const cleanupConfig = config.outboxCleanup ?? OUTBOX_CLEANUP_DEFAULTS;
    cleanups.push(
      new OutboxCleanup({ pool, logger, config: cleanupConfig }),
      new FlowCleanup({ pool, logger, config: cleanupConfig, flow: chargeOutbox }),
      new FlowCleanup({ pool, logger, config: cleanupConfig, flow: refundOutbox }),
      new FlowCleanup({ pool, logger, config: cleanupConfig, flow: shipmentOutbox }),
    );
    for (const c of cleanups) c.start();
    logger.info({ relay: relay !== undefined }, relay ? "order service started with its relay" : "order service started without a relay");
    const shipPaidOrders = config.shipPaidOrders ?? false;
    if (shipmentRelay) {
      logger.info(
        { deliveryServiceUrl: config.deliveryServiceUrl, shipPaidOrders },
        `shipment relay running: shipment requests go to ${config.deliveryServiceUrl}${shipPaidOrders ? "; PAID orders are released for shipping (SHIP_PAID_ORDERS)" : ""}`,
      );
    } else if (relay) {
      logger.info(
        { shipPaidOrders },
        "no shipment relay in this process: DELIVERY_SERVICE_URL is not set; shipment requests (ReleaseOrderForShipping" +
          `${shipPaidOrders ? ", and PAID orders under SHIP_PAID_ORDERS" : ""}) wait in shipment_outbox for a relay that has it`,
      );
    } else if (shipPaidOrders) {
      logger.info({ shipPaidOrders }, "PAID orders are released for shipping (SHIP_PAID_ORDERS); a relay process with DELIVERY_SERVICE_URL delivers the requests");
    }
    return { grpcPort: servers.grpcPort, httpPort: servers.httpPort, pool, store, metrics, stop };
  } catch (err) {
    await stop().catch((stopErr) => logger.error({ err: stopErr }, "cleaning up after a failed start failed"));
    throw err;
  }
}
