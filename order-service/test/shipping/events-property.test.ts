import { expect } from "chai";
import fc from "fast-check";
import { DomainError } from "@shop/platform/errors";
import { newOrder, paymentOutcome, releaseForShipping, shipmentEvent, type Order, type ShipmentEventFacts } from "../../src/domain/order.js";

const T0 = new Date("2030-01-01T00:00:00.000Z");

type Event = ShipmentEventFacts["event"];

/** A released order, paid (charged) or not, qualifying for a voucher or not. */
function released(paid: boolean, totalCents: number): Order {
  let order = newOrder({ customerId: "c1", totalCents, currency: "EUR", requestId: "r1", paymentMethod: paid ? "ACCOUNT" : "NONE" }, "01J0000000000000000000000A", T0);
  if (paid) order = paymentOutcome(order, { event: "CHARGED", amountCents: totalCents, currency: "EUR" }, T0).order;
  return releaseForShipping(order, undefined, T0).order;
}

/**
 * Whatever order the delivery service's events of one shipment arrive in,
 * and however often each arrives (the outbox redelivers, the reconciler
 * repeats), the order ends where the shipment ended, with at most one
 * voucher request and at most one refund request, and every arrival is
 * either taken in or harmless: never refused.
 */
describe("shipment events in any order, any number of times", () => {
  const paths: Record<string, Event[]> = { delivered: ["SHIPPED", "DELIVERED"], shippedOnly: ["SHIPPED"], declined: ["DECLINED"] };

  it("end in the shipment's final state with at most one voucher and one refund, and are never refused", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...Object.keys(paths)),
        fc.boolean(),
        fc.integer({ min: 1, max: 30_000 }),
        fc.array(fc.nat(), { minLength: 1, maxLength: 12 }),
        (pathName, paid, totalCents, picks) => {
          const path = paths[pathName]!;
          // Every event of the path arrives at least once, in an order the picks decide, with repeats.
          const arrivals = [...path, ...picks.map((p) => path[p % path.length]!)];
          const shuffled = arrivals.map((e, i) => ({ e, k: picks[i % picks.length]! * 31 + i })).sort((a, b) => a.k - b.k).map((x) => x.e);
          let order = released(paid, totalCents);
          let vouchers = 0;
          let refunds = 0;
          for (const event of shuffled) {
            const t = shipmentEvent(order, { event, declineReason: event === "DECLINED" ? "NO_CAPACITY" : undefined }, T0);
            if (t.voucherRequest) vouchers++;
            if (t.refundRequest) refunds++;
            order = t.order;
          }
          const expected = pathName === "delivered" ? ["DELIVERED", "DELIVERED"] : pathName === "shippedOnly" ? ["SENT", "SHIPPED"] : ["CANCELLED", "DECLINED"];
          expect([order.status, order.shippingStatus]).to.deep.equal(expected);
          expect(vouchers).to.equal(pathName !== "declined" && totalCents > 10_000 ? 1 : 0);
          expect(refunds).to.equal(pathName === "declined" && paid ? 1 : 0);
          if (pathName !== "declined") expect(order.sentBy).to.equal("SHIPMENT");
          if (pathName === "declined" && paid) expect(order.paymentStatus).to.equal("REFUND_PENDING");
        },
      ),
      { numRuns: 300 },
    );
  });

  it("events of contradicting paths are refused once the order took the other one", () => {
    const shipped = shipmentEvent(released(true, 5_000), { event: "SHIPPED" }, T0).order;
    expect(() => shipmentEvent(shipped, { event: "DECLINED" }, T0)).to.throw(DomainError, /already shipped/);
    const declined = shipmentEvent(released(true, 5_000), { event: "DECLINED" }, T0).order;
    for (const event of ["SHIPPED", "DELIVERED"] as const) expect(() => shipmentEvent(declined, { event }, T0)).to.throw(DomainError, /declined/);
  });
});
