import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { defineFlow, type Flow, type ItemResult } from "@shop/engine";
import { codeName } from "@shop/engine/classify";
import { batchOfSingles } from "@shop/engine/singles";
import { normalizeTraceparent } from "@shop/platform/tracing";
import type { PaymentOutcomeClient } from "@shop/sdk/clients";
import { PaymentEvent, type RecordPaymentOutcomeRequestSchema } from "@shop/sdk/order";

/**
 * The outcome flow on the delivery engine: payment_outbox (written by
 * ChargeOrder and RefundOrder in the transaction that decides), delivered to
 * the order service's PaymentOutcomeService.RecordPaymentOutcome, one call
 * per row (the RPC has no batch form: batchOfSingles runs a claim's calls side
 * by side). The order service keeps "payment:" + message_key in its inbox, so
 * a redelivery after a lost ack is answered changed=false and moves nothing.
 * The payment database's inbox keeps every outcome for good, so a delivered
 * row needs no archive before retention removes it.
 */
export interface OutcomeMessage {
  /** "charge:<order id>" or "refund:<order id>": the payment service's inbox key, and the order service's. */
  messageKey: string;
  orderId: string;
  customerId: string;
  outcome: "CHARGED" | "REFUSED" | "REFUNDED";
  /** Set when REFUSED: INSUFFICIENT_FUNDS, NO_ACCOUNT, NOT_CHARGED. */
  reason: string | null;
  amountCents: number;
  currency: string;
}

/** What a delivery gives back: whether the order changed (false for a replay). */
export interface OutcomeRecorded {
  changed: boolean;
}

const EVENTS = { CHARGED: PaymentEvent.CHARGED, REFUSED: PaymentEvent.REFUSED, REFUNDED: PaymentEvent.REFUNDED } as const;

/**
 * The row's RecordPaymentOutcome request. The stored traceparent goes along
 * normalized to version 00, or empty if it is unreadable: the order service
 * refuses a malformed one (INVALID_ARGUMENT, which would park the row), and
 * tracing must never cost an outcome.
 */
export function requestFor(row: OutcomeMessage & { traceparent?: string }): MessageInitShape<typeof RecordPaymentOutcomeRequestSchema> {
  return {
    messageKey: row.messageKey,
    orderId: row.orderId,
    event: EVENTS[row.outcome],
    refusalReason: row.outcome === "REFUSED" ? (row.reason ?? "") : "",
    amountCents: BigInt(row.amountCents),
    currency: row.currency,
    traceparent: normalizeTraceparent(row.traceparent) ?? "",
  };
}

/**
 * What an operator should check when the order service refuses the payment
 * relay itself (a `misconfigured` code). Names the settings, never the token.
 */
export function misconfigurationHint(code: number): string {
  switch (code as Code) {
    case Code.Unauthenticated:
      return "the order service does not accept the payment relay's token (missing, expired, addressed to another service or from another issuer, or signed by a key it does not trust): check PAYMENT_RELAY_TOKEN / PAYMENT_RELAY_TOKEN_FILE against the order service's keys (AUTH_JWKS_FILE, AUTH_JWKS or AUTH_PUBLIC_KEYS), AUTH_AUDIENCE and AUTH_ISSUER";
    case Code.PermissionDenied:
      return "the payment relay's token lacks the scope RecordPaymentOutcome needs (orders:payment-outcome): give it a token of the payment-relay role (npm run auth -- token --key <file> --role payment-relay) in PAYMENT_RELAY_TOKEN or PAYMENT_RELAY_TOKEN_FILE";
    case Code.Unimplemented:
      return "ORDER_SERVICE_URL does not serve shop.order.v1.PaymentOutcomeService/RecordPaymentOutcome: wrong URL or port (the order service's gRPC port), or an older order service";
    default:
      return "the payment relay's settings for the order service (ORDER_SERVICE_URL, PAYMENT_RELAY_TOKEN) are wrong";
  }
}

/** The flow's columns and texts, without the client: enough for claims, acks, stats and cleanup. */
function outcomeFlowDefinition(orders?: PaymentOutcomeClient) {
  const client = (): PaymentOutcomeClient => {
    if (!orders) throw new Error("this outcome flow was defined without an order service client: it can claim and settle, not deliver");
    return orders;
  };
  const single = async (row: OutcomeMessage & { traceparent?: string }, call: { timeoutMs: number }): Promise<ItemResult<OutcomeRecorded>> => {
    const res = await client().recordPaymentOutcome(requestFor(row), call);
    return { result: { changed: res.changed }, created: res.changed };
  };
  return defineFlow<OutcomeMessage, OutcomeRecorded>({
    name: "payment outcome",
    table: "payment_outbox",
    columns: ["message_key", "order_id", "customer_id", "outcome", "reason", "amount_cents", "currency"],
    fromRow: (r) => ({
      messageKey: String(r.message_key),
      orderId: String(r.order_id),
      customerId: String(r.customer_id),
      outcome: String(r.outcome) as OutcomeMessage["outcome"],
      reason: r.reason === null || r.reason === undefined ? null : String(r.reason),
      amountCents: Number(r.amount_cents),
      currency: String(r.currency),
    }),
    key: { name: "messageKey", of: (row) => row.messageKey },
    deliver: {
      batchMethod: "RecordPaymentOutcome",
      singleMethod: "RecordPaymentOutcome",
      batch: batchOfSingles(single),
      single,
    },
    texts: {
      delivered: "payment outcomes delivered",
      retry: "payment outcome delivery failed; retry scheduled",
      refused: "payment outcome refused for good by the order service; outbox row is dead until requeued",
      gaveUp: (attempts) =>
        `payment outcome delivery gave up after ${attempts} attempts, the last failing on its own account; outbox row is dead until requeued`,
      ackFailed: "payment outcomes recorded but the ack failed; the rows are delivered again after their lease (the order service replays, changed=false)",
      misconfigured: (code) =>
        `the order service refused the payment relay itself (${codeName(code)}): ${misconfigurationHint(code)}; ` +
        "no payment outcome is delivered until this is fixed, the rows stay pending and are retried with backoff",
    },
  });
}

export type OutcomeFlow = Flow<OutcomeMessage, OutcomeRecorded>;

/** The outcome flow for claims, acks, stats and cleanup: it has no client and cannot deliver. */
export const paymentOutbox: OutcomeFlow = outcomeFlowDefinition();

/** The outcome flow delivering with `orders`. */
export function outcomeFlow(orders: PaymentOutcomeClient): OutcomeFlow {
  return outcomeFlowDefinition(orders);
}
