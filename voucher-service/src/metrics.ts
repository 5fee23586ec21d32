import { Code } from "@connectrpc/connect";
import { toConnectError } from "@shop/platform/errors";
import { createMetrics, Counter, type ProcessMetrics } from "@shop/platform/metrics";

export type IssueResult = "created" | "reissued" | "replayed" | "conflict" | "invalid";

export interface VoucherMetrics extends ProcessMetrics {
  /**
   * vouchers_issued_total{result}: IssueVoucher answers and BatchIssueVouchers
   * items by outcome. created is a new voucher; reissued is a new voucher for
   * an order whose earlier vouchers were all voided (so created + reissued is
   * every new voucher); replayed returned the order's live voucher (a relay
   * retry, or the reconciler); conflict is ALREADY_EXISTS; invalid is
   * INVALID_ARGUMENT. Many replays mean lost acks; any conflict is a bug or a
   * tampered request; a reissue follows a void and deserves a look.
   */
  issued: Counter<"result">;
}

export function createVoucherMetrics(): VoucherMetrics {
  const base = createMetrics();
  const issued = new Counter({
    name: "vouchers_issued_total",
    help: "Voucher issue requests (single and batch items) by result: created, reissued (new after a void), replayed, conflict, invalid.",
    labelNames: ["result"] as const,
    registers: [base.registry],
  });
  for (const result of ["created", "reissued", "replayed", "conflict", "invalid"]) issued.inc({ result }, 0);
  return { ...base, issued };
}

/** The result label of a refused issue; undefined for failures that are not about the request (database, internal). */
export function refusalResult(err: unknown): IssueResult | undefined {
  const code = toConnectError(err).code;
  if (code === Code.AlreadyExists) return "conflict";
  if (code === Code.InvalidArgument) return "invalid";
  return undefined;
}
