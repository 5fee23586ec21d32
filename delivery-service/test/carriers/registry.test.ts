import { expect } from "chai";
import { ConfigError, envReader } from "@shop/platform/config";
import { DelayedCarrier, delayedTrackingNumber } from "../../src/carriers/delayed.js";
import type { CarrierContext, CarrierPlugin } from "../../src/carriers/plugin.js";
import {
  BUILT_IN_CARRIERS,
  CARRIER_DEFAULTS,
  createCarrierRegistry,
  readCarrierSettings,
  type CarrierSettings,
} from "../../src/carriers/registry.js";
import type { Shipment, ShipmentStatus } from "../../src/shipments.js";

/** The settings read from `env`, or the problems finish() names. */
function read(env: Record<string, string>): { settings: CarrierSettings; problems: string[] } {
  const r = envReader(env);
  const settings = readCarrierSettings(r);
  try {
    r.finish();
    return { settings, problems: [] };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return { settings, problems: err.problems };
  }
}

describe("carrier settings (readCarrierSettings)", () => {
  it("defaults to the contract's values with no variable set", () => {
    const { settings, problems } = read({});
    expect(problems).to.deep.equal([]);
    expect(settings).to.deep.equal({
      callTimeoutMs: 5_000,
      maxAttempts: 10,
      retryBaseMs: 500,
      retryMaxMs: 60_000,
      batchSize: 50,
      pollIntervalMs: 250,
      leaseMs: 30_000,
      delayed: { confirmMs: 1_000, shipMs: 2_000, deliverMs: 4_000 },
      enabled: ["delayed", "manual"],
      defaultCarrier: "delayed",
    });
    expect(settings).to.deep.equal({ ...CARRIER_DEFAULTS });
  });

  it("reads every variable", () => {
    const { settings, problems } = read({
      CARRIERS: " manual , delayed,manual",
      DEFAULT_CARRIER: "manual",
      CARRIER_CALL_TIMEOUT_MS: "100",
      CARRIER_MAX_ATTEMPTS: "3",
      CARRIER_RETRY_BASE_MS: "10",
      CARRIER_RETRY_MAX_MS: "20",
      CARRIER_BATCH_SIZE: "7",
      CARRIER_POLL_INTERVAL_MS: "15",
      CARRIER_LEASE_MS: "1000",
      DELAYED_CARRIER_CONFIRM_MS: "0",
      DELAYED_CARRIER_SHIP_MS: "5",
      DELAYED_CARRIER_DELIVER_MS: "5",
    });
    expect(problems).to.deep.equal([]);
    expect(settings).to.deep.equal({
      callTimeoutMs: 100,
      maxAttempts: 3,
      retryBaseMs: 10,
      retryMaxMs: 20,
      batchSize: 7,
      pollIntervalMs: 15,
      leaseMs: 1_000,
      delayed: { confirmMs: 0, shipMs: 5, deliverMs: 5 },
      enabled: ["manual", "delayed"],
      defaultCarrier: "manual",
    });
  });

  it("names every problem at once: unknown carriers, a default not run, bad numbers, a lease too short, decreasing delays", () => {
    const { problems } = read({
      CARRIERS: "delayed,fedex",
      DEFAULT_CARRIER: "manual",
      CARRIER_BATCH_SIZE: "0",
      CARRIER_MAX_ATTEMPTS: "ten",
      CARRIER_CALL_TIMEOUT_MS: "5000",
      CARRIER_LEASE_MS: "10000",
      CARRIER_RETRY_BASE_MS: "1000",
      CARRIER_RETRY_MAX_MS: "999",
      DELAYED_CARRIER_SHIP_MS: "5000",
    });
    expect(problems).to.have.length(7);
    expect(problems).to.include('CARRIERS names "fedex", which is not a carrier this service has (it has: delayed, manual)');
    expect(problems).to.include("DEFAULT_CARRIER=manual is not among CARRIERS=delayed: set DEFAULT_CARRIER to one of them");
    expect(problems).to.include("CARRIER_BATCH_SIZE=0 is out of range [1, 1000]");
    expect(problems).to.include('CARRIER_MAX_ATTEMPTS="ten" is not a whole number');
    expect(problems.some((p) => p.startsWith("CARRIER_LEASE_MS=10000 must exceed twice CARRIER_CALL_TIMEOUT_MS=5000"))).to.equal(true);
    expect(problems).to.include("CARRIER_RETRY_MAX_MS=999 must not be below CARRIER_RETRY_BASE_MS=1000");
    expect(problems.some((p) => p.startsWith("DELAYED_CARRIER_CONFIRM_MS=1000, DELAYED_CARRIER_SHIP_MS=5000 and DELAYED_CARRIER_DELIVER_MS=4000 must not decrease"))).to.equal(true);
  });

  it("refuses a CARRIERS that names none, and the default carrier when it is not among them", () => {
    expect(read({ CARRIERS: " , " }).problems).to.deep.equal(["CARRIERS must name at least one carrier"]);
    expect(read({ CARRIERS: "manual" }).problems).to.deep.equal([
      "DEFAULT_CARRIER=delayed is not among CARRIERS=manual: set DEFAULT_CARRIER to one of them",
    ]);
    // Only unknown names: the one problem says which, and nothing about the default.
    expect(read({ CARRIERS: "ups" }).problems).to.deep.equal(['CARRIERS names "ups", which is not a carrier this service has (it has: delayed, manual)']);
  });
});

