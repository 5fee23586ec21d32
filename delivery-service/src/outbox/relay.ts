import type { envReader } from "@shop/platform/config";
import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import type { ShipmentEventClient } from "@shop/sdk/clients";
import {
  OutboxCleanup,
  OUTBOX_CLEANUP_DEFAULTS,
  outboxCleanupConfigFromEnv as cleanupConfigFromEnv,
  type OutboxCleanupConfig,
} from "@shop/engine/cleanup";
import { Relay, RELAY_DEFAULTS, relayConfigFromEnv, type DeliveryMetrics, type RelayConfig } from "@shop/engine/relay";
import { singlesRelayConfigProblems } from "@shop/engine/singles";
import { shipmentEventFlow, shipmentEventOutbox, type ShipmentEventMessage, type ShipmentEventRecorded } from "./event-flow.js";

export { OUTBOX_CLEANUP_DEFAULTS, type OutboxCleanupConfig } from "@shop/engine/cleanup";
export type { RelayConfig } from "@shop/engine/relay";

/** Names the relay in log lines, its failpoints (delivery-relay.after-claim, delivery-relay.before-ack) and its span (delivery-relay.deliver). */
export const DELIVERY_RELAY_COMPONENT = "delivery-relay";

/**
 * The engine's defaults but for the batch: each row of a claim is its own
 * RecordShipmentEvent call (and its own transaction at the order service),
 * SINGLES_IN_FLIGHT (16) at a time, each with the full call timeout. A claim
 * of 50 is 4 waves, at worst 4 × 5 s = 20 s, inside the 30 s lease; a bigger
 * one could outlive its lease while a slow order service answers, so another
 * relay would claim the rows and call again.
 */
export const DELIVERY_RELAY_DEFAULTS: Readonly<RelayConfig> = { ...RELAY_DEFAULTS, batchSize: 50 };

/** The engine's rule for relays of per-row calls (singlesRelayConfigProblems), under the DELIVERY_RELAY_ settings. */
export function deliveryRelayConfigProblems(c: RelayConfig): string[] {
  return singlesRelayConfigProblems(c, { prefix: "DELIVERY_RELAY_", method: "RecordShipmentEvent" });
}

/**
 * Reads DELIVERY_RELAY_BATCH_SIZE, _CONCURRENCY, _LEASE_MS, _POLL_INTERVAL_MS,
 * _CALL_TIMEOUT_MS, _RETRY_BASE_MS, _RETRY_MAX_MS, _MAX_ATTEMPTS (and
 * _MAX_REQUEST_BYTES, which this flow does not use: its requests are one row
 * each). Problems are recorded on the reader.
 */
export function deliveryRelayConfigFromEnv(env: ReturnType<typeof envReader>): RelayConfig {
  const config = relayConfigFromEnv(env, { prefix: "DELIVERY_RELAY_", defaults: DELIVERY_RELAY_DEFAULTS, flow: shipmentEventOutbox });
  for (const problem of deliveryRelayConfigProblems(config)) env.problem(problem);
  return config;
}

/** Reads DELIVERY_OUTBOX_RETENTION_MS, DELIVERY_OUTBOX_CLEANUP_INTERVAL_MS, DELIVERY_OUTBOX_CLEANUP_BATCH. */
export function deliveryOutboxCleanupConfigFromEnv(env: ReturnType<typeof envReader>): OutboxCleanupConfig {
  return cleanupConfigFromEnv(env, "DELIVERY_OUTBOX_");
}

export interface DeliveryRelayDeps {
  pool: Pool;
  orders: ShipmentEventClient;
  logger: Logger;
  config: RelayConfig;
  /** Names this relay in claim tokens and logs. Default: host name and pid. */
  relayId?: string;
  /** delivery_relay_* counters and the commit → ack latency. Default: none recorded. */
  metrics?: DeliveryMetrics;
  /** Milliseconds now, for the lease budget of one claim's calls. Default Date.now. */
  now?: () => number;
}

/**
 * Drains shipment_event_outbox into the order service's RecordShipmentEvent:
 * the engine's relay on the event flow, under the component name
 * "delivery-relay". Any number of relays (inside delivery service processes,
 * standalone) may share the outbox; the order service's inbox makes a
 * redelivery after a lost ack harmless.
 */
export class DeliveryRelay extends Relay<ShipmentEventMessage, ShipmentEventRecorded> {
  constructor(deps: DeliveryRelayDeps) {
    const problems = deliveryRelayConfigProblems(deps.config);
    if (problems.length > 0) throw new Error(`invalid delivery relay config: ${problems.join("; ")}`);
    const { orders, ...rest } = deps;
    super({ ...rest, flow: shipmentEventFlow(orders), component: DELIVERY_RELAY_COMPONENT, settingsPrefix: "DELIVERY_RELAY_" });
  }
}

/** Keeps shipment_event_outbox from growing forever: the engine's cleanup on the event flow (nothing to archive: shipments and their transitions keep every event). */
export class ShipmentEventOutboxCleanup extends OutboxCleanup {
  constructor(deps: { pool: Pool; logger: Logger; config?: OutboxCleanupConfig }) {
    super({ pool: deps.pool, logger: deps.logger, flow: shipmentEventOutbox, config: deps.config ?? OUTBOX_CLEANUP_DEFAULTS });
  }
}
