import { Code, ConnectError } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Order } from "@shop/sdk/order";
import { VoucherStatus, type Voucher } from "@shop/sdk/voucher";
import type { DeliveryClient, OrderClient, PaymentClient, PaymentOutcomeClient, ShipmentEventClient, VoucherClient } from "@shop/sdk/clients";
import type { Logger } from "@shop/platform/logger";
import { newId } from "@shop/platform/ids";
import { classifyCode, codeName, failureCause } from "@shop/engine/classify";
import { checkSentOrders, checkVouchers, findingKey, REPAIR_OF, type DriftKind, type Finding, type QualifiesFn } from "./compare.js";
import type { Window } from "./state.js";
import { emptyPaymentTally, paymentReconciliation, type PaymentTally } from "./reconcile-payments.js";
import { emptyShippingTally, shippingReconciliation, type ShippingTally } from "./reconcile-shipping.js";

/** The most ids BatchIssueVouchers accepts in one call. */
const ISSUE_BATCH = 1000;

/** One piece of drift as it ends up in the report. */
export interface DriftRecord {
  kind: DriftKind;
  orderId: string;
  voucherId?: string;
  detail: string;
  /** What was done (or, in a dry run, would have been done). */
  action: string;
  repaired: boolean;
  /** Why the repair did not happen or failed. */
  error?: string;
  /**
   * Set on drift left unrepaired: true when no later run will settle it by
   * itself (a kind with no automatic repair, a permanent refusal, a void held
   * back by the cap or the window), false when the next run tries again.
   */
  needsPerson?: boolean;
}

/** What the run did about vouchers that must not exist (voids are the one destructive repair, so they are bounded). */
export interface VoidTally {
  /** RECONCILE_MAX_VOIDS for this run. */
  cap: number;
  /** Void calls made (in a dry run: that would have been made). */
  voided: number;
  /** Voids held back because the cap was reached. */
  skippedByCap: number;
  /** Voids held back because the voucher was issued outside the run's window. */
  outsideWindow: number;
  /** True when the run wanted more voids than the cap allows: it stopped voiding. */
  capReached: boolean;
}

/** Where the window's start came from: the state file, the initial look-back (no state), --full, or --since. */
export type WindowSource = "state" | "initial-lookback" | "full" | "explicit";

export interface RunResult {
  runId: string;
  dryRun: boolean;
  startedAt: Date;
  finishedAt: Date;
  window: Window;
  windowSource?: WindowSource;
  /** Things an operator must know about the run itself (e.g. no state file was found). */
  warnings?: string[];
  /** vouchers: all listed in the window; voidedVouchers: those of them that are voided (history, not an order's voucher). */
  scanned: { sentOrders: number; vouchers: number; voidedVouchers: number; rechecked: number };
  drift: DriftRecord[];
  /** Vouchers that appeared between the lookup and the repair: the relay delivered them, nothing to repair. */
  racedWithRelay: number;
  voids: VoidTally;
  /** Payment drift: whether it was checked, what was scanned, repairs made and held back by RECONCILE_MAX_PAYMENT_REPAIRS. */
  payments: PaymentTally;
  /**
   * Shipping drift: whether it was checked, what was scanned, repairs made and
   * held back by RECONCILE_MAX_SHIPPING_REPAIRS. reconcile() always sets it;
   * a result without it (built by hand) reads as "not checked".
   */
  shipping?: ShippingTally;
  /** Set when the run could not finish; the drift found until then is still listed. */
  error?: string;
  /** Calls per method and the time spent waiting on them (prefetched listings overlap with other calls). */
  calls: Record<string, { count: number; ms: number }>;
}

export interface ReconcileDeps {
  orders: OrderClient;
  vouchers: VoucherClient;
  logger: Logger;
  qualifies: QualifiesFn;
  /** Names the services in error messages, e.g. "order service at http://127.0.0.1:50051". */
  orderServiceName?: string;
  voucherServiceName?: string;
  /**
   * The payment service and the order service's PaymentOutcomeService: with
   * both, the run also compares every order's payment with the payment
   * service's decision and repairs what it can (reconcile-payments.ts).
   */
  payments?: PaymentClient;
  paymentOutcomes?: PaymentOutcomeClient;
  paymentServiceName?: string;
  /**
   * The delivery service and the order service's ShipmentEventService: with
   * both, the run also compares every order in shipping with its shipment and
   * repairs what it can (reconcile-shipping.ts).
   */
  deliveries?: DeliveryClient;
  shipmentEvents?: ShipmentEventClient;
  deliveryServiceName?: string;
}

