import { claimDue, type ClaimOptions } from "@shop/engine/claim";
import type { ClaimMeta } from "@shop/engine/flow";
import type { Pool } from "@shop/platform/db";
import { voucherOutbox, type VoucherRequest } from "./voucher-flow.js";

export type { ClaimOptions } from "@shop/engine/claim";
export { OWN_FAILURE_MARK } from "@shop/engine/flow";

/** An outbox row's voucher request: what the voucher service needs, and how often delivery was tried. */
export type OutboxRequestRow = VoucherRequest & { id: number; attempts: number };

/** A claimed voucher_outbox row; `attempts` includes the one this claim starts (1 on the first delivery). */
export type ClaimedRow = VoucherRequest & ClaimMeta;

/** The voucher flow's claim, built by the engine (see FlowSql.claimSelect); a test EXPLAINs it in both table shapes. */
export const CLAIM_SELECT_SQL = voucherOutbox.sql.claimSelect;

/** Leases up to `limit` due voucher_outbox rows to one claim token: the engine's claimDue on the voucher flow. */
export function claimDueRows(pool: Pool, opts: ClaimOptions): Promise<ClaimedRow[]> {
  return claimDue(pool, voucherOutbox, opts);
}
