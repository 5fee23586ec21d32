import path from "node:path";
import { DRIFT_KINDS, REPAIR_OF, type DriftKind } from "./compare.js";
import { emptyPaymentTally, type PaymentTally } from "./reconcile-payments.js";
import { emptyShippingTally, type ShippingTally } from "./reconcile-shipping.js";
import type { DriftRecord, RunResult, VoidTally, WindowSource } from "./reconcile.js";
import { writeJsonAtomically } from "./state.js";

/** 0: no drift. 1: drift found and all of it repaired. 2: drift left unrepaired, or the run failed. */
export type ExitCode = 0 | 1 | 2;

export type Outcome = "clean" | "repaired" | "unrepaired" | "failed";

export interface KindCount {
  found: number;
  repaired: number;
}

/** The JSON report every run leaves behind (RECONCILE_REPORT_DIR, and stdout with --json). */
export interface ReconcileReport {
  runId: string;
  dryRun: boolean;
  outcome: Outcome;
  exitCode: ExitCode;
  /** Why the run failed; null when it finished. */
  error: string | null;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  /** Sent orders and issued vouchers looked at: sent_at / issued_at in [since, until). since null = the beginning. */
  window: { since: string | null; until: string };
  /** Where the window's start came from: the state file, the initial look-back (no state file), --full or --since. */
  windowSource: WindowSource;
  /** Things an operator must know about the run itself, e.g. that no state file was found. */
  warnings: string[];
  /** Voids: the cap, how many were made, how many were held back by the cap or the window. */
  voids: VoidTally;
  /** Payments: whether they were checked (RECONCILE_PAYMENTS), what was scanned, repairs made and held back by the cap. */
  payments: PaymentTally;
  /** Shipping: whether it was checked (RECONCILE_SHIPPING), what was scanned, repairs made and held back by the cap. */
  shipping: ShippingTally;
  scanned: { sentOrders: number; vouchers: number; voidedVouchers: number; rechecked: number };
  /** Vouchers the relay delivered between the lookup and the repair (not drift). */
  racedWithRelay: number;
  /** unrepaired = needsPerson + left to the next run (retryable refusals). */
  totals: { found: number; repaired: number; unrepaired: number; needsPerson: number };
  /** Every kind, zero included, so a dashboard can rely on the keys. */
  counts: Record<DriftKind, KindCount>;
  /** Order ids per kind (voucher ids are in `drift`). */
  ids: Record<DriftKind, string[]>;
  drift: DriftRecord[];
  /** Batch and listing calls made: how many, and milliseconds spent waiting on them. */
  calls: Record<string, { count: number; ms: number }>;
}

export function exitCodeOf(
  result: Pick<RunResult, "error" | "drift"> & { voids?: VoidTally; payments?: PaymentTally; shipping?: ShippingTally },
): ExitCode {
  if (result.error || result.voids?.capReached || result.payments?.capReached || result.shipping?.capReached) return 2;
  if (result.drift.length === 0) return 0;
  return result.drift.every((d) => d.repaired) ? 1 : 2;
}

export function buildReport(result: RunResult): ReconcileReport {
  const counts = Object.fromEntries(DRIFT_KINDS.map((k) => [k, { found: 0, repaired: 0 }])) as Record<DriftKind, KindCount>;
  const ids = Object.fromEntries(DRIFT_KINDS.map((k) => [k, [] as string[]])) as Record<DriftKind, string[]>;
  for (const d of result.drift) {
    counts[d.kind].found++;
    if (d.repaired) counts[d.kind].repaired++;
    ids[d.kind].push(d.orderId);
  }
  const repaired = result.drift.filter((d) => d.repaired).length;
  const exitCode = exitCodeOf(result);
  const outcome: Outcome = result.error ? "failed" : exitCode === 0 ? "clean" : exitCode === 1 ? "repaired" : "unrepaired";
  return {
    runId: result.runId,
    dryRun: result.dryRun,
    outcome,
    exitCode,
    error: result.error ?? null,
    startedAt: result.startedAt.toISOString(),
    finishedAt: result.finishedAt.toISOString(),
    durationMs: result.finishedAt.getTime() - result.startedAt.getTime(),
    window: { since: result.window.since?.toISOString() ?? null, until: result.window.until.toISOString() },
    windowSource: result.windowSource ?? (result.window.since ? "explicit" : "full"),
    warnings: result.warnings ?? [],
    voids: { ...result.voids },
    payments: { ...(result.payments ?? emptyPaymentTally(0)) },
    shipping: { ...(result.shipping ?? emptyShippingTally(0)) },
    scanned: { ...result.scanned },
    racedWithRelay: result.racedWithRelay,
    totals: {
      found: result.drift.length,
      repaired,
      unrepaired: result.drift.length - repaired,
      needsPerson: result.drift.filter((d) => !d.repaired && d.needsPerson).length,
    },
    counts,
    ids,
    drift: result.drift,
    calls: Object.fromEntries(Object.entries(result.calls).map(([m, c]) => [m, { count: c.count, ms: Math.round(c.ms) }])),
  };
}

const OUTCOME_TEXT: Record<Outcome, string> = {
  clean: "no drift",
  repaired: "drift found, all of it repaired",
  unrepaired: "drift left unrepaired",
  failed: "RUN FAILED",
};

