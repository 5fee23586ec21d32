import {
  createDeliveryClient,
  createOrderClient,
  createPaymentClient,
  createPaymentOutcomeClient,
  createShipmentEventClient,
  createVoucherClient,
  type ClosableClient,
  type DeliveryClient,
  type OrderClient,
  type PaymentClient,
  type PaymentOutcomeClient,
  type ShipmentEventClient,
  type VoucherClient,
} from "@shop/sdk/clients";
import type { Logger } from "@shop/platform/logger";
import { newId } from "@shop/platform/ids";
import type { QualifiesFn } from "./compare.js";
import type { ReconcilerConfig } from "./config.js";
import { DEFAULT_MAX_PAYMENT_REPAIRS, DEFAULT_MAX_SHIPPING_REPAIRS, reconcile, type RunResult, type WindowSource } from "./reconcile.js";
import { emptyPaymentTally } from "./reconcile-payments.js";
import { emptyShippingTally } from "./reconcile-shipping.js";
import { buildReport, writeReport, type ReconcileReport } from "./report.js";
import { qualifies as defaultQualifies } from "./rule.js";
import { defaultWindow, nextWindowEnd, readState, writeJsonAtomically, type ReconcilerState, type Window } from "./state.js";

export interface RunRequest {
  /** Report only; nothing is repaired and the state file is not touched. */
  dryRun?: boolean;
  /** Overrides the window's start (default: end of the last completed run minus the overlap). */
  since?: Date;
  /** Overrides the window's end (default: now minus the grace period). */
  until?: Date;
  /** The window starts at the beginning of time (all of history). */
  full?: boolean;
  /** Overrides RECONCILE_MAX_VOIDS for this run. */
  maxVoids?: number;
  /** Overrides RECONCILE_MAX_PAYMENT_REPAIRS for this run. */
  maxPaymentRepairs?: number;
  /** Overrides RECONCILE_MAX_SHIPPING_REPAIRS for this run. */
  maxShippingRepairs?: number;
  /** The clock, for tests. */
  now?: Date;
}

export interface RunOutcome {
  report: ReconcileReport;
  /** Where the JSON report was written; undefined if writing it failed (the run then counts as failed). */
  reportFile?: string;
}

/**
 * Everything around one run: reads the state, picks the window, runs the
 * reconciliation, writes the report and, only after a run that finished (not
 * a dry run), moves the state forward. Holds the two clients between runs.
 */
export class Reconciler {
  private readonly orderClient: ClosableClient<OrderClient>;
  private readonly voucherClient: ClosableClient<VoucherClient>;
  /** With RECONCILE_PAYMENTS: the payment service, and the order service's PaymentOutcomeService. */
  private readonly paymentClient?: ClosableClient<PaymentClient>;
  private readonly paymentOutcomeClient?: ClosableClient<PaymentOutcomeClient>;
  /** With RECONCILE_SHIPPING: the delivery service, and the order service's ShipmentEventService. */
  private readonly deliveryClient?: ClosableClient<DeliveryClient>;
  private readonly shipmentEventClient?: ClosableClient<ShipmentEventClient>;

  constructor(
    private readonly config: ReconcilerConfig,
    private readonly logger: Logger,
    private readonly qualifies: QualifiesFn = defaultQualifies,
  ) {
    const common = { defaultTimeoutMs: config.callTimeoutMs, token: config.token, tls: config.tls };
    this.orderClient = createOrderClient({ baseUrl: config.orderServiceUrl, ...common });
    this.voucherClient = createVoucherClient({ baseUrl: config.voucherServiceUrl, ...common });
    if (config.payments) {
      this.paymentClient = createPaymentClient({ baseUrl: config.paymentServiceUrl ?? "http://127.0.0.1:50053", ...common });
      this.paymentOutcomeClient = createPaymentOutcomeClient({ baseUrl: config.orderServiceUrl, ...common });
    }
    if (config.shipping) {
      this.deliveryClient = createDeliveryClient({ baseUrl: config.deliveryServiceUrl ?? "http://127.0.0.1:50054", ...common });
      this.shipmentEventClient = createShipmentEventClient({ baseUrl: config.orderServiceUrl, ...common });
    }
  }

