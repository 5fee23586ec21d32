import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import type { ClientTls } from "@shop/platform/tls";
import { traceContextInterceptor } from "@shop/platform/tracing";
import { Relay, type DeliveryMetrics, type RelayConfig } from "@shop/engine/relay";
import { singlesBatchLimit } from "@shop/engine/singles";
import { createDeliveryClient } from "@shop/sdk/clients";
import { shipmentFlow } from "./shipment-flow.js";

export interface ShipmentRelayOptions {
  pool: Pool;
  logger: Logger;
  /** The RELAY_* settings, shared with the voucher, charge and refund relays. */
  config: RelayConfig;
  deliveryServiceUrl: string;
  /** The relay role's token (it carries shipments:create, addressed to the delivery service too). */
  token?: string | (() => string);
  tls?: ClientTls;
  metrics?: DeliveryMetrics;
  relayId?: string;
}

export interface ShipmentRelay {
  relay: Relay<object, unknown>;
  /** Closes the delivery client; call after the relay has stopped. */
  close(): void;
}

/**
 * The shipment relay (component shipment-relay: the RELAY_* settings, with
 * RELAY_BATCH_SIZE capped by singlesBatchLimit; its log lines, failpoints
 * `shipment-relay.after-claim` / `.before-ack` and span), on one delivery
 * client. Not started: the caller starts it once its servers are up and
 * stops it before closing the pool.
 */
export function startShipmentRelay(opts: ShipmentRelayOptions): ShipmentRelay {
  if (!opts.token) throw new Error("the shipment relay needs a token for the delivery service: set RELAY_TOKEN or RELAY_TOKEN_FILE");
  const delivery = createDeliveryClient({
    baseUrl: opts.deliveryServiceUrl,
    defaultTimeoutMs: opts.config.callTimeoutMs,
    token: opts.token,
    tls: opts.tls,
    interceptors: [traceContextInterceptor()],
  });
  // Each row is its own call, 16 at a time: a claim takes no more rows than those waves can call within the lease.
  const limit = singlesBatchLimit(opts.config);
  const config = { ...opts.config, batchSize: Math.min(opts.config.batchSize, limit) };
  if (config.batchSize < opts.config.batchSize) {
    opts.logger.info(
      { batchSize: config.batchSize, relayBatchSize: opts.config.batchSize },
      `the shipment relay claims at most ${config.batchSize} rows at a time (one call per row, 16 at once, within RELAY_LEASE_MS)`,
    );
  }
  const relay = new Relay({
    pool: opts.pool,
    logger: opts.logger,
    config,
    relayId: opts.relayId,
    settingsPrefix: "RELAY_",
    flow: shipmentFlow(delivery.client),
    component: "shipment-relay",
    metrics: opts.metrics,
  });
  return { relay: relay as unknown as Relay<object, unknown>, close: delivery.close };
}
