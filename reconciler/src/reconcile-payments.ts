import { ConnectError } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { PaymentStatus, type Order } from "@shop/sdk/order";
import type { OrderPayment } from "@shop/sdk/payment";
import type { OrderClient, PaymentClient, PaymentOutcomeClient } from "@shop/sdk/clients";
import type { Logger } from "@shop/platform/logger";
import { cappedRepairs } from "./capped-repairs.js";
import { checkPayments, isPaymentRepairable, paymentFindingKey, type PaymentFinding } from "./payment-compare.js";
import { chunks, guard, prefetched, refusal, ServiceCallError, stopsTheRun, type DriftRecord, type RunResult } from "./reconcile.js";
import type { Window } from "./state.js";

/** The most ids BatchGetOrderPayments accepts in one call, and the page size asked of ListOrderPayments. */
const PAYMENT_BATCH = 1000;

/** What a run did about payment drift. Repairs are bounded like voids: a wrong comparison must not rewrite every order in sight. */
export interface PaymentTally {
  /** False when the run did not look at payments (RECONCILE_PAYMENTS off). */
  checked: boolean;
  /** Charges decided in the window (ListOrderPayments), and orders listed as awaiting a charge or a refund (ListOrdersByPaymentStatus). */
  scannedPayments: number;
  scannedOrders: number;
  /** RECONCILE_MAX_PAYMENT_REPAIRS for this run. */
  cap: number;
  /** Orders whose repair was attempted (in a dry run: would have been), counted against the cap. */
  repairs: number;
  /** RecordPaymentOutcome calls that changed the order; RequeuePayment calls made. */
  delivered: number;
  requeued: number;
  /** Repairs held back because the cap was reached. */
  skippedByCap: number;
  /** True when the run wanted more repairs than the cap allows: it stopped repairing payments. */
  capReached: boolean;
  /** Outcomes the payment relay delivered between the lookup and the repair (RecordPaymentOutcome answered changed=false): not drift. */
  racedWithRelay: number;
}

export const emptyPaymentTally = (cap: number): PaymentTally => ({
  checked: false,
  scannedPayments: 0,
  scannedOrders: 0,
  cap,
  repairs: 0,
  delivered: 0,
  requeued: 0,
  skippedByCap: 0,
  capReached: false,
  racedWithRelay: 0,
});

export interface PaymentContext {
  orders: OrderClient;
  outcomes: PaymentOutcomeClient;
  payments: PaymentClient;
  log: Logger;
  result: RunResult;
  window: Window;
  dryRun: boolean;
  pageSize: number;
  concurrency: number;
  orderSvc: string;
  paymentSvc: string;
}

const statusName = (o: Order | undefined): string => (o ? (PaymentStatus[o.payment?.status ?? PaymentStatus.UNSPECIFIED] ?? "?") : "?");

/**
 * The payment half of a run: a recheck of orders an earlier run left open,
 * and the scans (charges decided in the window against their orders; orders
 * awaiting a charge or a refund since before the window's end against their
 * payments), each finding repaired once, within the cap. The run's result
 * gets the drift records and the tally.
 */
