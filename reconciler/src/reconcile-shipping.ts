import { ConnectError } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ShippingStatus, type Order } from "@shop/sdk/order";
import { ShipmentStatus, type Shipment } from "@shop/sdk/delivery";
import type { DeliveryClient, OrderClient, ShipmentEventClient } from "@shop/sdk/clients";
import type { Logger } from "@shop/platform/logger";
import { cappedRepairs } from "./capped-repairs.js";
import { checkShipping, isShippingRepairable, shippingFindingKey, type ShippingFinding } from "./shipping-compare.js";
import { chunks, guard, prefetched, refusal, ServiceCallError, stopsTheRun, type DriftRecord, type RunResult } from "./reconcile.js";
import type { Window } from "./state.js";

/** The most ids BatchGetShipments accepts in one call, and the most ListShipments answers per page. */
const SHIPMENT_BATCH = 1000;

/** Every status a shipment can be in: each is listed over the window (the final ones for undelivered events, all of them for contradictions). */
const LISTED_STATUSES = [ShipmentStatus.SHIPPED, ShipmentStatus.DELIVERED, ShipmentStatus.DECLINED, ShipmentStatus.CREATED, ShipmentStatus.CONFIRMED];

/** What a run did about shipping drift. Repairs are bounded like voids and payment repairs. */
export interface ShippingTally {
  /** False when the run did not look at shipping (RECONCILE_SHIPPING off). */
  checked: boolean;
  /** Shipments changed in the window (ListShipments, every status), and orders listed as awaiting their shipment (ListOrdersByShippingStatus REQUESTED). */
  scannedShipments: number;
  scannedOrders: number;
  /** RECONCILE_MAX_SHIPPING_REPAIRS for this run. */
  cap: number;
  /** Orders whose repair was attempted (in a dry run: would have been), counted against the cap. */
  repairs: number;
  /** Orders moved by RecordShipmentEvent (at least one event changed the order); RequeueShipment calls that requeued. */
  delivered: number;
  requeued: number;
  /** Repairs held back because the cap was reached. */
  skippedByCap: number;
  /** True when the run wanted more repairs than the cap allows: it stopped repairing shipping. */
  capReached: boolean;
  /** Events the delivery relay delivered between the lookup and the repair (every RecordShipmentEvent answered changed=false): not drift. */
  racedWithRelay: number;
}

export const emptyShippingTally = (cap: number): ShippingTally => ({
  checked: false,
  scannedShipments: 0,
  scannedOrders: 0,
  cap,
  repairs: 0,
  delivered: 0,
  requeued: 0,
  skippedByCap: 0,
  capReached: false,
  racedWithRelay: 0,
});

export interface ShippingContext {
  orders: OrderClient;
  events: ShipmentEventClient;
  deliveries: DeliveryClient;
  log: Logger;
  result: RunResult;
  window: Window;
  dryRun: boolean;
  pageSize: number;
  concurrency: number;
  orderSvc: string;
  deliverySvc: string;
}

const shippingName = (o: Order | undefined): string => (o ? (ShippingStatus[o.shipping?.status ?? ShippingStatus.UNSPECIFIED] ?? "?") : "?");

/**
 * The shipping half of a run: a recheck of orders an earlier run left open,
 * and the scans (shipments changed in the window against their orders;
 * orders awaiting their shipment since before the window's end against the
 * delivery service), each finding repaired once, within the cap. The run's
 * result gets the drift records and the tally.
 */
