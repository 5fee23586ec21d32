import { expect } from "chai";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { OrderSchema, OrderStatus, SentBy, ShipmentEvent, ShippingStateSchema, ShippingStatus, type Order } from "@shop/sdk/order";
import { ShipmentSchema, ShipmentStatus, type Shipment } from "@shop/sdk/delivery";
import { checkShipping, isShippingRepairable, shipmentEventKey, type ShippingFinding } from "../src/shipping-compare.js";

const T0 = new Date("2030-01-01T00:00:00.000Z");
const at = (minutes: number) => timestampFromDate(new Date(T0.getTime() + minutes * 60_000));
/** The run's window ends 60 minutes after T0: anything at or after it is left to the relays. */
const CUTOFF = new Date(T0.getTime() + 60 * 60_000);

/** An order in the given shipping state, requested at T0 + 1 min. */
function order(id: string, status: OrderStatus, shipping: ShippingStatus, extra: MessageInitShape<typeof OrderSchema> = {}, requestedAt = at(1)): Order {
  const sentBy = status === OrderStatus.SENT || status === OrderStatus.DELIVERED ? (shipping === ShippingStatus.NONE ? SentBy.HAND : SentBy.SHIPMENT) : SentBy.UNSPECIFIED;
  return create(OrderSchema, {
    id,
    customerId: "cust-1",
    totalCents: 12_000n,
    currency: "EUR",
    status,
    createdAt: at(0),
    sentBy,
    shipping: create(ShippingStateSchema, { status: shipping, requestedAt: shipping === ShippingStatus.NONE ? undefined : requestedAt }),
    ...extra,
  });
}

/** A shipment in the given status; its events happened at 2 (confirmed), 3 (shipped), 4 (delivered or declined) minutes after T0 unless told. */
function shipment(orderId: string, status: ShipmentStatus, extra: MessageInitShape<typeof ShipmentSchema> = {}): Shipment {
  const reached = (s: ShipmentStatus) => status === s;
  return create(ShipmentSchema, {
    id: `shp-${orderId}`,
    orderId,
    customerId: "cust-1",
    totalCents: 12_000n,
    currency: "EUR",
    carrier: "delayed",
    status,
    createdAt: at(1.5),
    updatedAt: at(4),
    confirmedAt: status !== ShipmentStatus.CREATED && status !== ShipmentStatus.DECLINED ? at(2) : undefined,
    shippedAt: reached(ShipmentStatus.SHIPPED) || reached(ShipmentStatus.DELIVERED) ? at(3) : undefined,
    deliveredAt: reached(ShipmentStatus.DELIVERED) ? at(4) : undefined,
    declinedAt: reached(ShipmentStatus.DECLINED) ? at(4) : undefined,
    declineReason: reached(ShipmentStatus.DECLINED) ? "NO_CAPACITY" : "",
    trackingNumber: reached(ShipmentStatus.SHIPPED) || reached(ShipmentStatus.DELIVERED) ? "TRK-1" : "",
    ...extra,
  });
}

function check(orders: Order[], shipments: Shipment[], ids?: string[]): ShippingFinding[] {
  return checkShipping(
    ids ?? [...new Set([...orders.map((o) => o.id), ...shipments.map((s) => s.orderId)])],
    new Map(orders.map((o) => [o.id, o])),
    new Map(shipments.map((s) => [s.orderId, s])),
    CUTOFF,
  );
}

const brief = (fs: ShippingFinding[]) => fs.map((f) => [f.kind, f.orderId, (f.deliver ?? []).map((e) => e.messageKey).join(",") || null, f.requeue ?? null]);