/** The human summary printed at the end of a run. Lists at most `maxItems` drift items; the JSON report has them all. */
export function formatSummary(report: ReconcileReport, reportFile?: string, maxItems = 50): string {
  const lines: string[] = [];
  const secs = (report.durationMs / 1000).toFixed(1);
  lines.push(`reconcile ${report.runId}${report.dryRun ? " (dry run: nothing changed)" : ""}: ${OUTCOME_TEXT[report.outcome]} (exit ${report.exitCode}) in ${secs} s`);
  if (report.error) lines.push(`  error:   ${report.error}`);
  for (const w of report.warnings) lines.push(`  WARNING: ${w}`);
  lines.push(`  window:  ${report.window.since ?? "the beginning"} → ${report.window.until}`);
  lines.push(
    `  scanned: ${report.scanned.sentOrders} sent orders, ${report.scanned.vouchers} vouchers` +
      (report.scanned.voidedVouchers ? ` (${report.scanned.voidedVouchers} of them voided)` : "") +
      (report.scanned.rechecked ? `, ${report.scanned.rechecked} orders left open by an earlier run` : ""),
  );
  if (report.racedWithRelay) lines.push(`  ${report.racedWithRelay} voucher(s) delivered by the relay during the run (not drift)`);
  const v = report.voids;
  if (v.capReached) {
    lines.push(
      `  VOID CAP REACHED: ${v.voided} voucher(s) ${report.dryRun ? "would be " : ""}voided, ${v.skippedByCap} more left alone (cap ${v.cap}, RECONCILE_MAX_VOIDS); ` +
        `check the report, then run with --max-voids to void the rest`,
    );
  } else if (v.voided > 0) {
    lines.push(`  voids:   ${v.voided} of at most ${v.cap}${report.dryRun ? " (would be made)" : ""}`);
  }
  if (v.outsideWindow > 0) lines.push(`  ${v.outsideWindow} voucher(s) to void were issued outside the window and left alone`);
  const p = report.payments;
  if (p.checked) {
    lines.push(`  payments: ${p.scannedPayments} charges decided in the window, ${p.scannedOrders} orders awaiting a charge or a refund`);
    if (p.racedWithRelay) lines.push(`  ${p.racedWithRelay} payment outcome(s) delivered by the payment relay during the run (not drift)`);
    if (p.capReached) {
      lines.push(
        `  PAYMENT REPAIR CAP REACHED: ${p.repairs} order(s) ${report.dryRun ? "would be " : ""}repaired, ${p.skippedByCap} more left alone ` +
          `(cap ${p.cap}, RECONCILE_MAX_PAYMENT_REPAIRS); check the report, then run with --max-payment-repairs to repair the rest`,
      );
    } else if (p.repairs > 0) {
      lines.push(
        `  payment repairs: ${p.repairs} of at most ${p.cap}${report.dryRun ? " (would be made)" : `: ${p.delivered} outcome(s) delivered, ${p.requeued} request(s) requeued`}`,
      );
    }
  } else {
    lines.push(`  payments: not checked (RECONCILE_PAYMENTS is off)`);
  }
  const s = report.shipping;
  if (s.checked) {
    lines.push(`  shipping: ${s.scannedShipments} shipments changed in the window, ${s.scannedOrders} orders awaiting their shipment`);
    if (s.racedWithRelay) lines.push(`  ${s.racedWithRelay} shipment event(s) delivered by the delivery relay during the run (not drift)`);
    if (s.capReached) {
      lines.push(
        `  SHIPPING REPAIR CAP REACHED: ${s.repairs} order(s) ${report.dryRun ? "would be " : ""}repaired, ${s.skippedByCap} more left alone ` +
          `(cap ${s.cap}, RECONCILE_MAX_SHIPPING_REPAIRS); check the report, then run with --max-shipping-repairs to repair the rest`,
      );
    } else if (s.repairs > 0) {
      lines.push(
        `  shipping repairs: ${s.repairs} of at most ${s.cap}${report.dryRun ? " (would be made)" : `: ${s.delivered} order(s) moved by their shipment's events, ${s.requeued} shipment request(s) requeued`}`,
      );
    }
  } else {
    lines.push(`  shipping: not checked (RECONCILE_SHIPPING is off)`);
  }
  if (report.totals.found > 0) {
    lines.push(
      `  drift:   ${report.totals.found} found, ${report.totals.repaired} repaired, ${report.totals.unrepaired} left` +
        (report.totals.needsPerson ? ` (${report.totals.needsPerson} need a person)` : ""),
    );
    for (const kind of DRIFT_KINDS) {
      const c = report.counts[kind];
      if (c.found === 0) continue;
      lines.push(`    ${kind.padEnd(30)} ${String(c.found).padStart(7)} found ${String(c.repaired).padStart(7)} repaired   (${REPAIR_OF[kind]})`);
    }
    for (const d of report.drift.slice(0, maxItems)) {
      const ids = `order ${d.orderId}${d.voucherId ? ` voucher ${d.voucherId}` : ""}`;
      const state = d.repaired ? "repaired" : d.needsPerson ? "PERSON  " : "OPEN    ";
      lines.push(`    ${state} ${d.kind}: ${ids}: ${d.detail}${d.error ? ` [${d.error}]` : ""}`);
    }
    if (report.drift.length > maxItems) lines.push(`    … and ${report.drift.length - maxItems} more in the JSON report`);
  }
  if (reportFile) lines.push(`  report:  ${reportFile}`);
  return lines.join("\n") + "\n";
}

/** Writes the report as <dir>/<startedAt>-<runId>.json (atomically) and returns the path. */
export async function writeReport(dir: string, report: ReconcileReport): Promise<string> {
  const stamp = report.startedAt.replace(/[:.]/g, "-");
  const file = path.join(dir, `${stamp}-${report.runId}${report.dryRun ? "-dry-run" : ""}.json`);
  await writeJsonAtomically(file, report);
  return file;
}
