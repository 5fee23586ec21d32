import { Writable } from "node:stream";
import type { DescMethod } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { pino } from "pino";
import type { RowDataPacket } from "mysql2/promise";
import { AUDIENCES, DEFAULT_ISSUER, SCOPES } from "@shop/platform/auth";
import { createPool, type Pool } from "@shop/platform/db";
import { startOrderService, type RunningOrderService } from "@shop/order-service/service";
import { startPaymentService, type RunningPaymentService } from "@shop/payment-service/service";
import {
  createOrderClient,
  createPaymentClient,
  createPaymentOutcomeClient,
  type OrderClient,
  type PaymentClient,
  type PaymentOutcomeClient,
} from "@shop/sdk/clients";
import { OrderService, PaymentEvent, PaymentMethod, PaymentOutcomeService, PaymentStatus } from "@shop/sdk/order";
import { PaymentOutcome, PaymentService } from "@shop/sdk/payment";
import { allScopesToken, testAuth, testSigningKey, testToken } from "@shop/testkit/auth";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

/**
 * Requests that decode, at every payment RPC and at the order service's
 * payment RPCs, refused by the proto's rules or by the domain (an unknown
 * account, a top-up request id reused with another amount, an order charged
 * again with another amount or customer, an outcome whose amount is not the
 * order's, an outcome that contradicts the one recorded, a requeue with
 * nothing owed). On gRPC and on Connect JSON alike each gets its status and a
 * message naming the field or the fact, changes no row in the order or the
 * payment database, is logged once (method, status, transport, reason) and
 * counted in rpc_server_handled_total; a conflicting top-up or charge is
 * counted in payment_requests_total{result="conflict"} too.
 */

const logLines: Array<Record<string, unknown> & { msg: string }> = [];
const logger = pino(
  { level: "info" },
  new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n")) if (l) logLines.push(JSON.parse(l));
      done();
    },
  }),
);

/** Every payment scope, addressed to the payment service (which accepts only its own audience). */
const paymentToken = testToken({
  subject: "test-harness",
  scopes: [SCOPES.paymentsWrite, SCOPES.paymentsRead, SCOPES.paymentsCharge],
  audience: AUDIENCES.payments,
  ttlSeconds: 86_400,
});

const LONG = "x".repeat(65);
const BIG = 9_223_372_036_854_775_807n;
const CHARGED_ORDER = "01HBADCHARGE00000000000000";
const UNKNOWN_ORDER = "01HZZZZZZZZZZZZZZZZZZZZZZZ";
const TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/** A page token that passes the pattern but is no page token of the service's. */
const FORGED_TOKEN = "bm90LWEtdG9rZW4";

type Transport = "grpc" | "connect";

interface Clients {
  payments: PaymentClient;
  orders: OrderClient;
  outcomes: PaymentOutcomeClient;
}

interface Case {
  name: string;
  method: DescMethod;
  call: (c: Clients) => Promise<unknown>;
  code: Code;
  /** Text the message must contain: the field, or the fact refused. */
  mentions: string;
  /** Also counted in the payment service's payment_requests_total{call,result="conflict"}. */
  conflict?: "top_up" | "charge";
  /** Only on this transport: the Connect client cannot write a Timestamp past 9999 as JSON (test/hostile-input.test.ts sends such JSON by hand). */
  only?: Transport;
}

const ts = (iso: string) => timestampFromDate(new Date(iso));

