import { randomCrockford } from "@shop/platform/ids";

/** Every voucher is worth 5.00 EUR. */
export const VOUCHER_AMOUNT_CENTS = 500;
export const VOUCHER_CURRENCY = "EUR";

export type VoucherStatus = "ISSUED" | "VOIDED";

/** A voucher as stored; vouchers are never deleted, only voided. */
export interface Voucher {
  id: string;
  code: string;
  orderId: string;
  customerId: string;
  orderTotalCents: number;
  amountCents: number;
  currency: string;
  status: VoucherStatus;
  issuedAt: Date;
  voidedAt: Date | null;
  voidReason: string | null;
}

/** An IssueVoucher request that passed validation. */
export interface IssueRequest {
  orderId: string;
  customerId: string;
  orderTotalCents: number;
  currency: typeof VOUCHER_CURRENCY;
}

/** A row about to be inserted: the request plus a fresh id and code. */
export interface VoucherCandidate extends IssueRequest {
  id: string;
  code: string;
}

const CODE_GROUPS = 4;
const CODE_GROUP_LENGTH = 4;

/** "V5-" then 4 groups of 4 Crockford characters. */
export const VOUCHER_CODE_PATTERN = /^V5-[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$/;

/**
 * A redeemable code: 16 Crockford characters = 80 bits of crypto randomness,
 * so codes cannot be guessed from each other; uniqueness is still enforced by
 * the database, and a collision is retried with a new code.
 */
export function newVoucherCode(): string {
  const raw = randomCrockford(CODE_GROUPS * CODE_GROUP_LENGTH);
  const groups: string[] = [];
  for (let i = 0; i < CODE_GROUPS; i++) groups.push(raw.slice(i * CODE_GROUP_LENGTH, (i + 1) * CODE_GROUP_LENGTH));
  return `V5-${groups.join("-")}`;
}

export type IssueOutcome =
  | { kind: "created"; voucher: Voucher }
  | { kind: "reissued"; voucher: Voucher; voided: Voucher[] }
  | { kind: "replayed"; voucher: Voucher }
  | { kind: "conflict"; existing: Voucher; message: string };

/**
 * What an order's rows, read back after the insert of `candidateId`, mean
 * for the request. Only the live (ISSUED) voucher is the order's voucher: ours
 * (created; "reissued" when voided ones came before it), an earlier identical
 * issue (a replay), or an issue for other facts (a conflict: the caller is
 * confused about the order, so nothing is returned as if it were theirs).
 * Voided vouchers are history: a replay never answers with one. Undefined
 * when the order has no live voucher, which the caller must explain.
 */
export function classifyIssue(request: IssueRequest, candidateId: string, rows: Voucher[]): IssueOutcome | undefined {
  const live = rows.find((v) => v.status === "ISSUED");
  if (!live) return undefined;
  if (live.id === candidateId) {
    const voided = rows.filter((v) => v.status === "VOIDED");
    return voided.length > 0 ? { kind: "reissued", voucher: live, voided } : { kind: "created", voucher: live };
  }
  const otherCustomer = live.customerId !== request.customerId;
  const otherTotal = live.orderTotalCents !== request.orderTotalCents;
  if (!otherCustomer && !otherTotal) return { kind: "replayed", voucher: live };
  const what = otherCustomer && otherTotal ? "customer and order total" : otherCustomer ? "customer" : "order total";
  return {
    kind: "conflict",
    existing: live,
    message: `voucher for order ${request.orderId} was issued for a different ${what}`,
  };
}

/**
 * The voucher BatchGetVouchersByOrder shows for an order: the live one if
 * there is one, else the most recently voided (latest voided_at, then the
 * larger id), so an order that had vouchers never looks as if it had none.
 */
export function voucherToShow(rows: Voucher[]): Voucher | undefined {
  const live = rows.find((v) => v.status === "ISSUED");
  if (live) return live;
  let shown: Voucher | undefined;
  for (const v of rows) {
    if (!shown) shown = v;
    else {
      const d = (v.voidedAt?.getTime() ?? 0) - (shown.voidedAt?.getTime() ?? 0);
      if (d > 0 || (d === 0 && v.id > shown.id)) shown = v;
    }
  }
  return shown;
}
