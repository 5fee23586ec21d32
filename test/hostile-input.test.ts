import http2 from "node:http2";
import { Writable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, ScalarType, toBinary, type DescField, type DescMethod, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { codeFromString } from "@connectrpc/connect/protocol-connect";
import { expect } from "chai";
import { pino } from "pino";
import type { RowDataPacket } from "mysql2/promise";
import { AUDIENCES, DEFAULT_ISSUER, SCOPES } from "@shop/platform/auth";
import { createPool, type Pool } from "@shop/platform/db";
import { CARRIER_DEFAULTS } from "@shop/delivery-service/carriers/registry";
import { startDeliveryService, type RunningDeliveryService } from "@shop/delivery-service/service";
import { startOrderService, type RunningOrderService } from "@shop/order-service/service";
import { startPaymentService, type RunningPaymentService } from "@shop/payment-service/service";
import { startVoucherService, type RunningVoucherService } from "@shop/voucher-service/service";
import { CarrierService, DeliveryService, ShipmentStatus } from "@shop/sdk/delivery";
import { OrderService, PaymentEvent, PaymentMethod, PaymentOutcomeService, PaymentStatus, ShipmentEvent, ShipmentEventService, ShippingStatus } from "@shop/sdk/order";
import { PaymentService } from "@shop/sdk/payment";
import { VoucherService } from "@shop/sdk/voucher";
import { allScopesToken, testAuth, testSigningKey, testToken } from "@shop/testkit/auth";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

/**
 * Hostile requests, as bytes, on both transports of every service (order,
 * voucher, payment, delivery, and the order service's payment and shipping
 * RPCs): protobuf
 * that does not decode (bad UTF-8, wrong wire types, truncated lengths,
 * over-long varints, deep group nesting, garbage), JSON that does not decode
 * (wrong types, huge numbers, bad timestamps, invalid UTF-8, deep nesting),
 * Timestamps out of range, over-size bodies, broken framing and headers,
 * unknown methods, and oversized or forged tokens. Each must get its status
 * class (never INTERNAL or UNKNOWN), change no row in either database, and
 * be logged (status, reason, method, transport; never the token) and counted
 * in rpc_server_handled_total. Answers and log lines quote the caller's
 * input clipped.
 */

type Transport = "grpc" | "connect";

/** Log lines of both services, parsed. */
const logLines: Array<Record<string, unknown> & { msg: string }> = [];
const rawLog: string[] = [];
const logger = pino(
  { level: "info" },
  new Writable({
    write(chunk, _enc, done) {
      const text = chunk.toString();
      rawLog.push(text);
      logLines.push(JSON.parse(text));
      done();
    },
  }),
);

// ---- protobuf bytes, written by hand -------------------------------------------------------------

const bytes = (...parts: Array<number | number[] | Uint8Array>): Uint8Array =>
  Uint8Array.from(parts.flatMap((p) => (typeof p === "number" ? [p] : [...p])));
const tag = (field: number, wireType: number) => varint((field << 3) | wireType);
function varint(n: number | bigint): number[] {
  let v = BigInt(n);
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}
const str = (field: number, value: Uint8Array | string) => {
  const b = typeof value === "string" ? new TextEncoder().encode(value) : value;
  return bytes(tag(field, 2), varint(b.length), b);
};
const encode = <M extends DescMethod>(method: M, init: MessageInitShape<M["input"]>) => toBinary(method.input, create(method.input, init));

const createOrder = OrderService.method.createOrder;
const issueVoucher = VoucherService.method.issueVoucher;
const batchIssue = VoucherService.method.batchIssueVouchers;
const listSent = OrderService.method.listSentOrders;
const listIssued = VoucherService.method.listIssuedVouchers;

const goodOrder = encode(createOrder, { customerId: "cust-h", totalCents: 20_000n, currency: "EUR", requestId: "hostile-1" });
const goodIssue = encode(issueVoucher, { orderId: "01HHOSTILE0000000000000000", customerId: "cust-h", orderTotalCents: 20_000n, currency: "EUR" });
/** A pseudo-random byte string, the same every run. */
function garbage(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    out[i] = x >> 16;
  }
  return out;
}
const deepGroups = (depth: number) => bytes(Array.from({ length: depth }, () => tag(31, 3)).flat());

/**
 * Bodies that must not decode as the method's request: each is checked to
 * throw in protobuf-es first, so every case really reaches the decoder's
 * error path rather than decoding into something the rules happen to refuse.
 */
const UNDECODABLE: Array<{ name: string; method: DescMethod; body: Uint8Array }> = [
  { name: "invalid UTF-8 in a string field", method: createOrder, body: bytes(goodOrder, str(1, bytes(0xc3, 0x28))) },
  { name: "a lone UTF-16 surrogate encoded in a string", method: issueVoucher, body: bytes(goodIssue, str(2, bytes(0xed, 0xa0, 0x80))) },
  { name: "a string field sent as a varint then cut", method: createOrder, body: bytes(tag(1, 0), 0xff) },
  { name: "an int64 field sent as a length-delimited run longer than the body", method: issueVoucher, body: bytes(tag(3, 2), varint(50), 1, 2) },
  { name: "a length running past the end", method: createOrder, body: bytes(tag(4, 2), varint(10), 0x41) },
  { name: "a length of 2^31 - 1", method: issueVoucher, body: bytes(tag(1, 2), varint(2n ** 31n - 1n), 0x41) },
  { name: "an eleven-byte varint", method: createOrder, body: bytes(tag(2, 0), Array(10).fill(0xff), 0x01) },
  { name: "a varint that never ends", method: issueVoucher, body: bytes(tag(3, 0), Array(12).fill(0x80)) },
  { name: "wire type 6", method: createOrder, body: bytes(tag(1, 6), 0) },
  { name: "wire type 7", method: issueVoucher, body: bytes(tag(5, 7), 0) },
  { name: "field number 0", method: createOrder, body: bytes(0x00, 0x01) },
  { name: "an end-group with no start", method: issueVoucher, body: bytes(tag(9, 4)) },
  { name: "100,000 nested groups", method: createOrder, body: deepGroups(100_000) },
  { name: "a group never closed", method: issueVoucher, body: bytes(tag(12, 3), tag(1, 0), 1) },
  { name: "garbage bytes", method: createOrder, body: garbage(256, 7) },
  { name: "a truncated fixed64", method: issueVoucher, body: bytes(tag(20, 1), 1, 2, 3) },
  { name: "a batch item that does not decode", method: batchIssue, body: bytes(tag(1, 2), varint(4), tag(1, 2), varint(9), 0x41, 0x42) },
  { name: "a Timestamp with a broken inside", method: listSent, body: bytes(tag(1, 2), varint(3), tag(2, 0), 0xff, 0xff) },
];

/** Timestamps that decode, but are no valid time: refused by the range check, naming the field. */
const BAD_TIMES: Array<{ name: string; method: DescMethod; body: Uint8Array; mentions: string }> = [
  { name: "nanos of -1", method: listSent, body: encode(listSent, { sentAfter: { seconds: 1_700_000_000n, nanos: -1 } }), mentions: "sent_after: nanos" },
  { name: "nanos of 10^9", method: listIssued, body: encode(listIssued, { issuedBefore: { seconds: 0n, nanos: 1_000_000_000 } }), mentions: "issued_before: nanos" },
  { name: "the largest int64 seconds", method: listSent, body: encode(listSent, { sentBefore: { seconds: 2n ** 63n - 1n, nanos: 0 } }), mentions: "sent_before: must be a time" },
  { name: "the smallest int64 seconds", method: listIssued, body: encode(listIssued, { issuedAfter: { seconds: -(2n ** 63n), nanos: 0 } }), mentions: "issued_after: must be a time" },
];

