import { expect } from "chai";
import fc from "fast-check";
import { create, getOption, hasOption, type DescField, type DescMethod, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { field as fieldRulesExt, message as messageRulesExt } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { DomainError } from "@shop/platform/errors";
import { newId } from "@shop/platform/ids";
import { ANY_ID, decodeIdToken, decodeTimeToken, encodeIdToken, encodeTimeToken, timeWindow } from "@shop/platform/paging";
import { normalizeTraceparent } from "@shop/platform/tracing";
import { requestValidator } from "@shop/platform/validation";
import { CarrierService, DeliveryService, ShipmentStatus } from "@shop/sdk/delivery";
import { OrderService, PaymentEvent, PaymentMethod, PaymentOutcomeService, PaymentStatus, ShipmentEvent, ShipmentEventService, ShippingStatus } from "@shop/sdk/order";
import { OrderAdminService } from "@shop/sdk/order-admin";
import { PaymentService } from "@shop/sdk/payment";
import { VoucherService } from "@shop/sdk/voucher";

/**
 * The protovalidate rules in proto/shop/**, the single source of request
 * validation: (b) every request type accepts a valid request and refuses
 * representative bad ones, naming the field; (c) every field of every request
 * has rules, so a new field cannot go unchecked by accident; (d) every
 * Timestamp is range-checked; and property tests that the rules let through
 * whatever the relay sends and whatever the domain's own decoding (page
 * tokens, time windows) accepts, so no valid call is refused before it.
 * Pure: no services, no databases.
 */
const check = requestValidator();
const SERVICES: DescService[] = [
  OrderService,
  OrderAdminService,
  PaymentOutcomeService,
  VoucherService,
  PaymentService,
  DeliveryService,
  CarrierService,
  ShipmentEventService,
];
const ID_RULE_PATTERN = "^[A-Za-z0-9._:-]*$";
const TOKEN_RULE_PATTERN = "^[A-Za-z0-9_-]*$";
const LONG_ID = "x".repeat(65);
const ORDER_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ";

function accepts<M extends DescMethod>(method: M, init: MessageInitShape<M["input"]>): boolean {
  try {
    check(method.input, create(method.input, init));
    return true;
  } catch (err) {
    expect(err).to.be.instanceOf(ConnectError);
    expect((err as ConnectError).code, (err as ConnectError).rawMessage).to.equal(Code.InvalidArgument);
    return false;
  }
}

function refusal<M extends DescMethod>(method: M, init: MessageInitShape<M["input"]>): string {
  try {
    check(method.input, create(method.input, init));
  } catch (err) {
    expect(err).to.be.instanceOf(ConnectError);
    expect((err as ConnectError).code, (err as ConnectError).rawMessage).to.equal(Code.InvalidArgument);
    return (err as ConnectError).rawMessage;
  }
  throw new Error(`${method.name} accepted ${JSON.stringify(init, (_, v) => (typeof v === "bigint" ? `${v}n` : v))}`);
}

function domainAccepts(fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch (err) {
    expect(err).to.be.instanceOf(DomainError);
    return false;
  }
}

const ts = (iso: string): Timestamp => {
  const ms = Date.parse(iso);
  // Before 1970 ms % 1000 is negative: the nanos of a Timestamp never are.
  return { $typeName: "google.protobuf.Timestamp", seconds: BigInt(Math.floor(ms / 1000)), nanos: (((ms % 1000) + 1000) % 1000) * 1_000_000 };
};

interface Case<M extends DescMethod = DescMethod> {
  method: M;
  valid: Array<MessageInitShape<M["input"]>>;
  /** What must be named in the message ("order_ids[1]" or a rule's own message), and the request. */
  invalid: Array<[string, MessageInitShape<M["input"]>]>;
}
const rpc = <M extends DescMethod>(c: Case<M>): Case => c as unknown as Case;

const badIds = (field: string, build: (id: string) => object): Array<[string, any]> => [
  [`${field}: value is required`, build("")],
  [`${field}: must be at most 64 characters`, build(LONG_ID)],
  [`${field}: does not match regex pattern`, build("a b")],
  [`${field}: does not match regex pattern`, build("ördér")],
];

const order = { customerId: "cust-1", totalCents: 12_345n, currency: "EUR", requestId: "req-1" };
const issue = { orderId: ORDER_ID, customerId: "cust-1", orderTotalCents: 12_345n, currency: "EUR" };
const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const ids = (n: number, prefix = "id-") => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

const outcome = { messageKey: `charge:${ORDER_ID}`, orderId: ORDER_ID, event: PaymentEvent.CHARGED, amountCents: 12_345n, currency: "EUR" };
const charge = { orderId: ORDER_ID, customerId: "cust-1", amountCents: 12_345n, currency: "EUR" };
const topUp = { customerId: "cust-1", amountCents: 15_000n, currency: "EUR", requestId: "top-1" };
const shipment = { orderId: ORDER_ID, customerId: "cust-1", totalCents: 12_345n, currency: "EUR" };
const shipmentEvent = { messageKey: `shipment:${ORDER_ID}:SHIPPED`, orderId: ORDER_ID, event: ShipmentEvent.SHIPPED, shipmentId: "01HSHIPMENT000000000000000" };
/** A carrier name: 1 to 32 of a-z 0-9 -, or empty for the default. */
const badCarriers = (build: (carrier: string) => object): Array<[string, any]> => [
  ["carrier: must be at most 32 characters", build("c".repeat(33))],
  ["carrier: does not match regex pattern", build("Delayed")],
  ["carrier: does not match regex pattern", build("de layed")],
  ["carrier: does not match regex pattern", build("de_layed")],
  ["carrier: does not match regex pattern", build("dëlayed")],
];

const CASES: Case[] = [
  rpc({
    method: OrderService.method.createOrder,
    valid: [
      order,
      { ...order, totalCents: 1n },
      { ...order, totalCents: 10_000_000_000n },
      { ...order, customerId: "a".repeat(64), requestId: "A.b_c:d-9" },
      { ...order, paymentMethod: PaymentMethod.ACCOUNT },
      { ...order, paymentMethod: PaymentMethod.UNSPECIFIED },
    ],
    invalid: [
      ["payment_method must be PAYMENT_METHOD_UNSPECIFIED (no payment) or PAYMENT_METHOD_ACCOUNT", { ...order, paymentMethod: 2 as PaymentMethod }],
      ["payment_method must be PAYMENT_METHOD_UNSPECIFIED (no payment) or PAYMENT_METHOD_ACCOUNT", { ...order, paymentMethod: -1 as PaymentMethod }],
      ...badIds("customer_id", (id) => ({ ...order, customerId: id })),
      ...badIds("request_id", (id) => ({ ...order, requestId: id })),
      ["total_cents: must be greater than 0", { ...order, totalCents: 0n }],
      ["total_cents: must be greater than 0", { ...order, totalCents: -1n }],
      ["total_cents: must be greater than 0 and less than or equal to 10000000000", { ...order, totalCents: 10_000_000_001n }],
      ["total_cents:", { ...order, totalCents: 9_223_372_036_854_775_807n }],
      ["currency: must equal `EUR`", { ...order, currency: "USD" }],
      ["currency: must equal `EUR`", { ...order, currency: "eur" }],
      ["currency: value is required", { ...order, currency: "" }],
    ],
  }),
  ...(["getOrder", "markOrderSent", "markOrderDelivered", "cancelOrder", "requeueVoucher", "requeuePayment"] as const).map((name) =>
    rpc({
      method: OrderService.method[name],
      valid: [{ orderId: ORDER_ID }, { orderId: "o-1" }],
      invalid: badIds("order_id", (id) => ({ orderId: id })),
    }),
  ),
  rpc({
    method: OrderService.method.listOrders,
    valid: [{ customerId: "cust-1" }, { customerId: "cust-1", pageSize: 500, pageToken: encodeIdToken(newId()) }, { customerId: "c", pageSize: 1_000_000 }],
    invalid: [
      ...badIds("customer_id", (id) => ({ customerId: id })),
      ["page_size: must be greater than or equal to 0", { customerId: "c", pageSize: -1 }],
      ["page_token: does not match regex pattern", { customerId: "c", pageToken: "%%not-a-token%%" }],
      ["page_token: must be at most 200 characters", { customerId: "c", pageToken: "a".repeat(201) }],
    ],
  }),
  rpc({
    method: OrderService.method.listSentOrders,
    valid: [
      {},
      { sentAfter: ts("2020-01-01T00:00:00Z"), sentBefore: ts("2030-01-01T00:00:00Z"), pageSize: 5000, pageToken: encodeTimeToken(new Date(), newId()) },
      { sentAfter: ts("1000-01-01T00:00:00Z"), sentBefore: ts("9999-12-31T23:59:59.999Z") },
      { sentAfter: ts("2020-01-01T00:00:00Z"), sentBefore: ts("2020-01-01T00:00:00Z") },
    ],
    invalid: [
      ["sent_after must not be later than sent_before", { sentAfter: ts("2030-01-01T00:00:00Z"), sentBefore: ts("2020-01-01T00:00:00Z") }],
      ["sent_before: must be a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z", { sentBefore: { seconds: 400_000_000_000n, nanos: 0 } }],
      ["sent_before: nanos must be 0 to 999999999", { sentBefore: { seconds: 1_700_000_000n, nanos: -1 } }],
      ["sent_after: nanos must be 0 to 999999999", { sentAfter: { seconds: 1_700_000_000n, nanos: 1_000_000_000 } }],
      ["sent_after: must be greater than or equal to", { sentAfter: ts("0999-12-31T23:59:59.999Z") }],
      ["page_size: must be greater than or equal to 0", { pageSize: -1 }],
      ["page_token: does not match regex pattern", { pageToken: "garbage!" }],
    ],
  }),
  rpc({
    method: OrderService.method.listOrdersByPaymentStatus,
    valid: [
      { paymentStatus: PaymentStatus.AWAITING },
      { paymentStatus: PaymentStatus.REFUNDED, createdBefore: ts("2030-01-01T00:00:00Z"), pageSize: 1000, pageToken: encodeTimeToken(new Date(), newId()) },
      { paymentStatus: PaymentStatus.NONE },
    ],
    invalid: [
      ["payment_status must be one of PAYMENT_STATUS_NONE .. PAYMENT_STATUS_REFUNDED", {}],
      ["payment_status must be one of PAYMENT_STATUS_NONE .. PAYMENT_STATUS_REFUNDED", { paymentStatus: 7 as PaymentStatus }],
      ["created_before: must be a time from 0001-01-01T00:00:00Z", { paymentStatus: PaymentStatus.AWAITING, createdBefore: { seconds: 400_000_000_000n, nanos: 0 } }],
      ["page_size: must be greater than or equal to 0", { paymentStatus: PaymentStatus.AWAITING, pageSize: -1 }],
      ["page_token: does not match regex pattern", { paymentStatus: PaymentStatus.AWAITING, pageToken: "no!" }],
    ],
  }),
  rpc({
    method: OrderService.method.createOrder,
    valid: [
      { ...order, carrier: "" },
      { ...order, carrier: "delayed" },
      { ...order, carrier: "c".repeat(32) },
      { ...order, carrier: "my-carrier-2" },
    ],
    invalid: badCarriers((carrier) => ({ ...order, carrier })),
  }),
  rpc({
    method: OrderService.method.releaseOrderForShipping,
    valid: [{ orderId: ORDER_ID }, { orderId: "o-1", carrier: "manual" }, { orderId: ORDER_ID, carrier: "c".repeat(32) }],
    invalid: [...badIds("order_id", (id) => ({ orderId: id })), ...badCarriers((carrier) => ({ orderId: ORDER_ID, carrier }))],
  }),
  rpc({
    method: OrderService.method.requeueShipment,
    valid: [{ orderId: ORDER_ID }, { orderId: "o-1" }],
    invalid: badIds("order_id", (id) => ({ orderId: id })),
  }),
  rpc({
    method: OrderService.method.listOrdersByShippingStatus,
    valid: [
      { shippingStatus: ShippingStatus.REQUESTED },
      { shippingStatus: ShippingStatus.DECLINED, requestedBefore: ts("2030-01-01T00:00:00Z"), pageSize: 5000, pageToken: encodeTimeToken(new Date(), newId()) },
      { shippingStatus: ShippingStatus.SHIPPED, pageSize: 1_000_000 },
    ],
    invalid: [
      ["shipping_status must be one of SHIPPING_STATUS_REQUESTED .. SHIPPING_STATUS_DECLINED", {}],
      ["shipping_status must be one of SHIPPING_STATUS_REQUESTED .. SHIPPING_STATUS_DECLINED", { shippingStatus: ShippingStatus.NONE }],
      ["shipping_status must be one of SHIPPING_STATUS_REQUESTED .. SHIPPING_STATUS_DECLINED", { shippingStatus: 6 as ShippingStatus }],
      ["shipping_status must be one of SHIPPING_STATUS_REQUESTED .. SHIPPING_STATUS_DECLINED", { shippingStatus: -1 as ShippingStatus }],
      ["requested_before: must be a time from 0001-01-01T00:00:00Z", { shippingStatus: ShippingStatus.REQUESTED, requestedBefore: { seconds: 400_000_000_000n, nanos: 0 } }],
      ["requested_before: nanos must be 0 to 999999999", { shippingStatus: ShippingStatus.REQUESTED, requestedBefore: { seconds: 1_700_000_000n, nanos: -1 } }],
      ["page_size: must be greater than or equal to 0", { shippingStatus: ShippingStatus.REQUESTED, pageSize: -1 }],
      ["page_token: does not match regex pattern", { shippingStatus: ShippingStatus.REQUESTED, pageToken: "no!" }],
      ["page_token: must be at most 200 characters", { shippingStatus: ShippingStatus.REQUESTED, pageToken: "a".repeat(201) }],
    ],
  }),
  rpc({
    method: ShipmentEventService.method.recordShipmentEvent,
    valid: [
      shipmentEvent,
      { ...shipmentEvent, messageKey: `shipment:${ORDER_ID}:DELIVERED`, event: ShipmentEvent.DELIVERED, carrier: "delayed", occurredAt: ts("2026-01-01T00:00:00Z"), traceparent },
      { ...shipmentEvent, messageKey: `shipment:${ORDER_ID}:DECLINED`, event: ShipmentEvent.DECLINED, declineReason: "NO CAPACITY: full.", carrier: "c".repeat(32) },
      { ...shipmentEvent, messageKey: "k".repeat(128), declineReason: "R".repeat(64) },
    ],
    invalid: [
      ...badIds("order_id", (id) => ({ ...shipmentEvent, orderId: id })),
      ...badIds("shipment_id", (id) => ({ ...shipmentEvent, shipmentId: id })),
      ["message_key: value is required", { ...shipmentEvent, messageKey: "" }],
      ["message_key: must be at most 128 characters", { ...shipmentEvent, messageKey: "k".repeat(129) }],
      ["message_key: does not match regex pattern", { ...shipmentEvent, messageKey: "shipment: x" }],
      ["message_key: does not match regex pattern", { ...shipmentEvent, messageKey: "shipment/x" }],
      ["event must be SHIPMENT_EVENT_SHIPPED, SHIPMENT_EVENT_DELIVERED or SHIPMENT_EVENT_DECLINED", { ...shipmentEvent, event: ShipmentEvent.UNSPECIFIED }],
      ["event must be SHIPMENT_EVENT_SHIPPED, SHIPMENT_EVENT_DELIVERED or SHIPMENT_EVENT_DECLINED", { ...shipmentEvent, event: 4 as ShipmentEvent }],
      ["event must be SHIPMENT_EVENT_SHIPPED, SHIPMENT_EVENT_DELIVERED or SHIPMENT_EVENT_DECLINED", { ...shipmentEvent, event: -1 as ShipmentEvent }],
      ...badCarriers((carrier) => ({ ...shipmentEvent, carrier })),
      ["decline_reason: must be at most 64 characters", { ...shipmentEvent, event: ShipmentEvent.DECLINED, declineReason: "R".repeat(65) }],
      ["decline_reason: does not match regex pattern", { ...shipmentEvent, event: ShipmentEvent.DECLINED, declineReason: "no\tcapacity" }],
      ["decline_reason: does not match regex pattern", { ...shipmentEvent, event: ShipmentEvent.DECLINED, declineReason: "nö" }],
      ["occurred_at: must be a time from 0001-01-01T00:00:00Z", { ...shipmentEvent, occurredAt: { seconds: 400_000_000_000n, nanos: 0 } }],
      ["occurred_at: nanos must be 0 to 999999999", { ...shipmentEvent, occurredAt: { seconds: 0n, nanos: 1_000_000_000 } }],
      ["traceparent: does not match regex pattern", { ...shipmentEvent, traceparent: "00-xyz" }],
      ["traceparent: does not match regex pattern", { ...shipmentEvent, traceparent: traceparent.toUpperCase() }],
    ],
  }),
  rpc({
    method: DeliveryService.method.createShipment,
    valid: [
      shipment,
      { ...shipment, totalCents: 1n, carrier: "delayed", traceparent },
      { ...shipment, totalCents: 10_000_000_000n, carrier: "c".repeat(32) },
      { ...shipment, orderId: "a".repeat(64), customerId: "A.b_c:d-9" },
    ],
    invalid: [
      ...badIds("order_id", (id) => ({ ...shipment, orderId: id })),
      ...badIds("customer_id", (id) => ({ ...shipment, customerId: id })),
      ["total_cents: must be greater than 0", { ...shipment, totalCents: 0n }],
      ["total_cents: must be greater than 0", { ...shipment, totalCents: -1n }],
      ["total_cents: must be greater than 0 and less than or equal to 10000000000", { ...shipment, totalCents: 10_000_000_001n }],
      ["currency: must equal `EUR`", { ...shipment, currency: "USD" }],
      ["currency: value is required", { ...shipment, currency: "" }],
      ...badCarriers((carrier) => ({ ...shipment, carrier })),
      ["traceparent: does not match regex pattern", { ...shipment, traceparent: "00-xyz" }],
      ["traceparent: does not match regex pattern", { ...shipment, traceparent: `01${traceparent.slice(2)}` }],
    ],
  }),
  ...(["getShipment", "resumeShipment"] as const).map((name) =>
    rpc({
      method: DeliveryService.method[name],
      valid: [{ orderId: ORDER_ID }, { orderId: "o-1" }],
      invalid: badIds("order_id", (id) => ({ orderId: id })),
    }),
  ),
  rpc({
    method: DeliveryService.method.batchGetShipments,
    valid: [{ orderIds: [] }, { orderIds: [ORDER_ID, ORDER_ID] }, { orderIds: ids(1000) }],
    invalid: [
      ["order_ids: must contain no more than 1000 item(s)", { orderIds: ids(1001) }],
      ["order_ids[1]: must be at least 1 characters", { orderIds: ["ok", ""] }],
      ["order_ids[1]: does not match regex pattern", { orderIds: [ORDER_ID, "a b"] }],
      ["order_ids[0]: must be at most 64 characters", { orderIds: [LONG_ID] }],
    ],
  }),
  rpc({
    method: DeliveryService.method.listShipments,
    valid: [
      { status: ShipmentStatus.CREATED },
      { status: ShipmentStatus.DECLINED, updatedAfter: ts("2020-01-01T00:00:00Z"), updatedBefore: ts("2030-01-01T00:00:00Z"), pageSize: 1000, pageToken: encodeTimeToken(new Date(), newId()) },
      { status: ShipmentStatus.SHIPPED, updatedAfter: ts("1000-01-01T00:00:00Z"), updatedBefore: ts("9999-12-31T23:59:59.999Z"), pageSize: 1_000_000 },
    ],
    invalid: [
      ["status must be one of SHIPMENT_STATUS_CREATED .. SHIPMENT_STATUS_DECLINED", {}],
      ["status must be one of SHIPMENT_STATUS_CREATED .. SHIPMENT_STATUS_DECLINED", { status: 6 as ShipmentStatus }],
      ["status must be one of SHIPMENT_STATUS_CREATED .. SHIPMENT_STATUS_DECLINED", { status: -1 as ShipmentStatus }],
      ["updated_after must be earlier than updated_before", { status: ShipmentStatus.CREATED, updatedAfter: ts("2030-01-01T00:00:00Z"), updatedBefore: ts("2020-01-01T00:00:00Z") }],
      ["updated_after must be earlier than updated_before", { status: ShipmentStatus.CREATED, updatedAfter: ts("2030-01-01T00:00:00Z"), updatedBefore: ts("2030-01-01T00:00:00Z") }],
      ["updated_before: must be a time from 0001-01-01T00:00:00Z", { status: ShipmentStatus.CREATED, updatedBefore: { seconds: 400_000_000_000n, nanos: 0 } }],
      ["updated_after: nanos must be 0 to 999999999", { status: ShipmentStatus.CREATED, updatedAfter: { seconds: 0n, nanos: -1 } }],
      ["page_size: must be greater than or equal to 0", { status: ShipmentStatus.CREATED, pageSize: -1 }],
      ["page_token: does not match regex pattern", { status: ShipmentStatus.CREATED, pageToken: "no!" }],
      ["page_token: must be at most 200 characters", { status: ShipmentStatus.CREATED, pageToken: "a".repeat(201) }],
    ],
  }),
  ...(["confirmShipment", "markShipmentDelivered"] as const).map((name) =>
    rpc({
      method: CarrierService.method[name],
      valid: [{ orderId: ORDER_ID }, { orderId: "o-1" }],
      invalid: badIds("order_id", (id) => ({ orderId: id })),
    }),
  ),
  rpc({
    method: CarrierService.method.declineShipment,
    valid: [
      { orderId: ORDER_ID, reason: "NO_CAPACITY" },
      { orderId: ORDER_ID, reason: "address unreachable: street.name-1" },
      { orderId: ORDER_ID, reason: "R".repeat(64) },
    ],
    invalid: [
      ...badIds("order_id", (id) => ({ orderId: id, reason: "NO_CAPACITY" })),
      ["reason: value is required", { orderId: ORDER_ID, reason: "" }],
      ["reason: must be at most 64 characters", { orderId: ORDER_ID, reason: "R".repeat(65) }],
      ["reason: does not match regex pattern", { orderId: ORDER_ID, reason: "no\ncapacity" }],
      ["reason: does not match regex pattern", { orderId: ORDER_ID, reason: "trop plein ½" }],
    ],
  }),
  rpc({
    method: CarrierService.method.markShipmentShipped,
    valid: [{ orderId: ORDER_ID }, { orderId: ORDER_ID, trackingNumber: "TRK.123:4-5_6" }, { orderId: ORDER_ID, trackingNumber: "T".repeat(64) }],
    invalid: [
      ...badIds("order_id", (id) => ({ orderId: id, trackingNumber: "T1" })),
      ["tracking_number: must be at most 64 characters", { orderId: ORDER_ID, trackingNumber: "T".repeat(65) }],
      ["tracking_number: does not match regex pattern", { orderId: ORDER_ID, trackingNumber: "T 1" }],
      ["tracking_number: does not match regex pattern", { orderId: ORDER_ID, trackingNumber: "Tö1" }],
    ],
  }),
  rpc({
    method: PaymentOutcomeService.method.recordPaymentOutcome,
    valid: [
      outcome,
      { ...outcome, event: PaymentEvent.REFUSED, refusalReason: "INSUFFICIENT_FUNDS", traceparent },
      { ...outcome, messageKey: `refund:${ORDER_ID}`, event: PaymentEvent.REFUNDED, amountCents: 10_000_000_000n },
    ],
    invalid: [
      ...badIds("order_id", (id) => ({ ...outcome, orderId: id })),
      ["message_key: value is required", { ...outcome, messageKey: "" }],
      ["message_key: must be at most 128 characters", { ...outcome, messageKey: "k".repeat(129) }],
      ["message_key: does not match regex pattern", { ...outcome, messageKey: "charge: x" }],
      ["event must be PAYMENT_EVENT_CHARGED, PAYMENT_EVENT_REFUSED or PAYMENT_EVENT_REFUNDED", { ...outcome, event: PaymentEvent.UNSPECIFIED }],
      ["event must be PAYMENT_EVENT_CHARGED, PAYMENT_EVENT_REFUSED or PAYMENT_EVENT_REFUNDED", { ...outcome, event: 4 as PaymentEvent }],
      ["refusal_reason: does not match regex pattern", { ...outcome, refusalReason: "no funds" }],
      ["refusal_reason: must be at most 32 characters", { ...outcome, refusalReason: "X".repeat(33) }],
      ["amount_cents: must be greater than 0", { ...outcome, amountCents: 0n }],
      ["amount_cents: must be greater than 0", { ...outcome, amountCents: 10_000_000_001n }],
      ["currency: must equal `EUR`", { ...outcome, currency: "USD" }],
      ["traceparent: does not match regex pattern", { ...outcome, traceparent: "00-xyz" }],
    ],
  }),
  rpc({
    method: PaymentService.method.openAccount,
    valid: [{ customerId: "cust-1", currency: "EUR" }],
    invalid: [...badIds("customer_id", (id) => ({ customerId: id, currency: "EUR" })), ["currency: must equal `EUR`", { customerId: "c", currency: "usd" }]],
  }),
  rpc({
    method: PaymentService.method.getAccount,
    valid: [{ customerId: "cust-1" }],
    invalid: badIds("customer_id", (id) => ({ customerId: id })),
  }),
  rpc({
    method: PaymentService.method.topUp,
    valid: [topUp, { ...topUp, amountCents: 1n }, { ...topUp, amountCents: 10_000_000_000n }],
    invalid: [
      ...badIds("customer_id", (id) => ({ ...topUp, customerId: id })),
      ...badIds("request_id", (id) => ({ ...topUp, requestId: id })),
      ["amount_cents: must be greater than 0", { ...topUp, amountCents: 0n }],
      ["amount_cents: must be greater than 0", { ...topUp, amountCents: -1n }],
      ["amount_cents: must be greater than 0", { ...topUp, amountCents: 10_000_000_001n }],
      ["currency: value is required", { ...topUp, currency: "" }],
    ],
  }),
  rpc({
    method: PaymentService.method.listStatement,
    valid: [{ customerId: "cust-1" }, { customerId: "cust-1", pageSize: 500, pageToken: encodeIdToken(newId()) }],
    invalid: [
      ...badIds("customer_id", (id) => ({ customerId: id })),
      ["page_size: must be greater than or equal to 0", { customerId: "c", pageSize: -1 }],
      ["page_token: does not match regex pattern", { customerId: "c", pageToken: "%%%" }],
    ],
  }),
  rpc({
    method: PaymentService.method.chargeOrder,
    valid: [charge, { ...charge, traceparent }],
    invalid: [
      ...badIds("order_id", (id) => ({ ...charge, orderId: id })),
      ...badIds("customer_id", (id) => ({ ...charge, customerId: id })),
      ["amount_cents: must be greater than 0", { ...charge, amountCents: 0n }],
      ["currency: must equal `EUR`", { ...charge, currency: "EURO" }],
      ["traceparent: does not match regex pattern", { ...charge, traceparent: "x" }],
    ],
  }),
  rpc({
    method: PaymentService.method.refundOrder,
    valid: [{ orderId: ORDER_ID }, { orderId: ORDER_ID, traceparent }],
    invalid: [...badIds("order_id", (id) => ({ orderId: id })), ["traceparent: does not match regex pattern", { orderId: ORDER_ID, traceparent: "x" }]],
  }),
  rpc({
    method: PaymentService.method.batchGetOrderPayments,
    valid: [{ orderIds: [] }, { orderIds: ids(1000) }],
    invalid: [
      ["order_ids: must contain no more than 1000 item(s)", { orderIds: ids(1001) }],
      ["order_ids[1]: does not match regex pattern", { orderIds: ["ok", "a b"] }],
      ["order_ids[0]: must be at least 1 characters", { orderIds: [""] }],
    ],
  }),
  rpc({
    method: PaymentService.method.listOrderPayments,
    valid: [{}, { decidedAfter: ts("2020-01-01T00:00:00Z"), decidedBefore: ts("2030-01-01T00:00:00Z"), pageSize: 500, pageToken: encodeTimeToken(new Date(), newId()) }],
    invalid: [
      ["decided_after must be earlier than decided_before", { decidedAfter: ts("2030-01-01T00:00:00Z"), decidedBefore: ts("2020-01-01T00:00:00Z") }],
      ["decided_after must be earlier than decided_before", { decidedAfter: ts("2030-01-01T00:00:00Z"), decidedBefore: ts("2030-01-01T00:00:00Z") }],
      ["decided_before: must be a time from 0001-01-01T00:00:00Z", { decidedBefore: { seconds: 400_000_000_000n, nanos: 0 } }],
      ["page_size: must be greater than or equal to 0", { pageSize: -1 }],
      ["page_token: does not match regex pattern", { pageToken: "no!" }],
    ],
  }),
  rpc({
    method: OrderService.method.batchGetOrders,
    valid: [{ orderIds: [] }, { orderIds: [ORDER_ID, ORDER_ID] }, { orderIds: ids(5000) }],
    invalid: [
      ["order_ids: must contain no more than 5000 item(s)", { orderIds: ids(5001) }],
      ["order_ids[1]: must be at least 1 characters", { orderIds: ["ok", ""] }],
      ["order_ids[1]: does not match regex pattern", { orderIds: [ORDER_ID, "a b"] }],
      ["order_ids[0]: must be at most 64 characters", { orderIds: [LONG_ID] }],
    ],
  }),
  rpc({
    method: OrderAdminService.method.listDeadVoucherDeliveries,
    valid: [{}, { pageSize: 1000, pageToken: Buffer.from("o123", "utf8").toString("base64url") }, { pageSize: 5000 }],
    invalid: [
      ["page_size: must be greater than or equal to 0", { pageSize: -1 }],
      ["page_token: must be at most 40 characters", { pageToken: "a".repeat(41) }],
      ["page_token: does not match regex pattern", { pageToken: "o1=" }],
    ],
  }),
  rpc({
    method: OrderAdminService.method.requeueDeadVoucherDeliveries,
    valid: [{ all: true }, { orderIds: [ORDER_ID] }, { orderIds: ids(1000) }],
    invalid: [
      ["order_ids is empty; give the orders to requeue, or all=true for every dead delivery", {}],
      ["give either order_ids or all=true, not both", { all: true, orderIds: [ORDER_ID] }],
      ["order_ids: must contain no more than 1000 item(s)", { orderIds: ids(1001) }],
      ["order_ids[0]: does not match regex pattern", { orderIds: ["a b"] }],
      ["order_ids[1]: must be at least 1 characters", { orderIds: ["ok", ""] }],
    ],
  }),
  rpc({
    method: VoucherService.method.issueVoucher,
    valid: [issue, { ...issue, traceparent }, { ...issue, orderTotalCents: 10_000_000_000n }],
    invalid: [
      ...badIds("order_id", (id) => ({ ...issue, orderId: id })),
      ...badIds("customer_id", (id) => ({ ...issue, customerId: id })),
      ["order_total_cents: must be greater than 0", { ...issue, orderTotalCents: 0n }],
      ["order_total_cents: must be greater than 0", { ...issue, orderTotalCents: -5n }],
      ["order_total_cents: must be greater than 0", { ...issue, orderTotalCents: 10_000_000_001n }],
      ["currency: must equal `EUR`", { ...issue, currency: "eur" }],
      ["currency: value is required", { ...issue, currency: "" }],
      ["traceparent: does not match regex pattern", { ...issue, traceparent: "00-xyz" }],
      ["traceparent: does not match regex pattern", { ...issue, traceparent: traceparent.toUpperCase() }],
      ["traceparent: does not match regex pattern", { ...issue, traceparent: `01${traceparent.slice(2)}` }],
    ],
  }),
  rpc({
    method: VoucherService.method.batchIssueVouchers,
    valid: [
      { items: [issue] },
      { items: ids(1000).map((orderId) => ({ ...issue, orderId })) },
      // Bad items pass: the handler answers each one with its own INVALID_ARGUMENT result.
      { items: [issue, { ...issue, orderId: "", currency: "USD", traceparent: "nonsense" }] },
    ],
    invalid: [
      ["items: must contain at least 1 item(s)", { items: [] }],
      ["items: must contain no more than 1000 item(s)", { items: ids(1001).map((orderId) => ({ ...issue, orderId })) }],
    ],
  }),
  rpc({
    method: VoucherService.method.getVoucher,
    valid: [{ voucherId: ORDER_ID }],
    invalid: badIds("voucher_id", (id) => ({ voucherId: id })),
  }),
  rpc({
    method: VoucherService.method.listVouchers,
    valid: [{ customerId: "cust-1" }, { customerId: "cust-1", pageSize: 500, pageToken: encodeIdToken(newId()) }],
    invalid: [
      ...badIds("customer_id", (id) => ({ customerId: id })),
      ["page_size: must be greater than or equal to 0", { customerId: "c", pageSize: -1 }],
      ["page_token: does not match regex pattern", { customerId: "c", pageToken: "%%%" }],
    ],
  }),
  rpc({
    method: VoucherService.method.batchGetVouchersByOrder,
    valid: [{ orderIds: [] }, { orderIds: ids(5000) }],
    invalid: [
      ["order_ids: must contain no more than 5000 item(s)", { orderIds: ids(5001) }],
      ["order_ids[1]: does not match regex pattern", { orderIds: ["ok", "a b"] }],
    ],
  }),
  rpc({
    method: VoucherService.method.listIssuedVouchers,
    valid: [{}, { issuedAfter: ts("2020-01-01T00:00:00Z"), issuedBefore: ts("2030-01-01T00:00:00Z"), pageSize: 5000 }],
    invalid: [
      ["issued_after must not be later than issued_before", { issuedAfter: ts("2030-01-01T00:00:00Z"), issuedBefore: ts("2020-01-01T00:00:00Z") }],
      ["issued_before: must be a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z", { issuedBefore: { seconds: 400_000_000_000n, nanos: 0 } }],
      ["issued_after: nanos must be 0 to 999999999", { issuedAfter: { seconds: 0n, nanos: -999_999_999 } }],
      ["page_size: must be greater than or equal to 0", { pageSize: -1 }],
      ["page_token: does not match regex pattern", { pageToken: "nope!" }],
    ],
  }),
  rpc({
    method: VoucherService.method.voidVoucher,
    valid: [{ voucherId: ORDER_ID, reason: "test" }, { voucherId: ORDER_ID, reason: "r".repeat(255) }, { voucherId: ORDER_ID, reason: "ü".repeat(255) }],
    invalid: [
      ...badIds("voucher_id", (id) => ({ voucherId: id, reason: "test" })),
      ["reason: value is required", { voucherId: ORDER_ID, reason: "" }],
      ["reason: value must not be only white space", { voucherId: ORDER_ID, reason: " \t\u00a0" }],
      ["reason: must be at most 255 characters", { voucherId: ORDER_ID, reason: "r".repeat(256) }],
    ],
  }),
];

describe("request rules in the shop protos", () => {
  describe("(b) each request type", () => {
    for (const c of CASES) {
      it(`${c.method.parent.name}.${c.method.name} accepts valid requests and refuses bad ones, naming the field`, () => {
        c.valid.forEach((init, i) => expect(accepts(c.method, init), `valid request #${i}`).to.equal(true));
        for (const [mentions, init] of c.invalid) expect(refusal(c.method, init)).to.include(mentions);
      });
    }

    it("cover every method of every service", () => {
      const covered = new Set(CASES.map((c) => c.method));
      const methods = SERVICES.flatMap((s) => s.methods);
      expect(methods.filter((m) => !covered.has(m)).map((m) => m.name)).to.deep.equal([]);
    });
  });

  describe("(d) every google.protobuf.Timestamp in every request, found from the descriptors", () => {
    /** Paths from a request type to each Timestamp field it can hold (lists and maps as one element). */
    function timestampPaths(desc: DescMethod["input"], prefix: string[] = [], seen = new Set<string>()): Array<{ path: string[]; field: DescField }> {
      const out: Array<{ path: string[]; field: DescField }> = [];
      for (const f of desc.fields) {
        if (f.fieldKind !== "message" && !(f.fieldKind === "list" && f.listKind === "message")) continue;
        const sub = f.message;
        if (sub.typeName === "google.protobuf.Timestamp") out.push({ path: [...prefix, f.localName], field: f });
        else if (!seen.has(sub.typeName)) out.push(...timestampPaths(sub, [...prefix, f.localName], new Set([...seen, sub.typeName])));
      }
      return out;
    }
    const withTimestamps = SERVICES.flatMap((s) => s.methods).flatMap((m) => timestampPaths(m.input).map((t) => ({ method: m, ...t })));

    it("finds the Timestamp fields the requests have (a new one is covered below without a case of its own)", () => {
      expect(withTimestamps.map((t) => `${t.method.name}.${t.field.name}`).sort()).to.deep.equal([
        "ListIssuedVouchers.issued_after",
        "ListIssuedVouchers.issued_before",
        "ListOrderPayments.decided_after",
        "ListOrderPayments.decided_before",
        "ListOrdersByPaymentStatus.created_before",
        "ListOrdersByShippingStatus.requested_before",
        "ListSentOrders.sent_after",
        "ListSentOrders.sent_before",
        "ListShipments.updated_after",
        "ListShipments.updated_before",
        "RecordShipmentEvent.occurred_at",
      ]);
    });

    for (const [what, bad, mentions] of [
      ["nanos below 0", { seconds: 1_700_000_000n, nanos: -1 }, "nanos must be 0 to 999999999"],
      ["nanos of a whole second", { seconds: 1_700_000_000n, nanos: 1_000_000_000 }, "nanos must be 0 to 999999999"],
      ["the largest int32 nanos", { seconds: 0n, nanos: 2_147_483_647 }, "nanos must be 0 to 999999999"],
      ["a time before the year 1", { seconds: -62_135_596_801n, nanos: 999_999_999 }, "must be a time from 0001-01-01T00:00:00Z"],
      ["a time after the year 9999", { seconds: 253_402_300_800n, nanos: 0 }, "must be a time from 0001-01-01T00:00:00Z"],
      ["the largest int64 seconds", { seconds: 9_223_372_036_854_775_807n, nanos: 0 }, "must be a time from 0001-01-01T00:00:00Z"],
      ["the smallest int64 seconds", { seconds: -9_223_372_036_854_775_808n, nanos: 0 }, "must be a time from 0001-01-01T00:00:00Z"],
    ] as const) {
      it(`refuses ${what} in each of them, naming the field`, () => {
        for (const t of withTimestamps) {
          const init: Record<string, unknown> = {};
          let at = init;
          for (const step of t.path.slice(0, -1)) at = at[step] = {};
          at[t.path.at(-1)!] = bad;
          expect(refusal(t.method, init as never)).to.include(`${t.field.name}: ${mentions}`);
        }
      });
    }
  });

  describe("(c) every field of every request has rules", () => {
    /** Fields that need no rule of their own, and why. Everything else must have one. */
    const WITHOUT_RULES: Record<string, string> = {
      "shop.order.v1.RequeueVoucherRequest.redeliver": "any bool is valid",
      "shop.order.v1.RequeueDeadVoucherDeliveriesRequest.all": "checked together with order_ids by the message's rules",
    };
    const requestFields = (): DescField[] => SERVICES.flatMap((s) => s.methods.flatMap((m) => m.input.fields));
    const name = (f: DescField) => `${f.parent.typeName}.${f.name}`;
    const rulesOf = (f: DescField) => getOption(f, fieldRulesExt);

    it("has at least one rule on every field (or a stated reason not to)", () => {
      const missing = requestFields().filter((f) => !hasOption(f, fieldRulesExt) && !(name(f) in WITHOUT_RULES));
      expect(missing.map(name)).to.deep.equal([]);
    });

    it("has only current fields in the list of exceptions, each covered by a message rule or harmless", () => {
      const all = new Set(requestFields().map(name));
      for (const n of Object.keys(WITHOUT_RULES)) expect(all.has(n), n).to.equal(true);
      const requeue = OrderAdminService.method.requeueDeadVoucherDeliveries.input;
      expect(getOption(requeue, messageRulesExt).cel.map((r) => r.expression).join(" ")).to.include("this.all");
    });

    it("checks every *_id field as an id: required, at most 64 characters, the id alphabet", () => {
      const idFields = requestFields().filter((f) => f.name.endsWith("_id"));
      expect(idFields.length).to.be.greaterThan(5);
      for (const f of idFields) {
        const r = rulesOf(f);
        expect(f.fieldKind === "scalar" && r.required && r.type.case === "string", name(f)).to.equal(true);
        expect(r.type.case === "string" && { maxLen: r.type.value.maxLen, pattern: r.type.value.pattern }, name(f)).to.deep.equal({
          maxLen: 64n,
          pattern: ID_RULE_PATTERN,
        });
      }
    });

    it("checks every *_ids list: a maximum size, and every element as an id", () => {
      const listFields = requestFields().filter((f) => f.name.endsWith("_ids"));
      expect(listFields.length).to.equal(5);
      for (const f of listFields) {
        const r = rulesOf(f);
        expect(r.type.case, name(f)).to.equal("repeated");
        if (r.type.case !== "repeated") continue;
        expect(r.type.value.maxItems, name(f)).to.be.oneOf([1000n, 5000n]);
        const items = r.type.value.items!.type;
        expect(items.case === "string" && { minLen: items.value.minLen, maxLen: items.value.maxLen, pattern: items.value.pattern }, name(f)).to.deep.equal({
          minLen: 1n,
          maxLen: 64n,
          pattern: ID_RULE_PATTERN,
        });
      }
    });

    it("refuses a negative page_size, and a page_token that is not base64url, in every listing", () => {
      const fields = requestFields();
      const sizes = fields.filter((f) => f.name === "page_size");
      const tokens = fields.filter((f) => f.name === "page_token");
      expect(sizes.length).to.equal(10);
      expect(tokens.map((f) => f.parent)).to.deep.equal(sizes.map((f) => f.parent));
      for (const f of sizes) {
        const r = rulesOf(f).type;
        expect(r.case === "int32" && r.value.greaterThan, name(f)).to.deep.include({ case: "gte", value: 0 });
      }
      for (const f of tokens) {
        const r = rulesOf(f).type;
        expect(r.case === "string" && r.value.pattern, name(f)).to.equal(TOKEN_RULE_PATTERN);
      }
    });

    it("accepts only EUR in every currency field", () => {
      const currencies = requestFields().filter((f) => f.name === "currency");
      expect(currencies.length).to.equal(7);
      for (const f of currencies) {
        const r = rulesOf(f);
        expect(r.required && r.type.case === "string" && r.type.value.const, name(f)).to.equal("EUR");
      }
    });
  });

  describe("agree with what the relay sends and the domain still decodes (property tests)", () => {
    const runs = { numRuns: 2000 };

    it("IssueVoucher, CreateShipment and RecordShipmentEvent traceparent: the rules accept whatever a relay sends (normalizeTraceparent), or empty", () => {
      const hex = (n: number) => fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), minLength: n, maxLength: n });
      const aTraceparent = fc.oneof(
        fc.tuple(fc.constantFrom("00", "01", "cc", "ff", "0A"), hex(32), hex(16), hex(2), fc.constantFrom("", "x", "00")).map((p) => p.join("-").replace(/-$/, "")),
        hex(55).map((h) => `00-${h.slice(0, 32)}-${h.slice(32, 48)}-${h.slice(48, 50)}`.toUpperCase()),
        fc.string({ maxLength: 60 }),
      );
      let sentSome = 0;
      fc.assert(
        fc.property(aTraceparent, (raw) => {
          const sent = normalizeTraceparent(raw) ?? "";
          if (sent !== "") sentSome++;
          expect(accepts(VoucherService.method.issueVoucher, { ...issue, traceparent: sent }), JSON.stringify(raw)).to.equal(true);
          // The shipment relay and the delivery relay send the stored traceparent the same way.
          expect(accepts(DeliveryService.method.createShipment, { ...shipment, traceparent: sent }), JSON.stringify(raw)).to.equal(true);
          expect(accepts(ShipmentEventService.method.recordShipmentEvent, { ...shipmentEvent, traceparent: sent }), JSON.stringify(raw)).to.equal(true);
        }),
        runs,
      );
      expect(sentSome, "traceparents the relay would send on").to.be.greaterThan(runs.numRuns / 10);
    });

    it("page_token: the rules never refuse a token the domain's decoders accept", () => {
      const tokenChars = [..."AZaz09_-", "=", "%", "!", ".", "+", "/"];
      const aToken = fc.oneof(
        fc.string({ unit: fc.constantFrom(...tokenChars), maxLength: 210 }),
        fc.date({ min: new Date(0), max: new Date(Date.UTC(9999, 0, 1)), noInvalidDate: true }).map((d) => encodeTimeToken(d, newId())),
        fc.constant(encodeIdToken(newId())),
      );
      fc.assert(
        fc.property(aToken, (pageToken) => {
          if (domainAccepts(() => decodeIdToken(pageToken))) expect(accepts(OrderService.method.listOrders, { customerId: "c", pageToken })).to.equal(true);
          if (domainAccepts(() => decodeTimeToken(pageToken))) expect(accepts(VoucherService.method.listIssuedVouchers, { pageToken })).to.equal(true);
        }),
        runs,
      );
    });

    it("ListShipments page_token: the rules never refuse a token the delivery service's decoder accepts (any order id, not only ULIDs)", () => {
      const anId = fc.string({ unit: fc.constantFrom(..."AZaz09._:-"), minLength: 1, maxLength: 64 });
      const aToken = fc.oneof(
        fc.tuple(fc.date({ min: new Date(0), max: new Date(Date.UTC(9999, 0, 1)), noInvalidDate: true }), anId).map(([d, id]) => encodeTimeToken(d, id)),
        fc.string({ unit: fc.constantFrom(..."AZaz09_-=%!"), maxLength: 210 }),
      );
      let decodable = 0;
      fc.assert(
        fc.property(aToken, (pageToken) => {
          if (!domainAccepts(() => decodeTimeToken(pageToken, ANY_ID))) return;
          decodable++;
          expect(accepts(DeliveryService.method.listShipments, { status: ShipmentStatus.CREATED, pageToken }), pageToken).to.equal(true);
        }),
        runs,
      );
      expect(decodable, "tokens the decoder accepted").to.be.greaterThan(runs.numRuns / 4);
    });

    it("time windows: the rules accept every window timeWindow accepts, and refuse the same ones to the millisecond", () => {
      const edgeSeconds = [-30610224001n, -30610224000n, -62135596800n, 0n, 1n, 253402300799n, 253402300800n, 400_000_000_000n, -400_000_000_000n];
      const nanos = [0, 1, 499_999, 500_000, 999_999, 1_000_000, 999_499_999, 999_500_000, 999_999_999];
      const aTimestamp = fc.record({
        seconds: fc.oneof(fc.constantFrom(...edgeSeconds), fc.bigInt({ min: -31_000_000_000n, max: 254_000_000_000n }), fc.bigInt({ min: 0n, max: 3n })),
        nanos: fc.oneof(fc.constantFrom(...nanos), fc.integer({ min: 0, max: 999_999_999 })),
      });
      const aBound = fc.option(aTimestamp, { nil: undefined });
      const msAligned = (t: { nanos: number } | undefined) => t === undefined || t.nanos % 1_000_000 === 0;
      fc.assert(
        fc.property(aBound, aBound, (after, before) => {
          const date = (t: typeof after) => (t ? timestampDate({ $typeName: "google.protobuf.Timestamp", ...t }) : undefined);
          const handler = domainAccepts(() => timeWindow("issued", date(after), date(before)));
          const rules = accepts(VoucherService.method.listIssuedVouchers, { issuedAfter: after, issuedBefore: before });
          expect(accepts(OrderService.method.listSentOrders, { sentAfter: after, sentBefore: before })).to.equal(rules);
          if (handler) expect(rules, "the rules refused a window the handler accepts").to.equal(true);
          // Below a millisecond the handler rounds, and the window rule lets any difference under a millisecond through.
          if (msAligned(after) && msAligned(before)) expect(rules).to.equal(handler);
        }),
        { numRuns: 5000 },
      );
    });
  });
});