export function shippingReconciliation(ctx: ShippingContext) {
  const { result, log } = ctx;
  const tally = (result.shipping ??= emptyShippingTally(0));
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
  const lookupShipments = async (orderIds: string[]): Promise<Map<string, Shipment>> => {
    const byOrder = new Map<string, Shipment>();
    for (const ids of chunks(orderIds, Math.min(ctx.pageSize, SHIPMENT_BATCH))) {
      const res = await guard(result.calls, ctx.deliverySvc, "BatchGetShipments", () => ctx.deliveries.batchGetShipments({ orderIds: ids }));
      for (const s of res.shipments) byOrder.set(s.orderId, s);
    }
    return byOrder;
  };

  /** One order's repair: its missing events delivered in order, or its shipment request requeued; failures are recorded on the record. */
  const repairOne = async (f: ShippingFinding, r: DriftRecord): Promise<"repaired" | "raced" | "failed"> => {
    if (f.deliver?.length) {
      let changed = false;
      for (const e of f.deliver) {
        try {
          const res = await ctx.events.recordShipmentEvent({ orderId: f.orderId, ...e });
          changed ||= res.changed;
        } catch (err) {
          const ce = ConnectError.from(err);
          if (stopsTheRun(ce.code)) throw new ServiceCallError(ctx.orderSvc, "RecordShipmentEvent", err);
          Object.assign(r, refusal("RecordShipmentEvent", ce.code, ce.rawMessage));
          if (changed) tally.delivered++;
          return "failed";
        }
      }
      if (!changed) return "raced";
      tally.delivered++;
    }
    if (f.requeue) {
      try {
        const res = await ctx.orders.requeueShipment({ orderId: f.orderId });
        if (res.requeued) tally.requeued++;
        // A pending request past the grace: the relay is still retrying it (the outbox lag alerts say why); nothing more to do here.
        else r.detail += `; the request was already on its way (pending), the relay is still trying (order shipping ${shippingName(res.order)})`;
      } catch (err) {
        const ce = ConnectError.from(err);
        if (stopsTheRun(ce.code)) throw new ServiceCallError(ctx.orderSvc, "RequeueShipment", err);
        Object.assign(r, refusal("RequeueShipment", ce.code, ce.rawMessage));
        return "failed";
      }
    }
    return "repaired";
  };

  /** Records new findings (once each) and carries out their repairs, within the cap. */
  const handle = cappedRepairs<ShippingFinding>({
    what: "shipping",
    capSetting: "RECONCILE_MAX_SHIPPING_REPAIRS",
    capFlag: "--max-shipping-repairs",
    tally,
    result,
    log,
    dryRun: ctx.dryRun,
    concurrency: ctx.concurrency,
    keyOf: shippingFindingKey,
    repairable: isShippingRepairable,
    repairOne,
    racedMessage: "shipment events arrived meanwhile: the delivery relay delivered them",
  });

  /** Orders awaiting their shipment since before the window's end → the delivery service's shipments of them. */
  const ordersAwaiting = async (stopped: () => boolean) => {
    const pages = prefetched(async (pageToken) => {
      const res = await guard(result.calls, ctx.orderSvc, "ListOrdersByShippingStatus", () =>
        ctx.orders.listOrdersByShippingStatus({ shippingStatus: ShippingStatus.REQUESTED, requestedBefore: untilTs, pageSize: ctx.pageSize, pageToken }),
      );
      return { items: res.orders, next: res.nextPageToken };
    });
    for await (const page of pages) {
      if (stopped()) return;
      tally.scannedOrders += page.length;
      if (page.length === 0) continue;
      const ids = page.map((o) => o.id);
      const shipmentsByOrder = await lookupShipments(ids);
      await handle(checkShipping(ids, new Map(page.map((o) => [o.id, o])), shipmentsByOrder, cutoff));
    }
  };

  /** Shipments in one status changed in the window → their orders. */
  const changedShipments = (status: ShipmentStatus) => async (stopped: () => boolean) => {
    const pages = prefetched(async (pageToken) => {
      const res = await guard(result.calls, ctx.deliverySvc, "ListShipments", () =>
        ctx.deliveries.listShipments({ status, updatedAfter: sinceTs, updatedBefore: untilTs, pageSize: Math.min(ctx.pageSize, SHIPMENT_BATCH), pageToken }),
      );
      return { items: res.shipments, next: res.nextPageToken };
    });
    for await (const page of pages) {
      if (stopped()) return;
      tally.scannedShipments += page.length;
      if (page.length === 0) continue;
      const ids = page.map((s) => s.orderId);
      const ordersById = await lookupOrders(ids);
      const findings = checkShipping(ids, ordersById, new Map(page.map((s) => [s.orderId, s])), cutoff);
      // The shipment was read before its order: an order ahead of it may only show that the shipment moved on
      // (and the relay delivered that) since the listing. Those are judged again against the shipment as it is now.
      const stale = findings.filter((f) => f.kind === "shipping_conflict").map((f) => f.orderId);
      const fresh = stale.length > 0 ? checkShipping(stale, ordersById, await lookupShipments(stale), cutoff) : [];
      await handle([...findings.filter((f) => f.kind !== "shipping_conflict"), ...fresh]);
    }
  };

  return {
    /** Orders an earlier run left open, whatever the window. */
    async recheck(orderIds: string[]): Promise<void> {
      // The orders first, then their shipments: a shipment is never older than the order it is compared with.
      const ordersById = await lookupOrders(orderIds);
      const shipmentsByOrder = await lookupShipments(orderIds);
      await handle(checkShipping(orderIds, ordersById, shipmentsByOrder, cutoff));
    },
    sides: [...LISTED_STATUSES.map(changedShipments), ordersAwaiting],
  };
}
