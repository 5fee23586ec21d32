import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import type { ClientTls } from "@shop/platform/tls";
import { traceContextInterceptor } from "@shop/platform/tracing";
import { Relay, type DeliveryMetrics, type RelayConfig } from "@shop/engine/relay";
import { singlesBatchLimit } from "@shop/engine/singles";
import { createPaymentClient } from "@shop/sdk/clients";
import { chargeFlow, refundFlow } from "./payment-flows.js";

export interface PaymentRelaysOptions {
  pool: Pool;
  logger: Logger;
  /** The RELAY_* settings, shared with the voucher relay. */
  config: RelayConfig;
  paymentServiceUrl: string;
  /** The relay role's token (addressed to the voucher and payment services). */
  token?: string | (() => string);
  tls?: ClientTls;
  metrics?: { charge?: DeliveryMetrics; refund?: DeliveryMetrics };
  relayId?: string;
}

export interface PaymentRelays {
  charge: Relay<object, unknown>;
  refund: Relay<object, unknown>;
  /** Closes the payment client; call after both relays have stopped. */
  close(): void;
}

/**
 * The charge and refund relays (components charge-relay and refund-relay:
 * the RELAY_* settings, with RELAY_BATCH_SIZE capped by singlesBatchLimit;
 * their log lines, failpoints `charge-relay.after-claim` / `.before-ack` and
 * spans), on one payment client. Not started: the caller starts them once
 * its servers are up and stops them before closing the pool.
 */
export function startPaymentRelays(opts: PaymentRelaysOptions): PaymentRelays {
  if (!opts.token) throw new Error("the charge and refund relays need a token for the payment service: set RELAY_TOKEN or RELAY_TOKEN_FILE");
  const payment = createPaymentClient({
    baseUrl: opts.paymentServiceUrl,
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
      `the charge and refund relays claim at most ${config.batchSize} rows at a time (one call per row, 16 at once, within RELAY_LEASE_MS)`,
    );
  }
  const common = { pool: opts.pool, logger: opts.logger, config, relayId: opts.relayId, settingsPrefix: "RELAY_" };
  const charge = new Relay({ ...common, flow: chargeFlow(payment.client), component: "charge-relay", metrics: opts.metrics?.charge });
  const refund = new Relay({ ...common, flow: refundFlow(payment.client), component: "refund-relay", metrics: opts.metrics?.refund });
  return { charge: charge as unknown as Relay<object, unknown>, refund: refund as unknown as Relay<object, unknown>, close: payment.close };
}
