import { Code } from "@connectrpc/connect";
import { defineFlow, type Claimed, type Flow, type ItemResult } from "@shop/engine";
import { codeName } from "@shop/engine/classify";
import { batchOfSingles } from "@shop/engine/singles";
import { normalizeTraceparent } from "@shop/platform/tracing";
import type { PaymentClient } from "@shop/sdk/clients";
import { PaymentOutcome } from "@shop/sdk/payment";

/**
 * The charge and refund flows on the delivery engine. charge_outbox is
 * written by CreateOrder in the transaction that creates a paid order;
 * refund_outbox by the transaction that cancels a charged order (or learns
 * that a cancelled one was charged). Each row is one call to the payment
 * service (ChargeOrder, RefundOrder), whose inbox decides it exactly once and
 * answers a replay with the same outcome. What was decided comes back to the
 * order through the payment service's own outbox (RecordPaymentOutcome), so
 * a delivered row here only means "the payment service has decided".
 */
export interface ChargeRow {
  orderId: string;
  customerId: string;
  amountCents: number;
  currency: string;
}

export interface RefundRow {
  orderId: string;
  amountCents: number;
  currency: string;
}

/** The payment service's answer, for logs: CHARGED, REFUSED or REFUNDED. */
export interface PaymentDecision {
  outcome: string;
}

/** What an operator should check when the payment service refuses the order service's relay itself. */
export function paymentMisconfigurationHint(code: number): string {
  switch (code as Code) {
    case Code.Unauthenticated:
      return "the payment service does not accept the relay's token (missing, expired, not addressed to payment-service, or signed by a key it does not trust): check RELAY_TOKEN / RELAY_TOKEN_FILE against the payment service's AUTH_JWKS_FILE / AUTH_JWKS / AUTH_PUBLIC_KEYS, AUTH_AUDIENCE and AUTH_ISSUER";
    case Code.PermissionDenied:
      return "the relay's token lacks payments:charge: give the relay a token of the relay role (npm run auth -- token --key <file> --role relay)";
    case Code.Unimplemented:
      return "PAYMENT_SERVICE_URL does not serve shop.payment.v1.PaymentService: wrong URL or port";
    default:
      return "the relay's settings for the payment service are wrong";
  }
}

function decisionOf(outcome: PaymentOutcome, decided: boolean, method: string): ItemResult<PaymentDecision> {
  if (outcome === PaymentOutcome.UNSPECIFIED) return { own: `${method}: an answer without an outcome` };
  return { result: { outcome: PaymentOutcome[outcome] }, created: decided };
}

const texts = (what: "charge" | "refund") => ({
  delivered: `${what} requests decided by the payment service`,
  retry: `${what} request failed; retry scheduled`,
  refused: `${what} request refused for good; outbox row is dead until requeued (RequeuePayment)`,
  ackFailed: `${what}s decided but the ack failed; the rows are sent again after their lease (the payment service replays its decision)`,
  misconfigured: (code: number) =>
    `the payment service refused the relay itself (${codeName(code)}): ${paymentMisconfigurationHint(code)}; ` +
    `no ${what} is delivered until this is fixed, the rows stay pending and are retried with backoff`,
});

function chargeFlowDefinition(payments?: PaymentClient): Flow<ChargeRow, PaymentDecision> {
  const client = (): PaymentClient => {
    if (!payments) throw new Error("this charge flow was defined without a payment client: it can claim and settle, not deliver");
    return payments;
  };
  const single = async (row: Claimed<ChargeRow>, call: { timeoutMs: number }): Promise<ItemResult<PaymentDecision>> => {
    const res = await client().chargeOrder(
      {
        orderId: row.orderId,
        customerId: row.customerId,
        amountCents: BigInt(row.amountCents),
        currency: row.currency,
        traceparent: normalizeTraceparent(row.traceparent) ?? "",
      },
      call,
    );
    return decisionOf(res.outcome, res.decided, "ChargeOrder");
  };
  return defineFlow<ChargeRow, PaymentDecision>({
    name: "charge",
    table: "charge_outbox",
    columns: ["order_id", "customer_id", "amount_cents", "currency"],
    fromRow: (r) => ({ orderId: String(r.order_id), customerId: String(r.customer_id), amountCents: Number(r.amount_cents), currency: String(r.currency) }),
    key: { name: "orderId", of: (row) => row.orderId },
    deliver: { batchMethod: "ChargeOrder", singleMethod: "ChargeOrder", batch: batchOfSingles(single), single },
    texts: texts("charge"),
  });
}

function refundFlowDefinition(payments?: PaymentClient): Flow<RefundRow, PaymentDecision> {
  const client = (): PaymentClient => {
    if (!payments) throw new Error("this refund flow was defined without a payment client: it can claim and settle, not deliver");
    return payments;
  };
  const single = async (row: Claimed<RefundRow>, call: { timeoutMs: number }): Promise<ItemResult<PaymentDecision>> => {
    const res = await client().refundOrder({ orderId: row.orderId, traceparent: normalizeTraceparent(row.traceparent) ?? "" }, call);
    return decisionOf(res.outcome, res.decided, "RefundOrder");
  };
  return defineFlow<RefundRow, PaymentDecision>({
    name: "refund",
    table: "refund_outbox",
    columns: ["order_id", "amount_cents", "currency"],
    fromRow: (r) => ({ orderId: String(r.order_id), amountCents: Number(r.amount_cents), currency: String(r.currency) }),
    key: { name: "orderId", of: (row) => row.orderId },
    deliver: { batchMethod: "RefundOrder", singleMethod: "RefundOrder", batch: batchOfSingles(single), single },
    texts: texts("refund"),
  });
}

/** The flows for claims, acks, stats and cleanup, without a client. */
export const chargeOutbox = chargeFlowDefinition();
export const refundOutbox = refundFlowDefinition();

export function chargeFlow(payments: PaymentClient): Flow<ChargeRow, PaymentDecision> {
  return chargeFlowDefinition(payments);
}

export function refundFlow(payments: PaymentClient): Flow<RefundRow, PaymentDecision> {
  return refundFlowDefinition(payments);
}
