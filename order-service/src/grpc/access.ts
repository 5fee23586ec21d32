import { SCOPES, type AccessRule } from "@shop/platform/auth";
import type { OrderService, PaymentOutcomeService, ShipmentEventService } from "@shop/sdk/order";
import type { OrderAdminService } from "@shop/sdk/order-admin";

const write: AccessRule = { scopes: [SCOPES.ordersWrite] };
const read: AccessRule = { scopes: [SCOPES.ordersRead] };
/** Customer-facing reads: any order with orders:read, a customer's own with orders:read:own. */
const customerRead: AccessRule = { scopes: [SCOPES.ordersRead], customerScope: SCOPES.ordersReadOwn };

/** Who may call each OrderService method. */
export const ORDER_SERVICE_ACCESS: Record<keyof (typeof OrderService)["method"], AccessRule> = {
  createOrder: write,
  getOrder: customerRead,
  listOrders: customerRead,
  markOrderSent: write,
  markOrderDelivered: write,
  cancelOrder: write,
  listSentOrders: read,
  batchGetOrders: read,
  requeueVoucher: { scopes: [SCOPES.ordersRequeue] },
  requeuePayment: { scopes: [SCOPES.ordersRequeue] },
  listOrdersByPaymentStatus: read,
  releaseOrderForShipping: write,
  // An operator may put a stuck shipment request back on its way too, as with the admin API's voucher requeues.
  requeueShipment: { scopes: [SCOPES.ordersRequeue, SCOPES.admin] },
  listOrdersByShippingStatus: read,
};

/** Only the payment service's relay and the reconciler record payment decisions. */
export const PAYMENT_OUTCOME_ACCESS: Record<keyof (typeof PaymentOutcomeService)["method"], AccessRule> = {
  recordPaymentOutcome: { scopes: [SCOPES.ordersPaymentOutcome] },
};

/** Only the delivery service's relay and the reconciler record shipment events. */
export const SHIPMENT_EVENT_ACCESS: Record<keyof (typeof ShipmentEventService)["method"], AccessRule> = {
  recordShipmentEvent: { scopes: [SCOPES.ordersShipmentEvent] },
};

/** The admin API is for operators only. */
export const ORDER_ADMIN_ACCESS: Record<keyof (typeof OrderAdminService)["method"], AccessRule> = {
  listDeadVoucherDeliveries: { scopes: [SCOPES.admin] },
  requeueDeadVoucherDeliveries: { scopes: [SCOPES.admin] },
};
