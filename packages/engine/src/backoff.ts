/** Bounds of the retry delay after a failed delivery. */
export interface BackoffPolicy {
  /** Ceiling of the first retry's delay, in ms. */
  baseMs: number;
  /** Largest delay ever chosen, in ms. */
  maxMs: number;
}

/**
 * Delay before the next attempt of a row that has failed `attempts` times:
 * capped exponential with full jitter, a uniform pick in [0, min(max, base·2^(attempts-1))).
 * Full jitter spreads the rows of a batch that failed together (the receiving
 * service was down for all of them), so they do not all come back in one
 * thundering batch when it recovers.
 */
export function retryDelayMs(attempts: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  const exponent = Math.min(Math.max(attempts, 1) - 1, 40); // 2^40 already passes any sane cap
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** exponent);
  return Math.floor(random() * ceiling);
}

/**
 * Pause of a relay worker after a database error (claim or ack failed):
 * doubles per consecutive error from baseMs up to maxMs, without jitter, so
 * an unreachable database sees a steady, slowing retry and a short log.
 */
export function errorPauseMs(consecutiveErrors: number, policy: BackoffPolicy): number {
  const exponent = Math.min(Math.max(consecutiveErrors, 1) - 1, 40);
  return Math.min(policy.maxMs, policy.baseMs * 2 ** exponent);
}
