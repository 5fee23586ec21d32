import { createHash } from "node:crypto";
import type { ReportedStatus } from "../shipments.js";
import type { CarrierContext, CarrierPlugin, CarrierReport, Shipment } from "./plugin.js";
import type { BuiltInCarrier } from "./registry.js";

/** When the delayed carrier says each step happened, in ms after the shipment was created. */
export interface DelayedCarrierTimes {
  /** DELAYED_CARRIER_CONFIRM_MS, default 1000. */
  confirmMs: number;
  /** DELAYED_CARRIER_SHIP_MS, default 2000. */
  shipMs: number;
  /** DELAYED_CARRIER_DELIVER_MS, default 4000. */
  deliverMs: number;
}

const STEPS: ReadonlyArray<{ status: ReportedStatus; after: keyof DelayedCarrierTimes }> = [
  { status: "CONFIRMED", after: "confirmMs" },
  { status: "SHIPPED", after: "shipMs" },
  { status: "DELIVERED", after: "deliverMs" },
];
const ORDER: readonly string[] = ["CREATED", "CONFIRMED", "SHIPPED", "DELIVERED"];

/** The delayed carrier's tracking number of an order: the same every time it is asked, so a repeated report agrees. */
export function delayedTrackingNumber(orderId: string): string {
  return `DLY-${createHash("sha256").update(orderId, "utf8").digest("hex").slice(0, 20).toUpperCase()}`;
}

/**
 * "delayed": a stand-in business that accepts every order and, asked by
 * poll(), reports it confirmed, shipped (with a tracking number derived from
 * the order id) and delivered once the configured time since the shipment's
 * creation has passed. It keeps no state: every answer follows from the
 * shipment and the clock, so any replica may poll, any number of times.
 *
 * The times are measured from shipments.created_at (the database's clock)
 * to ctx.now() (this process's clock); skew between the two shifts every
 * step by the same amount.
 */
export class DelayedCarrier implements CarrierPlugin {
  readonly name = "delayed";
  readonly takesRpcReports = false;

  constructor(private readonly times: DelayedCarrierTimes) {}

  async accept(): Promise<CarrierReport[]> {
    return [];
  }

  async poll(shipment: Shipment, ctx: CarrierContext): Promise<CarrierReport[]> {
    const reached = ORDER.indexOf(shipment.status);
    // DECLINED (by an operator) is final: nothing more to say.
    if (reached < 0) return [];
    const elapsedMs = ctx.now().getTime() - shipment.createdAt.getTime();
    const reports: CarrierReport[] = [];
    for (const step of STEPS) {
      if (ORDER.indexOf(step.status) <= reached || elapsedMs < this.times[step.after]) continue;
      reports.push(
        step.status === "CONFIRMED"
          ? { status: step.status }
          : { status: step.status, trackingNumber: delayedTrackingNumber(shipment.orderId) },
      );
    }
    return reports;
  }

  /** Its own schedule: the next step's time (a little after, for the clock's sake), not a fixed interval. */
  nextPollInMs(shipment: Shipment, now: Date): number | undefined {
    const reached = ORDER.indexOf(shipment.status);
    const next = STEPS.find((step) => ORDER.indexOf(step.status) > reached);
    if (reached < 0 || !next) return undefined;
    return Math.max(1, shipment.createdAt.getTime() + this.times[next.after] - now.getTime() + 5);
  }
}

/** The registration of the delayed carrier (see BUILT_IN_CARRIERS). */
export const delayedCarrier: BuiltInCarrier = {
  name: "delayed",
  create: (settings) => new DelayedCarrier(settings.delayed),
};
