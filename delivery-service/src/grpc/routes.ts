import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { callerKey, requireCustomer } from "@shop/platform/auth";
import { notFound } from "@shop/platform/errors";
import { failpoint } from "@shop/platform/failpoints";
import { currentTraceparent, withChildSpan } from "@shop/platform/tracing";
import {
  CarrierService,
  CarrierWork as ProtoCarrierWork,
  DeliveryService,
  ShipmentSchema,
  ShipmentStatus as ProtoShipmentStatus,
  ShipmentTransitionSchema,
  type Shipment as ShipmentMessage,
  type ShipmentTransition as TransitionMessage,
} from "@shop/sdk/delivery";
import { refusalResult, type ShipmentCall, type ShipmentResult } from "../metrics.js";
import {
  SHIPMENTS_PAGE,
  type CarrierReport,
  type CarrierWork,
  type Shipment,
  type ShipmentStatus,
  type ShipmentStore,
  type Transition,
} from "../shipments.js";

export interface DeliveryServiceDeps {
  store: ShipmentStore;
  /** Which carriers take reports over CarrierService (the manual carrier does; the delayed one reports by itself). */
  carriers: { takesRpcReports(name: string): boolean };
  /** Counts the calls that change shipments (delivery_requests_total). Default: not counted. */
  requests?: { inc(labels: { call: ShipmentCall; result: ShipmentResult }): void };
}

export const SHIPMENT_STATUS: Record<ShipmentStatus, ProtoShipmentStatus> = {
  CREATED: ProtoShipmentStatus.CREATED,
  CONFIRMED: ProtoShipmentStatus.CONFIRMED,
  SHIPPED: ProtoShipmentStatus.SHIPPED,
  DELIVERED: ProtoShipmentStatus.DELIVERED,
  DECLINED: ProtoShipmentStatus.DECLINED,
};

const SHIPMENT_STATUS_OF = new Map(Object.entries(SHIPMENT_STATUS).map(([k, v]) => [v, k as ShipmentStatus]));

const CARRIER_WORK: Record<CarrierWork, ProtoCarrierWork> = {
  HANDOFF: ProtoCarrierWork.HANDOFF,
  TRACKING: ProtoCarrierWork.TRACKING,
  PARKED: ProtoCarrierWork.PARKED,
  DONE: ProtoCarrierWork.DONE,
};

const ts = (d: Date | null): Timestamp | undefined => (d ? timestampFromDate(d) : undefined);

export function toTransitionMessage(t: Transition): TransitionMessage {
  return create(ShipmentTransitionSchema, {
    from: t.fromStatus === null ? ProtoShipmentStatus.UNSPECIFIED : SHIPMENT_STATUS[t.fromStatus],
    to: SHIPMENT_STATUS[t.toStatus],
    at: timestampFromDate(t.at),
    source: t.source,
    detail: t.detail ?? "",
  });
}

/** The proto form of a shipment; transitions only when given (GetShipment). */
export function toShipmentMessage(s: Shipment, transitions: Transition[] = []): ShipmentMessage {
  return create(ShipmentSchema, {
    id: s.id,
    orderId: s.orderId,
    customerId: s.customerId,
    totalCents: BigInt(s.totalCents),
    currency: s.currency,
    carrier: s.carrier,
    status: SHIPMENT_STATUS[s.status],
    trackingNumber: s.trackingNumber ?? "",
    declineReason: s.declineReason ?? "",
    createdAt: ts(s.createdAt),
    updatedAt: ts(s.updatedAt),
    confirmedAt: ts(s.confirmedAt),
    shippedAt: ts(s.shippedAt),
    deliveredAt: ts(s.deliveredAt),
    declinedAt: ts(s.declinedAt),
    carrierWork: CARRIER_WORK[s.carrierWork],
    carrierAttempts: s.carrierAttempts,
    carrierLastError: s.carrierLastError ?? "",
    transitions: transitions.map(toTransitionMessage),
  });
}

/** 0 means the default; above the maximum is lowered to it. A negative size never gets here: the proto's rule refuses it. */
export function shipmentsPageSize(requested: number): number {
  return requested === 0 ? SHIPMENTS_PAGE.default : Math.min(requested, SHIPMENTS_PAGE.max);
}

/** Runs a call that changes shipments, counting its result, refusals included. */
async function counted<T>(
  requests: DeliveryServiceDeps["requests"],
  call: ShipmentCall,
  run: () => Promise<T>,
  result: (value: T) => ShipmentResult,
): Promise<T> {
  let value: T;
  try {
    value = await run();
  } catch (err) {
    const refused = refusalResult(err);
    if (refused) requests?.inc({ call, result: refused });
    throw err;
  }
  requests?.inc({ call, result: result(value) });
  return value;
}

