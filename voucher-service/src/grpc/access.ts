import { SCOPES, type AccessRule } from "@shop/platform/auth";
import type { VoucherService } from "@shop/sdk/voucher";

const read: AccessRule = { scopes: [SCOPES.vouchersRead] };
/** Customer-facing reads: any voucher with vouchers:read, a customer's own with vouchers:read:own. */
const customerRead: AccessRule = { scopes: [SCOPES.vouchersRead], customerScope: SCOPES.vouchersReadOwn };

/** Who may call each VoucherService method: only the relay and the reconciler mint or void vouchers. */
export const VOUCHER_SERVICE_ACCESS: Record<keyof (typeof VoucherService)["method"], AccessRule> = {
  issueVoucher: { scopes: [SCOPES.vouchersIssue] },
  batchIssueVouchers: { scopes: [SCOPES.vouchersIssue] },
  getVoucher: customerRead,
  listVouchers: customerRead,
  batchGetVouchersByOrder: read,
  listIssuedVouchers: read,
  voidVoucher: { scopes: [SCOPES.vouchersVoid] },
};