/** Malformed JSON for Connect: each is a decoding failure (connect/protobuf-es cannot turn it into the request). */
const BAD_JSON: Array<{ name: string; method: DescMethod; body: string | Uint8Array; mentions?: string }> = [
  { name: "not JSON", method: createOrder, body: "{not json" },
  { name: "an array, not an object", method: createOrder, body: "[1,2,3]" },
  { name: "null", method: issueVoucher, body: "null" },
  { name: "a string field given an array", method: createOrder, body: '{"customerId":["c"],"totalCents":"20000","currency":"EUR","requestId":"j1"}' },
  { name: "an int64 field given letters", method: createOrder, body: '{"customerId":"c","totalCents":"abc","currency":"EUR","requestId":"j2"}' },
  { name: "an int64 field given 10^400", method: issueVoucher, body: '{"orderId":"o1","customerId":"c","orderTotalCents":1e400,"currency":"EUR"}' },
  { name: "an int64 field beyond 2^63", method: createOrder, body: '{"customerId":"c","totalCents":"99999999999999999999","currency":"EUR","requestId":"j3"}' },
  { name: "an int64 field given a fraction", method: issueVoucher, body: '{"orderId":"o1","customerId":"c","orderTotalCents":1.5,"currency":"EUR"}' },
  { name: "an int64 field given true", method: createOrder, body: '{"customerId":"c","totalCents":true,"currency":"EUR","requestId":"j4"}' },
  { name: "a timestamp that is not a date", method: listSent, body: '{"sentAfter":"yesterday"}' },
  { name: "a timestamp in the year 10000", method: listSent, body: '{"sentAfter":"10000-01-01T00:00:00Z"}' },
  { name: "a timestamp as an object", method: listIssued, body: '{"issuedBefore":{"seconds":"1","nanos":-1}}' },
  { name: "an int32 beyond 2^31", method: listIssued, body: '{"pageSize":4294967296}' },
  // Decoded leniently (U+FFFD for each bad byte), and then refused by the id rule.
  {
    name: "invalid UTF-8 bytes",
    method: createOrder,
    body: bytes(new TextEncoder().encode('{"customerId":"'), 0xff, 0xfe, new TextEncoder().encode('","totalCents":"20000","currency":"EUR","requestId":"j6"}')),
    mentions: "customer_id: does not match regex pattern",
  },
  { name: "arrays nested 100,000 deep", method: issueVoucher, body: `{"orderId":${"[".repeat(100_000)}${"]".repeat(100_000)}}` },
  { name: "a 64 KiB int64 (quoted back clipped)", method: createOrder, body: `{"customerId":"c","totalCents":"${"9".repeat(64 * 1024)}","currency":"EUR","requestId":"j5"}` },
];

// ---- the payment service and the order service's payment RPCs ----------------------------------

/** Every payment scope, addressed to the payment service (which, as in production, accepts only its own audience). */
const paymentToken = testToken({
  subject: "test-harness",
  scopes: [SCOPES.paymentsWrite, SCOPES.paymentsRead, SCOPES.paymentsCharge],
  audience: AUDIENCES.payments,
  ttlSeconds: 86_400,
});

const openAccount = PaymentService.method.openAccount;
const topUp = PaymentService.method.topUp;
const chargeOrder = PaymentService.method.chargeOrder;
const batchGetPayments = PaymentService.method.batchGetOrderPayments;
const listOrderPayments = PaymentService.method.listOrderPayments;
const recordOutcome = PaymentOutcomeService.method.recordPaymentOutcome;
const requeuePayment = OrderService.method.requeuePayment;
const listByPayment = OrderService.method.listOrdersByPaymentStatus;

const HOSTILE_ORDER = "01HHOSTILE0000000000000000";
const goodTopUp = encode(topUp, { customerId: "cust-h", amountCents: 50_000n, currency: "EUR", requestId: "hostile-top-up" });
const goodCharge = encode(chargeOrder, { orderId: HOSTILE_ORDER, customerId: "cust-h", amountCents: 20_000n, currency: "EUR" });
const goodPaidOrder = encode(createOrder, { customerId: "cust-h", totalCents: 20_000n, currency: "EUR", requestId: "hostile-paid", paymentMethod: PaymentMethod.ACCOUNT });
/** An outcome for an order that does not exist (refused NOT_FOUND, were it to get that far). */
const goodOutcome = encode(recordOutcome, { messageKey: `charge:${HOSTILE_ORDER}`, orderId: HOSTILE_ORDER, event: PaymentEvent.CHARGED, amountCents: 20_000n, currency: "EUR" });

/** The methods whose bytes come from outside the order and voucher services' first version: every payment RPC and the order service's payment RPCs. */
const PAYMENT_METHODS: DescMethod[] = [...PaymentService.methods, recordOutcome, requeuePayment, listByPayment];

const firstStringField = (m: DescMethod): DescField | undefined =>
  m.input.fields.find((f) => (f.fieldKind === "scalar" || (f.fieldKind === "list" && f.listKind === "scalar")) && f.scalar === ScalarType.STRING);

const firstNumberField = (m: DescMethod): DescField | undefined =>
  m.input.fields.find((f) => f.fieldKind === "enum" || (f.fieldKind === "scalar" && f.scalar !== ScalarType.STRING && f.scalar !== ScalarType.BYTES && f.scalar !== ScalarType.BOOL));

/**
 * For each of those methods, bodies that cannot decode, built from its own
 * fields: invalid UTF-8 in a string, a length past the end, an over-long
 * varint, wire type 6 and seeded garbage.
 */
const PAYMENT_UNDECODABLE: Array<{ name: string; method: DescMethod; body: Uint8Array }> = [
  ...PAYMENT_METHODS.flatMap((m, i) => {
    const s = firstStringField(m);
    if (!s) throw new Error(`${m.name} has no string field`);
    const n = firstNumberField(m);
    return [
      { name: `invalid UTF-8 in ${s.name}`, method: m, body: str(s.number, bytes(0xc3, 0x28)) },
      { name: `${s.name} running past the end`, method: m, body: bytes(tag(s.number, 2), varint(10), 0x41) },
      // An unknown field's varint is skipped, eleven bytes or not: the over-long one goes in a known number field.
      n
        ? { name: `an eleven-byte varint in ${n.name}`, method: m, body: bytes(tag(n.number, 0), Array(10).fill(0xff), 0x01) }
        : { name: "a varint that never ends", method: m, body: bytes(tag(15, 0), Array(12).fill(0x80)) },
      { name: "wire type 6", method: m, body: bytes(tag(1, 6), 0) },
      { name: "garbage bytes", method: m, body: garbage(200, 100 + i) },
    ];
  }),
  { name: "a payment_method varint cut short", method: createOrder, body: bytes(goodPaidOrder, tag(5, 0), 0xff) },
  { name: "an event varint that never ends", method: recordOutcome, body: bytes(tag(3, 0), Array(12).fill(0x80)) },
  { name: "a second order id with a lone surrogate", method: batchGetPayments, body: bytes(str(1, "01HOK"), str(1, bytes(0xed, 0xa0, 0x80))) },
  { name: "a decided_after with a broken inside", method: listOrderPayments, body: bytes(tag(1, 2), varint(3), tag(2, 0), 0xff, 0xff) },
  { name: "a created_before with a broken inside", method: listByPayment, body: bytes(tag(1, 0), 2, tag(2, 2), varint(3), tag(1, 0), 0xff, 0xff) },
  { name: "100,000 nested groups", method: chargeOrder, body: deepGroups(100_000) },
  { name: "an amount as a truncated fixed64", method: topUp, body: bytes(goodTopUp, tag(20, 1), 1, 2) },
];

const PAYMENT_BAD_TIMES: Array<{ name: string; method: DescMethod; body: Uint8Array; mentions: string }> = [
  { name: "nanos of -1", method: listOrderPayments, body: encode(listOrderPayments, { decidedAfter: { seconds: 1_700_000_000n, nanos: -1 } }), mentions: "decided_after: nanos" },
  {
    name: "the largest int64 seconds",
    method: listOrderPayments,
    body: encode(listOrderPayments, { decidedBefore: { seconds: 2n ** 63n - 1n, nanos: 0 } }),
    mentions: "decided_before: must be a time",
  },
  {
    name: "nanos of 10^9",
    method: listByPayment,
    body: encode(listByPayment, { paymentStatus: PaymentStatus.AWAITING, createdBefore: { seconds: 0n, nanos: 1_000_000_000 } }),
    mentions: "created_before: nanos",
  },
  {
    name: "the smallest int64 seconds",
    method: listByPayment,
    body: encode(listByPayment, { paymentStatus: PaymentStatus.AWAITING, createdBefore: { seconds: -(2n ** 63n), nanos: 0 } }),
    mentions: "created_before: must be a time",
  },
];

