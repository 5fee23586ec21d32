/**
 * The voucher rule, and the only place it is written. It has a history: an
 * order is judged by the version in force when it was sent, so changing the
 * threshold later neither takes vouchers from orders sent under the old rule
 * nor owes new ones for them. A change is a new version appended with a
 * future effectiveFrom, never an edit of a past one.
 */

export interface VoucherRuleVersion {
  version: number;
  /** Orders sent at or after this instant (and before the next version's) are judged by this version. */
  effectiveFrom: Date;
  /** An order earns a voucher when its total is strictly more than this. */
  thresholdCents: number;
  currency: "EUR";
  voucherAmountCents: number;
}

export const VOUCHER_RULE_VERSIONS: readonly VoucherRuleVersion[] = Object.freeze([
  Object.freeze({ version: 1, effectiveFrom: new Date("1970-01-01T00:00:00Z"), thresholdCents: 10_000, currency: "EUR", voucherAmountCents: 500 }),
] as const);

export interface VoucherOrder {
  totalCents: number;
  currency: string;
}

/**
 * A rule built from an explicit list of versions: tests and the reconciler
 * take one to judge history with a list other than today's.
 */
export class VoucherRule {
  readonly versions: readonly VoucherRuleVersion[];

  constructor(versions: readonly VoucherRuleVersion[] = VOUCHER_RULE_VERSIONS) {
    checkVersions(versions);
    this.versions = [...versions].sort((a, b) => a.effectiveFrom.getTime() - b.effectiveFrom.getTime());
    this.versions.forEach((v, i) => {
      const before = this.versions[i - 1];
      // A later version number taking effect earlier means someone edited history.
      if (before && before.version >= v.version) {
        throw new RangeError(`voucher rule version ${v.version} takes effect after version ${before.version}; numbers must grow with effectiveFrom`);
      }
    });
  }

  /** The version in force at `at`: the latest whose effectiveFrom is not after it. */
  inForce(at: Date): VoucherRuleVersion {
    const t = at.getTime();
    if (Number.isNaN(t)) throw new RangeError("the voucher rule needs a valid date");
    let found: VoucherRuleVersion | undefined;
    for (const v of this.versions) {
      if (v.effectiveFrom.getTime() <= t) found = v;
      else break;
    }
    if (!found) throw new RangeError(`no voucher rule version is in force at ${at.toISOString()}`);
    return found;
  }

  /** Whether an order sent at `sentAt` earns a voucher. */
  qualifies(order: VoucherOrder, sentAt: Date): boolean {
    const v = this.inForce(sentAt);
    return order.currency === v.currency && order.totalCents > v.thresholdCents;
  }

  /** "more than 10000 cents EUR", for refusals that tell a caller why no voucher is due. */
  describe(sentAt: Date): string {
    const v = this.inForce(sentAt);
    return `more than ${v.thresholdCents} cents ${v.currency} (rule version ${v.version}, in force from ${v.effectiveFrom.toISOString()})`;
  }
}

function checkVersions(versions: readonly VoucherRuleVersion[]): void {
  if (versions.length === 0) throw new RangeError("the voucher rule needs at least one version");
  const seenVersion = new Set<number>();
  const seenFrom = new Set<number>();
  for (const v of versions) {
    const from = v.effectiveFrom.getTime();
    if (Number.isNaN(from)) throw new RangeError(`voucher rule version ${v.version} has an invalid effectiveFrom`);
    if (!Number.isSafeInteger(v.thresholdCents) || v.thresholdCents < 0) {
      throw new RangeError(`voucher rule version ${v.version}: thresholdCents must be a non-negative integer`);
    }
    if (!Number.isSafeInteger(v.voucherAmountCents) || v.voucherAmountCents <= 0) {
      throw new RangeError(`voucher rule version ${v.version}: voucherAmountCents must be a positive integer`);
    }
    // Two versions with one start would make "the version in force" depend on list order.
    if (seenVersion.has(v.version) || seenFrom.has(from)) {
      throw new RangeError(`voucher rule versions must have distinct numbers and effectiveFrom dates (version ${v.version})`);
    }
    seenVersion.add(v.version);
    seenFrom.add(from);
  }
}

const current = new VoucherRule(VOUCHER_RULE_VERSIONS);

/** The version of today's list in force at `at`. */
export function ruleInForce(at: Date): VoucherRuleVersion {
  return current.inForce(at);
}

/** Whether an order sent at `sentAt` earns a voucher under today's list of versions. */
export function qualifiesForVoucher(order: VoucherOrder, sentAt: Date): boolean {
  return current.qualifies(order, sentAt);
}

/** The condition in words, for refusals. */
export function describeRule(sentAt: Date): string {
  return current.describe(sentAt);
}