describe("carrier registry (createCarrierRegistry)", () => {
  const plugin = (name: string, over: Partial<CarrierPlugin> = {}): CarrierPlugin => ({ name, takesRpcReports: false, accept: async () => [], ...over });

  it("registers every built-in once, under names CARRIERS may use", () => {
    const names = BUILT_IN_CARRIERS.map((c) => c.name);
    expect(names).to.deep.equal(["delayed", "manual"]);
    const all = createCarrierRegistry({ ...CARRIER_DEFAULTS });
    expect(all.names()).to.deep.equal(["delayed", "manual"]);
    expect(all.defaultCarrier).to.equal("delayed");
    expect(all.get("delayed")).to.be.instanceOf(DelayedCarrier);
    expect(all.takesRpcReports("manual")).to.equal(true);
    expect(all.takesRpcReports("delayed")).to.equal(false);
    expect(all.takesRpcReports("nobody")).to.equal(false);
    expect(all.get("manual")?.poll).to.equal(undefined);
  });

  it("runs only the carriers CARRIERS names, plus injected plugins; the others are unknown", () => {
    const registry = createCarrierRegistry({ ...CARRIER_DEFAULTS, enabled: ["delayed"] }, [plugin("acme-express")]);
    expect(registry.names()).to.deep.equal(["delayed", "acme-express"]);
    expect(registry.isKnown("manual")).to.equal(false);
    expect(registry.isKnown("acme-express")).to.equal(true);
    expect(registry.isKnown("Delayed")).to.equal(false);
  });

  it("refuses a plugin with a bad or repeated name, and a default carrier not run", () => {
    expect(() => createCarrierRegistry({ ...CARRIER_DEFAULTS }, [plugin("Acme")])).to.throw(/must be 1 to 32 characters/);
    expect(() => createCarrierRegistry({ ...CARRIER_DEFAULTS }, [plugin("a".repeat(33))])).to.throw(/must be 1 to 32 characters/);
    expect(() => createCarrierRegistry({ ...CARRIER_DEFAULTS }, [plugin("manual")])).to.throw("two carrier plugins are named manual");
    expect(() => createCarrierRegistry({ ...CARRIER_DEFAULTS }, [plugin("x", { pollIntervalMs: 0 })])).to.throw(/pollIntervalMs=0/);
    expect(() => createCarrierRegistry({ ...CARRIER_DEFAULTS, enabled: ["manual"] })).to.throw(/the default carrier "delayed" is not among/);
    expect(() => createCarrierRegistry({ ...CARRIER_DEFAULTS, enabled: ["ups"], defaultCarrier: "ups" })).to.throw(/no built-in carrier is named "ups"/);
  });
});

describe("the delayed carrier", () => {
  const times = { confirmMs: 1_000, shipMs: 2_000, deliverMs: 4_000 };
  const carrier = new DelayedCarrier(times);
  const createdAt = new Date("2026-01-01T00:00:00.000Z");
  const shipment = (status: ShipmentStatus, orderId = "o-1") => ({ orderId, status, createdAt }) as Shipment;
  const at = (ms: number): CarrierContext => ({ signal: new AbortController().signal, logger: undefined as never, now: () => new Date(createdAt.getTime() + ms) });
  const tracking = delayedTrackingNumber("o-1");

  it("accepts every shipment and reports nothing at once", async () => {
    expect(await carrier.accept()).to.deep.equal([]);
  });

  it("reports each step once its time since creation has passed, and only the steps the shipment has not reached", async () => {
    expect(await carrier.poll(shipment("CREATED"), at(999))).to.deep.equal([]);
    expect(await carrier.poll(shipment("CREATED"), at(1_000))).to.deep.equal([{ status: "CONFIRMED" }]);
    expect(await carrier.poll(shipment("CONFIRMED"), at(1_999))).to.deep.equal([]);
    expect(await carrier.poll(shipment("CONFIRMED"), at(2_000))).to.deep.equal([{ status: "SHIPPED", trackingNumber: tracking }]);
    expect(await carrier.poll(shipment("SHIPPED"), at(3_999))).to.deep.equal([]);
    expect(await carrier.poll(shipment("SHIPPED"), at(4_000))).to.deep.equal([{ status: "DELIVERED", trackingNumber: tracking }]);
    expect(await carrier.poll(shipment("DELIVERED"), at(10_000))).to.deep.equal([]);
    // A shipment polled late gets every step it missed, in order.
    expect(await carrier.poll(shipment("CREATED"), at(60_000))).to.deep.equal([
      { status: "CONFIRMED" },
      { status: "SHIPPED", trackingNumber: tracking },
      { status: "DELIVERED", trackingNumber: tracking },
    ]);
    // An operator's decline ends it.
    expect(await carrier.poll(shipment("DECLINED"), at(60_000))).to.deep.equal([]);
  });

  it("asks to be polled when its next step is due, not at every interval", () => {
    const now = (ms: number) => new Date(createdAt.getTime() + ms);
    expect(carrier.nextPollInMs(shipment("CREATED"), now(0))).to.equal(1_005);
    expect(carrier.nextPollInMs(shipment("CONFIRMED"), now(1_500))).to.equal(505);
    expect(carrier.nextPollInMs(shipment("SHIPPED"), now(2_000))).to.equal(2_005);
    // Late (a slow worker, a clock behind): at once.
    expect(carrier.nextPollInMs(shipment("SHIPPED"), now(9_000))).to.equal(1);
    expect(carrier.nextPollInMs(shipment("DELIVERED"), now(9_000))).to.equal(undefined);
    expect(carrier.nextPollInMs(shipment("DECLINED"), now(9_000))).to.equal(undefined);
  });

  it("derives one tracking number per order: stable, distinct between orders (case included), and short enough to store", () => {
    const longId = "o".repeat(64);
    expect(delayedTrackingNumber("o-1")).to.equal(tracking);
    expect(delayedTrackingNumber("O-1")).to.not.equal(tracking);
    expect(delayedTrackingNumber(longId)).to.match(/^DLY-[0-9A-F]{20}$/);
  });
});