  async run(req: RunRequest = {}): Promise<RunOutcome> {
    const runId = newId();
    const log = this.logger.child({ runId });
    const startedAt = new Date();
    const now = req.now ?? startedAt;
    let state: ReconcilerState | undefined;
    let stateError: string | undefined;
    try {
      state = await readState(this.config.stateFile);
    } catch (err) {
      stateError = (err as Error).message;
    }
    const window: Window = { ...defaultWindow(state, now, this.config.graceMs, this.config.overlapMs, this.config.initialLookbackMs) };
    let windowSource: WindowSource = state ? "state" : "initial-lookback";
    if (req.full) {
      delete window.since;
      windowSource = "full";
    }
    if (req.since) {
      window.since = req.since;
      windowSource = "explicit";
    }
    if (req.until) {
      window.until = req.until;
      // The look-back counts back from the window's end, whichever end was asked for.
      if (windowSource === "initial-lookback") window.since = new Date(req.until.getTime() - this.config.initialLookbackMs);
    }
    const warnings: string[] = [];
    if (!state && !stateError && windowSource === "initial-lookback") {
      warnings.push(
        `no state file at ${this.config.stateFile} (a first run, or the state was lost): looked back only ` +
          `RECONCILE_INITIAL_LOOKBACK_MS=${this.config.initialLookbackMs} ms, to ${window.since!.toISOString()}; ` +
          `run once with --since <time> or --full to cover older orders`,
      );
    }
    for (const w of warnings) log.warn({ stateFile: this.config.stateFile }, w);
    const maxVoids = req.maxVoids ?? this.config.maxVoids;
    const maxPaymentRepairs = req.maxPaymentRepairs ?? this.config.maxPaymentRepairs ?? DEFAULT_MAX_PAYMENT_REPAIRS;
    const maxShippingRepairs = req.maxShippingRepairs ?? this.config.maxShippingRepairs ?? DEFAULT_MAX_SHIPPING_REPAIRS;
    log.info(
      {
        window: { since: window.since?.toISOString() ?? null, until: window.until.toISOString() },
        windowSource,
        maxVoids,
        payments: !!this.paymentClient,
        maxPaymentRepairs,
        shipping: !!this.deliveryClient,
        maxShippingRepairs,
        dryRun: !!req.dryRun,
      },
      "reconcile run starting",
    );

    const result: RunResult = stateError
      ? {
          runId,
          dryRun: !!req.dryRun,
          startedAt,
          finishedAt: new Date(),
          window,
          scanned: { sentOrders: 0, vouchers: 0, voidedVouchers: 0, rechecked: 0 },
          drift: [],
          racedWithRelay: 0,
          voids: { cap: maxVoids, voided: 0, skippedByCap: 0, outsideWindow: 0, capReached: false },
          payments: emptyPaymentTally(maxPaymentRepairs),
          shipping: emptyShippingTally(maxShippingRepairs),
          error: stateError,
          calls: {},
        }
      : await reconcile(
          {
            orders: this.orderClient.client,
            vouchers: this.voucherClient.client,
            logger: this.logger,
            qualifies: this.qualifies,
            orderServiceName: `order service at ${this.config.orderServiceUrl}`,
            voucherServiceName: `voucher service at ${this.config.voucherServiceUrl}`,
            payments: this.paymentClient?.client,
            paymentOutcomes: this.paymentOutcomeClient?.client,
            paymentServiceName: `payment service at ${this.config.paymentServiceUrl}`,
            deliveries: this.deliveryClient?.client,
            shipmentEvents: this.shipmentEventClient?.client,
            deliveryServiceName: `delivery service at ${this.config.deliveryServiceUrl}`,
          },
          {
            runId,
            window,
            dryRun: !!req.dryRun,
            pageSize: this.config.pageSize,
            repairConcurrency: this.config.repairConcurrency,
            recheckOrderIds: state?.unresolvedOrderIds,
            maxVoids,
            maxPaymentRepairs,
            maxShippingRepairs,
          },
        );
    result.windowSource = windowSource;
    result.warnings = warnings;

    let report = buildReport(result);
    let reportFile: string | undefined;
    try {
      reportFile = await writeReport(this.config.reportDir, report);
    } catch (err) {
      // A run that cannot leave its report has not done its job: it fails and the window stays.
      result.error = `could not write the report to ${this.config.reportDir}: ${(err as Error).message}`;
      report = buildReport(result);
      log.error({ err }, result.error);
    }

    if (!result.error && !result.dryRun) {
      const end = nextWindowEnd(state, window);
      const unresolved = [...new Set(result.drift.filter((d) => !d.repaired).map((d) => d.orderId))];
      if (end) {
        const next: ReconcilerState = { windowEnd: end.toISOString(), runId, unresolvedOrderIds: unresolved };
        try {
          await writeJsonAtomically(this.config.stateFile, next);
        } catch (err) {
          log.error({ err, stateFile: this.config.stateFile }, "could not save the state: the next run repeats this window");
        }
      }
    }

    const fields = {
      outcome: report.outcome,
      exitCode: report.exitCode,
      durationMs: report.durationMs,
      scanned: report.scanned,
      totals: report.totals,
      voids: report.voids,
      payments: report.payments,
      shipping: report.shipping,
      reportFile,
    };
    if (report.outcome === "failed") log.error({ ...fields, error: report.error }, `reconcile run failed: ${report.error}`);
    else if (report.outcome === "unrepaired") log.warn(fields, "reconcile run finished: drift left unrepaired");
    else log.info(fields, `reconcile run finished: ${report.outcome}`);
    return { report, reportFile };
  }

  close(): void {
    this.orderClient.close();
    this.voucherClient.close();
    this.paymentClient?.close();
    this.paymentOutcomeClient?.close();
    this.deliveryClient?.close();
    this.shipmentEventClient?.close();
  }
}