export interface ReconcileOptions {
  window: Window;
  /** Report only: no voucher is issued or voided and no delivery is requeued. */
  dryRun: boolean;
  /** Rows per listing page and per batch lookup; at most 5000. Default 5000. */
  pageSize?: number;
  /** Unary repair calls in flight at once. Default 16. */
  repairConcurrency?: number;
  /** Orders to look at again whatever the window (drift an earlier run could not repair). */
  recheckOrderIds?: string[];
  runId?: string;
  /**
   * The most vouchers this run may void. Default 10. Voiding takes a voucher
   * from a customer, and a wrong rule or a bug would do it to every voucher in
   * sight, so past this many the run stops voiding and says so; 0 voids none.
   */
  maxVoids?: number;
  /**
   * The most orders whose payment this run may repair (an outcome delivered,
   * a charge or refund request requeued). Default 10, like maxVoids: past it
   * the run stops repairing payments and says so; 0 repairs none.
   */
  maxPaymentRepairs?: number;
  /**
   * The most orders whose shipping this run may repair (events delivered, a
   * shipment request requeued). Default 10, like maxVoids: past it the run
   * stops repairing shipping and says so; 0 repairs none.
   */
  maxShippingRepairs?: number;
}

/** The default cap on voids per run: a night's real drift is a handful, a mass void is a bug until a person says otherwise. */
export const DEFAULT_MAX_VOIDS = 10;

/** The default cap on payment repairs per run, like the void cap's: a night's real drift is a handful. */
export const DEFAULT_MAX_PAYMENT_REPAIRS = 10;

/** The default cap on shipping repairs per run, like the others: a night's real drift is a handful. */
export const DEFAULT_MAX_SHIPPING_REPAIRS = 10;

/** A service call that failed as a whole; the run cannot vouch for anything after it. */
export class ServiceCallError extends Error {
  constructor(
    readonly service: string,
    readonly method: string,
    readonly cause: unknown,
  ) {
    const ce = ConnectError.from(cause);
    super(`${method} on the ${service} failed: ${Code[ce.code] ?? ce.code}: ${ce.rawMessage}${HINTS[ce.code] ?? ""}`);
    this.name = "ServiceCallError";
    this.code = ce.code;
  }
  readonly code: Code;
}

const HINTS: Partial<Record<Code, string>> = {
  [Code.Unavailable]: " (is it running and reachable?)",
  [Code.Unauthenticated]: " (check RECONCILE_TOKEN / RECONCILE_TOKEN_FILE: the token is missing, expired or signed by a key the service does not know)",
  [Code.PermissionDenied]: " (check RECONCILE_TOKEN / RECONCILE_TOKEN_FILE: the token lacks a scope the reconciler needs)",
  [Code.Unimplemented]: " (check ORDER_SERVICE_URL / VOUCHER_SERVICE_URL / PAYMENT_SERVICE_URL / DELIVERY_SERVICE_URL: the address does not serve this method)",
};

/**
 * Whether a failed call ends the run, by the cause the relay uses too
 * (failureCause): a misconfigured caller (token, scope, URL) fails every call
 * alike, and a service that is down or too slow to answer within the call
 * timeout would fail the rest of the run; the run stops rather than report
 * half a picture, and the next run starts over. Anything else is about the
 * item: it is recorded on the item, and a refused batch is split.
 */
export const stopsTheRun = (code: Code): boolean => failureCause(code) === "misconfigured" || code === Code.Unavailable || code === Code.DeadlineExceeded;

/**
 * A refused repair, judged like the relay judges a refused delivery
 * (classifyCode): retryable codes are left to the next run, which looks at
 * the order again; permanent ones will fail the same way every night.
 */
