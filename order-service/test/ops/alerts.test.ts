import { readFileSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { Registry } from "@shop/platform/metrics";
import {
  createPaymentRelayMetrics,
  createRelayMetrics,
  createShipmentRelayMetrics,
  registerOutboxGauges,
  registerPaymentOutboxGauges,
  registerShipmentOutboxGauges,
} from "../../src/metrics.js";
import { quietLogger } from "../outbox/fake-voucher-service.js";

const ALERTS = path.resolve(import.meta.dirname, "../../../ops/prometheus/alerts.yml");

describe("relay and outbox alert rules", () => {
  const text = readFileSync(ALERTS, "utf8");
  const group = text.slice(text.indexOf("- name: voucher-outbox"), text.indexOf("- name: reconciler"));

  it("watch only metrics the order service and the relay export, with the labels they carry", () => {
    const registry = new Registry();
    createRelayMetrics(registry);
    registerOutboxGauges({ registry, pool: undefined as never, logger: quietLogger });
    const exported = new Set(registry.getMetricsAsArray().map((m) => m.name));
    const used = [...group.matchAll(/expr: (.*)/g)].flatMap((m) => [...m[1]!.matchAll(/\b(relay_\w+|voucher_outbox_\w+)/g)].map((x) => x[1]!));
    expect(used).to.include.members(["relay_call_failures_total", "relay_batch_split_rows_total", "voucher_outbox_dead"]);
    for (const name of used) expect(exported, name).to.include(name);
  });

  it("page when the voucher service refuses the relay itself, by the cause label the relay counts", () => {
    const rule = group.slice(group.indexOf("alert: VoucherRelayRefusedByVoucherService"));
    expect(rule).to.match(/expr: .*relay_call_failures_total\{cause="misconfigured"\}/);
    expect(rule.slice(0, rule.indexOf("- alert:", 10))).to.include("severity: page");
  });
});

describe("payment alert rules (order side)", () => {
  const text = readFileSync(ALERTS, "utf8");
  const group = text.slice(text.indexOf("- name: payments"), text.indexOf("- name: shipping-order-side"));

  it("watch only metrics the order service exports for its charge and refund flows", () => {
    const registry = new Registry();
    createPaymentRelayMetrics(registry, "charge");
    createPaymentRelayMetrics(registry, "refund");
    registerPaymentOutboxGauges({ registry, pool: undefined as never, logger: quietLogger });
    const exported = new Set(registry.getMetricsAsArray().map((m) => m.name));
    const used = [...group.matchAll(/expr: (.*)/g)].flatMap((m) => [...m[1]!.matchAll(/\b((?:charge|refund)_\w+)/g)].map((x) => x[1]!));
    expect(used).to.include.members([
      "charge_outbox_oldest_pending_age_seconds",
      "refund_outbox_dead",
      "charge_relay_call_failures_total",
      "refund_relay_call_failures_total",
    ]);
    for (const name of used) expect(exported, name).to.include(name);
  });
});

describe("shipping alert rules (order side)", () => {
  const text = readFileSync(ALERTS, "utf8");
  const start = text.indexOf("- name: shipping-order-side");
  const end = text.indexOf("\n  - name:", start + 1);
  const group = text.slice(start, end === -1 ? undefined : end);

  it("watch only metrics the order service exports for its shipment flow", () => {
    expect(start).to.be.greaterThan(-1);
    const registry = new Registry();
    createShipmentRelayMetrics(registry);
    registerShipmentOutboxGauges({ registry, pool: undefined as never, logger: quietLogger });
    const exported = new Set(registry.getMetricsAsArray().map((m) => m.name));
    const used = [...group.matchAll(/expr: (.*)/g)].flatMap((m) => [...m[1]!.matchAll(/\b(shipment_\w+)/g)].map((x) => x[1]!));
    expect(used).to.include.members(["shipment_outbox_oldest_pending_age_seconds", "shipment_outbox_dead", "shipment_relay_call_failures_total"]);
    for (const name of used) expect(exported, name).to.include(name);
  });

  it("page when the delivery service refuses the shipment relay itself, by the cause label the relay counts", () => {
    const rule = group.slice(group.indexOf("alert: ShipmentRelayRefusedByDeliveryService"));
    expect(rule).to.match(/expr: .*shipment_relay_call_failures_total\{cause="misconfigured"\}/);
    expect(rule).to.include("severity: page");
  });
});
