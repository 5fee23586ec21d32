import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { requireCustomer } from "@shop/platform/auth";
import { failpoint } from "@shop/platform/failpoints";
import { currentTraceparent, withChildSpan } from "@shop/platform/tracing";
import {
  AccountSchema,
  MovementKind,
  MovementSchema,
  OrderPaymentSchema,
  PaymentOutcome,
  PaymentService,
  RefusalReason,
  type Account as AccountMessage,
  type Movement as MovementMessage,
  type OrderPayment as OrderPaymentMessage,
} from "@shop/sdk/payment";
import { refusalResult, type MovementCall, type MovementResult } from "../metrics.js";
import type { Account, Decided, Movement, OrderPayment, Payments } from "../payments.js";

export interface PaymentServiceDeps {
  payments: Payments;
  /** Counts TopUp, ChargeOrder and RefundOrder outcomes (payment_requests_total). Default: not counted. */
  requests?: { inc(labels: { call: MovementCall; result: MovementResult }): void };
}

const KINDS = { TOP_UP: MovementKind.TOP_UP, CHARGE: MovementKind.CHARGE, REFUND: MovementKind.REFUND } as const;
const OUTCOMES = { CHARGED: PaymentOutcome.CHARGED, REFUSED: PaymentOutcome.REFUSED, REFUNDED: PaymentOutcome.REFUNDED } as const;
const REASONS = {
  INSUFFICIENT_FUNDS: RefusalReason.INSUFFICIENT_FUNDS,
  NO_ACCOUNT: RefusalReason.NO_ACCOUNT,
  NOT_CHARGED: RefusalReason.NOT_CHARGED,
} as const;

export function toAccountMessage(a: Account): AccountMessage {
  return create(AccountSchema, { customerId: a.customerId, currency: a.currency, balanceCents: BigInt(a.balanceCents), openedAt: timestampFromDate(a.openedAt) });
}

export function toMovementMessage(m: Movement): MovementMessage {
  return create(MovementSchema, {
    id: m.id,
    kind: KINDS[m.kind],
    amountCents: BigInt(m.amountCents),
    currency: m.currency,
    orderId: m.orderId ?? "",
    requestId: m.requestId ?? "",
    createdAt: timestampFromDate(m.createdAt),
  });
}

export function toOrderPaymentMessage(p: OrderPayment): OrderPaymentMessage {
  return create(OrderPaymentSchema, {
    orderId: p.orderId,
    customerId: p.customerId,
    chargeOutcome: OUTCOMES[p.chargeOutcome],
    refusalReason: p.refusalReason ? REASONS[p.refusalReason] : RefusalReason.UNSPECIFIED,
    amountCents: BigInt(p.amountCents),
    currency: p.currency,
    decidedAt: timestampFromDate(p.decidedAt),
    refunded: p.refunded,
    refundedAt: p.refundedAt ? timestampFromDate(p.refundedAt) : undefined,
  });
}

function toDecision({ result, decided }: Decided) {
  return {
    outcome: OUTCOMES[result.outcome],
    reason: result.outcome === "REFUSED" ? REASONS[result.reason] : RefusalReason.UNSPECIFIED,
    movement: result.outcome === "REFUSED" ? undefined : toMovementMessage(result.movement),
    decided,
  };
}

const resultOf = ({ result, decided }: Decided): MovementResult => (!decided ? "replayed" : result.outcome === "REFUSED" ? "refused" : "applied");

/** PaymentService handlers: proto in, plain values to `payments`, proto out. Errors are mapped by the server. */
export function createPaymentServiceImpl({ payments, requests }: PaymentServiceDeps): ServiceImpl<typeof PaymentService> {
  /** Runs a money-moving call, counting its result, refusals included. */
  async function counted<T>(call: MovementCall, run: () => Promise<T>, result: (value: T) => MovementResult): Promise<T> {
    let value: T;
    try {
      value = await run();
    } catch (err) {
      const refused = refusalResult(err);
      if (refused) requests?.inc({ call, result: refused });
      throw err;
    }
    requests?.inc({ call, result: result(value) });
    return value;
  }

  return {
    async openAccount(req) {
      const { account, created } = await payments.openAccount(req.customerId, req.currency);
      return { account: toAccountMessage(account), created };
    },

    async getAccount(req, ctx) {
      requireCustomer(ctx, req.customerId, `the account of customer ${req.customerId}`);
      return { account: toAccountMessage(await payments.getAccount(req.customerId)) };
    },

    async topUp(req) {
      const r = await counted(
        "top_up",
        () => payments.topUp({ customerId: req.customerId, amountCents: Number(req.amountCents), currency: req.currency, requestId: req.requestId }),
        (v) => (v.applied ? "applied" : "replayed"),
      );
      return { account: toAccountMessage(r.account), movement: toMovementMessage(r.movement), applied: r.applied };
    },

    async listStatement(req, ctx) {
      requireCustomer(ctx, req.customerId, `the statement of customer ${req.customerId}`);
      const page = await payments.statement(req.customerId, req.pageSize, req.pageToken);
      return { movements: page.items.map(toMovementMessage), nextPageToken: page.nextPageToken };
    },

    async chargeOrder(req) {
      // The charge's span continues the order's trace; the outcome row stores it, so the order's side continues from here.
      const d = await withChildSpan("payment.charge", req.traceparent || undefined, () =>
        counted(
          "charge",
          () =>
            payments.charge({
              orderId: req.orderId,
              customerId: req.customerId,
              amountCents: Number(req.amountCents),
              currency: req.currency,
              traceparent: req.traceparent ? (currentTraceparent() ?? req.traceparent) : req.traceparent,
            }),
          resultOf,
        ),
        { attributes: { "order.id": req.orderId } },
      );
      failpoint("payment.charge.before-reply");
      return toDecision(d);
    },

    async batchGetOrderPayments(req) {
      return { payments: (await payments.orderPayments(req.orderIds)).map(toOrderPaymentMessage) };
    },

    async listOrderPayments(req) {
      const page = await payments.listOrderPayments(
        req.decidedAfter ? timestampDate(req.decidedAfter) : undefined,
        req.decidedBefore ? timestampDate(req.decidedBefore) : undefined,
        req.pageSize,
        req.pageToken,
      );
      return { payments: page.items.map(toOrderPaymentMessage), nextPageToken: page.nextPageToken };
    },

    async refundOrder(req) {
      const d = await counted("refund", () => payments.refund({ orderId: req.orderId, traceparent: req.traceparent }), resultOf);
      failpoint("payment.refund.before-reply");
      return toDecision(d);
    },
  };
}
