import { stat } from "node:fs/promises";
import { createMetrics, Counter, Gauge, type Registry } from "@shop/platform/metrics";
import { DRIFT_KINDS } from "./compare.js";
import type { RunOutcome } from "./job.js";
import type { ReconcileReport } from "./report.js";

const RESULTS = ["clean", "repaired", "unrepaired", "failed"] as const;

/**
 * The scheduler's metrics. A "success" is a run that finished, drift or not
 * (outcome other than failed): what the missed-run alert watches.
 */
export class ReconcilerMetrics {
  readonly registry: Registry;
  /** reconciler_drift_found{kind}: drift found by the last finished run, per kind (0 included). */
  private readonly driftFound: Gauge<"kind">;
  /** reconciler_last_success_timestamp_seconds: when the last finished run ended. */
  private readonly lastSuccess: Gauge;
  /** reconciler_runs_total{result}: runs by outcome (clean, repaired, unrepaired, failed). */
  private readonly runs: Counter<"result">;
  /** reconciler_void_cap_reached: 1 when the last finished run stopped voiding at RECONCILE_MAX_VOIDS. */
  private readonly voidCapReached: Gauge;
  /** reconciler_voids_total{result}: vouchers voided, and voids held back by the cap or the window (dry runs excluded). */
  private readonly voids: Counter<"result">;
  /** reconciler_drift_needs_person: drift the last finished run left for a person (no automatic repair, a permanent refusal, a held-back void). */
  private readonly needsPerson: Gauge;
  /** reconciler_payment_repair_cap_reached: 1 when the last finished run stopped repairing payments at RECONCILE_MAX_PAYMENT_REPAIRS. */
  private readonly paymentCapReached: Gauge;
  /** reconciler_payment_repairs_total{result}: outcomes delivered, requests requeued, repairs held back by the cap (dry runs excluded). */
  private readonly paymentRepairs: Counter<"result">;
  /** reconciler_shipping_repair_cap_reached: 1 when the last finished run stopped repairing shipping at RECONCILE_MAX_SHIPPING_REPAIRS. */
  private readonly shippingCapReached: Gauge;
  /** reconciler_shipping_repairs_total{result}: orders moved by shipment events, shipment requests requeued, repairs held back by the cap (dry runs excluded). */
  private readonly shippingRepairs: Counter<"result">;

  constructor(opts: { processMetrics?: boolean } = {}) {
    this.registry = createMetrics({ processMetrics: opts.processMetrics }).registry;
    this.driftFound = new Gauge({
      name: "reconciler_drift_found",
      help: "Drift found by the last finished reconcile run, by kind.",
      labelNames: ["kind"] as const,
      registers: [this.registry],
    });
    for (const kind of DRIFT_KINDS) this.driftFound.set({ kind }, 0);
    this.lastSuccess = new Gauge({
      name: "reconciler_last_success_timestamp_seconds",
      help: "Unix time at which the last finished (not failed) reconcile run ended; 0 if none is known.",
      registers: [this.registry],
    });
    this.runs = new Counter({
      name: "reconciler_runs_total",
      help: "Reconcile runs by outcome: clean, repaired, unrepaired, failed.",
      labelNames: ["result"] as const,
      registers: [this.registry],
    });
    for (const result of RESULTS) this.runs.inc({ result }, 0);
    this.voidCapReached = new Gauge({
      name: "reconciler_void_cap_reached",
      help: "1 when the last finished reconcile run reached RECONCILE_MAX_VOIDS and stopped voiding, else 0.",
      registers: [this.registry],
    });
    this.voidCapReached.set(0);
    this.voids = new Counter({
      name: "reconciler_voids_total",
      help: "Vouchers voided by reconcile runs (result=voided), and voids held back (skipped_cap: over RECONCILE_MAX_VOIDS; outside_window: issued outside the run's window).",
      labelNames: ["result"] as const,
      registers: [this.registry],
    });
    for (const result of ["voided", "skipped_cap", "outside_window"]) this.voids.inc({ result }, 0);
    this.needsPerson = new Gauge({
      name: "reconciler_drift_needs_person",
      help: "Drift the last finished reconcile run left for a person: no automatic repair, a permanent refusal, or a void held back.",
      registers: [this.registry],
    });
    this.needsPerson.set(0);
    this.paymentCapReached = new Gauge({
      name: "reconciler_payment_repair_cap_reached",
      help: "1 when the last finished reconcile run reached RECONCILE_MAX_PAYMENT_REPAIRS and stopped repairing payments, else 0.",
      registers: [this.registry],
    });
    this.paymentCapReached.set(0);
    this.paymentRepairs = new Counter({
      name: "reconciler_payment_repairs_total",
      help: "Payment repairs by reconcile runs: outcomes delivered to orders (delivered), charge or refund requests requeued (requeued), repairs held back by RECONCILE_MAX_PAYMENT_REPAIRS (skipped_cap).",
      labelNames: ["result"] as const,
      registers: [this.registry],
    });
    for (const result of ["delivered", "requeued", "skipped_cap"]) this.paymentRepairs.inc({ result }, 0);
    this.shippingCapReached = new Gauge({
      name: "reconciler_shipping_repair_cap_reached",
      help: "1 when the last finished reconcile run reached RECONCILE_MAX_SHIPPING_REPAIRS and stopped repairing shipping, else 0.",
      registers: [this.registry],
    });
    this.shippingCapReached.set(0);
    this.shippingRepairs = new Counter({
      name: "reconciler_shipping_repairs_total",
      help: "Shipping repairs by reconcile runs: orders moved by shipment events delivered to them (delivered), shipment requests requeued (requeued), repairs held back by RECONCILE_MAX_SHIPPING_REPAIRS (skipped_cap).",
      labelNames: ["result"] as const,
      registers: [this.registry],
    });
    for (const result of ["delivered", "requeued", "skipped_cap"]) this.shippingRepairs.inc({ result }, 0);
  }

