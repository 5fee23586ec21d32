import { ConnectError } from "@connectrpc/connect";
import { failureCause } from "./classify.js";
import type { CallOptions, Claimed, ItemResult } from "./flow.js";

/**
 * A batch call for a receiver that has only a per-row RPC (ChargeOrder,
 * RecordPaymentOutcome): the rows' calls run side by side, each with the
 * batch's deadline. A row refused for its own content (a `request` code)
 * becomes that row's result, as a batch item's error would; any other failure
 * (an outage, a refused caller, a suspect code) fails the batch as a whole
 * with the first such error, so the engine retries, backs off or splits
 * exactly as it does for a batch RPC. Rows whose calls succeeded in such a
 * batch are delivered again with the rest: the receiver's idempotency
 * answers them with their recorded outcome.
 */
export function batchOfSingles<Row extends object, Result>(
  single: (row: Claimed<Row>, call: CallOptions) => Promise<ItemResult<Result>>,
): (rows: Array<Claimed<Row>>, call: CallOptions) => Promise<Array<ItemResult<Result>>> {
  return async (rows, call) => {
    const settled = await Promise.allSettled(rows.map((row) => single(row, call)));
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