const PAYMENT_BAD_JSON: Array<{ name: string; method: DescMethod; body: string | Uint8Array; mentions?: string }> = [
  { name: "not JSON", method: chargeOrder, body: "{not json" },
  { name: "null", method: openAccount, body: "null" },
  { name: "an array, not an object", method: PaymentService.method.getAccount, body: '["cust-h"]' },
  { name: "an amount given letters", method: topUp, body: '{"customerId":"cust-h","amountCents":"abc","currency":"EUR","requestId":"j1"}' },
  { name: "an amount given 10^400", method: chargeOrder, body: '{"orderId":"o1","customerId":"cust-h","amountCents":1e400,"currency":"EUR"}' },
  { name: "an amount beyond 2^63", method: recordOutcome, body: `{"messageKey":"charge:o1","orderId":"o1","event":"PAYMENT_EVENT_CHARGED","amountCents":"99999999999999999999","currency":"EUR"}` },
  { name: "an amount given a fraction", method: topUp, body: '{"customerId":"cust-h","amountCents":1.5,"currency":"EUR","requestId":"j2"}' },
  { name: "an order id given a number", method: PaymentService.method.refundOrder, body: '{"orderId":5}' },
  { name: "order ids given a string", method: batchGetPayments, body: '{"orderIds":"01HA"}' },
  { name: "an order id given an object", method: requeuePayment, body: '{"orderId":{"$ne":""}}' },
  { name: "an event given a number beyond int32", method: recordOutcome, body: '{"messageKey":"charge:o1","orderId":"o1","event":4294967296,"amountCents":"1","currency":"EUR"}' },
  { name: "a payment method given true", method: createOrder, body: '{"customerId":"c","totalCents":"20000","currency":"EUR","requestId":"j7","paymentMethod":true}' },
  { name: "a timestamp that is not a date", method: listOrderPayments, body: '{"decidedAfter":"yesterday"}' },
  { name: "a timestamp in the year 10000", method: listByPayment, body: '{"paymentStatus":"PAYMENT_STATUS_AWAITING","createdBefore":"10000-01-01T00:00:00Z"}' },
  { name: "a page size beyond 2^31", method: PaymentService.method.listStatement, body: '{"customerId":"cust-h","pageSize":4294967296}' },
  // Decoded leniently (U+FFFD for each bad byte), and then refused by the key rule.
  {
    name: "invalid UTF-8 bytes in a message key",
    method: recordOutcome,
    body: bytes(
      new TextEncoder().encode('{"messageKey":"charge:'),
      0xff,
      0xfe,
      new TextEncoder().encode('","orderId":"o1","event":"PAYMENT_EVENT_CHARGED","amountCents":"1","currency":"EUR"}'),
    ),
    mentions: "message_key: does not match regex pattern",
  },
  { name: "arrays nested 100,000 deep", method: chargeOrder, body: `{"orderId":${"[".repeat(100_000)}${"]".repeat(100_000)}}` },
  { name: "a 64 KiB amount (quoted back clipped)", method: topUp, body: `{"customerId":"cust-h","amountCents":"${"9".repeat(64 * 1024)}","currency":"EUR","requestId":"j8"}` },
];

// ---- the delivery service and the order service's shipping RPCs --------------------------------

/** Every delivery scope, addressed to the delivery service (which, as in production, accepts only its own audience). */
const deliveryToken = testToken({
  subject: "test-harness",
  scopes: [SCOPES.shipmentsCreate, SCOPES.shipmentsRead, SCOPES.shipmentsAdmin, SCOPES.carrierReport],
  audience: AUDIENCES.deliveries,
  ttlSeconds: 86_400,
});

const createShipment = DeliveryService.method.createShipment;
const listShipments = DeliveryService.method.listShipments;
const batchGetShipments = DeliveryService.method.batchGetShipments;
const declineShipment = CarrierService.method.declineShipment;
const markShipped = CarrierService.method.markShipmentShipped;
const recordShipmentEvent = ShipmentEventService.method.recordShipmentEvent;
const releaseOrder = OrderService.method.releaseOrderForShipping;
const listByShipping = OrderService.method.listOrdersByShippingStatus;

const HOSTILE_SHIPMENT = "01HHOSTILESHIP000000000000";
const goodShipment = encode(createShipment, { orderId: HOSTILE_SHIPMENT, customerId: "cust-h", totalCents: 20_000n, currency: "EUR", carrier: "manual" });
/** An event for an order that does not exist (refused NOT_FOUND, were it to get that far). */
const goodShipmentEvent = encode(recordShipmentEvent, {
  messageKey: `shipment:${HOSTILE_ORDER}:SHIPPED`,
  orderId: HOSTILE_ORDER,
  event: ShipmentEvent.SHIPPED,
  shipmentId: "01HHOSTILESHIPMENT00000000",
});

/** Every RPC of the delivery service, and the order service's shipping RPCs. */
const SHIPPING_METHODS: DescMethod[] = [
  ...DeliveryService.methods,
  ...CarrierService.methods,
  recordShipmentEvent,
  releaseOrder,
  OrderService.method.requeueShipment,
  listByShipping,
];

/** For each of those methods, bodies that cannot decode, built from its own fields (as for the payment methods). */
const SHIPPING_UNDECODABLE: Array<{ name: string; method: DescMethod; body: Uint8Array }> = [
  ...SHIPPING_METHODS.flatMap((m, i) => {
    const s = firstStringField(m);
    if (!s) throw new Error(`${m.name} has no string field`);
    const n = firstNumberField(m);
    return [
      { name: `invalid UTF-8 in ${s.name}`, method: m, body: str(s.number, bytes(0xc3, 0x28)) },
      { name: `${s.name} running past the end`, method: m, body: bytes(tag(s.number, 2), varint(10), 0x41) },
      n
        ? { name: `an eleven-byte varint in ${n.name}`, method: m, body: bytes(tag(n.number, 0), Array(10).fill(0xff), 0x01) }
        : { name: "a varint that never ends", method: m, body: bytes(tag(15, 0), Array(12).fill(0x80)) },
      { name: "wire type 6", method: m, body: bytes(tag(1, 6), 0) },
      { name: "garbage bytes", method: m, body: garbage(200, 300 + i) },
    ];
  }),
  { name: "a carrier with a lone surrogate", method: createShipment, body: bytes(goodShipment, str(5, bytes(0xed, 0xa0, 0x80))) },
  { name: "a total_cents varint cut short", method: createShipment, body: bytes(str(1, "o-1"), tag(3, 0), 0xff) },
  { name: "a second order id with invalid UTF-8", method: batchGetShipments, body: bytes(str(1, "01HOK"), str(1, bytes(0xff, 0xfe))) },
  { name: "an updated_after with a broken inside", method: listShipments, body: bytes(tag(1, 0), 1, tag(2, 2), varint(3), tag(2, 0), 0xff, 0xff) },
  { name: "a requested_before with a broken inside", method: listByShipping, body: bytes(tag(1, 0), 2, tag(2, 2), varint(3), tag(1, 0), 0xff, 0xff) },
  { name: "an occurred_at with a broken inside", method: recordShipmentEvent, body: bytes(goodShipmentEvent, tag(7, 2), varint(3), tag(2, 0), 0xff, 0xff) },
  { name: "100,000 nested groups", method: markShipped, body: deepGroups(100_000) },
  { name: "a truncated fixed64 after the order id", method: declineShipment, body: bytes(str(1, "o-1"), tag(20, 1), 1, 2) },
];

const SHIPPING_BAD_TIMES: Array<{ name: string; method: DescMethod; body: Uint8Array; mentions: string }> = [
  {
    name: "nanos of -1",
    method: listShipments,
    body: encode(listShipments, { status: ShipmentStatus.CREATED, updatedAfter: { seconds: 1_700_000_000n, nanos: -1 } }),
    mentions: "updated_after: nanos",
  },
  {
    name: "the largest int64 seconds",
    method: listShipments,
    body: encode(listShipments, { status: ShipmentStatus.CREATED, updatedBefore: { seconds: 2n ** 63n - 1n, nanos: 0 } }),
    mentions: "updated_before: must be a time",
  },
  {
    name: "nanos of 10^9",
    method: listByShipping,
    body: encode(listByShipping, { shippingStatus: ShippingStatus.REQUESTED, requestedBefore: { seconds: 0n, nanos: 1_000_000_000 } }),
    mentions: "requested_before: nanos",
  },
  {
    name: "the smallest int64 seconds",
    method: recordShipmentEvent,
    body: encode(recordShipmentEvent, {
      messageKey: `shipment:${HOSTILE_ORDER}:SHIPPED`,
      orderId: HOSTILE_ORDER,
      event: ShipmentEvent.SHIPPED,
      shipmentId: "01HHOSTILESHIPMENT00000000",
      occurredAt: { seconds: -(2n ** 63n), nanos: 0 },
    }),
    mentions: "occurred_at: must be a time",
  },
];