  /**
   * Starts the success time from the state file's modification time: the
   * file is written only after a finished run, so a restarted scheduler does
   * not look as if it had never succeeded (and the missed-run alert stays quiet).
   */
  async seedFromStateFile(stateFile: string): Promise<void> {
    try {
      const { mtimeMs } = await stat(stateFile);
      this.lastSuccess.set(mtimeMs / 1000);
    } catch {
      // No state yet: no run has finished here, the gauge stays 0.
    }
  }

  record(report: ReconcileReport): void {
    this.runs.inc({ result: report.outcome });
    if (report.outcome === "failed") return;
    for (const kind of DRIFT_KINDS) this.driftFound.set({ kind }, report.counts[kind].found);
    this.lastSuccess.set(Date.parse(report.finishedAt) / 1000);
    this.voidCapReached.set(report.voids.capReached ? 1 : 0);
    this.needsPerson.set(report.totals.needsPerson);
    this.paymentCapReached.set(report.payments.capReached ? 1 : 0);
    this.shippingCapReached.set(report.shipping.capReached ? 1 : 0);
    if (!report.dryRun) {
      this.paymentRepairs.inc({ result: "delivered" }, report.payments.delivered);
      this.paymentRepairs.inc({ result: "requeued" }, report.payments.requeued);
      this.paymentRepairs.inc({ result: "skipped_cap" }, report.payments.skippedByCap);
      this.shippingRepairs.inc({ result: "delivered" }, report.shipping.delivered);
      this.shippingRepairs.inc({ result: "requeued" }, report.shipping.requeued);
      this.shippingRepairs.inc({ result: "skipped_cap" }, report.shipping.skippedByCap);
      this.voids.inc({ result: "voided" }, report.voids.voided);
      this.voids.inc({ result: "skipped_cap" }, report.voids.skippedByCap);
      this.voids.inc({ result: "outside_window" }, report.voids.outsideWindow);
    }
  }

  /** A run that threw instead of returning a report. */
  recordCrash(): void {
    this.runs.inc({ result: "failed" });
  }
}

/** Runs `run` and records its outcome, including a crash (which is rethrown). */
export async function runRecorded(metrics: ReconcilerMetrics, run: () => Promise<RunOutcome>): Promise<RunOutcome> {
  let outcome: RunOutcome;
  try {
    outcome = await run();
  } catch (err) {
    metrics.recordCrash();
    throw err;
  }
  metrics.record(outcome.report);
  return outcome;
}
