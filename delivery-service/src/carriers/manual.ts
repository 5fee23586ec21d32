import type { CarrierPlugin, CarrierReport } from "./plugin.js";
import type { BuiltInCarrier } from "./registry.js";

/**
 * "manual": a business without an integration. accept() hands nothing on
 * (a person sees the shipment in ListShipments) and there is no poll: the
 * shipment waits in TRACKING until someone with the carrier role reports its
 * progress over CarrierService (ConfirmShipment, MarkShipmentShipped,
 * MarkShipmentDelivered, DeclineShipment).
 */
export class ManualCarrier implements CarrierPlugin {
  readonly name = "manual";
  readonly takesRpcReports = true;

  async accept(): Promise<CarrierReport[]> {
    return [];
  }
}

/** The registration of the manual carrier (see BUILT_IN_CARRIERS). */
export const manualCarrier: BuiltInCarrier = {
  name: "manual",
  create: () => new ManualCarrier(),
};