export function refusal(method: string, code: Code, message: string): { error: string; needsPerson: boolean } {
  const retryable = classifyCode(code) === "retryable";
  return {
    error: `${method} refused: ${codeName(code)}: ${message}${retryable ? " (retryable: the next run tries again)" : ""}`,
    needsPerson: !retryable,
  };
}

export async function guard<T>(
  calls: RunResult["calls"],
  service: string,
  method: string,
  fn: () => Promise<T>,
): Promise<T> {
  const started = performance.now();
  try {
    return await fn();
  } catch (err) {
    throw new ServiceCallError(service, method, err);
  } finally {
    const c = (calls[method] ??= { count: 0, ms: 0 });
    c.count++;
    c.ms += performance.now() - started;
  }
}

export function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export async function inParallel<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/**
 * Keyset pages from a listing call, one page fetched ahead so the next
 * listing overlaps with the lookups and repairs of the current page.
 */
export async function* prefetched<T>(fetch: (token: string) => Promise<{ items: T[]; next: string }>): AsyncGenerator<T[]> {
  let pending: Promise<{ items: T[]; next: string }> | undefined = fetch("");
  while (pending) {
    const page: { items: T[]; next: string } = await pending;
    pending = page.next ? fetch(page.next) : undefined;
    // A rejected prefetch must not surface as an unhandled rejection while the consumer is busy.
    pending?.catch(() => {});
    yield page.items;
  }
}

/**
 * One reconciliation run over a window: sent orders against their vouchers,
 * then vouchers issued in the window against their orders, repairing what can
 * be repaired. Comparison is pure (compare.ts); this is the I/O around it.
 * A failing service call ends the run with `error` set; drift found until
 * then is kept in the result.
 */
