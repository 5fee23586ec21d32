import { Code, ConnectError } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Order } from "@shop/sdk/order";
import { VoucherStatus, type Voucher } from "@shop/sdk/voucher";
import type { OrderClient, VoucherClient } from "@shop/sdk/clients";
import type { Logger } from "@shop/platform/logger";
import { newId } from "@shop/platform/ids";
import { checkSentOrders, checkVouchers, findingKey, REPAIR_OF, type DriftKind, type Finding, type QualifiesFn } from "./compare.js";
import type { Window } from "./state.js";

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
}

export interface RunResult {
  runId: string;
  dryRun: boolean;
  startedAt: Date;
  finishedAt: Date;
  window: Window;
  scanned: { sentOrders: number; vouchers: number; rechecked: number };
  drift: DriftRecord[];
  /** Vouchers that appeared between the lookup and the repair: the relay delivered them, nothing to repair. */
  racedWithRelay: number;
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
}

/** A service call that failed as a whole; the run cannot vouch for anything after it. */
export class ServiceCallError extends Error {
  constructor(
    readonly service: string,
    readonly method: string,
    readonly cause: unknown,
  ) {
    const ce = ConnectError.from(cause);
    const hint = ce.code === Code.Unavailable ? " (is it running and reachable?)" : "";
    super(`${method} on the ${service} failed: ${Code[ce.code] ?? ce.code}: ${ce.rawMessage}${hint}`);
    this.name = "ServiceCallError";
  }
}

/** Codes that mean the service, not the item, is in trouble: the run stops rather than report half a picture. */
const SERVICE_TROUBLE = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Unauthenticated, Code.PermissionDenied, Code.Unimplemented]);

async function guard<T>(
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

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

async function inParallel<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
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
async function* prefetched<T>(fetch: (token: string) => Promise<{ items: T[]; next: string }>): AsyncGenerator<T[]> {
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
    scanned: { sentOrders: 0, vouchers: 0, rechecked: 0 },
    drift: [],
    racedWithRelay: 0,
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
      records.set(f, {
        kind: f.kind,
        orderId: f.orderId,
        voucherId: f.voucherId,
        detail: f.detail,
        action: REPAIR_OF[f.kind],
        repaired: false,
        error: f.issue || f.requeue || f.void ? undefined : "no automatic repair: a person must decide",
      });
    }
    if (opts.dryRun) {
      for (const [f, r] of records) {
        if (f.issue || f.requeue || f.void) r.error = "dry run: not repaired";
        result.drift.push(r);
        log.warn({ kind: r.kind, orderId: r.orderId, voucherId: r.voucherId }, `drift: ${r.detail}`);
      }
      return;
    }

    const failed = new Set<Finding>();
    const raced = new Set<Finding>();
    try {
      await repair(fresh, records, failed, raced);
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
      r.repaired = repairable && !failed.has(f);
      result.drift.push(r);
      const fields = { kind: r.kind, orderId: r.orderId, voucherId: r.voucherId, repaired: r.repaired, error: r.error };
      if (r.repaired) log.info(fields, `drift repaired: ${r.detail}`);
      else log.warn(fields, `drift not repaired: ${r.detail}`);
    }
  };

  const repair = async (
    fresh: Finding[],
    records: Map<Finding, DriftRecord>,
    failed: Set<Finding>,
    raced: Set<Finding>,
  ): Promise<void> => {
    // 1. Issue missing vouchers, in batches. Idempotent per order id, so a relay delivering the same order at this moment is harmless.
    for (const batch of chunks(fresh.filter((f) => f.issue), ISSUE_BATCH)) {
      const res = await guard(result.calls, voucherSvc, "BatchIssueVouchers", () =>
        voucherApi.batchIssueVouchers({ items: batch.map((f) => f.issue!) }),
      );
      batch.forEach((f, i) => {
        const item = res.results[i];
        const r = records.get(f)!;
        if (!item || item.errorCode !== 0 || !item.voucher) {
          failed.add(f);
          r.error = item
            ? `IssueVoucher refused: ${Code[item.errorCode] ?? item.errorCode}: ${item.errorMessage}`
            : "IssueVoucher returned no result for this order";
          return;
        }
        r.voucherId = item.voucher.id;
        if (!item.created && f.kind === "missing_voucher" && f.deliveryWasPending) raced.add(f);
      });
    }

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
          if (SERVICE_TROUBLE.has(ce.code)) throw new ServiceCallError(orderSvc, "RequeueVoucher", err);
          failed.add(f);
          records.get(f)!.error = `RequeueVoucher refused: ${Code[ce.code]}: ${ce.rawMessage}`;
        }
      },
    );

    // 3. Void vouchers that must not exist. Never deleted: VOIDED with a reason, idempotent.
    await inParallel(
      fresh.filter((f) => f.void),
      concurrency,
      async (f) => {
        try {
          await voucherApi.voidVoucher({ voucherId: f.void!.voucherId, reason: f.void!.reason });
        } catch (err) {
          const ce = ConnectError.from(err);
          if (SERVICE_TROUBLE.has(ce.code)) throw new ServiceCallError(voucherSvc, "VoidVoucher", err);
          failed.add(f);
          records.get(f)!.error = `VoidVoucher refused: ${Code[ce.code]}: ${ce.rawMessage}`;
        }
      },
    );

  };

  try {
    // Drift an earlier run could not repair is looked at again, whatever the window.
    const recheck = [...new Set(opts.recheckOrderIds ?? [])];
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
    const side = async (scan: () => Promise<void>) => {
      try {
        await scan();
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
          if (live.length === 0) continue;
          const ordersById = await lookupOrders(live.map((v) => v.orderId));
          await handle(checkVouchers(live, ordersById, qualifies));
          log.debug({ vouchers: result.scanned.vouchers }, "vouchers page checked");
        }
      }),
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
