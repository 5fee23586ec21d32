import { SCOPES, type AccessRule } from "@shop/platform/auth";
import type { CarrierService, DeliveryService } from "@shop/sdk/delivery";

/** One order's shipment: any with shipments:read, a customer's own with shipments:read:own (the handler checks whose it is). */
const customerRead: AccessRule = { scopes: [SCOPES.shipmentsRead], customerScope: SCOPES.shipmentsReadOwn };
/** Any customer's shipments at once: the shop backend, the reconciler, operators. */
const read: AccessRule = { scopes: [SCOPES.shipmentsRead] };
/** Only the order service's relay creates shipments. */
const create: AccessRule = { scopes: [SCOPES.shipmentsCreate] };
const admin: AccessRule = { scopes: [SCOPES.shipmentsAdmin] };
/** A business or an operator reporting for a carrier that takes reports over RPC. */
const report: AccessRule = { scopes: [SCOPES.carrierReport] };

export const DELIVERY_SERVICE_ACCESS: Record<keyof (typeof DeliveryService)["method"], AccessRule> = {
  createShipment: create,
  getShipment: customerRead,
  batchGetShipments: read,
  listShipments: read,
  resumeShipment: admin,
};

export const CARRIER_SERVICE_ACCESS: Record<keyof (typeof CarrierService)["method"], AccessRule> = {
  confirmShipment: report,
  declineShipment: report,
  markShipmentShipped: report,
  markShipmentDelivered: report,
};