const SHIPPING_BAD_JSON: Array<{ name: string; method: DescMethod; body: string | Uint8Array; mentions?: string }> = [
  { name: "not JSON", method: createShipment, body: "{not json" },
  { name: "null", method: DeliveryService.method.getShipment, body: "null" },
  { name: "an array, not an object", method: CarrierService.method.confirmShipment, body: '["o-1"]' },
  { name: "a total given letters", method: createShipment, body: '{"orderId":"o-1","customerId":"cust-h","totalCents":"abc","currency":"EUR"}' },
  { name: "a total given 10^400", method: createShipment, body: '{"orderId":"o-1","customerId":"cust-h","totalCents":1e400,"currency":"EUR"}' },
  { name: "a total beyond 2^63", method: createShipment, body: '{"orderId":"o-1","customerId":"cust-h","totalCents":"99999999999999999999","currency":"EUR"}' },
  { name: "a total given a fraction", method: createShipment, body: '{"orderId":"o-1","customerId":"cust-h","totalCents":1.5,"currency":"EUR"}' },
  { name: "an order id given a number", method: DeliveryService.method.resumeShipment, body: '{"orderId":5}' },
  { name: "order ids given a string", method: batchGetShipments, body: '{"orderIds":"01HA"}' },
  { name: "an order id given an object", method: markShipped, body: '{"orderId":{"$ne":""}}' },
  { name: "a reason given an array", method: declineShipment, body: '{"orderId":"o-1","reason":["NO_CAPACITY"]}' },
  { name: "a status given a number beyond int32", method: listShipments, body: '{"status":4294967296}' },
  // Read as no event (JSON names an enum value nobody knows), and then refused by the event rule.
  {
    name: "an event given a name that does not exist",
    method: recordShipmentEvent,
    body: '{"messageKey":"shipment:o1:SHIPPED","orderId":"o1","event":"SHIPMENT_EVENT_LOST","shipmentId":"s1"}',
    mentions: "event must be SHIPMENT_EVENT_SHIPPED",
  },
  { name: "a shipping status given true", method: listByShipping, body: '{"shippingStatus":true}' },
  { name: "a timestamp that is not a date", method: listShipments, body: '{"status":"SHIPMENT_STATUS_CREATED","updatedAfter":"yesterday"}' },
  { name: "a timestamp in the year 10000", method: listByShipping, body: '{"shippingStatus":"SHIPPING_STATUS_REQUESTED","requestedBefore":"10000-01-01T00:00:00Z"}' },
  { name: "an occurred_at as an object", method: recordShipmentEvent, body: '{"messageKey":"shipment:o1:SHIPPED","orderId":"o1","event":1,"shipmentId":"s1","occurredAt":{"seconds":"1"}}' },
  { name: "a page size beyond 2^31", method: listShipments, body: '{"status":"SHIPMENT_STATUS_CREATED","pageSize":4294967296}' },
  { name: "a carrier given a number", method: releaseOrder, body: '{"orderId":"o1","carrier":7}' },
  // Decoded leniently (U+FFFD for each bad byte), and then refused by the id rule.
  {
    name: "invalid UTF-8 bytes in an order id",
    method: createShipment,
    body: bytes(new TextEncoder().encode('{"orderId":"o-'), 0xff, 0xfe, new TextEncoder().encode('","customerId":"cust-h","totalCents":"1","currency":"EUR"}')),
    mentions: "order_id: does not match regex pattern",
  },
  { name: "arrays nested 100,000 deep", method: createShipment, body: `{"orderId":${"[".repeat(100_000)}${"]".repeat(100_000)}}` },
  { name: "a 64 KiB total (quoted back clipped)", method: createShipment, body: `{"orderId":"o-1","customerId":"cust-h","totalCents":"${"9".repeat(64 * 1024)}","currency":"EUR"}` },
];

// ---- the callers ---------------------------------------------------------------------------------

interface Answer {
  code: Code;
  message: string;
}

function grpcCall(port: number, path: string, body: Uint8Array, token: string | undefined): Promise<Answer> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { "grpc.max_send_message_length": -1 });
  const metadata = new grpc.Metadata();
  if (token !== undefined) metadata.set("authorization", `Bearer ${token}`);
  return new Promise<Answer>((resolve) => {
    client.makeUnaryRequest(
      path,
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => b,
      body,
      metadata,
      { deadline: Date.now() + 20_000 },
      (err) => resolve(err ? { code: err.code as number as Code, message: err.details } : { code: 0 as Code, message: "" }),
    );
  }).finally(() => client.close());
}

/** A gRPC call that must succeed: its answer's bytes. */
function grpcAnswer(port: number, path: string, body: Uint8Array, token: string): Promise<Uint8Array> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  return new Promise<Uint8Array>((resolve, reject) => {
    client.makeUnaryRequest(
      path,
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => b,
      body,
      metadata,
      { deadline: Date.now() + 20_000 },
      (err, res) => (err ? reject(new Error(`${path}: ${err.details}`)) : resolve(res!)),
    );
  }).finally(() => client.close());
}

/** A gRPC call written by hand over HTTP/2, for what grpc-js's client will not send: a broken frame or header. */
function rawGrpc(port: number, path: string, headers: Record<string, string>, frame: Uint8Array): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", reject);
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
    let status: Record<string, unknown> = {};
    req.on("response", (h) => (status = { ...h }));
    req.on("trailers", (t) => (status = { ...status, ...t }));
    req.on("data", () => {});
    req.on("end", () => {
      session.close();
      resolve({ code: Number(status["grpc-status"]) as Code, message: decodeURIComponent(String(status["grpc-message"] ?? "")) });
    });
    req.on("error", reject);
    req.end(Buffer.from(frame));
  });
}

const frame = (payload: Uint8Array, compressed = 0) => {
  const head = Buffer.alloc(5);
  head.writeUInt8(compressed, 0);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
};

async function connectCall(
  port: number,
  path: string,
  body: Uint8Array | string,
  contentType: string,
  token: string | undefined,
  extraHeaders: Record<string, string> = {},
  method = "POST",
): Promise<Answer & { http: number }> {
  const headers: Record<string, string> = { "content-type": contentType, ...extraHeaders };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers, body: method === "GET" ? undefined : typeof body === "string" ? body : Buffer.from(body) });
  const text = await res.text();
  try {
    const json = JSON.parse(text) as { code: string; message?: string };
    return { http: res.status, code: codeFromString(json.code) ?? Code.Unknown, message: json.message ?? "" };
  } catch {
    // No Connect error body (405 and 415 have none): the status says what it means.
    const code = res.status === 415 ? Code.InvalidArgument : res.status === 405 ? Code.Unimplemented : Code.Unknown;
    return { http: res.status, code, message: text };
  }
}

/** rpc_server_handled_total by "service method code". */
async function handledCounts(httpPort: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^rpc_server_handled_total\{([^}]*)\} (\d+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    out.set(`${labels.service} ${labels.method} ${labels.code}`, Number(m[2]));
  }
  return out;
}

const CODE_LABEL: Partial<Record<Code, string>> = {
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
  [Code.Unimplemented]: "UNIMPLEMENTED",
};

// ---- the cases -----------------------------------------------------------------------------------

type To = "order" | "voucher" | "payment" | "delivery";

interface Case {
  name: string;
  transport: Transport;
  /** Which service's ports it goes to. */
  to: To;
  call: (ports: { grpc: number; http: number }) => Promise<Answer>;
  code: Code;
  /** The labels it is counted under: the method called, or "(unknown)". */
  service: string;
  method: string;
  /** Text the answer must contain. */
  mentions?: string;
  /** Text that must appear neither in the answer nor in any log line. */
  secret?: string;
}

const serviceOf = (m: DescMethod) => ({
  service: m.parent.typeName,
  method: m.name,
  to: (m.parent === VoucherService
    ? "voucher"
    : m.parent === PaymentService
      ? "payment"
      : m.parent === DeliveryService || m.parent === CarrierService
        ? "delivery"
        : "order") as To,
});
/** The token a method's service accepts, with every scope. */
const tokenFor = (m: DescMethod) =>
  m.parent === PaymentService ? paymentToken : m.parent === DeliveryService || m.parent === CarrierService ? deliveryToken : allScopesToken;
const pathOf = (m: DescMethod) => `/${m.parent.typeName}/${m.name}`;

function onBoth(
  name: string,
  m: DescMethod,
  body: Uint8Array,
  code: Code,
  opts: { token?: string | null; mentions?: string; secret?: string } = {},
): Case[] {
  const token = opts.token === null ? undefined : (opts.token ?? tokenFor(m));
  return [
    { name, transport: "grpc", ...serviceOf(m), code, mentions: opts.mentions, secret: opts.secret, call: (p) => grpcCall(p.grpc, pathOf(m), body, token) },
    {
      name,
      transport: "connect",
      ...serviceOf(m),
      code,
      mentions: opts.mentions,
      secret: opts.secret,
      call: (p) => connectCall(p.http, pathOf(m), body, "application/proto", token),
    },
  ];
}

/** A token whose header holds a 6 KiB alg (and is otherwise well formed). */
const hugeAlg = `${Buffer.from(JSON.stringify({ alg: `X${"A".repeat(6 * 1024)}Z`, kid: testSigningKey.kid })).toString("base64url")}.e30.c2ln`;
const hugeKid = `${Buffer.from(JSON.stringify({ alg: "EdDSA", kid: `K${"k".repeat(6 * 1024)}Q` })).toString("base64url")}.e30.c2ln`;
const longPath = `/shop.order.v1.OrderService/${"Drop".repeat(1024)}Tables`;

