/** Delivery states of a voucher_outbox row, as the relay writes them. */
export type OutboxStatus = "pending" | "delivered" | "dead";

/** The outbox row's fields that say how the voucher's delivery stands. */
export interface OutboxEntry {
  status: string;
  attempts: number;
  lastError: string | null;
  voucherId: string | null;
}

export type VoucherStatus = "NOT_ELIGIBLE" | "PENDING" | "ISSUED" | "DEAD";

/** What the order service knows about an order's voucher. */
export interface VoucherState {
  status: VoucherStatus;
  attempts: number;
  voucherId: string | null;
  lastError: string | null;
}

/**
 * Derived from the outbox row alone, never stored on the order: the row
 * exists exactly when a voucher is due, and the relay keeps its status, so a
 * second copy on the orders table could only drift from it.
 */
export function voucherStateOf(entry: OutboxEntry | null): VoucherState {
  if (!entry) return { status: "NOT_ELIGIBLE", attempts: 0, voucherId: null, lastError: null };
  const base = { attempts: entry.attempts, voucherId: null, lastError: entry.lastError };
  switch (entry.status) {
    case "pending":
      return { ...base, status: "PENDING" };
    case "delivered":
      return { ...base, status: "ISSUED", voucherId: entry.voucherId, lastError: null };
    case "dead":
      return { ...base, status: "DEAD" };
    default:
      throw new Error(`voucher_outbox has an unknown status ${JSON.stringify(entry.status)}`);
  }
}