/** DeliveryService handlers: proto in, plain values to the store, proto out. Errors are mapped, logged and counted by the server. */
export function createDeliveryServiceImpl({ store, requests }: DeliveryServiceDeps): ServiceImpl<typeof DeliveryService> {
  return {
    async createShipment(req) {
      // The shipment's creation continues the order's trace; the shipment stores this span, so the carrier's calls and the events continue from here.
      const { shipment, created } = await withChildSpan("delivery.create-shipment", req.traceparent || undefined, () =>
        counted(
          requests,
          "create",
          () =>
            store.create({
              orderId: req.orderId,
              customerId: req.customerId,
              totalCents: Number(req.totalCents),
              currency: req.currency,
              carrier: req.carrier,
              traceparent: req.traceparent ? (currentTraceparent() ?? req.traceparent) : undefined,
            }),
          (v) => (!v.created ? "replayed" : v.shipment.status === "DECLINED" ? "declined" : "applied"),
        ),
        { attributes: { "order.id": req.orderId } },
      );
      failpoint("delivery.create.before-reply");
      return { shipment: toShipmentMessage(shipment), created };
    },

    async getShipment(req, ctx) {
      const shipment = await store.get(req.orderId);
      if (!shipment) throw notFound(`order ${req.orderId} has no shipment`);
      requireCustomer(ctx, shipment.customerId, `the shipment of order ${req.orderId}`);
      return { shipment: toShipmentMessage(shipment, await store.transitions(req.orderId)) };
    },

    async batchGetShipments(req) {
      return { shipments: (await store.batchGet(req.orderIds)).map((s) => toShipmentMessage(s)) };
    },

    async listShipments(req) {
      const page = await store.list({
        // The proto's rule admits only the five known statuses.
        status: SHIPMENT_STATUS_OF.get(req.status)!,
        updatedAfter: req.updatedAfter ? timestampDate(req.updatedAfter) : undefined,
        updatedBefore: req.updatedBefore ? timestampDate(req.updatedBefore) : undefined,
        pageSize: shipmentsPageSize(req.pageSize),
        pageToken: req.pageToken || undefined,
      });
      return { shipments: page.shipments.map((s) => toShipmentMessage(s)), nextPageToken: page.nextPageToken };
    },

    async resumeShipment(req) {
      const { shipment, resumed } = await counted(requests, "resume", () => store.resume(req.orderId), (v) => (v.resumed ? "applied" : "replayed"));
      return { shipment: toShipmentMessage(shipment), resumed };
    },
  };
}

/** The transitions table's source column holds 96 characters: "operator:" and the subject clipped to fit. */
const SOURCE_MAX = 96;

/** Who reported over CarrierService, for the transition's source: "operator:" + the token's subject. */
export function operatorSource(ctx: HandlerContext): string {
  // Every CarrierService method requires a token (carrier:report), so the caller is always known here.
  const subject = ctx.values.get(callerKey)?.principal.subject ?? "unknown";
  return `operator:${subject}`.slice(0, SOURCE_MAX);
}

/**
 * CarrierService handlers: each call is one carrier report through
 * store.report, refused (FAILED_PRECONDITION) for shipments whose carrier
 * does not take reports over RPC.
 */
export function createCarrierServiceImpl({ store, carriers, requests }: DeliveryServiceDeps): ServiceImpl<typeof CarrierService> {
  const opts = { carrierMustTakeRpcReports: (carrier: string) => carriers.takesRpcReports(carrier) };
  const report = async (call: ShipmentCall, orderId: string, r: CarrierReport, ctx: HandlerContext) => {
    const { shipment, changed } = await counted(
      requests,
      call,
      () => store.report(orderId, r, operatorSource(ctx), opts),
      (v) => (v.changed ? "applied" : "replayed"),
    );
    return { shipment: toShipmentMessage(shipment), changed };
  };
  return {
    confirmShipment: (req, ctx) => report("confirm", req.orderId, { status: "CONFIRMED" }, ctx),
    declineShipment: (req, ctx) => report("decline", req.orderId, { status: "DECLINED", declineReason: req.reason }, ctx),
    markShipmentShipped: (req, ctx) =>
      report("ship", req.orderId, { status: "SHIPPED", ...(req.trackingNumber ? { trackingNumber: req.trackingNumber } : {}) }, ctx),
    markShipmentDelivered: (req, ctx) => report("deliver", req.orderId, { status: "DELIVERED" }, ctx),
  };
}