const CASES: Case[] = [
  ...UNDECODABLE.flatMap((c) => onBoth(`protobuf with ${c.name}`, c.method, c.body, Code.InvalidArgument, { mentions: "malformed request" })),
  ...BAD_TIMES.flatMap((c) => onBoth(`a Timestamp with ${c.name}`, c.method, c.body, Code.InvalidArgument, { mentions: c.mentions })),
  ...BAD_JSON.map(
    (c): Case => ({
      name: `JSON with ${c.name}`,
      transport: "connect",
      ...serviceOf(c.method),
      code: Code.InvalidArgument,
      mentions: c.mentions ?? "malformed request",
      secret: "9".repeat(300),
      call: (p) => connectCall(p.http, pathOf(c.method), c.body, "application/json", tokenFor(c.method)),
    }),
  ),
  // Over the 1 MiB limit, however the size is reached.
  ...onBoth("a 2 MiB request", createOrder, bytes(goodOrder, str(15, "x".repeat(2 * 1024 * 1024))), Code.ResourceExhausted),
  ...onBoth("a 2 MiB request with no token", issueVoucher, bytes(goodIssue, str(15, "x".repeat(2 * 1024 * 1024))), Code.ResourceExhausted, { token: null }),
  {
    name: "a 2 MiB JSON request",
    transport: "connect",
    ...serviceOf(issueVoucher),
    code: Code.ResourceExhausted,
    call: (p) => connectCall(p.http, pathOf(issueVoucher), JSON.stringify({ orderId: "o".repeat(2 * 1024 * 1024) }), "application/json", allScopesToken),
  },
  {
    name: "a gRPC frame declaring 2 GiB",
    transport: "grpc",
    ...serviceOf(createOrder),
    code: Code.ResourceExhausted,
    call: (p) => {
      const head = Buffer.alloc(5);
      head.writeUInt32BE(0x7fffffff, 1);
      return rawGrpc(p.grpc, pathOf(createOrder), { authorization: `Bearer ${allScopesToken}` }, head);
    },
  },
  // The caller is checked before the bytes: an unauthenticated caller learns nothing about its request.
  ...onBoth("undecodable protobuf and no token", createOrder, garbage(64, 3), Code.Unauthenticated, { token: null, mentions: "no bearer token" }),
  ...onBoth("undecodable protobuf and a token with a 6 KiB alg", issueVoucher, garbage(64, 5), Code.Unauthenticated, {
    token: hugeAlg,
    mentions: "unsupported signature algorithm",
    secret: "A".repeat(200),
  }),
  ...onBoth("a valid request and a token with a 6 KiB alg", createOrder, goodOrder, Code.Unauthenticated, { token: hugeAlg, secret: "AAAAAZ" }),
  ...onBoth("a valid request and a token with a 6 KiB kid", issueVoucher, goodIssue, Code.Unauthenticated, { token: hugeKid, secret: "kkkkkQ" }),
  {
    name: "undecodable JSON and no token",
    transport: "connect",
    ...serviceOf(createOrder),
    code: Code.Unauthenticated,
    call: (p) => connectCall(p.http, pathOf(createOrder), "{not json", "application/json", undefined),
  },
  // Framing and headers grpc-js itself refuses.
  {
    name: "a gRPC frame flagged compressed with no encoding agreed",
    transport: "grpc",
    ...serviceOf(createOrder),
    code: Code.InvalidArgument,
    call: (p) => rawGrpc(p.grpc, pathOf(createOrder), { authorization: `Bearer ${allScopesToken}`, "grpc-encoding": "gzip" }, frame(garbage(32, 9), 1)),
  },
  {
    name: "a grpc-timeout header that is no duration (quoted back clipped)",
    transport: "grpc",
    ...serviceOf(issueVoucher),
    code: Code.InvalidArgument,
    secret: "T".repeat(200),
    call: (p) => rawGrpc(p.grpc, pathOf(issueVoucher), { authorization: `Bearer ${allScopesToken}`, "grpc-timeout": "T".repeat(4000) }, frame(goodIssue)),
  },
  {
    name: "an unsupported grpc-encoding",
    transport: "grpc",
    ...serviceOf(createOrder),
    code: Code.Unimplemented,
    call: (p) => rawGrpc(p.grpc, pathOf(createOrder), { authorization: `Bearer ${allScopesToken}`, "grpc-encoding": "x-evil" }, frame(goodOrder, 1)),
  },
  // Connect framing and headers.
  {
    name: "a connect-timeout-ms that is no number",
    transport: "connect",
    ...serviceOf(createOrder),
    code: Code.InvalidArgument,
    call: (p) => connectCall(p.http, pathOf(createOrder), goodOrder, "application/proto", allScopesToken, { "connect-timeout-ms": "soon" }),
  },
  {
    name: "a gzip body that is not gzip",
    transport: "connect",
    ...serviceOf(issueVoucher),
    code: Code.InvalidArgument,
    call: (p) => connectCall(p.http, pathOf(issueVoucher), garbage(64, 11), "application/proto", allScopesToken, { "content-encoding": "gzip" }),
  },
  {
    name: "a content type that is not Connect's",
    transport: "connect",
    ...serviceOf(createOrder),
    code: Code.InvalidArgument,
    call: (p) => connectCall(p.http, pathOf(createOrder), "customer_id=c", "application/x-www-form-urlencoded", allScopesToken),
  },
  {
    name: "GET on a method that changes data",
    transport: "connect",
    ...serviceOf(createOrder),
    code: Code.Unimplemented,
    call: (p) => connectCall(p.http, `${pathOf(createOrder)}?encoding=json&message=%7B%7D`, "", "application/json", allScopesToken, {}, "GET"),
  },
  {
    name: "gRPC-web, not served on the Connect port",
    transport: "connect",
    ...serviceOf(issueVoucher),
    code: Code.InvalidArgument,
    call: (p) => connectCall(p.http, pathOf(issueVoucher), frame(goodIssue), "application/grpc-web+proto", allScopesToken),
  },
  // Methods that do not exist: the path is quoted clipped, and counted under "(unknown)".
  ...(["grpc", "connect"] as const).flatMap((t): Case[] => [
    {
      name: "a method the service does not have",
      transport: t,
      to: "order",
      service: "(unknown)",
      method: "(unknown)",
      code: Code.Unimplemented,
      call: (p) =>
        t === "grpc" ? grpcCall(p.grpc, "/shop.order.v1.OrderService/DropTables", goodOrder, allScopesToken) : connectCall(p.http, "/shop.order.v1.OrderService/DropTables", goodOrder, "application/proto", allScopesToken),
    },
    {
      name: "a 4 KiB method path",
      transport: t,
      to: "order",
      service: "(unknown)",
      method: "(unknown)",
      code: Code.Unimplemented,
      secret: "DropDropDropDropDropDropDropDropDropDrop".repeat(4),
      call: (p) => (t === "grpc" ? grpcCall(p.grpc, longPath, goodOrder, allScopesToken) : connectCall(p.http, longPath, goodOrder, "application/proto", allScopesToken)),
    },
    {
      name: "a service that does not exist",
      transport: t,
      to: "voucher",
      service: "(unknown)",
      method: "(unknown)",
      code: Code.Unimplemented,
      call: (p) => (t === "grpc" ? grpcCall(p.grpc, "/evil.v1.Admin/Root", goodIssue, undefined) : connectCall(p.http, "/evil.v1.Admin/Root", goodIssue, "application/json", undefined)),
    },
  ]),
  // ---- the payment service and the order service's payment RPCs ----
  ...PAYMENT_UNDECODABLE.flatMap((c) => onBoth(`${c.method.name} as protobuf with ${c.name}`, c.method, c.body, Code.InvalidArgument, { mentions: "malformed request" })),
  ...PAYMENT_BAD_TIMES.flatMap((c) => onBoth(`${c.method.name} with a Timestamp with ${c.name}`, c.method, c.body, Code.InvalidArgument, { mentions: c.mentions })),
  ...PAYMENT_BAD_JSON.map(
    (c): Case => ({
      name: `${c.method.name} as JSON with ${c.name}`,
      transport: "connect",
      ...serviceOf(c.method),
      code: Code.InvalidArgument,
      mentions: c.mentions ?? "malformed request",
      secret: "9".repeat(300),
      call: (p) => connectCall(p.http, pathOf(c.method), c.body, "application/json", tokenFor(c.method)),
    }),
  ),
  ...onBoth("a 2 MiB TopUp", topUp, bytes(goodTopUp, str(15, "x".repeat(2 * 1024 * 1024))), Code.ResourceExhausted),
  ...onBoth("a 2 MiB RecordPaymentOutcome with no token", recordOutcome, bytes(goodOutcome, str(15, "x".repeat(2 * 1024 * 1024))), Code.ResourceExhausted, { token: null }),
  {
    name: "a 2 MiB JSON ChargeOrder",
    transport: "connect",
    ...serviceOf(chargeOrder),
    code: Code.ResourceExhausted,
    call: (p) => connectCall(p.http, pathOf(chargeOrder), JSON.stringify({ orderId: "o".repeat(2 * 1024 * 1024) }), "application/json", paymentToken),
  },
  ...[chargeOrder, recordOutcome].map(
    (m): Case => ({
      name: `a ${m.name} gRPC frame declaring 2 GiB`,
      transport: "grpc",
      ...serviceOf(m),
      code: Code.ResourceExhausted,
      call: (p) => {
        const head = Buffer.alloc(5);
        head.writeUInt32BE(0x7fffffff, 1);
        return rawGrpc(p.grpc, pathOf(m), { authorization: `Bearer ${tokenFor(m)}` }, head);
      },
    }),
  ),
  // The caller is checked before the bytes, at the payment service as everywhere.
  ...onBoth("undecodable ChargeOrder and no token", chargeOrder, garbage(64, 13), Code.Unauthenticated, { token: null, mentions: "no bearer token" }),
  ...onBoth("undecodable RecordPaymentOutcome and no token", recordOutcome, garbage(64, 17), Code.Unauthenticated, { token: null, mentions: "no bearer token" }),
  ...onBoth("a valid TopUp and a token with a 6 KiB alg", topUp, goodTopUp, Code.Unauthenticated, { token: hugeAlg, mentions: "unsupported signature algorithm", secret: "AAAAAZ" }),
  ...onBoth("a valid RecordPaymentOutcome and a token with a 6 KiB kid", recordOutcome, goodOutcome, Code.Unauthenticated, { token: hugeKid, secret: "kkkkkQ" }),
  // A token for the order and voucher services is no token for the payment service, and the relay's token does not record outcomes.
  ...onBoth("a ChargeOrder with a token addressed to the other services", chargeOrder, goodCharge, Code.Unauthenticated, { token: allScopesToken, mentions: "audience" }),
  ...onBoth("a RecordPaymentOutcome with a payment-service token", recordOutcome, goodOutcome, Code.Unauthenticated, { token: paymentToken, mentions: "audience" }),
  {
    name: "an undecodable JSON TopUp and no token",
    transport: "connect",
    ...serviceOf(topUp),
    code: Code.Unauthenticated,
    call: (p) => connectCall(p.http, pathOf(topUp), "{not json", "application/json", undefined),
  },
  // Framing and headers, at the payment service.
  {
    name: "a ChargeOrder frame flagged compressed with no encoding agreed",
    transport: "grpc",
    ...serviceOf(chargeOrder),
    code: Code.InvalidArgument,
    call: (p) => rawGrpc(p.grpc, pathOf(chargeOrder), { authorization: `Bearer ${paymentToken}`, "grpc-encoding": "gzip" }, frame(garbage(32, 19), 1)),
  },
  {
    name: "a TopUp with a grpc-timeout header that is no duration (quoted back clipped)",
    transport: "grpc",
    ...serviceOf(topUp),
    code: Code.InvalidArgument,
    secret: "T".repeat(200),
    call: (p) => rawGrpc(p.grpc, pathOf(topUp), { authorization: `Bearer ${paymentToken}`, "grpc-timeout": "T".repeat(4000) }, frame(goodTopUp)),
  },
  {
    name: "a RecordPaymentOutcome in an unsupported grpc-encoding",
    transport: "grpc",
    ...serviceOf(recordOutcome),
    code: Code.Unimplemented,
    call: (p) => rawGrpc(p.grpc, pathOf(recordOutcome), { authorization: `Bearer ${allScopesToken}`, "grpc-encoding": "x-evil" }, frame(goodOutcome, 1)),
  },
  {
    name: "a ChargeOrder with a connect-timeout-ms that is no number",
    transport: "connect",
    ...serviceOf(chargeOrder),
    code: Code.InvalidArgument,
    call: (p) => connectCall(p.http, pathOf(chargeOrder), goodCharge, "application/proto", paymentToken, { "connect-timeout-ms": "soon" }),
  },
  {
    name: "a gzip RecordPaymentOutcome body that is not gzip",
    transport: "connect",
    ...serviceOf(recordOutcome),
    code: Code.InvalidArgument,
    call: (p) => connectCall(p.http, pathOf(recordOutcome), garbage(64, 23), "application/proto", allScopesToken, { "content-encoding": "gzip" }),
  },
  {
    name: "a TopUp in a content type that is not Connect's",
    transport: "connect",
    ...serviceOf(topUp),
    code: Code.InvalidArgument,
    call: (p) => connectCall(p.http, pathOf(topUp), "customer_id=cust-h&amount_cents=1", "application/x-www-form-urlencoded", paymentToken),
  },
  ...[chargeOrder, recordOutcome].map(
    (m): Case => ({
      name: `GET on ${m.name}, which changes data`,
      transport: "connect",
      ...serviceOf(m),
      code: Code.Unimplemented,
      call: (p) => connectCall(p.http, `${pathOf(m)}?encoding=json&message=%7B%7D`, "", "application/json", tokenFor(m), {}, "GET"),
    }),
  ),
  // Methods the payment service does not have, and services on the wrong port.
  ...(["grpc", "connect"] as const).flatMap((t): Case[] => {
    const unknown = (name: string, to: To, path: string, body: Uint8Array, token: string | undefined, secret?: string): Case => ({
      name,
      transport: t,
      to,
      service: "(unknown)",
      method: "(unknown)",
      code: Code.Unimplemented,
      secret,
      call: (p) => (t === "grpc" ? grpcCall(p.grpc, path, body, token) : connectCall(p.http, path, body, "application/proto", token)),
    });
    return [
      unknown("a payment method that does not exist", "payment", "/shop.payment.v1.PaymentService/DropLedger", goodCharge, paymentToken),
      unknown("a 4 KiB payment method path", "payment", `/shop.payment.v1.PaymentService/${"Drop".repeat(1024)}Ledger`, goodCharge, paymentToken, "DropDropDropDropDropDropDropDropDropDrop".repeat(4)),
      unknown("PaymentOutcomeService at the payment service", "payment", pathOf(recordOutcome), goodOutcome, paymentToken),
      unknown("PaymentService at the order service", "order", pathOf(chargeOrder), goodCharge, allScopesToken),
      unknown("an outcome method that does not exist", "order", "/shop.order.v1.PaymentOutcomeService/ForgeOutcome", goodOutcome, allScopesToken),
    ];
  }),
  // ---- the delivery service and the order service's shipping RPCs ----
  ...SHIPPING_UNDECODABLE.flatMap((c) => onBoth(`${c.method.name} as protobuf with ${c.name}`, c.method, c.body, Code.InvalidArgument, { mentions: "malformed request" })),
  ...SHIPPING_BAD_TIMES.flatMap((c) => onBoth(`${c.method.name} with a Timestamp with ${c.name}`, c.method, c.body, Code.InvalidArgument, { mentions: c.mentions })),
  ...SHIPPING_BAD_JSON.map(
    (c): Case => ({
      name: `${c.method.name} as JSON with ${c.name}`,
      transport: "connect",
      ...serviceOf(c.method),
      code: Code.InvalidArgument,
      mentions: c.mentions ?? "malformed request",
      secret: "9".repeat(300),
      call: (p) => connectCall(p.http, pathOf(c.method), c.body, "application/json", tokenFor(c.method)),
    }),
  ),
  ...onBoth("a 2 MiB CreateShipment", createShipment, bytes(goodShipment, str(15, "x".repeat(2 * 1024 * 1024))), Code.ResourceExhausted),
  ...onBoth("a 2 MiB RecordShipmentEvent with no token", recordShipmentEvent, bytes(goodShipmentEvent, str(15, "x".repeat(2 * 1024 * 1024))), Code.ResourceExhausted, { token: null }),
  {
    name: "a 2 MiB JSON DeclineShipment",
    transport: "connect",
    ...serviceOf(declineShipment),
    code: Code.ResourceExhausted,
    call: (p) => connectCall(p.http, pathOf(declineShipment), JSON.stringify({ orderId: "o-1", reason: "r".repeat(2 * 1024 * 1024) }), "application/json", deliveryToken),
  },
  ...[createShipment, recordShipmentEvent].map(
    (m): Case => ({
      name: `a ${m.name} gRPC frame declaring 2 GiB`,
      transport: "grpc",
      ...serviceOf(m),
      code: Code.ResourceExhausted,
      call: (p) => {
        const head = Buffer.alloc(5);
        head.writeUInt32BE(0x7fffffff, 1);
        return rawGrpc(p.grpc, pathOf(m), { authorization: `Bearer ${tokenFor(m)}` }, head);
      },
    }),
  ),
  // The caller is checked before the bytes, at the delivery service as everywhere.
  ...onBoth("undecodable CreateShipment and no token", createShipment, garbage(64, 29), Code.Unauthenticated, { token: null, mentions: "no bearer token" }),
  ...onBoth("undecodable RecordShipmentEvent and no token", recordShipmentEvent, garbage(64, 31), Code.Unauthenticated, { token: null, mentions: "no bearer token" }),
  ...onBoth("a valid DeclineShipment and a token with a 6 KiB alg", declineShipment, encode(declineShipment, { orderId: HOSTILE_SHIPMENT, reason: "NO_CAPACITY" }), Code.Unauthenticated, {
    token: hugeAlg,
    mentions: "unsupported signature algorithm",
    secret: "AAAAAZ",
  }),
  ...onBoth("a valid CreateShipment and a token with a 6 KiB kid", createShipment, goodShipment, Code.Unauthenticated, { token: hugeKid, secret: "kkkkkQ" }),
  // A token for the order and voucher services is no token for the delivery service, nor the delivery service's for the order service.
  ...onBoth("a CreateShipment with a token addressed to the other services", createShipment, goodShipment, Code.Unauthenticated, { token: allScopesToken, mentions: "audience" }),
  ...onBoth("a RecordShipmentEvent with a delivery-service token", recordShipmentEvent, goodShipmentEvent, Code.Unauthenticated, { token: deliveryToken, mentions: "audience" }),
  {
    name: "an undecodable JSON MarkShipmentShipped and no token",
    transport: "connect",
    ...serviceOf(markShipped),
    code: Code.Unauthenticated,
    call: (p) => connectCall(p.http, pathOf(markShipped), "{not json", "application/json", undefined),
  },
  // Framing and headers, at the delivery service.
  {
    name: "a CreateShipment frame flagged compressed with no encoding agreed",
    transport: "grpc",
    ...serviceOf(createShipment),
    code: Code.InvalidArgument,
    call: (p) => rawGrpc(p.grpc, pathOf(createShipment), { authorization: `Bearer ${deliveryToken}`, "grpc-encoding": "gzip" }, frame(garbage(32, 37), 1)),
  },
  {
    name: "a DeclineShipment with a grpc-timeout header that is no duration (quoted back clipped)",
    transport: "grpc",
    ...serviceOf(declineShipment),
    code: Code.InvalidArgument,
    secret: "T".repeat(200),
    call: (p) =>
      rawGrpc(p.grpc, pathOf(declineShipment), { authorization: `Bearer ${deliveryToken}`, "grpc-timeout": "T".repeat(4000) }, frame(encode(declineShipment, { orderId: HOSTILE_SHIPMENT, reason: "NO_CAPACITY" }))),
  },
  {
    name: "a CreateShipment in an unsupported grpc-encoding",
    transport: "grpc",
    ...serviceOf(createShipment),
    code: Code.Unimplemented,
    call: (p) => rawGrpc(p.grpc, pathOf(createShipment), { authorization: `Bearer ${deliveryToken}`, "grpc-encoding": "x-evil" }, frame(goodShipment, 1)),
  },
  {
    name: "a CreateShipment with a connect-timeout-ms that is no number",
    transport: "connect",
    ...serviceOf(createShipment),
    code: Code.InvalidArgument,
    call: (p) => connectCall(p.http, pathOf(createShipment), goodShipment, "application/proto", deliveryToken, { "connect-timeout-ms": "soon" }),
  },
  {
    name: "a gzip RecordShipmentEvent body that is not gzip",
    transport: "connect",
    ...serviceOf(recordShipmentEvent),
    code: Code.InvalidArgument,
    call: (p) => connectCall(p.http, pathOf(recordShipmentEvent), garbage(64, 41), "application/proto", allScopesToken, { "content-encoding": "gzip" }),
  },
  {
    name: "a MarkShipmentShipped in a content type that is not Connect's",
    transport: "connect",
    ...serviceOf(markShipped),
    code: Code.InvalidArgument,
    call: (p) => connectCall(p.http, pathOf(markShipped), "order_id=o-1", "application/x-www-form-urlencoded", deliveryToken),
  },
  ...[createShipment, declineShipment, recordShipmentEvent].map(
    (m): Case => ({
      name: `GET on ${m.name}, which changes data`,
      transport: "connect",
      ...serviceOf(m),
      code: Code.Unimplemented,
      call: (p) => connectCall(p.http, `${pathOf(m)}?encoding=json&message=%7B%7D`, "", "application/json", tokenFor(m), {}, "GET"),
    }),
  ),
  // Methods the delivery service does not have, and services on the wrong port.
  ...(["grpc", "connect"] as const).flatMap((t): Case[] => {
    const unknown = (name: string, to: To, path: string, body: Uint8Array, token: string | undefined): Case => ({
      name,
      transport: t,
      to,
      service: "(unknown)",
      method: "(unknown)",
      code: Code.Unimplemented,
      call: (p) => (t === "grpc" ? grpcCall(p.grpc, path, body, token) : connectCall(p.http, path, body, "application/proto", token)),
    });
    return [
      unknown("a delivery method that does not exist", "delivery", "/shop.delivery.v1.DeliveryService/DeleteShipment", goodShipment, deliveryToken),
      unknown("a carrier method that does not exist", "delivery", "/shop.delivery.v1.CarrierService/ForgeDelivery", goodShipment, deliveryToken),
      unknown("ShipmentEventService at the delivery service", "delivery", pathOf(recordShipmentEvent), goodShipmentEvent, deliveryToken),
      unknown("DeliveryService at the order service", "order", pathOf(createShipment), goodShipment, allScopesToken),
    ];
  }),
];

