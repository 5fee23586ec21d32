import { Code } from "@connectrpc/connect";
import { toConnectError } from "@shop/platform/errors";
import { createMetrics, Counter, type ProcessMetrics } from "@shop/platform/metrics";

export type MovementCall = "top_up" | "charge" | "refund";
export type MovementResult = "applied" | "refused" | "replayed" | "conflict";

export interface PaymentMetrics extends ProcessMetrics {
  /**
   * payment_requests_total{call,result}: TopUp, ChargeOrder and RefundOrder
   * answers by outcome. applied moved money; refused is a definite refusal
   * (insufficient funds, no account, nothing to refund); replayed answered a
   * recorded outcome (a retry after a lost reply); conflict is ALREADY_EXISTS
   * (a key reused with other facts: a bug or a tampered request). Requests
   * that break the proto's rules never reach the handler: rpc_requests_total
   * counts them, as for every method. Many replays mean lost replies.
   */
  requests: Counter<"call" | "result">;
}

const CALLS: MovementCall[] = ["top_up", "charge", "refund"];
const RESULTS: MovementResult[] = ["applied", "refused", "replayed", "conflict"];

export function createPaymentMetrics(): PaymentMetrics {
  const base = createMetrics();
  const requests = new Counter({
    name: "payment_requests_total",
    help: "TopUp, ChargeOrder and RefundOrder answers by call and result: applied, refused, replayed, conflict.",
    labelNames: ["call", "result"] as const,
    registers: [base.registry],
  });
  for (const call of CALLS) for (const result of RESULTS) requests.inc({ call, result }, 0);
  return { ...base, requests };
}

/** The result label of a failed call; undefined for failures that are not about the request (database, internal). */
export function refusalResult(err: unknown): MovementResult | undefined {
  const code = toConnectError(err).code;
  return code === Code.AlreadyExists ? "conflict" : undefined;
}