export function paymentReconciliation(ctx: PaymentContext) {
  const { result, log } = ctx;
  const tally = result.payments;
  const cutoff = ctx.window.until;
  const sinceTs = ctx.window.since ? timestampFromDate(ctx.window.since) : undefined;
  const untilTs = timestampFromDate(ctx.window.until);

  const lookupOrders = async (orderIds: string[]): Promise<Map<string, Order>> => {
    const byId = new Map<string, Order>();
    for (const ids of chunks(orderIds, ctx.pageSize)) {
      const res = await guard(result.calls, ctx.orderSvc, "BatchGetOrders", () => ctx.orders.batchGetOrders({ orderIds: ids }));
      for (const o of res.orders) byId.set(o.id, o);
    }
    return byId;
  };
  const lookupPayments = async (orderIds: string[]): Promise<Map<string, OrderPayment>> => {
    const byOrder = new Map<string, OrderPayment>();
    for (const ids of chunks(orderIds, Math.min(ctx.pageSize, PAYMENT_BATCH))) {
      const res = await guard(result.calls, ctx.paymentSvc, "BatchGetOrderPayments", () => ctx.payments.batchGetOrderPayments({ orderIds: ids }));
      for (const p of res.payments) byOrder.set(p.orderId, p);
    }
    return byOrder;
  };

  /** One order's repair: the outcome delivered, then its request requeued; failures are recorded on the record. */
  const repairOne = async (f: PaymentFinding, r: DriftRecord): Promise<"repaired" | "raced" | "failed"> => {
    let order: Order | undefined;
    if (f.deliver) {
      let res;
      try {
        res = await ctx.outcomes.recordPaymentOutcome({ orderId: f.orderId, ...f.deliver });
      } catch (err) {
        const ce = ConnectError.from(err);
        if (stopsTheRun(ce.code)) throw new ServiceCallError(ctx.orderSvc, "RecordPaymentOutcome", err);
        Object.assign(r, refusal("RecordPaymentOutcome", ce.code, ce.rawMessage));
        return "failed";
      }
      order = res.order;
      if (res.changed) tally.delivered++;
      // The order knew it already: the payment relay delivered it since the lookup.
      else if (f.kind !== "refund_missing") return "raced";
    }
    if (f.requeue === "if-owed") {
      const status = order?.payment?.status;
      if (status === PaymentStatus.REFUNDED) return "repaired";
      if (status !== PaymentStatus.REFUND_PENDING) {
        Object.assign(r, {
          error: `the order took the charge but owes no refund (payment ${statusName(order)}): a person must request it`,
          needsPerson: true,
        });
        return "failed";
      }
    }
    if (f.requeue) {
      try {
        const res = await ctx.orders.requeuePayment({ orderId: f.orderId });
        if (res.requeued) tally.requeued++;
        // A pending request past the grace: the relay is still retrying it (the outbox lag alerts say why); nothing more to do here.
        else if (f.requeue === "always") r.detail += "; the request was already on its way (pending), the relay is still trying";
      } catch (err) {
        const ce = ConnectError.from(err);
        if (stopsTheRun(ce.code)) throw new ServiceCallError(ctx.orderSvc, "RequeuePayment", err);
        Object.assign(r, refusal("RequeuePayment", ce.code, ce.rawMessage));
        return "failed";
      }
    }
    return "repaired";
  };

  /** Records new findings (once each) and carries out their repairs, within the cap. */
  const handle = cappedRepairs<PaymentFinding>({
    what: "payment",
    capSetting: "RECONCILE_MAX_PAYMENT_REPAIRS",
    capFlag: "--max-payment-repairs",
    tally,
    result,
    log,
    dryRun: ctx.dryRun,
    concurrency: ctx.concurrency,
    keyOf: paymentFindingKey,
    repairable: isPaymentRepairable,
    repairOne,
    racedMessage: "payment outcome arrived meanwhile: the payment relay delivered it",
  });

  /** Orders awaiting a charge or a refund since before the window's end → what the payment service decided for them. */
  const ordersAwaiting = (paymentStatus: PaymentStatus) => async (stopped: () => boolean) => {
    const pages = prefetched(async (pageToken) => {
      const res = await guard(result.calls, ctx.orderSvc, "ListOrdersByPaymentStatus", () =>
        ctx.orders.listOrdersByPaymentStatus({ paymentStatus, createdBefore: untilTs, pageSize: ctx.pageSize, pageToken }),
      );
      return { items: res.orders, next: res.nextPageToken };
    });
    for await (const page of pages) {
      if (stopped()) return;
      tally.scannedOrders += page.length;
      if (page.length === 0) continue;
      const ids = page.map((o) => o.id);
      const paymentsByOrder = await lookupPayments(ids);
      await handle(checkPayments(ids, new Map(page.map((o) => [o.id, o])), paymentsByOrder, cutoff));
    }
  };

  /** Charges decided in the window → their orders. */
  const decidedCharges = async (stopped: () => boolean) => {
    const pages = prefetched(async (pageToken) => {
      const res = await guard(result.calls, ctx.paymentSvc, "ListOrderPayments", () =>
        ctx.payments.listOrderPayments({ decidedAfter: sinceTs, decidedBefore: untilTs, pageSize: Math.min(ctx.pageSize, PAYMENT_BATCH), pageToken }),
      );
      return { items: res.payments, next: res.nextPageToken };
    });
    for await (const page of pages) {
      if (stopped()) return;
      tally.scannedPayments += page.length;
      if (page.length === 0) continue;
      const ids = page.map((p) => p.orderId);
      const ordersById = await lookupOrders(ids);
      await handle(checkPayments(ids, ordersById, new Map(page.map((p) => [p.orderId, p])), cutoff));
    }
  };

  return {
    /** Orders an earlier run left open, whatever the window. */
    async recheck(orderIds: string[]): Promise<void> {
      const [ordersById, paymentsByOrder] = await Promise.all([lookupOrders(orderIds), lookupPayments(orderIds)]);
      await handle(checkPayments(orderIds, ordersById, paymentsByOrder, cutoff));
    },
    sides: [decidedCharges, ordersAwaiting(PaymentStatus.AWAITING), ordersAwaiting(PaymentStatus.REFUND_PENDING)],
  };
}
