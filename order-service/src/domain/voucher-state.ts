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
 * The outbox row of an order, or, once the retention cleanup has removed a
 * delivered row, the delivery it stood for: the cleanup copies the voucher id
 * to orders.voucher_id in the same transaction that deletes the row, so a
 * missing row with a voucher id on the order means "delivered and archived".
 * The attempt count and error history go with the row.
 */
export function entryOrArchived(entry: OutboxEntry | null, archivedVoucherId: string | null): OutboxEntry | null {
  if (entry || !archivedVoucherId) return entry;
  return { status: "delivered", attempts: 0, lastError: null, voucherId: archivedVoucherId };
}

/**
 * Derived from the outbox row (or its archived voucher id, see
 * entryOrArchived): while a delivery is under way the row is the only record
 * of it, and the relay keeps its status, so a second copy on the orders table
 * could only drift from it. Only a finished delivery is copied to the order.
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
