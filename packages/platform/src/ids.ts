import { randomBytes } from "node:crypto";

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/**
 * A ULID: 26 characters, 48-bit millisecond time then 80 random bits.
 * Sorting ids sorts by creation time (to the millisecond), which keyset
 * paging "newest first" relies on; within a millisecond the order is random
 * but still total, so paging never skips or repeats a row.
 */
export function newId(now: number = Date.now()): string {
  let time = "";
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[t % 32] + time;
    t = Math.floor(t / 32);
  }
  return time + randomCrockford(16);
}

/** `length` characters of Crockford base32 from crypto randomness (5 bits each). */
export function randomCrockford(length: number): string {
  const bytes = randomBytes(length);
  let out = "";
  for (let i = 0; i < length; i++) out += CROCKFORD[bytes[i]! & 31];
  return out;
}