export async function reconcile(deps: ReconcileDeps, opts: ReconcileOptions): Promise<RunResult> {
  const { orders: orderApi, vouchers: voucherApi, logger, qualifies } = deps;
  const orderSvc = deps.orderServiceName ?? "order service";
  const voucherSvc = deps.voucherServiceName ?? "voucher service";
  const pageSize = Math.min(opts.pageSize ?? 5000, 5000);
  const concurrency = opts.repairConcurrency ?? 16;
  const result: RunResult = {
    runId: opts.runId ?? newId(),
    dryRun: opts.dryRun,
    startedAt: new Date(),
    finishedAt: new Date(),
    window: opts.window,
    scanned: { sentOrders: 0, vouchers: 0, voidedVouchers: 0, rechecked: 0 },
    drift: [],
    racedWithRelay: 0,
    voids: { cap: opts.maxVoids ?? DEFAULT_MAX_VOIDS, voided: 0, skippedByCap: 0, outsideWindow: 0, capReached: false },
    payments: emptyPaymentTally(opts.maxPaymentRepairs ?? DEFAULT_MAX_PAYMENT_REPAIRS),
    shipping: emptyShippingTally(opts.maxShippingRepairs ?? DEFAULT_MAX_SHIPPING_REPAIRS),
    calls: {},
  };
  const seen = new Set<string>();
  const log = logger.child({ runId: result.runId, dryRun: opts.dryRun });
  const sinceTs = opts.window.since ? timestampFromDate(opts.window.since) : undefined;
  const untilTs = timestampFromDate(opts.window.until);

  const lookupVouchers = async (orderIds: string[]): Promise<Map<string, Voucher>> => {
    const byOrder = new Map<string, Voucher>();
    for (const ids of chunks(orderIds, pageSize)) {
      const res = await guard(result.calls, voucherSvc, "BatchGetVouchersByOrder", () => voucherApi.batchGetVouchersByOrder({ orderIds: ids }));
      for (const v of res.vouchers) byOrder.set(v.orderId, v);
    }
    return byOrder;
  };
  const lookupOrders = async (orderIds: string[]): Promise<Map<string, Order>> => {
    const byId = new Map<string, Order>();
    for (const ids of chunks(orderIds, pageSize)) {
      const res = await guard(result.calls, orderSvc, "BatchGetOrders", () => orderApi.batchGetOrders({ orderIds: ids }));
      for (const o of res.orders) byId.set(o.id, o);
    }
    return byId;
  };

  /** Records new findings (once each) and carries out their repairs. */
  const handle = async (findings: Finding[]): Promise<void> => {
    const fresh = findings.filter((f) => {
      const key = findingKey(f);
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
    if (fresh.length === 0) return;
    const records = new Map<Finding, DriftRecord>();
    for (const f of fresh) {
      const repairable = !!(f.issue || f.requeue || f.void);
      records.set(f, {
        kind: f.kind,
        orderId: f.orderId,
        voucherId: f.voucherId,
        detail: f.detail,
        action: REPAIR_OF[f.kind],
        repaired: false,
        error: repairable ? undefined : "no automatic repair: a person must decide",
        needsPerson: repairable ? undefined : true,
      });
    }
    const voids = allowedVoids(fresh.filter((f) => f.void), records);
    const blocked = (f: Finding) => !!f.void && !voids.has(f);
    if (opts.dryRun) {
      for (const [f, r] of records) {
        if ((f.issue || f.requeue || f.void) && !blocked(f)) r.error = "dry run: not repaired";
        result.drift.push(r);
        log.warn({ kind: r.kind, orderId: r.orderId, voucherId: r.voucherId }, `drift: ${r.detail}`);
      }
      return;
    }

    const failed = new Set<Finding>();
    const raced = new Set<Finding>();
    try {
      await repair(fresh, records, failed, raced, voids);
    } catch (err) {
      // The run stops; what this page found is still reported, none of it as repaired.
      for (const r of records.values()) {
        r.error ??= "run stopped before this was repaired";
        result.drift.push(r);
      }
      throw err;
    }
    for (const [f, r] of records) {
      if (raced.has(f)) {
        result.racedWithRelay++;
        seen.delete(findingKey(f));
        log.debug({ orderId: f.orderId, voucherId: r.voucherId }, "voucher appeared meanwhile: the relay delivered it");
        continue;
      }
      const repairable = !!(f.issue || f.requeue || f.void);
      r.repaired = repairable && !failed.has(f) && !blocked(f);
      if (r.repaired) delete r.needsPerson;
      else r.needsPerson ??= false;
      result.drift.push(r);
      const fields = { kind: r.kind, orderId: r.orderId, voucherId: r.voucherId, repaired: r.repaired, needsPerson: r.needsPerson, error: r.error };
      if (r.repaired) log.info(fields, `drift repaired: ${r.detail}`);
      else log.warn(fields, `drift not repaired: ${r.detail}`);
    }
  };

  const since = opts.window.since?.getTime() ?? Number.NEGATIVE_INFINITY;
  const until = opts.window.until.getTime();
  /**
   * Which of these voids may happen: only of vouchers issued inside the run's
   * window (a recheck or an order-side lookup can surface older ones), and no
   * more than the cap over the whole run. The others are reported, not voided.
   */
  const allowedVoids = (candidates: Finding[], records: Map<Finding, DriftRecord>): Set<Finding> => {
    const allowed = new Set<Finding>();
    for (const f of candidates) {
      const r = records.get(f)!;
      const issuedAt = f.void!.issuedAt?.getTime();
      if (issuedAt === undefined || issuedAt < since || issuedAt >= until) {
        result.voids.outsideWindow++;
        r.error = `not voided: the voucher was issued ${f.void!.issuedAt?.toISOString() ?? "at an unknown time"}, outside this run's window; a run with --since covering it voids it`;
        r.needsPerson = true;
      } else if (result.voids.voided >= result.voids.cap) {
        result.voids.skippedByCap++;
        result.voids.capReached = true;
        r.error = `not voided: this run reached its cap of ${result.voids.cap} void(s) (RECONCILE_MAX_VOIDS); check the report, then run again with --max-voids to void the rest`;
        r.needsPerson = true;
      } else {
        result.voids.voided++;
        allowed.add(f);
      }
    }
    if (result.voids.capReached) {
      log.error({ cap: result.voids.cap, skipped: result.voids.skippedByCap }, `void cap reached: ${result.voids.skippedByCap} voucher(s) left unvoided so far`);
    }
    return allowed;
  };

  /**
   * BatchIssueVouchers for these findings. A batch refused as a whole for a
   * reason other than the service's own trouble is split in halves, so one
   * request the service cannot take does not keep its neighbours from their vouchers.
   */
  const issueAll = async (batch: Finding[], records: Map<Finding, DriftRecord>, failed: Set<Finding>, raced: Set<Finding>): Promise<void> => {
    let res;
    try {
      res = await guard(result.calls, voucherSvc, "BatchIssueVouchers", () => voucherApi.batchIssueVouchers({ items: batch.map((f) => f.issue!) }));
    } catch (err) {
      const code = (err as ServiceCallError).code;
      if (stopsTheRun(code)) throw err;
      if (batch.length > 1) {
        const half = Math.ceil(batch.length / 2);
        await issueAll(batch.slice(0, half), records, failed, raced);
        await issueAll(batch.slice(half), records, failed, raced);
        return;
      }
      failed.add(batch[0]!);
      Object.assign(records.get(batch[0]!)!, refusal("BatchIssueVouchers", code, ConnectError.from((err as ServiceCallError).cause).rawMessage));
      return;
    }
    batch.forEach((f, i) => {
      const item = res.results[i];
      const r = records.get(f)!;
      if (!item || item.errorCode !== 0 || !item.voucher) {
        failed.add(f);
        if (item) Object.assign(r, refusal("IssueVoucher", item.errorCode, item.errorMessage));
        else Object.assign(r, { error: "IssueVoucher returned no result for this order (retryable: the next run tries again)", needsPerson: false });
        return;
      }
      if (item.voucher.status !== VoucherStatus.ISSUED) {
        // A voided voucher handed back as a replay is not the live voucher the order is owed.
        failed.add(f);
        Object.assign(r, { error: `IssueVoucher answered with voucher ${item.voucher.id}, which is not live (${VoucherStatus[item.voucher.status]})`, needsPerson: true });
        return;
      }
      r.voucherId = item.voucher.id;
      if (!item.created && f.kind === "missing_voucher" && f.deliveryWasPending) raced.add(f);
    });
  };

  const repair = async (
    fresh: Finding[],
    records: Map<Finding, DriftRecord>,
    failed: Set<Finding>,
    raced: Set<Finding>,
    voids: Set<Finding>,
  ): Promise<void> => {
    // 1. Issue missing vouchers, in batches. Idempotent per order id, so a relay delivering the same order at this moment is harmless.
    for (const batch of chunks(fresh.filter((f) => f.issue), ISSUE_BATCH)) await issueAll(batch, records, failed, raced);

    // 2. Requeue deliveries the order service must (re)do: dead ones, missing ones, and ones
    //    whose voucher was just issued, so the relay gets created=false and records the voucher id.
    await inParallel(
      fresh.filter((f) => f.requeue && !failed.has(f) && !raced.has(f)),
      concurrency,
      async (f) => {
        try {
          await orderApi.requeueVoucher({ orderId: f.orderId, redeliver: f.redeliver ?? false });
        } catch (err) {
          const ce = ConnectError.from(err);
          if (stopsTheRun(ce.code)) throw new ServiceCallError(orderSvc, "RequeueVoucher", err);
          failed.add(f);
          Object.assign(records.get(f)!, refusal("RequeueVoucher", ce.code, ce.rawMessage));
        }
      },
    );

    // 3. Void vouchers that must not exist, as many as allowedVoids let through. Never deleted: VOIDED with a reason, idempotent.
    await inParallel(
      fresh.filter((f) => voids.has(f)),
      concurrency,
      async (f) => {
        try {
          await voucherApi.voidVoucher({ voucherId: f.void!.voucherId, reason: f.void!.reason });
        } catch (err) {
          const ce = ConnectError.from(err);
          if (stopsTheRun(ce.code)) throw new ServiceCallError(voucherSvc, "VoidVoucher", err);
          failed.add(f);
          Object.assign(records.get(f)!, refusal("VoidVoucher", ce.code, ce.rawMessage));
        }
      },
    );
  };

  const payments =
    deps.payments && deps.paymentOutcomes
      ? paymentReconciliation({
          orders: orderApi,
          outcomes: deps.paymentOutcomes,
          payments: deps.payments,
          log,
          result,
          window: opts.window,
          dryRun: opts.dryRun,
          pageSize,
          concurrency,
          orderSvc,
          paymentSvc: deps.paymentServiceName ?? "payment service",
        })
      : undefined;
  result.payments.checked = !!payments;
  const shipping =
    deps.deliveries && deps.shipmentEvents
      ? shippingReconciliation({
          orders: orderApi,
          events: deps.shipmentEvents,
          deliveries: deps.deliveries,
          log,
          result,
          window: opts.window,
          dryRun: opts.dryRun,
          pageSize,
          concurrency,
          orderSvc,
          deliverySvc: deps.deliveryServiceName ?? "delivery service",
        })
      : undefined;
  result.shipping!.checked = !!shipping;

  try {
    // Drift an earlier run could not repair is looked at again, whatever the window.
    const recheck = [...new Set(opts.recheckOrderIds ?? [])];
    if (recheck.length > 0 && payments) await payments.recheck(recheck);
    if (recheck.length > 0 && shipping) await shipping.recheck(recheck);
    if (recheck.length > 0) {
      const [ordersById, vouchersByOrder] = await Promise.all([lookupOrders(recheck), lookupVouchers(recheck)]);
      result.scanned.rechecked = recheck.length;
      await handle([
        ...checkSentOrders([...ordersById.values()], vouchersByOrder, qualifies),
        ...checkVouchers([...vouchersByOrder.values()], ordersById, qualifies),
      ]);
    }

    // The two directions are independent (findings are de-duplicated as they come), so they run side by side;
    // if one fails the other stops at its next page, and the run reports the first failure.
    let failedSide = false;
    const side = async (scan: (stopped: () => boolean) => Promise<void>) => {
      try {
        await scan(() => failedSide);
      } catch (err) {
        failedSide = true;
        throw err;
      }
    };
    const outcomes = await Promise.allSettled([
      side(async () => {
        // Sent orders in the window → their vouchers.
        const pages = prefetched(async (pageToken) => {
          const res = await guard(result.calls, orderSvc, "ListSentOrders", () =>
            orderApi.listSentOrders({ sentAfter: sinceTs, sentBefore: untilTs, pageSize, pageToken }),
          );
          return { items: res.orders, next: res.nextPageToken };
        });
        for await (const page of pages) {
          if (failedSide) return;
          result.scanned.sentOrders += page.length;
          if (page.length === 0) continue;
          const vouchersByOrder = await lookupVouchers(page.map((o) => o.id));
          await handle(checkSentOrders(page, vouchersByOrder, qualifies));
          log.debug({ sentOrders: result.scanned.sentOrders }, "orders page checked");
        }
      }),
      side(async () => {
        // Vouchers issued in the window → their orders (catches vouchers whose order was never sent or does not exist).
        const pages = prefetched(async (pageToken) => {
          const res = await guard(result.calls, voucherSvc, "ListIssuedVouchers", () =>
            voucherApi.listIssuedVouchers({ issuedAfter: sinceTs, issuedBefore: untilTs, pageSize, pageToken }),
          );
          return { items: res.vouchers, next: res.nextPageToken };
        });
        for await (const page of pages) {
          if (failedSide) return;
          result.scanned.vouchers += page.length;
          const live = page.filter((v) => v.status === VoucherStatus.ISSUED);
          result.scanned.voidedVouchers += page.length - live.length;
          if (live.length === 0) continue;
          const ordersById = await lookupOrders(live.map((v) => v.orderId));
          await handle(checkVouchers(live, ordersById, qualifies));
          log.debug({ vouchers: result.scanned.vouchers }, "vouchers page checked");
        }
      }),
      // Decided charges → their orders, and orders awaiting a charge or a refund → their payments.
      ...(payments?.sides ?? []).map((scan) => side(scan)),
      // Shipments changed in the window → their orders, and orders awaiting their shipment → the delivery service.
      ...(shipping?.sides ?? []).map((scan) => side(scan)),
    ]);
    const failure = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
    if (failure) throw failure.reason;
  } catch (err) {
    result.error = err instanceof Error ? err.message : String(err);
    log.error({ err }, `run failed: ${result.error}`);
  }
  result.finishedAt = new Date();
  return result;
}