describe("compare: orders' shipping against the delivery service's shipments", () => {
  it("finds nothing where both sides agree, at every stage of a shipped order's life, nor for orders the shop ships by hand", () => {
    const orders = [
      order("created", OrderStatus.PAID, ShippingStatus.REQUESTED),
      order("confirmed", OrderStatus.PENDING, ShippingStatus.REQUESTED),
      order("shipped", OrderStatus.SENT, ShippingStatus.SHIPPED),
      order("delivered", OrderStatus.DELIVERED, ShippingStatus.DELIVERED),
      order("declined", OrderStatus.CANCELLED, ShippingStatus.DECLINED),
      order("by-hand", OrderStatus.SENT, ShippingStatus.NONE),
      order("by-hand-old", OrderStatus.DELIVERED, ShippingStatus.NONE, { sentBy: SentBy.UNSPECIFIED }),
      order("pending", OrderStatus.PENDING, ShippingStatus.NONE),
    ];
    const shipments = [
      shipment("created", ShipmentStatus.CREATED),
      shipment("confirmed", ShipmentStatus.CONFIRMED),
      shipment("shipped", ShipmentStatus.SHIPPED),
      shipment("delivered", ShipmentStatus.DELIVERED),
      shipment("declined", ShipmentStatus.DECLINED),
    ];
    expect(check(orders, shipments)).to.deep.equal([]);
  });

  it("delivers the events an order has not learned, under the delivery service's own keys, in the order they happened", () => {
    const orders = [
      order("o-shipped", OrderStatus.PAID, ShippingStatus.REQUESTED),
      order("o-delivered", OrderStatus.PENDING, ShippingStatus.REQUESTED),
      order("o-arrived", OrderStatus.SENT, ShippingStatus.SHIPPED),
      order("o-declined", OrderStatus.PAID, ShippingStatus.REQUESTED),
    ];
    const shipments = [
      shipment("o-shipped", ShipmentStatus.SHIPPED),
      shipment("o-delivered", ShipmentStatus.DELIVERED),
      shipment("o-arrived", ShipmentStatus.DELIVERED),
      shipment("o-declined", ShipmentStatus.DECLINED),
    ];
    const found = check(orders, shipments);
    expect(brief(found)).to.deep.equal([
      ["shipment_event_undelivered", "o-shipped", "shipment:o-shipped:SHIPPED", null],
      ["shipment_event_undelivered", "o-delivered", "shipment:o-delivered:SHIPPED,shipment:o-delivered:DELIVERED", null],
      ["shipment_event_undelivered", "o-arrived", "shipment:o-arrived:DELIVERED", null],
      ["shipment_event_undelivered", "o-declined", "shipment:o-declined:DECLINED", null],
    ]);
    expect(found.every(isShippingRepairable)).to.equal(true);
    const declined = found[3]!.deliver![0]!;
    expect(declined).to.deep.include({ event: ShipmentEvent.DECLINED, shipmentId: "shp-o-declined", carrier: "delayed", declineReason: "NO_CAPACITY" });
    expect(declined.occurredAt).to.deep.equal(at(4));
    const [shipped, delivered] = found[1]!.deliver!;
    expect([shipped!.event, shipped!.declineReason, shipped!.occurredAt]).to.deep.equal([ShipmentEvent.SHIPPED, "", at(3)]);
    expect(delivered!.event).to.equal(ShipmentEvent.DELIVERED);
    expect(shipmentEventKey("x", "DELIVERED")).to.equal("shipment:x:DELIVERED");
  });

  it("leaves events and requests younger than the cutoff to the relays", () => {
    const late = { shippedAt: at(60), deliveredAt: at(61), declinedAt: at(60) };
    const orders = [
      order("young-ship", OrderStatus.PAID, ShippingStatus.REQUESTED),
      order("young-deliver", OrderStatus.SENT, ShippingStatus.SHIPPED),
      order("young-decline", OrderStatus.PAID, ShippingStatus.REQUESTED),
      order("young-request", OrderStatus.PAID, ShippingStatus.REQUESTED, {}, at(60)),
      order("just-old", OrderStatus.PAID, ShippingStatus.REQUESTED, {}, timestampFromDate(new Date(CUTOFF.getTime() - 1))),
    ];
    const shipments = [
      shipment("young-ship", ShipmentStatus.SHIPPED, late),
      shipment("young-deliver", ShipmentStatus.DELIVERED, late),
      shipment("young-decline", ShipmentStatus.DECLINED, late),
    ];
    expect(brief(check(orders, shipments))).to.deep.equal([["shipment_missing", "just-old", null, true]]);
  });

  it("requeues the shipment request of an order awaiting a shipment the delivery service does not have", () => {
    const found = check([order("lost", OrderStatus.PAID, ShippingStatus.REQUESTED)], []);
    expect(brief(found)).to.deep.equal([["shipment_missing", "lost", null, true]]);
    expect(found[0]!.detail).to.contain("since 2030-01-01T00:01:00.000Z").and.contain("the delivery service has none");
  });

  it("reports a shipment for an unknown order, or for an order not in shipping (one sent by hand and shipped too), for a person", () => {
    const found = check(
      [order("hand", OrderStatus.SENT, ShippingStatus.NONE), order("never", OrderStatus.PENDING, ShippingStatus.NONE)],
      [shipment("ghost", ShipmentStatus.CREATED), shipment("hand", ShipmentStatus.SHIPPED), shipment("never", ShipmentStatus.DECLINED)],
    );
    expect(brief(found)).to.deep.equal([
      ["shipment_without_order", "hand", null, null],
      ["shipment_without_order", "never", null, null],
      ["shipment_without_order", "ghost", null, null],
    ]);
    expect(found.some(isShippingRepairable)).to.equal(false);
    expect(found[0]!.detail).to.contain("sent by hand and shipped by the carrier too");
    expect(found[1]!.detail).to.not.contain("sent by hand");
    expect(found[2]!.detail).to.contain("which the order service does not know");
  });

  it("reports a shipment of another customer, total or currency than its order's, instead of delivering its events", () => {
    const found = check(
      [order("who", OrderStatus.PAID, ShippingStatus.REQUESTED), order("much", OrderStatus.SENT, ShippingStatus.SHIPPED)],
      [shipment("who", ShipmentStatus.SHIPPED, { customerId: "cust-2" }), shipment("much", ShipmentStatus.DELIVERED, { totalCents: 9_900n })],
    );
    expect(brief(found)).to.deep.equal([
      ["shipment_mismatch", "who", null, null],
      ["shipment_mismatch", "much", null, null],
    ]);
    expect(found[0]!.detail).to.contain('the shipment is for customer "cust-2", the order for "cust-1"');
    expect(found[1]!.detail).to.contain("the shipment records a total of 99.00 EUR, the order's is 120.00 EUR");
  });

  it("reports contradictions whatever their age: an order ahead of its shipment, sent by hand while in shipping, or moved without a shipment", () => {
    const orders = [
      order("ahead-ship", OrderStatus.SENT, ShippingStatus.SHIPPED),
      order("ahead-deliver", OrderStatus.DELIVERED, ShippingStatus.DELIVERED),
      order("declined-but-shipped", OrderStatus.CANCELLED, ShippingStatus.DECLINED),
      order("shipped-but-declined", OrderStatus.SENT, ShippingStatus.SHIPPED),
      order("hand-in-shipping", OrderStatus.SENT, ShippingStatus.REQUESTED, { sentBy: SentBy.HAND }),
      order("no-shipment", OrderStatus.SENT, ShippingStatus.SHIPPED),
    ];
    const shipments = [
      shipment("ahead-ship", ShipmentStatus.CONFIRMED, { updatedAt: at(100) }),
      shipment("ahead-deliver", ShipmentStatus.SHIPPED),
      shipment("declined-but-shipped", ShipmentStatus.SHIPPED),
      shipment("shipped-but-declined", ShipmentStatus.DECLINED),
      shipment("hand-in-shipping", ShipmentStatus.SHIPPED),
    ];
    const found = check(orders, shipments);
    expect(brief(found)).to.deep.equal(orders.map((o) => ["shipping_conflict", o.id, null, null]));
    expect(found[0]!.detail).to.contain("the order records it as shipped");
    expect(found[4]!.detail).to.contain("marked sent by hand while in shipping");
    expect(found[5]!.detail).to.contain("no shipment for it");
  });

  it("looks only at the ids asked for, once each", () => {
    const orders = [order("a", OrderStatus.PAID, ShippingStatus.REQUESTED), order("b", OrderStatus.PAID, ShippingStatus.REQUESTED)];
    expect(brief(check(orders, [], ["a", "a", "zzz"]))).to.deep.equal([["shipment_missing", "a", null, true]]);
  });
});
