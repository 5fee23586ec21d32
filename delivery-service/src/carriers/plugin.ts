import type { Logger } from "@shop/platform/logger";
import type { CarrierReport, Shipment } from "../shipments.js";

export type { CarrierReport, Shipment };

/**
 * What the carrier worker hands a plugin with every call.
 */
export interface CarrierContext {
  /**
   * Aborted when the call's time is up (CARRIER_CALL_TIMEOUT_MS) or the
   * worker stops. Pass it to fetch() and friends. The worker stops waiting
   * at the timeout whether or not the plugin listens: a call that ignores it
   * is counted as timed out and retried later, while it keeps running
   * unobserved, so honour it.
   */
  signal: AbortSignal;
  /** A child of the service's logger with the carrier, order and call on every line. */
  logger: Logger;
  /** The time to decide by (the worker's clock; tests may set it). */
  now(): Date;
}

/**
 * A carrier plugin: the service's link to one business that takes orders,
 * sends them on, and later says what became of them. The service's carrier
 * worker calls it for the shipments whose carrier is its name, outside any
 * database transaction, one call at a time per shipment (a lease in the
 * database guarantees that across processes), and records what it reports.
 *
 * The rules a plugin lives by:
 * - accept() hands a shipment over and must be idempotent on
 *   shipment.orderId: after a crash, a timeout or a lost answer the worker
 *   calls it again for the same shipment, and the business must not ship
 *   twice (send the order id as the business's idempotency key).
 * - Returning settles the call; the returned reports (possibly none) are
 *   applied in order. A report of a status the shipment has already reached
 *   or passed changes nothing, so a plugin may repeat itself; one the
 *   lifecycle forbids (DECLINED after SHIPPED) is counted as the plugin's
 *   error, like a throw.
 * - Throwing (or timing out) means "try again later": the shipment is
 *   retried with capped, jittered backoff and parked after
 *   CARRIER_MAX_ATTEMPTS failures in a row, until an operator resumes it.
 *   Only this carrier's shipments are affected.
 * - poll() is optional. A plugin with poll is asked again every
 *   pollIntervalMs (default CARRIER_POLL_INTERVAL_MS) until the shipment is
 *   DELIVERED or DECLINED. A plugin without it learns nothing more by itself:
 *   its shipment waits for reports over CarrierService (takesRpcReports).
 * - Keep no state that matters in memory: the process may die at any point,
 *   and another replica may make the next call.
 */
export interface CarrierPlugin {
  /** The name orders choose it by and shipments record: a-z, 0-9 and "-", at most 32 characters. */
  readonly name: string;
  /** CarrierService may report for its shipments (a business reporting by RPC, or a person: the manual carrier). */
  readonly takesRpcReports: boolean;
  /**
   * Hand the shipment to the carrier. Must be idempotent on
   * shipment.orderId (it is called again after a crash or timeout). May
   * return reports known at once (CONFIRMED, or DECLINED with a reason).
   */
  accept(shipment: Shipment, ctx: CarrierContext): Promise<CarrierReport[]>;
  /** Optional: ask the carrier for progress; called again after pollIntervalMs while the shipment is not final. */
  poll?(shipment: Shipment, ctx: CarrierContext): Promise<CarrierReport[]>;
  /** Pause between two polls of one shipment. Default CARRIER_POLL_INTERVAL_MS. */
  readonly pollIntervalMs?: number;
  /**
   * Optional: when to poll this shipment next, in ms from `now`, for a
   * carrier that knows (a schedule, a business that said "tomorrow").
   * undefined: after pollIntervalMs. Saves the claims of polls that could
   * only answer "nothing yet".
   */
  nextPollInMs?(shipment: Shipment, now: Date): number | undefined;
}

/** What a carrier's name must look like: it is stored in carrier VARCHAR(32) ASCII and named in CARRIERS. */
export const CARRIER_NAME = /^[a-z0-9-]{1,32}$/;

/** Why `plugin` cannot be registered, or undefined when it can. */
export function pluginProblem(plugin: CarrierPlugin): string | undefined {
  if (typeof plugin.name !== "string" || !CARRIER_NAME.test(plugin.name)) {
    return `carrier plugin name ${JSON.stringify(plugin.name)} must be 1 to 32 characters of a-z, 0-9 and "-"`;
  }
  if (typeof plugin.accept !== "function") return `carrier plugin ${plugin.name} has no accept()`;
  if (plugin.pollIntervalMs !== undefined && !(Number.isInteger(plugin.pollIntervalMs) && plugin.pollIntervalMs > 0)) {
    return `carrier plugin ${plugin.name}: pollIntervalMs=${plugin.pollIntervalMs} must be a positive whole number of ms`;
  }
  return undefined;
}
