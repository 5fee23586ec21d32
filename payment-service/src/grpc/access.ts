import { SCOPES, type AccessRule } from "@shop/platform/auth";
import type { PaymentService } from "@shop/sdk/payment";

/** Reads of one customer's account: any with payments:read, a customer's own with payments:read:own. */
const customerRead: AccessRule = { scopes: [SCOPES.paymentsRead], customerScope: SCOPES.paymentsReadOwn };
/** What was decided for orders, any customer's: the reconciler and the shop backend. */
const read: AccessRule = { scopes: [SCOPES.paymentsRead] };
const write: AccessRule = { scopes: [SCOPES.paymentsWrite] };
/** Only the order service's relay charges and refunds orders. */
const charge: AccessRule = { scopes: [SCOPES.paymentsCharge] };

export const PAYMENT_SERVICE_ACCESS: Record<keyof (typeof PaymentService)["method"], AccessRule> = {
  openAccount: write,
  getAccount: customerRead,
  topUp: write,
  listStatement: customerRead,
  chargeOrder: charge,
  refundOrder: charge,
  batchGetOrderPayments: read,
  listOrderPayments: read,
};
