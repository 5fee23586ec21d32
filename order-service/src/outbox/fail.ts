import { markDead as markDeadIn, scheduleRetries as scheduleRetriesIn, type Death, type Retry } from "@shop/engine/fail";
import type { Pool } from "@shop/platform/db";
import { voucherOutbox } from "./voucher-flow.js";

export { LAST_ERROR_MAX, truncateError, type Death, type Retry } from "@shop/engine/fail";

/** Releases voucher_outbox rows for a later attempt, fenced on the claim token. Returns the ids whose fence did not match. */
export function scheduleRetries(pool: Pool, token: string, retries: Retry[]): Promise<number[]> {
  return scheduleRetriesIn(pool, voucherOutbox, token, retries);
}

/** Parks voucher_outbox rows (status 'dead') until requeued, fenced on the claim token. Returns the ids whose fence did not match. */
export function markDead(pool: Pool, token: string, deaths: Death[]): Promise<number[]> {
  return markDeadIn(pool, voucherOutbox, token, deaths);
}
