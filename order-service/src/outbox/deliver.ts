import { deliverRows as deliver, type DeliverOptions } from "@shop/engine/deliver";
import type { VoucherClient } from "@shop/sdk/clients";
import type { ClaimedRow } from "./claim.js";
import { voucherFlow, type VoucherIssued, type VoucherRequest } from "./voucher-flow.js";
import type * as engine from "@shop/engine/deliver";

export type { CallFailure, DeliverOptions } from "@shop/engine/deliver";
export { largestBatchBytes, requestFor } from "./voucher-flow.js";

export type Outcome = engine.Outcome<VoucherRequest, VoucherIssued>;
export type Delivered = engine.Delivered<VoucherRequest, VoucherIssued>;
export type Failed = engine.Failed<VoucherRequest>;

/**
 * Asks the voucher service for the vouchers of the claimed rows, outside any
 * database transaction (the engine's deliverRows: one BatchIssueVouchers call,
 * the rows that failed on their own beside it, splitting and the per-row
 * IssueVoucher fallback when a batch fails as a whole). Never throws.
 */
export function deliverRows(voucher: VoucherClient, rows: ClaimedRow[], opts: DeliverOptions): Promise<Outcome[]> {
  return deliver(voucherFlow(voucher), rows, opts);
}
