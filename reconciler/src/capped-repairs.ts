import type { Logger } from "@shop/platform/logger";
import { REPAIR_OF } from "./compare.js";
import { inParallel, type DriftRecord, type RunResult } from "./reconcile.js";

/** What a kind of capped repairs (payments, shipping) counts over a run. */
export interface CappedTally {
  cap: number;
  repairs: number;
  skippedByCap: number;
  capReached: boolean;
  racedWithRelay: number;
}

/** A finding of a comparison: its kind (naming the repair), its order, and what was seen. */
export interface Finding {
  kind: DriftRecord["kind"];
  orderId: string;
  detail: string;
}

export type RepairOutcome = "repaired" | "raced" | "failed";

export interface CappedRepairs<F extends Finding> {
  /** "payment" or "shipping": names the cap in logs and records. */
  what: string;
  /** The setting and the flag that raise the cap, named in the records the cap holds back. */
  capSetting: string;
  capFlag: string;
  tally: CappedTally;
  result: RunResult;
  log: Logger;
  dryRun: boolean;
  concurrency: number;
  keyOf(f: F): string;
  repairable(f: F): boolean;
  /** One order's repair; failures are written on the record. "raced": the relay had done it meanwhile. */
  repairOne(f: F, r: DriftRecord): Promise<RepairOutcome>;
  /** Logged (debug) for a finding the relay settled meanwhile. */
  racedMessage: string;
}

/**
 * Returns the handler of a run's findings of one kind (payments, shipping):
 * each finding recorded once, the repairable ones repaired up to the cap over
 * the whole run (the rest recorded for a person, the cap logged), nothing
 * repaired in a dry run, repairs run `concurrency` at a time. A finding the
 * relay settled meanwhile is not drift: it is counted as a race and may be
 * found again. A repair that stops the run (a service down, a refused token)
 * records what was and was not done before it rethrows.
 */
export function cappedRepairs<F extends Finding>(o: CappedRepairs<F>): (findings: F[]) => Promise<void> {
  const { tally, result, log } = o;
  const seen = new Set<string>();

  const allowedRepairs = (fresh: F[], records: Map<F, DriftRecord>): Set<F> => {
    const allowed = new Set<F>();
    for (const f of fresh.filter(o.repairable)) {
      if (tally.repairs >= tally.cap) {
        tally.skippedByCap++;
        tally.capReached = true;
        Object.assign(records.get(f)!, {
          error:
            `not repaired: this run reached its cap of ${tally.cap} ${o.what} repair(s) (${o.capSetting}); ` +
            `check the report, then run again with ${o.capFlag} to repair the rest`,
          needsPerson: true,
        });
      } else {
        tally.repairs++;
        allowed.add(f);
      }
    }
    if (tally.capReached) {
      log.error({ cap: tally.cap, skipped: tally.skippedByCap }, `${o.what} repair cap reached: ${tally.skippedByCap} order(s) left unrepaired so far`);
    }
    return allowed;
  };

  return async (findings) => {
    const fresh = findings.filter((f) => {
      const key = o.keyOf(f);
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
    if (fresh.length === 0) return;
    const records = new Map<F, DriftRecord>();
    for (const f of fresh) {
      const repairable = o.repairable(f);
      records.set(f, {
        kind: f.kind,
        orderId: f.orderId,
        detail: f.detail,
        action: REPAIR_OF[f.kind],
        repaired: false,
        error: repairable ? undefined : "no automatic repair: a person must decide",
        needsPerson: repairable ? undefined : true,
      });
    }
    const allowed = allowedRepairs(fresh, records);
    if (o.dryRun) {
      for (const [f, r] of records) {
        if (allowed.has(f)) r.error = "dry run: not repaired";
        result.drift.push(r);
        log.warn({ kind: r.kind, orderId: r.orderId }, `drift: ${r.detail}`);
      }
      return;
    }
    const outcome = new Map<F, RepairOutcome>();
    try {
      await inParallel([...allowed], o.concurrency, async (f) => {
        outcome.set(f, await o.repairOne(f, records.get(f)!));
      });
    } catch (err) {
      for (const [f, r] of records) {
        if (allowed.has(f) && !outcome.has(f)) r.error ??= "run stopped before this was repaired";
        r.repaired = outcome.get(f) === "repaired";
        if (r.repaired) delete r.needsPerson;
        else r.needsPerson ??= false;
        result.drift.push(r);
      }
      throw err;
    }
    for (const [f, r] of records) {
      const done = outcome.get(f);
      if (done === "raced") {
        tally.racedWithRelay++;
        seen.delete(o.keyOf(f));
        log.debug({ orderId: f.orderId, kind: f.kind }, o.racedMessage);
        continue;
      }
      r.repaired = done === "repaired";
      if (r.repaired) delete r.needsPerson;
      else r.needsPerson ??= false;
      result.drift.push(r);
      const fields = { kind: r.kind, orderId: r.orderId, repaired: r.repaired, needsPerson: r.needsPerson, error: r.error };
      if (r.repaired) log.info(fields, `drift repaired: ${r.detail}`);
      else log.warn(fields, `drift not repaired: ${r.detail}`);
    }
  };
}