describe("bad input at the payment service and the order service's payment RPCs", function () {
  this.timeout(60_000);
  let orderDb: TestDatabase;
  let paymentDb: TestDatabase;
  let orderSvc: RunningOrderService;
  let paymentSvc: RunningPaymentService;
  let orderPool: Pool;
  let paymentPool: Pool;
  const closers: Array<() => void> = [];
  const clients = {} as Record<Transport, Clients>;
  /** Orders seeded in the order database. */
  const seed = { unpaid: "", awaiting: "", paid: "" };

  /** Every row of every table of the order and payment databases. */
  async function snapshot(): Promise<string> {
    const dump = async (pool: Pool) => {
      const [tables] = await pool.query<RowDataPacket[]>("SHOW TABLES");
      const out: Record<string, unknown> = {};
      for (const t of tables.map((r) => String(Object.values(r)[0]))) {
        const [rows] = await pool.query<RowDataPacket[]>(`SELECT * FROM \`${t}\``);
        out[t] = rows.map((r) => JSON.stringify(r)).sort();
      }
      return out;
    };
    return JSON.stringify([await dump(orderPool), await dump(paymentPool)]);
  }

  /** The value of one counter series on a service's /metrics (0 when absent). */
  async function counter(httpPort: number, name: string, labels: Record<string, string>): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    let total = 0;
    for (const line of text.split("\n")) {
      const m = /^(\w+)\{([^}]*)\} (\d+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      const have = Object.fromEntries([...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
      if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[3]);
    }
    return total;
  }

  before(async () => {
    [orderDb, paymentDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher")]);
    // Neither relay runs: the charge requests and the outcome rows stay where they are.
    paymentSvc = await startPaymentService({
      auth: { keys: [testSigningKey.publicJwk], audience: AUDIENCES.payments, issuer: DEFAULT_ISSUER },
      databaseUrl: paymentDb.url,
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      logger,
      poolSize: 5,
      graceMs: 500,
    });
    orderSvc = await startOrderService({
      config: {
        databaseUrl: orderDb.url,
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        poolSize: 5,
        voucherServiceUrl: "http://127.0.0.1:9",
        relayEnabled: false,
        auth: testAuth,
      },
      logger,
      relay: false,
      shutdownGraceMs: 500,
    });
    orderPool = createPool({ url: orderDb.url, connectionLimit: 2 });
    paymentPool = createPool({ url: paymentDb.url, connectionLimit: 2 });
    for (const protocol of ["grpc", "connect"] as const) {
      const url = (svc: { grpcPort: number; httpPort: number }) => `http://127.0.0.1:${protocol === "grpc" ? svc.grpcPort : svc.httpPort}`;
      const p = createPaymentClient({ token: paymentToken, protocol, baseUrl: url(paymentSvc), defaultTimeoutMs: 10_000 });
      const o = createOrderClient({ token: allScopesToken, protocol, baseUrl: url(orderSvc), defaultTimeoutMs: 10_000 });
      const r = createPaymentOutcomeClient({ token: allScopesToken, protocol, baseUrl: url(orderSvc), defaultTimeoutMs: 10_000 });
      closers.push(p.close, o.close, r.close);
      clients[protocol] = { payments: p.client, orders: o.client, outcomes: r.client };
    }
    // Something for the calls to collide with: two accounts, a top-up, a charge.
    const { payments, orders, outcomes } = clients.grpc;
    await payments.openAccount({ customerId: "cust-1", currency: "EUR" });
    await payments.openAccount({ customerId: "cust-2", currency: "EUR" });
    await payments.topUp({ customerId: "cust-1", amountCents: 50_000n, currency: "EUR", requestId: "top-1" });
    const charge = await payments.chargeOrder({ orderId: CHARGED_ORDER, customerId: "cust-1", amountCents: 20_000n, currency: "EUR" });
    expect(charge.decided).to.equal(true);
    // An order without payment, one awaiting its charge, one paid.
    seed.unpaid = (await orders.createOrder({ customerId: "cust-1", totalCents: 12_000n, currency: "EUR", requestId: "unpaid-1" })).order!.id;
    seed.awaiting = (await orders.createOrder({ customerId: "cust-1", totalCents: 20_000n, currency: "EUR", requestId: "paid-1", paymentMethod: PaymentMethod.ACCOUNT })).order!.id;
    seed.paid = (await orders.createOrder({ customerId: "cust-1", totalCents: 30_000n, currency: "EUR", requestId: "paid-2", paymentMethod: PaymentMethod.ACCOUNT })).order!.id;
    const recorded = await outcomes.recordPaymentOutcome({
      messageKey: `charge:${seed.paid}`,
      orderId: seed.paid,
      event: PaymentEvent.CHARGED,
      amountCents: 30_000n,
      currency: "EUR",
    });
    expect(recorded.changed).to.equal(true);
  });

  after(async () => {
    closers.forEach((c) => c());
    await Promise.allSettled([orderSvc?.stop(), paymentSvc?.stop(), orderPool?.end(), paymentPool?.end()]);
    await Promise.allSettled([orderDb?.drop(), paymentDb?.drop()]);
  });

  const P = PaymentService.method;
  const O = OrderService.method;
  const record = PaymentOutcomeService.method.recordPaymentOutcome;

  const topUp = (c: Clients, over: Partial<{ customerId: string; amountCents: bigint; currency: string; requestId: string }>) =>
    c.payments.topUp({ customerId: "cust-1", amountCents: 1_000n, currency: "EUR", requestId: "top-new", ...over });
  const charge = (c: Clients, over: Partial<{ orderId: string; customerId: string; amountCents: bigint; currency: string; traceparent: string }>) =>
    c.payments.chargeOrder({ orderId: "01HNEWCHARGE00000000000000", customerId: "cust-1", amountCents: 1_000n, currency: "EUR", ...over });
  const outcome = (
    c: Clients,
    over: Partial<{ messageKey: string; orderId: string; event: PaymentEvent; refusalReason: string; amountCents: bigint; currency: string; traceparent: string }>,
  ) => {
    const orderId = over.orderId ?? seed.awaiting;
    return c.outcomes.recordPaymentOutcome({ messageKey: `charge:${orderId}`, orderId, event: PaymentEvent.CHARGED, amountCents: 20_000n, currency: "EUR", ...over });
  };
  const badIds: Array<[string, string, string]> = [
    ["an empty", "", "required"],
    ["an overlong", LONG, "at most 64"],
    ["a malformed (spaces)", "a b", "does not match"],
    ["a unicode", "kündé", "does not match"],
  ];

  const cases: Case[] = [
    // PaymentService.OpenAccount
    ...badIds.map(([what, id]): Case => ({ name: `OpenAccount with ${what} customer_id`, method: P.openAccount, call: (c) => c.payments.openAccount({ customerId: id, currency: "EUR" }), code: Code.InvalidArgument, mentions: "customer_id" })),
    { name: "OpenAccount in USD", method: P.openAccount, call: (c) => c.payments.openAccount({ customerId: "cust-3", currency: "USD" }), code: Code.InvalidArgument, mentions: "currency" },
    { name: "OpenAccount in lower-case eur", method: P.openAccount, call: (c) => c.payments.openAccount({ customerId: "cust-3", currency: "eur" }), code: Code.InvalidArgument, mentions: "currency" },
    { name: "OpenAccount with no currency", method: P.openAccount, call: (c) => c.payments.openAccount({ customerId: "cust-3", currency: "" }), code: Code.InvalidArgument, mentions: "currency" },
    // PaymentService.GetAccount
    ...badIds.map(([what, id]): Case => ({ name: `GetAccount with ${what} customer_id`, method: P.getAccount, call: (c) => c.payments.getAccount({ customerId: id }), code: Code.InvalidArgument, mentions: "customer_id" })),
    { name: "GetAccount of a customer with no account", method: P.getAccount, call: (c) => c.payments.getAccount({ customerId: "nobody" }), code: Code.NotFound, mentions: "nobody" },
    // PaymentService.TopUp
    ...badIds.map(([what, id]): Case => ({ name: `TopUp with ${what} customer_id`, method: P.topUp, call: (c) => topUp(c, { customerId: id }), code: Code.InvalidArgument, mentions: "customer_id" })),
    ...badIds.map(([what, id]): Case => ({ name: `TopUp with ${what} request_id`, method: P.topUp, call: (c) => topUp(c, { requestId: id }), code: Code.InvalidArgument, mentions: "request_id" })),
    { name: "TopUp of zero", method: P.topUp, call: (c) => topUp(c, { amountCents: 0n }), code: Code.InvalidArgument, mentions: "amount_cents" },
    { name: "TopUp of -1 cent", method: P.topUp, call: (c) => topUp(c, { amountCents: -1n }), code: Code.InvalidArgument, mentions: "amount_cents" },
    { name: "TopUp of 10^10 + 1 cents", method: P.topUp, call: (c) => topUp(c, { amountCents: 10_000_000_001n }), code: Code.InvalidArgument, mentions: "amount_cents" },
    { name: "TopUp of the largest int64", method: P.topUp, call: (c) => topUp(c, { amountCents: BIG }), code: Code.InvalidArgument, mentions: "amount_cents" },
    { name: "TopUp in USD", method: P.topUp, call: (c) => topUp(c, { currency: "USD" }), code: Code.InvalidArgument, mentions: "currency" },
    { name: "TopUp of a customer with no account", method: P.topUp, call: (c) => topUp(c, { customerId: "nobody", requestId: "top-nobody" }), code: Code.NotFound, mentions: "nobody" },
    {
      name: "TopUp reusing a request_id with another amount",
      method: P.topUp,
      call: (c) => topUp(c, { requestId: "top-1", amountCents: 50_001n }),
      code: Code.AlreadyExists,
      mentions: "top-1",
      conflict: "top_up",
    },
    {
      name: "TopUp reusing a request_id for another customer",
      method: P.topUp,
      call: (c) => topUp(c, { requestId: "top-1", customerId: "cust-2", amountCents: 50_000n }),
      code: Code.AlreadyExists,
      mentions: "top-1",
      conflict: "top_up",
    },
    // PaymentService.ListStatement
    ...badIds.map(([what, id]): Case => ({ name: `ListStatement with ${what} customer_id`, method: P.listStatement, call: (c) => c.payments.listStatement({ customerId: id }), code: Code.InvalidArgument, mentions: "customer_id" })),
    { name: "ListStatement with page_size -1", method: P.listStatement, call: (c) => c.payments.listStatement({ customerId: "cust-1", pageSize: -1 }), code: Code.InvalidArgument, mentions: "page_size" },
    { name: "ListStatement with a malformed page_token", method: P.listStatement, call: (c) => c.payments.listStatement({ customerId: "cust-1", pageToken: "%%not%%" }), code: Code.InvalidArgument, mentions: "page_token" },
    { name: "ListStatement with a forged page_token", method: P.listStatement, call: (c) => c.payments.listStatement({ customerId: "cust-1", pageToken: FORGED_TOKEN }), code: Code.InvalidArgument, mentions: "page_token" },
    { name: "ListStatement with an overlong page_token", method: P.listStatement, call: (c) => c.payments.listStatement({ customerId: "cust-1", pageToken: "a".repeat(201) }), code: Code.InvalidArgument, mentions: "page_token" },
    // PaymentService.ChargeOrder
    ...badIds.map(([what, id]): Case => ({ name: `ChargeOrder with ${what} order_id`, method: P.chargeOrder, call: (c) => charge(c, { orderId: id }), code: Code.InvalidArgument, mentions: "order_id" })),
    ...badIds.map(([what, id]): Case => ({ name: `ChargeOrder with ${what} customer_id`, method: P.chargeOrder, call: (c) => charge(c, { customerId: id }), code: Code.InvalidArgument, mentions: "customer_id" })),
    { name: "ChargeOrder of zero", method: P.chargeOrder, call: (c) => charge(c, { amountCents: 0n }), code: Code.InvalidArgument, mentions: "amount_cents" },
    { name: "ChargeOrder of -5 cents", method: P.chargeOrder, call: (c) => charge(c, { amountCents: -5n }), code: Code.InvalidArgument, mentions: "amount_cents" },
    { name: "ChargeOrder of the largest int64", method: P.chargeOrder, call: (c) => charge(c, { amountCents: BIG }), code: Code.InvalidArgument, mentions: "amount_cents" },
    { name: "ChargeOrder in USD", method: P.chargeOrder, call: (c) => charge(c, { currency: "USD" }), code: Code.InvalidArgument, mentions: "currency" },
    { name: "ChargeOrder with a malformed traceparent", method: P.chargeOrder, call: (c) => charge(c, { traceparent: "00-nope" }), code: Code.InvalidArgument, mentions: "traceparent" },
    { name: "ChargeOrder with an upper-case traceparent", method: P.chargeOrder, call: (c) => charge(c, { traceparent: TRACE.toUpperCase() }), code: Code.InvalidArgument, mentions: "traceparent" },
    {
      name: "ChargeOrder of a charged order with another amount",
      method: P.chargeOrder,
      call: (c) => charge(c, { orderId: CHARGED_ORDER, amountCents: 20_001n }),
      code: Code.AlreadyExists,
      mentions: CHARGED_ORDER,
      conflict: "charge",
    },
    {
      name: "ChargeOrder of a charged order for another customer",
      method: P.chargeOrder,
      call: (c) => charge(c, { orderId: CHARGED_ORDER, customerId: "cust-2", amountCents: 20_000n }),
      code: Code.AlreadyExists,
      mentions: CHARGED_ORDER,
      conflict: "charge",
    },
    // PaymentService.RefundOrder
    ...badIds.map(([what, id]): Case => ({ name: `RefundOrder with ${what} order_id`, method: P.refundOrder, call: (c) => c.payments.refundOrder({ orderId: id }), code: Code.InvalidArgument, mentions: "order_id" })),
    { name: "RefundOrder with a malformed traceparent", method: P.refundOrder, call: (c) => c.payments.refundOrder({ orderId: CHARGED_ORDER, traceparent: "01-x" }), code: Code.InvalidArgument, mentions: "traceparent" },
    // PaymentService.BatchGetOrderPayments
    {
      name: "BatchGetOrderPayments with 1001 ids",
      method: P.batchGetOrderPayments,
      call: (c) => c.payments.batchGetOrderPayments({ orderIds: Array.from({ length: 1001 }, (_, i) => `o-${i}`) }),
      code: Code.InvalidArgument,
      mentions: "order_ids",
    },
    { name: "BatchGetOrderPayments with an empty id", method: P.batchGetOrderPayments, call: (c) => c.payments.batchGetOrderPayments({ orderIds: [CHARGED_ORDER, ""] }), code: Code.InvalidArgument, mentions: "order_ids[1]" },
    { name: "BatchGetOrderPayments with a malformed id", method: P.batchGetOrderPayments, call: (c) => c.payments.batchGetOrderPayments({ orderIds: ["a b"] }), code: Code.InvalidArgument, mentions: "order_ids[0]" },
    { name: "BatchGetOrderPayments with an overlong id", method: P.batchGetOrderPayments, call: (c) => c.payments.batchGetOrderPayments({ orderIds: [LONG] }), code: Code.InvalidArgument, mentions: "order_ids[0]" },
    // PaymentService.ListOrderPayments
    {
      name: "ListOrderPayments with decided_after later than decided_before",
      method: P.listOrderPayments,
      call: (c) => c.payments.listOrderPayments({ decidedAfter: ts("2030-01-01T00:00:00Z"), decidedBefore: ts("2020-01-01T00:00:00Z") }),
      code: Code.InvalidArgument,
      mentions: "decided_after",
    },
    {
      name: "ListOrderPayments with a bound past the year 9999",
      method: P.listOrderPayments,
      call: (c) => c.payments.listOrderPayments({ decidedBefore: { seconds: 400_000_000_000n, nanos: 0 } }),
      code: Code.InvalidArgument,
      mentions: "decided_before",
      only: "grpc",
    },
    { name: "ListOrderPayments with page_size -1", method: P.listOrderPayments, call: (c) => c.payments.listOrderPayments({ pageSize: -1 }), code: Code.InvalidArgument, mentions: "page_size" },
    { name: "ListOrderPayments with a malformed page_token", method: P.listOrderPayments, call: (c) => c.payments.listOrderPayments({ pageToken: "no!" }), code: Code.InvalidArgument, mentions: "page_token" },
    { name: "ListOrderPayments with a forged page_token", method: P.listOrderPayments, call: (c) => c.payments.listOrderPayments({ pageToken: FORGED_TOKEN }), code: Code.InvalidArgument, mentions: "page_token" },

    // OrderService.CreateOrder with payment_method
    {
      name: "CreateOrder with payment_method 2",
      method: O.createOrder,
      call: (c) => c.orders.createOrder({ customerId: "cust-1", totalCents: 1_000n, currency: "EUR", requestId: "bad-pm-1", paymentMethod: 2 as PaymentMethod }),
      code: Code.InvalidArgument,
      mentions: "payment_method",
    },
    {
      name: "CreateOrder with payment_method -1",
      method: O.createOrder,
      call: (c) => c.orders.createOrder({ customerId: "cust-1", totalCents: 1_000n, currency: "EUR", requestId: "bad-pm-2", paymentMethod: -1 as PaymentMethod }),
      code: Code.InvalidArgument,
      mentions: "payment_method",
    },
    {
      name: "CreateOrder reusing the request_id of an order without payment, now with payment",
      method: O.createOrder,
      call: (c) => c.orders.createOrder({ customerId: "cust-1", totalCents: 12_000n, currency: "EUR", requestId: "unpaid-1", paymentMethod: PaymentMethod.ACCOUNT }),
      code: Code.AlreadyExists,
      mentions: "payment_method",
    },
    {
      name: "CreateOrder reusing the request_id of a paid order, now without payment",
      method: O.createOrder,
      call: (c) => c.orders.createOrder({ customerId: "cust-1", totalCents: 20_000n, currency: "EUR", requestId: "paid-1" }),
      code: Code.AlreadyExists,
      mentions: "payment_method",
    },
    // OrderService.RequeuePayment
    ...badIds.map(([what, id]): Case => ({ name: `RequeuePayment with ${what} order_id`, method: O.requeuePayment, call: (c) => c.orders.requeuePayment({ orderId: id }), code: Code.InvalidArgument, mentions: "order_id" })),
    { name: "RequeuePayment of an unknown order", method: O.requeuePayment, call: (c) => c.orders.requeuePayment({ orderId: UNKNOWN_ORDER }), code: Code.NotFound, mentions: UNKNOWN_ORDER },
    { name: "RequeuePayment of an order without payment", method: O.requeuePayment, call: (c) => c.orders.requeuePayment({ orderId: seed.unpaid }), code: Code.FailedPrecondition, mentions: "no payment" },
    { name: "RequeuePayment of a charged order", method: O.requeuePayment, call: (c) => c.orders.requeuePayment({ orderId: seed.paid }), code: Code.FailedPrecondition, mentions: "CHARGED" },
    // OrderService.ListOrdersByPaymentStatus
    {
      name: "ListOrdersByPaymentStatus with no payment_status",
      method: O.listOrdersByPaymentStatus,
      call: (c) => c.orders.listOrdersByPaymentStatus({}),
      code: Code.InvalidArgument,
      mentions: "payment_status",
    },
    {
      name: "ListOrdersByPaymentStatus with payment_status 7",
      method: O.listOrdersByPaymentStatus,
      call: (c) => c.orders.listOrdersByPaymentStatus({ paymentStatus: 7 as PaymentStatus }),
      code: Code.InvalidArgument,
      mentions: "payment_status",
    },
    {
      name: "ListOrdersByPaymentStatus with created_before past the year 9999",
      method: O.listOrdersByPaymentStatus,
      call: (c) => c.orders.listOrdersByPaymentStatus({ paymentStatus: PaymentStatus.AWAITING, createdBefore: { seconds: 400_000_000_000n, nanos: 0 } }),
      code: Code.InvalidArgument,
      mentions: "created_before",
      only: "grpc",
    },
    {
      name: "ListOrdersByPaymentStatus with page_size -1",
      method: O.listOrdersByPaymentStatus,
      call: (c) => c.orders.listOrdersByPaymentStatus({ paymentStatus: PaymentStatus.AWAITING, pageSize: -1 }),
      code: Code.InvalidArgument,
      mentions: "page_size",
    },
    {
      name: "ListOrdersByPaymentStatus with a malformed page_token",
      method: O.listOrdersByPaymentStatus,
      call: (c) => c.orders.listOrdersByPaymentStatus({ paymentStatus: PaymentStatus.AWAITING, pageToken: "%%" }),
      code: Code.InvalidArgument,
      mentions: "page_token",
    },
    {
      name: "ListOrdersByPaymentStatus with a forged page_token",
      method: O.listOrdersByPaymentStatus,
      call: (c) => c.orders.listOrdersByPaymentStatus({ paymentStatus: PaymentStatus.AWAITING, pageToken: FORGED_TOKEN }),
      code: Code.InvalidArgument,
      mentions: "page_token",
    },
    // OrderService.MarkOrderSent: an order awaiting its payment is not sent.
    { name: "MarkOrderSent of an order awaiting payment", method: O.markOrderSent, call: (c) => c.orders.markOrderSent({ orderId: seed.awaiting }), code: Code.FailedPrecondition, mentions: "awaiting payment" },

    // PaymentOutcomeService.RecordPaymentOutcome: rules
    { name: "RecordPaymentOutcome with an empty message_key", method: record, call: (c) => outcome(c, { messageKey: "" }), code: Code.InvalidArgument, mentions: "message_key" },
    { name: "RecordPaymentOutcome with a message_key of 129 characters", method: record, call: (c) => outcome(c, { messageKey: `charge:${"x".repeat(122)}` }), code: Code.InvalidArgument, mentions: "message_key" },
    { name: "RecordPaymentOutcome with a message_key with spaces", method: record, call: (c) => outcome(c, { messageKey: "charge: x" }), code: Code.InvalidArgument, mentions: "message_key" },
    ...badIds.map(([what, id]): Case => ({ name: `RecordPaymentOutcome with ${what} order_id`, method: record, call: (c) => outcome(c, { orderId: id, messageKey: "charge:x" }), code: Code.InvalidArgument, mentions: "order_id" })),
    { name: "RecordPaymentOutcome with no event", method: record, call: (c) => outcome(c, { event: PaymentEvent.UNSPECIFIED }), code: Code.InvalidArgument, mentions: "event" },
    { name: "RecordPaymentOutcome with event 4", method: record, call: (c) => outcome(c, { event: 4 as PaymentEvent }), code: Code.InvalidArgument, mentions: "event" },
    { name: "RecordPaymentOutcome with a lower-case refusal_reason", method: record, call: (c) => outcome(c, { event: PaymentEvent.REFUSED, refusalReason: "no_account" }), code: Code.InvalidArgument, mentions: "refusal_reason" },
    { name: "RecordPaymentOutcome with a 33-character refusal_reason", method: record, call: (c) => outcome(c, { event: PaymentEvent.REFUSED, refusalReason: "X".repeat(33) }), code: Code.InvalidArgument, mentions: "refusal_reason" },
    { name: "RecordPaymentOutcome of zero", method: record, call: (c) => outcome(c, { amountCents: 0n }), code: Code.InvalidArgument, mentions: "amount_cents" },
    { name: "RecordPaymentOutcome of the largest int64", method: record, call: (c) => outcome(c, { amountCents: BIG }), code: Code.InvalidArgument, mentions: "amount_cents" },
    { name: "RecordPaymentOutcome in USD", method: record, call: (c) => outcome(c, { currency: "USD" }), code: Code.InvalidArgument, mentions: "currency" },
    { name: "RecordPaymentOutcome with a malformed traceparent", method: record, call: (c) => outcome(c, { traceparent: "00-zz" }), code: Code.InvalidArgument, mentions: "traceparent" },
    // RecordPaymentOutcome: refused by the order
    { name: "RecordPaymentOutcome with an amount that is not the order's", method: record, call: (c) => outcome(c, { amountCents: 20_001n }), code: Code.FailedPrecondition, mentions: "20001" },
    {
      name: "RecordPaymentOutcome of a refusal with an amount that is not the order's",
      method: record,
      call: (c) => outcome(c, { event: PaymentEvent.REFUSED, refusalReason: "INSUFFICIENT_FUNDS", amountCents: 1n }),
      code: Code.FailedPrecondition,
      mentions: "20000",
    },
    { name: "RecordPaymentOutcome for an unknown order", method: record, call: (c) => outcome(c, { orderId: UNKNOWN_ORDER }), code: Code.NotFound, mentions: UNKNOWN_ORDER },
    { name: "RecordPaymentOutcome for an order without payment", method: record, call: (c) => outcome(c, { orderId: seed.unpaid, amountCents: 12_000n }), code: Code.FailedPrecondition, mentions: "without payment" },
    {
      name: "RecordPaymentOutcome under another order's key",
      method: record,
      call: (c) => outcome(c, { messageKey: `charge:${seed.paid}` }),
      code: Code.InvalidArgument,
      mentions: "message_key",
    },
    {
      name: "RecordPaymentOutcome of a charge under a refund key",
      method: record,
      call: (c) => outcome(c, { messageKey: `refund:${seed.awaiting}` }),
      code: Code.InvalidArgument,
      mentions: "message_key",
    },
    {
      name: "RecordPaymentOutcome of a refund under a charge key",
      method: record,
      call: (c) => outcome(c, { orderId: seed.paid, messageKey: `charge:${seed.paid}`, event: PaymentEvent.REFUNDED, amountCents: 30_000n }),
      code: Code.InvalidArgument,
      mentions: "message_key",
    },
    {
      name: "RecordPaymentOutcome of a refusal contradicting the charge recorded",
      method: record,
      call: (c) => outcome(c, { orderId: seed.paid, event: PaymentEvent.REFUSED, refusalReason: "INSUFFICIENT_FUNDS", amountCents: 30_000n }),
      code: Code.FailedPrecondition,
      mentions: "other facts",
    },
    {
      name: "RecordPaymentOutcome of a refund of an order that owes none",
      method: record,
      call: (c) => outcome(c, { orderId: seed.paid, messageKey: `refund:${seed.paid}`, event: PaymentEvent.REFUNDED, amountCents: 30_000n }),
      code: Code.FailedPrecondition,
      mentions: "contradicts",
    },
    {
      name: "RecordPaymentOutcome of a refused refund",
      method: record,
      call: (c) => outcome(c, { orderId: seed.paid, messageKey: `refund:${seed.paid}`, event: PaymentEvent.REFUSED, refusalReason: "NOT_CHARGED", amountCents: 30_000n }),
      code: Code.FailedPrecondition,
      mentions: "a person",
    },
  ];

  it("covers every payment RPC and every payment RPC of the order service", () => {
    for (const m of [...PaymentService.methods, record, O.requeuePayment, O.listOrdersByPaymentStatus]) {
      expect(cases.some((c) => c.method === m), m.name).to.equal(true);
    }
    expect(cases.filter((c) => c.code !== Code.InvalidArgument).length, "refusals by the domain").to.be.at.least(15);
  });

  for (const transport of ["grpc", "connect"] as const) {
    describe(`over ${transport === "grpc" ? "gRPC" : "Connect JSON"}`, () => {
      for (const c of cases.filter((x) => (x.only ?? transport) === transport)) {
        it(`refuses ${c.name} with ${Code[c.code]}, writes nothing, logs and counts it`, async () => {
          const svc = c.method.parent === PaymentService ? paymentSvc : orderSvc;
          const handled = { service: c.method.parent.typeName, method: c.method.name, code: grpcCodeName(c.code) };
          const before = await snapshot();
          const handledBefore = await counter(svc.httpPort, "rpc_server_handled_total", handled);
          const conflictsBefore = c.conflict ? await counter(paymentSvc.httpPort, "payment_requests_total", { call: c.conflict, result: "conflict" }) : 0;
          const logFrom = logLines.length;

          let err: ConnectError | undefined;
          try {
            await c.call(clients[transport]);
          } catch (e) {
            err = ConnectError.from(e);
          }
          expect(err, "the call succeeded").not.to.equal(undefined);
          expect(Code[err!.code], err!.rawMessage).to.equal(Code[c.code]);
          expect(err!.rawMessage).to.include(c.mentions);

          expect(await snapshot(), "a row changed").to.equal(before);
          expect((await counter(svc.httpPort, "rpc_server_handled_total", handled)) - handledBefore, "rpc_server_handled_total").to.equal(1);
          if (c.conflict) {
            expect((await counter(paymentSvc.httpPort, "payment_requests_total", { call: c.conflict, result: "conflict" })) - conflictsBefore, "payment_requests_total conflict").to.equal(1);
          }
          const lines = logLines.slice(logFrom).filter((l) => l.rpc === c.method.name && l.code === Code[c.code] && l.protocol === transport);
          expect(lines, `the refusal's log line among ${JSON.stringify(logLines.slice(logFrom).map((l) => l.msg))}`).to.have.length(1);
          expect(String(lines[0]!.reason)).to.equal(err!.rawMessage);
        });
      }
    });
  }

  describe("afterwards", () => {
    it("still serves, with the seeded account, charge and orders as they were", async () => {
      const { payments, orders } = clients.connect;
      expect((await payments.getAccount({ customerId: "cust-1" })).account!.balanceCents).to.equal(30_000n);
      expect((await payments.getAccount({ customerId: "cust-2" })).account!.balanceCents).to.equal(0n);
      const [p] = (await payments.batchGetOrderPayments({ orderIds: [CHARGED_ORDER] })).payments;
      expect([p!.amountCents, p!.customerId, p!.refunded]).to.deep.equal([20_000n, "cust-1", false]);
      const awaiting = (await orders.getOrder({ orderId: seed.awaiting })).order!;
      expect([awaiting.payment!.status, awaiting.totalCents]).to.deep.equal([PaymentStatus.AWAITING, 20_000n]);
      expect((await orders.getOrder({ orderId: seed.paid })).order!.payment!.status).to.equal(PaymentStatus.CHARGED);
    });

    // A refund asked before its order's charge is decided is refused and recorded nowhere, so the charge that
    // follows can still be refunded: no debit is left that no refund can undo.
    it("leaves no debit that cannot be refunded when a refund was refused before the order's charge", async () => {
      const { payments } = clients.grpc;
      const orderId = "01HREFUNDFIRST000000000000";
      const start = (await payments.getAccount({ customerId: "cust-2" })).account!.balanceCents;
      await payments.topUp({ customerId: "cust-2", amountCents: 5_000n, currency: "EUR", requestId: "top-refund-first" });
      const early = await payments.refundOrder({ orderId }).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(early?.code).to.equal(Code.FailedPrecondition);
      const charged = await payments.chargeOrder({ orderId, customerId: "cust-2", amountCents: 1_000n, currency: "EUR" });
      expect(charged.outcome).to.equal(PaymentOutcome.CHARGED);
      expect((await payments.refundOrder({ orderId })).outcome).to.equal(PaymentOutcome.REFUNDED);
      expect((await payments.getAccount({ customerId: "cust-2" })).account!.balanceCents).to.equal(start + 5_000n);
    });
  });
});

/** The gRPC status name rpc_server_handled_total labels a code with (INVALID_ARGUMENT, ...). */
function grpcCodeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}