describe("hostile requests on both transports", function () {
  this.timeout(120_000);
  let orderDb: TestDatabase;
  let voucherDb: TestDatabase;
  let paymentDb: TestDatabase;
  let orderSvc: RunningOrderService;
  let voucherSvc: RunningVoucherService;
  let paymentSvc: RunningPaymentService;
  let deliveryDb: TestDatabase;
  let deliverySvc: RunningDeliveryService;
  let deliveryPool: Pool;
  let orderPool: Pool;
  let voucherPool: Pool;
  let paymentPool: Pool;

  /** Every row of every table of the three databases (the payment database's accounts, ledger_entries, inbox and payment_outbox among them). */
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
    return JSON.stringify([await dump(orderPool), await dump(voucherPool), await dump(paymentPool), await dump(deliveryPool)]);
  }

  before(async () => {
    [orderDb, voucherDb, paymentDb, deliveryDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher"), freshDatabase("voucher"), freshDatabase("voucher")]);
    // No carrier worker and no event relay: the seeded shipments and their event rows stay as they are.
    deliverySvc = await startDeliveryService({
      auth: { keys: [testSigningKey.publicJwk], audience: AUDIENCES.deliveries, issuer: DEFAULT_ISSUER },
      databaseUrl: deliveryDb.url,
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      logger,
      poolSize: 5,
      graceMs: 500,
      relay: false,
      carrierWorker: false,
      carriers: { ...CARRIER_DEFAULTS, delayed: { ...CARRIER_DEFAULTS.delayed }, enabled: [...CARRIER_DEFAULTS.enabled] },
    });
    voucherSvc = await startVoucherService({ auth: testAuth, databaseUrl: voucherDb.url, host: "127.0.0.1", grpcPort: 0, httpPort: 0, logger, graceMs: 500 });
    // No outcome relay: the payment_outbox row of the seeded charge stays as it is.
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
        voucherServiceUrl: `http://127.0.0.1:${voucherSvc.grpcPort}`,
        relayEnabled: false,
        auth: testAuth,
      },
      logger,
      relay: false,
      shutdownGraceMs: 500,
    });
    orderPool = createPool({ url: orderDb.url, connectionLimit: 2 });
    voucherPool = createPool({ url: voucherDb.url, connectionLimit: 2 });
    paymentPool = createPool({ url: paymentDb.url, connectionLimit: 2 });
    deliveryPool = createPool({ url: deliveryDb.url, connectionLimit: 2 });
    // Rows for a lenient decoder to damage: an order, sent, and its voucher.
    const order = await grpcCall(orderSvc.grpcPort, pathOf(createOrder), goodOrder, allScopesToken);
    expect(order.code).to.equal(0);
    const issued = await grpcCall(voucherSvc.grpcPort, pathOf(issueVoucher), goodIssue, allScopesToken);
    expect(issued.code).to.equal(0);
    // An account, topped up and charged (ledger entries, inbox rows, a payment_outbox row).
    const payment = (m: DescMethod, body: Uint8Array) => grpcCall(paymentSvc.grpcPort, pathOf(m), body, paymentToken);
    expect((await payment(openAccount, encode(openAccount, { customerId: "cust-h", currency: "EUR" }))).code).to.equal(0);
    expect((await payment(topUp, goodTopUp)).code).to.equal(0);
    expect((await payment(chargeOrder, goodCharge)).code).to.equal(0);
    // A paid order (charge_outbox), charged, then cancelled (refund_outbox; its outcome in the order database's inbox).
    const paid = fromBinary(createOrder.output, await grpcAnswer(orderSvc.grpcPort, pathOf(createOrder), goodPaidOrder, allScopesToken));
    const paidId = paid.order!.id;
    const charged = encode(recordOutcome, { messageKey: `charge:${paidId}`, orderId: paidId, event: PaymentEvent.CHARGED, amountCents: 20_000n, currency: "EUR" });
    await grpcAnswer(orderSvc.grpcPort, pathOf(recordOutcome), charged, allScopesToken);
    const cancelOrder = OrderService.method.cancelOrder;
    await grpcAnswer(orderSvc.grpcPort, pathOf(cancelOrder), encode(cancelOrder, { orderId: paidId }), allScopesToken);
    // A shipment shipped by the manual carrier (transitions, an event row), and an order released for shipping that its shipment shipped (shipment_outbox, inbox).
    expect((await grpcCall(deliverySvc.grpcPort, pathOf(createShipment), goodShipment, deliveryToken)).code).to.equal(0);
    expect((await grpcCall(deliverySvc.grpcPort, pathOf(markShipped), encode(markShipped, { orderId: HOSTILE_SHIPMENT, trackingNumber: "TRK-H" }), deliveryToken)).code).to.equal(0);
    const shipped = fromBinary(createOrder.output, await grpcAnswer(orderSvc.grpcPort, pathOf(createOrder), encode(createOrder, { customerId: "cust-h", totalCents: 20_000n, currency: "EUR", requestId: "hostile-ship" }), allScopesToken));
    const shippedId = shipped.order!.id;
    await grpcAnswer(orderSvc.grpcPort, pathOf(releaseOrder), encode(releaseOrder, { orderId: shippedId, carrier: "manual" }), allScopesToken);
    await grpcAnswer(
      orderSvc.grpcPort,
      pathOf(recordShipmentEvent),
      encode(recordShipmentEvent, { messageKey: `shipment:${shippedId}:SHIPPED`, orderId: shippedId, event: ShipmentEvent.SHIPPED, shipmentId: "01HHOSTILESHIPMENT00000000" }),
      allScopesToken,
    );
    for (const [table, pool] of [
      ["shipments", deliveryPool],
      ["shipment_transitions", deliveryPool],
      ["shipment_event_outbox", deliveryPool],
      ["shipment_outbox", orderPool],
      ["orders", orderPool],
      ["charge_outbox", orderPool],
      ["refund_outbox", orderPool],
      ["inbox", orderPool],
      ["accounts", paymentPool],
      ["ledger_entries", paymentPool],
      ["inbox", paymentPool],
      ["payment_outbox", paymentPool],
    ] as const) {
      const [rows] = await pool.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM \`${table}\``);
      expect(Number(rows[0]!.n), `rows in ${table}`).to.be.greaterThan(0);
    }
  });

  after(async () => {
    await Promise.allSettled([orderSvc?.stop(), voucherSvc?.stop(), paymentSvc?.stop(), deliverySvc?.stop(), orderPool?.end(), voucherPool?.end(), paymentPool?.end(), deliveryPool?.end()]);
    await Promise.allSettled([orderDb?.drop(), voucherDb?.drop(), paymentDb?.drop(), deliveryDb?.drop()]);
  });

  it("has at least 60 cases, on both transports", () => {
    expect(CASES.length).to.be.at.least(60);
    // Every payment RPC and every payment RPC of the order service, on both transports.
    for (const m of [...PAYMENT_METHODS, ...SHIPPING_METHODS]) {
      for (const t of ["grpc", "connect"]) expect(CASES.filter((c) => c.method === m.name && c.transport === t).length, `${m.name} over ${t}`).to.be.at.least(5);
    }
    expect(CASES.filter((c) => c.transport === "grpc").length).to.be.at.least(25);
    expect(CASES.filter((c) => c.transport === "connect").length).to.be.at.least(25);
  });

  it("uses bodies that really do not decode, so each undecodable case reaches the decoder's error", () => {
    for (const c of [...UNDECODABLE, ...PAYMENT_UNDECODABLE, ...SHIPPING_UNDECODABLE]) expect(() => fromBinary(c.method.input, c.body), `${c.method.name}: ${c.name}`).to.throw();
    for (const c of [...BAD_TIMES, ...PAYMENT_BAD_TIMES, ...SHIPPING_BAD_TIMES]) expect(() => fromBinary(c.method.input, c.body), c.name).not.to.throw();
  });

  for (const c of CASES) {
    it(`${c.transport}: ${c.name} → ${CODE_LABEL[c.code]}, nothing written, logged and counted`, async () => {
      const svc = { order: orderSvc, voucher: voucherSvc, payment: paymentSvc, delivery: deliverySvc }[c.to];
      const ports = { grpc: svc.grpcPort, http: svc.httpPort };
      const before = await snapshot();
      const countsBefore = await handledCounts(ports.http);
      const logFrom = logLines.length;

      const answer = await c.call(ports);

      expect(CODE_LABEL[answer.code] ?? Code[answer.code] ?? answer.code, answer.message).to.equal(CODE_LABEL[c.code]);
      if (c.mentions) expect(answer.message, JSON.stringify({ answer: answer.message.slice(0, 300), len: answer.message.length, log: logLines.slice(logFrom).map((l) => String(l.msg).slice(0, 200)) })).to.include(c.mentions);
      expect(answer.message.length, "the answer quotes the request clipped").to.be.below(1200);
      expect(await snapshot(), "a row changed").to.equal(before);

      const key = `${c.service} ${c.method} ${CODE_LABEL[c.code]}`;
      const countsAfter = await handledCounts(ports.http);
      expect((countsAfter.get(key) ?? 0) - (countsBefore.get(key) ?? 0), `rpc_server_handled_total{${key}}`).to.equal(1);

      const lines = logLines.slice(logFrom).filter((l) => l.protocol === c.transport && l.code === Code[c.code] && l.rpc === c.method);
      expect(lines, `a log line for the refusal among ${JSON.stringify(logLines.slice(logFrom).map((l) => l.msg))}`).to.have.length(1);
      if (answer.message !== "") expect(String(lines[0]!.reason)).to.equal(answer.message);
      for (const line of rawLog.slice(logFrom)) {
        expect(line.length, "a log line quotes the request clipped").to.be.below(2000);
        expect(line).not.to.include(allScopesToken);
        expect(line).not.to.include(paymentToken);
        expect(line).not.to.include(deliveryToken);
        expect(line).not.to.include(hugeAlg.slice(0, 40));
        if (c.secret) expect(line).not.to.include(c.secret);
      }
      if (c.secret) expect(answer.message).not.to.include(c.secret);
    });
  }

  it("still serves both services on both transports afterwards", async () => {
    const ok = encode(createOrder, { customerId: "cust-h", totalCents: 20_000n, currency: "EUR", requestId: "hostile-1" });
    expect((await grpcCall(orderSvc.grpcPort, pathOf(createOrder), ok, allScopesToken)).code).to.equal(0);
    expect((await connectCall(orderSvc.httpPort, pathOf(createOrder), ok, "application/proto", allScopesToken)).http).to.equal(200);
    expect((await grpcCall(voucherSvc.grpcPort, pathOf(issueVoucher), goodIssue, allScopesToken)).code).to.equal(0);
    expect((await connectCall(voucherSvc.httpPort, pathOf(issueVoucher), goodIssue, "application/proto", allScopesToken)).http).to.equal(200);
    // A replayed charge and top-up on both transports: answered, nothing moved twice.
    expect((await grpcCall(paymentSvc.grpcPort, pathOf(chargeOrder), goodCharge, paymentToken)).code).to.equal(0);
    expect((await connectCall(paymentSvc.httpPort, pathOf(topUp), goodTopUp, "application/proto", paymentToken)).http).to.equal(200);
    const [rows] = await paymentPool.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM ledger_entries");
    expect(Number(rows[0]!.n), "two entries for the top-up, two for the charge").to.equal(4);
    // A replayed shipment and report on both transports: answered, one shipment, one event row.
    expect((await grpcCall(deliverySvc.grpcPort, pathOf(createShipment), goodShipment, deliveryToken)).code).to.equal(0);
    expect((await connectCall(deliverySvc.httpPort, pathOf(markShipped), encode(markShipped, { orderId: HOSTILE_SHIPMENT }), "application/proto", deliveryToken)).http).to.equal(200);
    const [events] = await deliveryPool.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM shipment_event_outbox");
    expect(Number(events[0]!.n), "one SHIPPED event").to.equal(1);
  });
});
