import type { envReader } from "@shop/platform/config";
import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import type { PaymentOutcomeClient } from "@shop/sdk/clients";
import {
  OutboxCleanup,
  OUTBOX_CLEANUP_DEFAULTS,
  outboxCleanupConfigFromEnv as cleanupConfigFromEnv,
  type OutboxCleanupConfig,
} from "@shop/engine/cleanup";
import { Relay, RELAY_DEFAULTS, relayConfigFromEnv, type DeliveryMetrics, type RelayConfig } from "@shop/engine/relay";
import { singlesRelayConfigProblems } from "@shop/engine/singles";
import { outcomeFlow, paymentOutbox, type OutcomeMessage, type OutcomeRecorded } from "./outcome-flow.js";

export { OUTBOX_CLEANUP_DEFAULTS, type OutboxCleanupConfig } from "@shop/engine/cleanup";
export type { RelayConfig } from "@shop/engine/relay";

/** Names the relay in log lines, its failpoints (payment-relay.after-claim, payment-relay.before-ack) and its span (payment-relay.deliver). */
export const PAYMENT_RELAY_COMPONENT = "payment-relay";

/**
 * The engine's defaults but for the batch: each row of a claim is its own
 * RecordPaymentOutcome call (and its own transaction at the order service),
 * SINGLES_IN_FLIGHT (16) at a time, each with the full call timeout. A claim
 * of 50 is 4 waves, at worst 4 × 5 s = 20 s, inside the 30 s lease; one of
 * 250 would be 16 waves and could outlive its lease while a slow order
 * service answers, so another relay would claim the rows and call again.
 */
export const PAYMENT_RELAY_DEFAULTS: Readonly<RelayConfig> = { ...RELAY_DEFAULTS, batchSize: 50 };

/** The engine's rule for relays of per-row calls (singlesRelayConfigProblems), under the PAYMENT_RELAY_ settings. */
export function paymentRelayConfigProblems(c: RelayConfig): string[] {
  return singlesRelayConfigProblems(c, { prefix: "PAYMENT_RELAY_", method: "RecordPaymentOutcome" });
}

/**
 * Reads PAYMENT_RELAY_BATCH_SIZE, _CONCURRENCY, _LEASE_MS, _POLL_INTERVAL_MS,
 * _CALL_TIMEOUT_MS, _RETRY_BASE_MS, _RETRY_MAX_MS, _MAX_ATTEMPTS (and
 * _MAX_REQUEST_BYTES, which this flow does not use: its requests are one row
 * each). Problems are recorded on the reader.
 */
export function paymentRelayConfigFromEnv(env: ReturnType<typeof envReader>): RelayConfig {
  const config = relayConfigFromEnv(env, { prefix: "PAYMENT_RELAY_", defaults: PAYMENT_RELAY_DEFAULTS, flow: paymentOutbox });
  for (const problem of paymentRelayConfigProblems(config)) env.problem(problem);
  return config;
}

/** Reads PAYMENT_OUTBOX_RETENTION_MS, PAYMENT_OUTBOX_CLEANUP_INTERVAL_MS, PAYMENT_OUTBOX_CLEANUP_BATCH. */
export function paymentOutboxCleanupConfigFromEnv(env: ReturnType<typeof envReader>): OutboxCleanupConfig {
  return cleanupConfigFromEnv(env, "PAYMENT_OUTBOX_");
}

export interface PaymentRelayDeps {
  pool: Pool;
  orders: PaymentOutcomeClient;
  logger: Logger;
  config: RelayConfig;
  /** Names this relay in claim tokens and logs. Default: host name and pid. */
  relayId?: string;
  /** payment_relay_* counters and the commit → ack latency. Default: none recorded. */
  metrics?: DeliveryMetrics;
  /** Milliseconds now, for the lease budget of one claim's calls. Default Date.now. */
  now?: () => number;
}

/**
 * Drains payment_outbox into the order service's RecordPaymentOutcome: the
 * engine's relay on the outcome flow, under the component name
 * "payment-relay". Any number of relays (inside payment service processes,
 * standalone) may share the outbox; the order service's inbox makes a
 * redelivery after a lost ack harmless.
 */
export class PaymentRelay extends Relay<OutcomeMessage, OutcomeRecorded> {
  constructor(deps: PaymentRelayDeps) {
    const problems = paymentRelayConfigProblems(deps.config);
    if (problems.length > 0) throw new Error(`invalid payment relay config: ${problems.join("; ")}`);
    const { orders, ...rest } = deps;
    super({ ...rest, flow: outcomeFlow(orders), component: PAYMENT_RELAY_COMPONENT, settingsPrefix: "PAYMENT_RELAY_" });
  }
}

/** Keeps payment_outbox from growing forever: the engine's cleanup on the outcome flow (nothing to archive: the inbox keeps every outcome). */
export class PaymentOutboxCleanup extends OutboxCleanup {
  constructor(deps: { pool: Pool; logger: Logger; config?: OutboxCleanupConfig }) {
    super({ pool: deps.pool, logger: deps.logger, flow: paymentOutbox, config: deps.config ?? OUTBOX_CLEANUP_DEFAULTS });
  }
}
