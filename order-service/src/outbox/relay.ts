import type { envReader } from "@shop/platform/config";
import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import type { VoucherClient } from "@shop/sdk/clients";
import {
  Relay as EngineRelay,
  RELAY_DEFAULTS,
  relayConfigFromEnv as engineConfigFromEnv,
  relayConfigProblems as engineConfigProblems,
  type RelayConfig,
} from "@shop/engine/relay";
import type { RelayMetrics } from "../metrics.js";
import { voucherFlow, voucherOutbox, type VoucherIssued, type VoucherRequest } from "./voucher-flow.js";

export { RELAY_DEFAULTS, type RelayConfig } from "@shop/engine/relay";

/** Problems with a relay config (empty when it is usable), including a batch the voucher service could refuse as too large. */
export function relayConfigProblems(c: RelayConfig): string[] {
  return engineConfigProblems(c, voucherOutbox, "RELAY_");
}

/**
 * Reads the RELAY_* settings. Problems are recorded on the reader; the caller
 * calls env.finish() once it has read all its settings, so one error lists them all.
 */
export function relayConfigFromEnv(env: ReturnType<typeof envReader>): RelayConfig {
  return engineConfigFromEnv(env, { prefix: "RELAY_", defaults: RELAY_DEFAULTS, flow: voucherOutbox });
}

export interface RelayDeps {
  pool: Pool;
  voucher: VoucherClient;
  logger: Logger;
  config: RelayConfig;
  /**
   * Names this relay in claim tokens and logs. Default: host name and pid.
   * Need not be unique: every claim token adds a fresh ULID.
   */
  relayId?: string;
  /** Delivery counters and the commit → voucher latency. Default: none recorded. */
  metrics?: RelayMetrics;
  /** Milliseconds now, for the lease budget of one claim's calls. Default Date.now. */
  now?: () => number;
}

/**
 * Drains voucher_outbox into the voucher service: the engine's relay on the
 * voucher flow, under the component name "relay" (its log lines, failpoints
 * relay.after-claim / relay.before-ack and span relay.deliver) and the
 * relay_* metrics. Any number of relays, in-process or standalone, may share
 * the outbox; the voucher service's idempotency per order makes a
 * redelivery after a lost ack harmless.
 */
export class Relay extends EngineRelay<VoucherRequest, VoucherIssued> {
  constructor(deps: RelayDeps) {
    const { voucher, metrics, ...rest } = deps;
    super({
      ...rest,
      flow: voucherFlow(voucher),
      component: "relay",
      settingsPrefix: "RELAY_",
      metrics: metrics && { ...metrics, commitToAck: metrics.commitToIssue },
    });
  }
}
