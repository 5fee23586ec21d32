import { expect } from "chai";
import { RELAY_DEFAULTS, type RelayConfig } from "@shop/engine/relay";
import { CarrierWork, ShipmentStatus } from "@shop/sdk/delivery";
import { ShipmentEvent } from "@shop/sdk/order";
import { roleToken } from "@shop/testkit/auth";
import type { CarrierPlugin } from "../src/carriers/plugin.js";
import type { CarrierReport } from "../src/shipments.js";
import { EventReceiver } from "./event-receiver.js";
import { eventually, metricValue, startTestService, testCarriers, uniqueId, type TestService } from "./helpers.js";

/**
 * Polls of a minute, for the relay and the carrier worker alike: whatever
 * happens within seconds was started by a wake-up, so these tests show that
 * the store's commits wake the parts service.ts wires to them.
 */
const SLOW_RELAY: RelayConfig = { ...RELAY_DEFAULTS, batchSize: 16, concurrency: 1, pollIntervalMs: 60_000, retryBaseMs: 20, retryMaxMs: 200, leaseMs: 1_500, callTimeoutMs: 500 };

/** A carrier whose accept() fails while `failing` is set, then reports the shipment confirmed and shipped at once. */
class FlakyCarrier implements CarrierPlugin {
  readonly name = "flaky";
  readonly takesRpcReports = false;
  failing = true;
  readonly accepted: string[] = [];
  async accept(shipment: { orderId: string }): Promise<CarrierReport[]> {
    if (this.failing) throw new Error("the flaky carrier's API answered 503");
    this.accepted.push(shipment.orderId);
    return [{ status: "CONFIRMED" }, { status: "SHIPPED", trackingNumber: `FL-${shipment.orderId}` }];
  }
}

describe("delivery service wiring: the store wakes the carrier worker and the relay; resume hands a parked shipment back", function () {
  this.timeout(60_000);
  let receiver: EventReceiver;
  let t: TestService;
  const flaky = new FlakyCarrier();
  before(async () => {
    receiver = await EventReceiver.start();
    t = await startTestService({
      relay: { orderServiceUrl: receiver.url, token: roleToken("delivery-relay"), config: SLOW_RELAY },
      carrierWorker: true,
      carriers: { ...testCarriers, pollIntervalMs: 60_000, maxAttempts: 1, retryBaseMs: 10, retryMaxMs: 20, callTimeoutMs: 1_000, leaseMs: 5_000 },
      extraCarriers: [flaky],
      outboxMetricsCacheMs: 0,
    });
  });
  after(async () => {
    await t?.stop();
    await receiver?.stop();
  });

  const work = async (orderId: string) => (await t.client().getShipment({ orderId })).shipment!;

  it("a created shipment is handed to its carrier at once (the creation wakes the worker), and a report's event reaches the order service at once", async () => {
    const orderId = uniqueId("o-manual");
    await t.client().createShipment({ orderId, customerId: "c", totalCents: 100n, currency: "EUR", carrier: "manual" });
    await eventually("the manual carrier accepted it", async () => (await work(orderId)).carrierWork === CarrierWork.TRACKING, 10_000);
    await t.carrier("grpc", roleToken("carrier")).markShipmentShipped({ orderId });
    await eventually("SHIPPED reaches the order service", () => receiver.callsFor(`shipment:${orderId}:SHIPPED`).length === 1, 10_000);
  });

  it("a carrier that keeps failing parks its shipment, naming the error; ResumeShipment hands it back at once and the carrier's reports reach the order service", async () => {
    const orderId = uniqueId("o-flaky");
    await t.client().createShipment({ orderId, customerId: "c", totalCents: 100n, currency: "EUR", carrier: "flaky" });
    await eventually("parked after CARRIER_MAX_ATTEMPTS=1", async () => (await work(orderId)).carrierWork === CarrierWork.PARKED, 10_000);
    const parked = await work(orderId);
    expect(parked.status).to.equal(ShipmentStatus.CREATED);
    expect(parked.carrierLastError).to.include("503");
    const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
    expect(metricValue(text, 'carrier_calls_total{carrier="flaky",call="accept",outcome="error"}')).to.be.greaterThan(0);

    flaky.failing = false;
    const resumed = await t.client("grpc", roleToken("admin")).resumeShipment({ orderId });
    expect([resumed.resumed, resumed.shipment!.carrierWork]).to.deep.equal([true, CarrierWork.HANDOFF]);
    await eventually("SHIPPED reaches the order service", () => receiver.callsFor(`shipment:${orderId}:SHIPPED`).length === 1, 10_000);
    expect(receiver.callsFor(`shipment:${orderId}:SHIPPED`).map((c) => [c.event, c.carrier, c.changed])).to.deep.equal([[ShipmentEvent.SHIPPED, "flaky", true]]);
    const shipped = await work(orderId);
    expect([shipped.status, shipped.trackingNumber, shipped.carrierAttempts]).to.deep.equal([ShipmentStatus.SHIPPED, `FL-${orderId}`, 0]);
    expect(shipped.transitions.slice(1).map((tr) => [tr.to, tr.source])).to.deep.equal([
      [ShipmentStatus.CONFIRMED, "carrier:flaky"],
      [ShipmentStatus.SHIPPED, "carrier:flaky"],
    ]);
    expect(flaky.accepted).to.deep.equal([orderId]);
  });
});
