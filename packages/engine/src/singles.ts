import { ConnectError } from "@connectrpc/connect";
import { failureCause } from "./classify.js";
import type { CallOptions, Claimed, ItemResult } from "./flow.js";

/**
 * At most this many of a batch's calls are in flight at once, by default. A
 * batch of 250 rows sent all at once would queue on the receiver's database
 * pool (10 connections by default) until the calls at the back ran past their
 * deadline, the batch failed as a whole with DEADLINE_EXCEEDED and was split:
 * the flow slowed to a crawl under exactly the load it was built for.
 */
export const SINGLES_IN_FLIGHT = 16;

/**
 * A batch call for a receiver that has only a per-row RPC (ChargeOrder,
 * RecordPaymentOutcome): the rows' calls run side by side, at most
 * `inFlight` at a time, each with the batch's deadline. A row refused for its own content (a `request` code)
 * becomes that row's result, as a batch item's error would; any other failure
 * (an outage, a refused caller, a suspect code) fails the batch as a whole
 * with the first such error, so the engine retries, backs off or splits
 * exactly as it does for a batch RPC. Rows whose calls succeeded in such a
 * batch are delivered again with the rest: the receiver's idempotency
 * answers them with their recorded outcome.
 */
export function batchOfSingles<Row extends object, Result>(
  single: (row: Claimed<Row>, call: CallOptions) => Promise<ItemResult<Result>>,
  inFlight = SINGLES_IN_FLIGHT,
): (rows: Array<Claimed<Row>>, call: CallOptions) => Promise<Array<ItemResult<Result>>> {
  if (!Number.isInteger(inFlight) || inFlight < 1) throw new Error(`batchOfSingles: inFlight must be a positive integer, not ${inFlight}`);
  return async (rows, call) => {
    const settled: Array<PromiseSettledResult<ItemResult<Result>>> = new Array(rows.length);
    let next = 0;
    const worker = async () => {
      while (next < rows.length) {
        const i = next++;
        try {
          settled[i] = { status: "fulfilled", value: await single(rows[i]!, call) };
        } catch (reason) {
          settled[i] = { status: "rejected", reason };
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(inFlight, rows.length) }, worker));
    const results: Array<ItemResult<Result>> = [];
    for (const s of settled) {
      if (s.status === "fulfilled") {
        results.push(s.value);
        continue;
      }
      const err = ConnectError.from(s.reason);
      if (failureCause(err.code) !== "request") throw err;
      results.push({ code: err.code, message: err.rawMessage });
    }
    return results;
  };
}

/**
 * The largest claim whose per-row calls, SINGLES_IN_FLIGHT at a time and each
 * up to callTimeoutMs, end within the lease (at least one wave): a larger one
 * could outlive its lease while a slow receiver answers, and another relay
 * would claim the rows and call again.
 */
export function singlesBatchLimit(c: { leaseMs: number; callTimeoutMs: number }, inFlight = SINGLES_IN_FLIGHT): number {
  const waves = Math.max(1, Math.ceil(c.leaseMs / c.callTimeoutMs) - 1);
  return waves * inFlight;
}

/** What a per-row relay's settings are read as: the engine's, with the prefix its process uses and the RPC it calls. */
export interface SinglesRelaySettings {
  /** e.g. "PAYMENT_RELAY_": names the settings in problems. */
  prefix: string;
  /** The per-row RPC, e.g. "RecordPaymentOutcome": names the calls in problems. */
  method: string;
}

/**
 * The rule the engine's own checks do not know (they see a batch as one
 * call), for a relay whose batch is per-row calls: a claim must not exceed
 * singlesBatchLimit, so that all its calls, SINGLES_IN_FLIGHT at a time and
 * each up to the call timeout, end within the lease. The order service's
 * relays cap their claims to that limit instead (they share RELAY_* with the
 * voucher flow, whose batch is one call).
 */
export function singlesRelayConfigProblems(
  c: { batchSize: number; leaseMs: number; callTimeoutMs: number },
  s: SinglesRelaySettings,
  inFlight = SINGLES_IN_FLIGHT,
): string[] {
  if (c.batchSize <= singlesBatchLimit(c, inFlight)) return [];
  const waves = Math.ceil(c.batchSize / inFlight);
  return [
    `${s.prefix}BATCH_SIZE=${c.batchSize} is ${waves} waves of ${inFlight} ${s.method} calls, up to ` +
      `${waves} × ${s.prefix}CALL_TIMEOUT_MS=${c.callTimeoutMs} ms, which must end within ${s.prefix}LEASE_MS=${c.leaseMs}: ` +
      `lower the batch size or the call timeout, or raise the lease`,
  ];
}
