import { startDatabaseService, type DatabaseServiceOptions, type RunningDatabaseService } from "@shop/platform/database-service";
import { traceContextInterceptor } from "@shop/platform/tracing";
import { createPaymentOutcomeClient } from "@shop/sdk/clients";
import { PaymentService } from "@shop/sdk/payment";
import type { PaymentRelaySettings } from "./config.js";
import { PAYMENT_MIGRATIONS } from "./db/migrate.js";
import { PAYMENT_SERVICE_ACCESS } from "./grpc/access.js";
import { createPaymentServiceImpl } from "./grpc/routes.js";
import { createPaymentMetrics, type PaymentMetrics } from "./metrics.js";
import { OUTBOX_CLEANUP_DEFAULTS, PaymentOutboxCleanup, PaymentRelay, type OutboxCleanupConfig } from "./outbox/relay.js";
import { Payments } from "./payments.js";

export interface PaymentServiceOptions extends DatabaseServiceOptions {
  /**
   * The relay that delivers payment_outbox to the order service, run in this
   * process; false or absent runs none here (relays deployed as their own
   * processes, tests that look at the outbox themselves). main.ts passes
   * PAYMENT_RELAY_ENABLED's choice.
   */
  relay?: PaymentRelaySettings | false;
  /** Removal of delivered payment_outbox rows. Default OUTBOX_CLEANUP_DEFAULTS (7 days' retention). */
  outboxCleanup?: OutboxCleanupConfig;
  /** How long one reading of the outbox gauges serves /metrics scrapes. Default 5000 ms. */
  outboxMetricsCacheMs?: number;
}

export type RunningPaymentService = RunningDatabaseService<PaymentMetrics>;

/**
 * Starts the whole service in this process: pool, wait for the database,
 * migrations, servers, then the outcome relay (if asked for) and the outbox
 * cleanup. main.ts runs it; tests run it in-process.
 */
export function startPaymentService(opts: PaymentServiceOptions): Promise<RunningPaymentService> {
  const { logger } = opts;
  return startDatabaseService(opts, PAYMENT_MIGRATIONS, (pool) => {
    const metrics = createPaymentMetrics({ pool, logger, outboxCacheMs: opts.outboxMetricsCacheMs });
    let relay: { start(): void; wake(): void; stop(): Promise<void> } | undefined;
    let closeClient: (() => void) | undefined;
    if (opts.relay) {
      const orders = createPaymentOutcomeClient({
        baseUrl: opts.relay.orderServiceUrl,
        defaultTimeoutMs: opts.relay.config.callTimeoutMs,
        token: opts.relay.token,
        tls: opts.relay.tls,
        interceptors: [traceContextInterceptor()],
      });
      closeClient = orders.close;
      try {
        relay = new PaymentRelay({ pool, orders: orders.client, logger, config: opts.relay.config, relayId: opts.relay.relayId, metrics: metrics.relay });
      } catch (err) {
        orders.close();
        throw err;
      }
    }
    const cleanup = new PaymentOutboxCleanup({ pool, logger, config: opts.outboxCleanup ?? OUTBOX_CLEANUP_DEFAULTS });
    const payments = new Payments({ pool, logger, onOutcome: () => relay?.wake() });
    return {
      services: [{ service: PaymentService, impl: createPaymentServiceImpl({ payments, requests: metrics.requests }), access: PAYMENT_SERVICE_ACCESS }],
      metrics,
      isReady: () => payments.ping().then(() => true),
      start() {
        relay?.start();
        cleanup.start();
        logger.info(
          { relay: relay !== undefined, orderServiceUrl: opts.relay ? opts.relay.orderServiceUrl : undefined },
          relay ? "payment service started with its outcome relay" : "payment service started without an outcome relay",
        );
      },
      async stop() {
        await Promise.all([relay?.stop(), cleanup.stop()]);
        closeClient?.();
      },
    };
  });
}
