import { readFileSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { pino } from "pino";
import { Registry } from "@shop/platform/metrics";
import { createCarrierMetrics } from "../../src/carriers/worker.js";
import { createDeliveryRelayMetrics, registerShipmentEventOutboxGauges } from "../../src/metrics.js";

const ALERTS = path.resolve(import.meta.dirname, "../../../ops/prometheus/alerts.yml");

describe("shipping alert rules (delivery side)", () => {
  const text = readFileSync(ALERTS, "utf8");
  const start = text.indexOf("- name: shipping-delivery-side");
  const end = text.indexOf("\n  - name:", start + 1);
  const group = text.slice(start, end === -1 ? undefined : end);

  it("watch only metrics the delivery service exports for its event flow and its carriers", () => {
    expect(start).to.be.greaterThan(-1);
    const registry = new Registry();
    createDeliveryRelayMetrics(registry);
    createCarrierMetrics(registry);
    registerShipmentEventOutboxGauges({ registry, pool: undefined as never, logger: pino({ level: "silent" }) });
    const exported = new Set(registry.getMetricsAsArray().map((m) => m.name));
    const used = [...group.matchAll(/expr: (.*)/g)].flatMap((m) => [...m[1]!.matchAll(/\b((?:shipment_event|delivery_relay|carrier)_\w+)/g)].map((x) => x[1]!));
    expect(used).to.include.members([
      "shipment_event_outbox_oldest_pending_age_seconds",
      "shipment_event_outbox_dead",
      "carrier_shipments_parked_total",
      "delivery_relay_call_failures_total",
    ]);
    for (const name of used) expect(exported, name).to.include(name);
  });

  it("page when the order service refuses the delivery relay itself, by the cause label the relay counts", () => {
    const rule = group.slice(group.indexOf("alert: DeliveryRelayRefusedByOrderService"));
    expect(rule).to.match(/expr: .*delivery_relay_call_failures_total\{cause="misconfigured"\}/);
    expect(rule).to.include("severity: page");
  });

  it("name the carrier whose shipments were parked", () => {
    const rule = group.slice(group.indexOf("alert: CarrierShipmentsParked"), group.indexOf("alert: DeliveryRelayRefusedByOrderService"));
    expect(rule).to.match(/sum by \([^)]*\bcarrier\b[^)]*\) \(increase\(carrier_shipments_parked_total/);
  });
});
