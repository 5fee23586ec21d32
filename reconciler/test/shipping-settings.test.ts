import { expect } from "chai";
import { parseCli, UsageError } from "../src/cli.js";
import { loadConfig } from "../src/config.js";
import { buildReport, formatSummary } from "../src/report.js";
import type { RunResult } from "../src/reconcile.js";
import { emptyPaymentTally } from "../src/reconcile-payments.js";
import { emptyShippingTally } from "../src/reconcile-shipping.js";

describe("reconciler settings: shipping", () => {
  it("leaves shipping off by default, with the delivery service's default address and a cap of 10", () => {
    const c = loadConfig({ RECONCILE_TOKEN: "t" }, "/srv");
    expect(c).to.include({ shipping: false, deliveryServiceUrl: "http://127.0.0.1:50054", maxShippingRepairs: 10 });
    const on = loadConfig({ RECONCILE_TOKEN: "t", RECONCILE_SHIPPING: "true", DELIVERY_SERVICE_URL: "http://delivery:50054", RECONCILE_MAX_SHIPPING_REPAIRS: "0" }, "/srv");
    expect(on).to.include({ shipping: true, deliveryServiceUrl: "http://delivery:50054", maxShippingRepairs: 0 });
  });

  it("names a bad delivery address, cap or switch", () => {
    expect(() =>
      loadConfig({ RECONCILE_TOKEN: "t", RECONCILE_SHIPPING: "maybe", DELIVERY_SERVICE_URL: "delivery:50054", RECONCILE_MAX_SHIPPING_REPAIRS: "-1" }),
    ).to.throw(/RECONCILE_SHIPPING[\s\S]*DELIVERY_SERVICE_URL="delivery:50054" must be an http:\/\/ or https:\/\/ URL[\s\S]*RECONCILE_MAX_SHIPPING_REPAIRS/);
  });

  it("parses --max-shipping-repairs, only for a single run", () => {
    expect(parseCli(["--once", "--max-shipping-repairs", "40"])).to.deep.include({ maxShippingRepairs: 40 });
    expect(parseCli(["--once"])).to.deep.include({ maxShippingRepairs: undefined });
    expect(() => parseCli(["--max-shipping-repairs", "3"])).to.throw(UsageError, /add --once/);
    expect(() => parseCli(["--once", "--max-shipping-repairs", "many"])).to.throw(UsageError, /max-shipping-repairs.*not a whole number/);
  });

  it("exits 2 when the shipping repair cap was reached, even with every finding counted; the summary says whether shipping was checked", () => {
    const result: RunResult = {
      runId: "r1",
      dryRun: false,
      startedAt: new Date("2030-01-01T00:00:00Z"),
      finishedAt: new Date("2030-01-01T00:00:01Z"),
      window: { until: new Date("2030-01-01T00:00:00Z") },
      scanned: { sentOrders: 0, vouchers: 0, voidedVouchers: 0, rechecked: 0 },
      drift: [],
      racedWithRelay: 0,
      voids: { cap: 10, voided: 0, skippedByCap: 0, outsideWindow: 0, capReached: false },
      payments: emptyPaymentTally(10),
      calls: {},
    };
    // A result built without the shipping half reads as "not checked".
    const without = buildReport(result);
    expect(without.shipping.checked).to.equal(false);
    expect(formatSummary(without)).to.contain("shipping: not checked (RECONCILE_SHIPPING is off)");

    const capped = buildReport({ ...result, shipping: { ...emptyShippingTally(0), checked: true, skippedByCap: 1, capReached: true } });
    expect([capped.exitCode, capped.outcome]).to.deep.equal([2, "unrepaired"]);
    expect(formatSummary(capped)).to.contain("SHIPPING REPAIR CAP REACHED: 0 order(s) repaired, 1 more left alone (cap 0, RECONCILE_MAX_SHIPPING_REPAIRS)");
  });
});
