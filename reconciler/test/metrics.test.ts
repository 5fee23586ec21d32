import { readFileSync, writeFileSync, utimesSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { startMetricsServer } from "@shop/platform/metrics";
import { DRIFT_KINDS } from "../src/compare.js";
import { ReconcilerMetrics, runRecorded } from "../src/metrics.js";
import { quietLogger, System } from "./system.js";

async function gauge(metrics: ReconcilerMetrics, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const metric = metrics.registry.getSingleMetric(name);
  const { values } = await metric!.get();
  return values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value;
}

describe("reconciler metrics", function () {
  let sys: System;
  before(async () => {
    sys = new System();
    await sys.start();
  });
  after(async () => {
    await sys?.stop();
  });

  it("record drift by kind, the run's outcome and the time of the last finished run", async () => {
    const metrics = new ReconcilerMetrics({ processMetrics: false });
    expect(await gauge(metrics, "reconciler_last_success_timestamp_seconds")).to.equal(0);

    await sys.sentOrder(12_000n);
    await sys.drained();
    await sys.insertVoucher("ORDER-THAT-DOES-NOT-EXIST");
    const before = Date.now() / 1000;
    const { report } = await runRecorded(metrics, () => sys.reconcile({ dryRun: true }));
    expect(report.outcome).to.equal("unrepaired");

    expect(await gauge(metrics, "reconciler_runs_total", { result: "unrepaired" })).to.equal(1);
    expect(await gauge(metrics, "reconciler_runs_total", { result: "clean" })).to.equal(0);
    expect(await gauge(metrics, "reconciler_drift_found", { kind: "voucher_without_order" })).to.equal(1);
    expect(await gauge(metrics, "reconciler_drift_found", { kind: "missing_voucher" })).to.equal(0);
    expect(await gauge(metrics, "reconciler_last_success_timestamp_seconds")).to.be.at.least(Math.floor(before));
  });

  it("count a failed run without moving the last success time", async () => {
    const metrics = new ReconcilerMetrics({ processMetrics: false });
    const { report } = await runRecorded(metrics, () => sys.reconcile({}, { orderServiceUrl: "http://127.0.0.1:1", callTimeoutMs: 500 }));
    expect(report.outcome).to.equal("failed");
    expect(await gauge(metrics, "reconciler_runs_total", { result: "failed" })).to.equal(1);
    expect(await gauge(metrics, "reconciler_last_success_timestamp_seconds")).to.equal(0);
    await runRecorded(metrics, () => Promise.reject(new Error("crashed"))).catch(() => {});
    expect(await gauge(metrics, "reconciler_runs_total", { result: "failed" })).to.equal(2);
  });

  it("start the last success time from the state file a finished run left behind", async () => {
    const stateFile = path.join(sys.dir, "seed-state.json");
    writeFileSync(stateFile, "{}");
    utimesSync(stateFile, 1_700_000_000, 1_700_000_000);
    const metrics = new ReconcilerMetrics({ processMetrics: false });
    await metrics.seedFromStateFile(stateFile);
    expect(await gauge(metrics, "reconciler_last_success_timestamp_seconds")).to.equal(1_700_000_000);
    await metrics.seedFromStateFile(path.join(sys.dir, "missing.json"));
    expect(await gauge(metrics, "reconciler_last_success_timestamp_seconds")).to.equal(1_700_000_000);
  });

  it("are served on GET /metrics of their own port", async () => {
    const metrics = new ReconcilerMetrics();
    metrics.recordCrash();
    const server = await startMetricsServer({ host: "127.0.0.1", port: 0, registry: metrics.registry, logger: quietLogger() });
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
      expect(res.status).to.equal(200);
      const text = await res.text();
      expect(text).to.contain('reconciler_runs_total{result="failed"} 1');
      expect(text).to.contain('reconciler_drift_found{kind="missing_voucher"} 0');
      expect(text).to.contain("process_start_time_seconds");
      expect((await fetch(`http://127.0.0.1:${server.port}/other`)).status).to.equal(404);
    } finally {
      await server.close();
    }
  });
});

describe("reconciler alert rules", () => {
  it("watch only metrics the reconciler exports, the void cap and drift left for a person included", () => {
    const text = readFileSync(path.resolve(import.meta.dirname, "../../ops/prometheus/alerts.yml"), "utf8");
    const group = text.slice(text.indexOf("- name: reconciler"));
    const exported = new Set(new ReconcilerMetrics({ processMetrics: false }).registry.getMetricsAsArray().map((m) => m.name));
    const used = [...group.matchAll(/expr: ([\s\S]*?)\n\s+(?:for|labels):/g)].flatMap((m) => [...m[1]!.matchAll(/\b(reconciler_\w+)/g)].map((x) => x[1]!));
    expect(used).to.include.members([
      "reconciler_void_cap_reached",
      "reconciler_drift_needs_person",
      "reconciler_runs_total",
      "reconciler_payment_repair_cap_reached",
      "reconciler_shipping_repair_cap_reached",
    ]);
    // Every kind an alert names by label is one the reconciler reports.
    const kinds = [...group.matchAll(/kind=~"([^"]+)"/g)].flatMap((m) => m[1]!.split("|"));
    expect(kinds).to.include.members(["shipment_without_order", "shipping_conflict", "shipment_mismatch", "payment_conflict"]);
    for (const kind of kinds) expect(DRIFT_KINDS as readonly string[], kind).to.include(kind);
    for (const name of used) expect(exported, name).to.include(name);
  });
});
