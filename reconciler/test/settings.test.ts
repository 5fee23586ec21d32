import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { parseCli, UsageError } from "../src/cli.js";
import { loadConfig } from "../src/config.js";
import { buildReport, exitCodeOf, formatSummary } from "../src/report.js";
import { defaultWindow, nextWindowEnd, readState, writeJsonAtomically } from "../src/state.js";
import type { DriftRecord, RunResult } from "../src/reconcile.js";
import { emptyPaymentTally } from "../src/reconcile-payments.js";
import { DRIFT_KINDS } from "../src/compare.js";

describe("reconciler settings", () => {
  it("defaults to the local services, nightly at 02:30 UTC, a 10 minute grace and a 1 hour overlap", () => {
    const c = loadConfig({ RECONCILE_TOKEN: "t" }, "/srv");
    expect(c).to.include({
      orderServiceUrl: "http://127.0.0.1:50051",
      voucherServiceUrl: "http://127.0.0.1:50052",
      cron: "30 2 * * *",
      timezone: "UTC",
      graceMs: 600_000,
      overlapMs: 3_600_000,
      initialLookbackMs: 3 * 24 * 3_600_000,
      maxVoids: 10,
      stateFile: "/srv/.data/reconciler/state.json",
      reportDir: "/srv/.data/reconciler/reports",
    });
  });

  it("keeps its state and reports, and finds the token, in npm start's LOCAL_DATA_DIR when it is moved", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "reconcile-data-"));
    mkdirSync(path.join(dir, "auth"));
    writeFileSync(path.join(dir, "auth", "reconciler.token"), "from-the-data-dir\n");
    const c = loadConfig({ LOCAL_DATA_DIR: dir }, "/srv");
    expect(c).to.include({ stateFile: path.join(dir, "reconciler/state.json"), reportDir: path.join(dir, "reconciler/reports") });
    expect(typeof c.token === "function" ? c.token() : c.token).to.equal("from-the-data-dir");
  });

  it("names every bad setting at once", () => {
    expect(() =>
      loadConfig({ RECONCILE_TOKEN: "t", RECONCILE_CRON: "61 * * * *", RECONCILE_TIMEZONE: "Mars/Olympus", RECONCILE_GRACE_MS: "-1", ORDER_SERVICE_URL: "nope" }),
    ).to.throw(/RECONCILE_CRON[\s\S]*ORDER_SERVICE_URL|ORDER_SERVICE_URL[\s\S]*RECONCILE_CRON/)
      .with.property("problems")
      .that.has.length(4);
  });

  it("takes the void cap and the initial look-back, and refuses negative ones", () => {
    expect(loadConfig({ RECONCILE_TOKEN: "t", RECONCILE_MAX_VOIDS: "0", RECONCILE_INITIAL_LOOKBACK_MS: "60000" })).to.include({ maxVoids: 0, initialLookbackMs: 60_000 });
    expect(() => loadConfig({ RECONCILE_TOKEN: "t", RECONCILE_MAX_VOIDS: "-1", RECONCILE_INITIAL_LOOKBACK_MS: "x" }))
      .to.throw()
      .with.property("problems")
      .that.has.members(["RECONCILE_MAX_VOIDS=-1 is out of range [0, 1000000]", 'RECONCILE_INITIAL_LOOKBACK_MS="x" is not a whole number']);
  });

  it("leaves payments out unless RECONCILE_PAYMENTS is on, and takes the payment service's address and the payment repair cap", () => {
    expect(loadConfig({ RECONCILE_TOKEN: "t" })).to.include({ payments: false, paymentServiceUrl: "http://127.0.0.1:50053", maxPaymentRepairs: 10 });
    expect(
      loadConfig({ RECONCILE_TOKEN: "t", RECONCILE_PAYMENTS: "true", PAYMENT_SERVICE_URL: "http://pay:7000", RECONCILE_MAX_PAYMENT_REPAIRS: "0" }),
    ).to.include({ payments: true, paymentServiceUrl: "http://pay:7000", maxPaymentRepairs: 0 });
    expect(() => loadConfig({ RECONCILE_TOKEN: "t", RECONCILE_PAYMENTS: "maybe", PAYMENT_SERVICE_URL: "pay:7000", RECONCILE_MAX_PAYMENT_REPAIRS: "-1" }))
      .to.throw()
      .with.property("problems")
      .that.has.members([
        'RECONCILE_PAYMENTS="maybe" is not a boolean (true/false)',
        'PAYMENT_SERVICE_URL="pay:7000" must be an http:// or https:// URL, like http://127.0.0.1:50053',
        "RECONCILE_MAX_PAYMENT_REPAIRS=-1 is out of range [0, 1000000]",
      ]);
  });

  it("accepts a per-second expression and a real timezone", () => {
    expect(loadConfig({ RECONCILE_TOKEN: "t", RECONCILE_CRON: "*/5 * * * * *", RECONCILE_TIMEZONE: "Europe/Berlin" })).to.include({ cron: "*/5 * * * * *" });
  });
});

describe("reconcile command line", () => {
  it("parses a one-shot dry run over an explicit window", () => {
    const o = parseCli(["--once", "--dry-run", "--since", "2024-05-01T00:00:00Z", "--until", "2024-05-02", "--json"]);
    expect(o).to.deep.include({ once: true, dryRun: true, json: true });
    expect(o.since!.toISOString()).to.equal("2024-05-01T00:00:00.000Z");
    expect(o.until!.toISOString()).to.equal("2024-05-02T00:00:00.000Z");
  });

  it("parses --full and --max-voids", () => {
    expect(parseCli(["--once", "--full", "--max-voids", "250"])).to.deep.include({ full: true, maxVoids: 250 });
    expect(parseCli(["--once"])).to.deep.include({ full: false, maxVoids: undefined, maxPaymentRepairs: undefined });
  });

  it("parses --max-payment-repairs", () => {
    expect(parseCli(["--once", "--max-payment-repairs", "40"])).to.deep.include({ maxPaymentRepairs: 40 });
  });

  for (const [args, why] of [
    [["--once", "--full", "--since", "2024-05-01"], /--full and --since/],
    [["--full"], /add --once/],
    [["--max-voids", "3"], /add --once/],
    [["--max-payment-repairs", "3"], /add --once/],
    [["--once", "--max-payment-repairs", "many"], /max-payment-repairs.*not a whole number/],
    [["--once", "--max-voids", "-1"], /max-voids/],
    [["--once", "--max-voids=-1"], /not a whole number/],
    [["--once", "--max-voids", "lots"], /not a whole number/],
    [["--frobnicate"], /Unknown option/],
    [["--once", "--since", "yesterday"], /not an ISO 8601 time/],
    [["--once", "--since", "2024-05-02", "--until", "2024-05-01"], /before --until/],
    [["--json"], /add --once/],
    [["--once", "extra"], /positional/i],
  ] as const) {
    it(`refuses ${args.join(" ")} with a usage error`, () => {
      expect(() => parseCli([...args])).to.throw(UsageError, why);
    });
  }
});

describe("reconciliation window", () => {
  const now = new Date("2024-05-02T02:30:00Z");

  it("without a state looks back only the initial look-back, not to the beginning, and stops a grace period before now", () => {
    expect(defaultWindow(undefined, now, 600_000, 3_600_000, 3 * 24 * 3_600_000)).to.deep.equal({
      since: new Date("2024-04-29T02:20:00Z"),
      until: new Date("2024-05-02T02:20:00Z"),
    });
  });

  it("starts an overlap before where the last completed run ended", () => {
    const state = { windowEnd: "2024-05-01T02:20:00.000Z", runId: "r", unresolvedOrderIds: [] };
    expect(defaultWindow(state, now, 600_000, 3_600_000, 3 * 24 * 3_600_000)).to.deep.equal({
      since: new Date("2024-05-01T01:20:00Z"),
      until: new Date("2024-05-02T02:20:00Z"),
    });
  });

  it("moves forward after a contiguous run, but never backwards and never across a gap", () => {
    const state = { windowEnd: "2024-05-01T00:00:00.000Z", runId: "r", unresolvedOrderIds: [] };
    const until = new Date("2024-05-02T00:00:00Z");
    expect(nextWindowEnd(state, { since: new Date("2024-04-30T23:00:00Z"), until })).to.deep.equal(until);
    expect(nextWindowEnd(undefined, { until })).to.deep.equal(until);
    // Without a state the first finished run starts coverage, whatever its start.
    expect(nextWindowEnd(undefined, { since: new Date("2024-04-29T00:00:00Z"), until })).to.deep.equal(until);
    expect(nextWindowEnd(state, { since: new Date("2024-05-01T12:00:00Z"), until })).to.deep.equal(new Date(state.windowEnd));
    expect(nextWindowEnd(state, { since: new Date("2024-01-01T00:00:00Z"), until: new Date("2024-02-01T00:00:00Z") })).to.deep.equal(
      new Date(state.windowEnd),
    );
  });

  it("keeps its state in a file written whole, and says how to recover from a broken one", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "reconcile-state-"));
    try {
      const file = path.join(dir, "nested", "state.json");
      expect(await readState(file)).to.equal(undefined);
      await writeJsonAtomically(file, { windowEnd: "2024-05-01T00:00:00.000Z", runId: "r1", unresolvedOrderIds: ["o1"] });
      expect(await readState(file)).to.deep.equal({ windowEnd: "2024-05-01T00:00:00.000Z", runId: "r1", unresolvedOrderIds: ["o1"] });
      expect(readdirSync(path.dirname(file))).to.deep.equal(["state.json"]);
      writeFileSync(file, "{ half");
      let error: Error | undefined;
      await readState(file).catch((e) => (error = e));
      expect(error?.message).to.contain("delete it");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("reconcile report", () => {
  const noVoids = { cap: 10, voided: 0, skippedByCap: 0, outsideWindow: 0, capReached: false };
  const noPayments = emptyPaymentTally(10);
  const run = (drift: DriftRecord[], error?: string, voids = noVoids, payments = noPayments): RunResult => ({
    runId: "01RUN",
    dryRun: false,
    startedAt: new Date("2024-05-02T02:30:00.000Z"),
    finishedAt: new Date("2024-05-02T02:30:01.500Z"),
    window: { since: new Date("2024-05-01T01:20:00Z"), until: new Date("2024-05-02T02:20:00Z") },
    windowSource: "state",
    scanned: { sentOrders: 10, vouchers: 8, voidedVouchers: 0, rechecked: 0 },
    drift,
    racedWithRelay: 0,
    voids,
    payments,
    error,
    calls: {},
  });
  const d = (kind: DriftRecord["kind"], repaired: boolean): DriftRecord => ({ kind, orderId: `o-${kind}`, detail: "x", action: "y", repaired });

  it("exits 0 without drift, 1 when all drift was repaired, 2 when some was not or the run failed", () => {
    expect(exitCodeOf(run([]))).to.equal(0);
    expect(exitCodeOf(run([d("missing_voucher", true)]))).to.equal(1);
    expect(exitCodeOf(run([d("missing_voucher", true), d("customer_mismatch", false)]))).to.equal(2);
    expect(exitCodeOf(run([], "order service down"))).to.equal(2);
  });

  it("has counts for every kind, the ids, the window and the duration", () => {
    const report = buildReport(run([d("missing_voucher", true), d("customer_mismatch", false)]));
    expect(report).to.deep.include({
      runId: "01RUN",
      outcome: "unrepaired",
      exitCode: 2,
      error: null,
      durationMs: 1500,
      window: { since: "2024-05-01T01:20:00.000Z", until: "2024-05-02T02:20:00.000Z" },
      totals: { found: 2, repaired: 1, unrepaired: 1, needsPerson: 0 },
      windowSource: "state",
      warnings: [],
    });
    expect(Object.keys(report.counts)).to.deep.equal([...DRIFT_KINDS]);
    expect(report.counts.charge_undelivered).to.deep.equal({ found: 0, repaired: 0 });
    expect(report.counts.missing_voucher).to.deep.equal({ found: 1, repaired: 1 });
    expect(report.counts.voucher_without_order).to.deep.equal({ found: 0, repaired: 0 });
    expect(report.ids.customer_mismatch).to.deep.equal(["o-customer_mismatch"]);
    expect(JSON.parse(JSON.stringify(report))).to.deep.equal(report);
  });

  it("exits 2 and says so in the summary when the void cap was reached", () => {
    const capped = { cap: 2, voided: 2, skippedByCap: 5, outsideWindow: 1, capReached: true };
    const drift = [d("voucher_without_order", true), { ...d("voucher_for_unsent_order", false), needsPerson: true }];
    expect(exitCodeOf(run(drift, undefined, capped))).to.equal(2);
    const report = buildReport(run(drift, undefined, capped));
    expect(report).to.deep.include({ outcome: "unrepaired", voids: capped, totals: { found: 2, repaired: 1, unrepaired: 1, needsPerson: 1 } });
    const text = formatSummary(report);
    expect(text).to.contain("VOID CAP REACHED: 2 voucher(s) voided, 5 more left alone (cap 2, RECONCILE_MAX_VOIDS)");
    expect(text).to.contain("1 voucher(s) to void were issued outside the window and left alone");
    expect(text).to.contain("(1 need a person)").and.contain("PERSON   voucher_for_unsent_order");
  });

  it("exits 2 and says so in the summary when the payment repair cap was reached", () => {
    const capped = { ...emptyPaymentTally(3), checked: true, scannedPayments: 12, scannedOrders: 5, repairs: 3, delivered: 2, requeued: 1, skippedByCap: 4, capReached: true };
    const drift = [d("charge_undelivered", true), { ...d("charge_undecided", false), needsPerson: true }];
    expect(exitCodeOf(run([d("charge_undelivered", true)], undefined, noVoids, capped))).to.equal(2);
    expect(exitCodeOf(run([d("charge_undelivered", true)]))).to.equal(1);
    const report = buildReport(run(drift, undefined, noVoids, capped));
    expect(report).to.deep.include({ outcome: "unrepaired", payments: capped });
    expect(report.counts.charge_undecided).to.deep.equal({ found: 1, repaired: 0 });
    const text = formatSummary(report);
    expect(text).to.contain("payments: 12 charges decided in the window, 5 orders awaiting a charge or a refund");
    expect(text).to.contain("PAYMENT REPAIR CAP REACHED: 3 order(s) repaired, 4 more left alone (cap 3, RECONCILE_MAX_PAYMENT_REPAIRS)");
    expect(text).to.contain("PERSON   charge_undecided");
  });

  it("says when payments were not checked, and counts the repairs made", () => {
    expect(formatSummary(buildReport(run([])))).to.contain("payments: not checked (RECONCILE_PAYMENTS is off)");
    const made = { ...emptyPaymentTally(10), checked: true, repairs: 2, delivered: 1, requeued: 1 };
    expect(formatSummary(buildReport(run([], undefined, noVoids, made)))).to.contain("payment repairs: 2 of at most 10: 1 outcome(s) delivered, 1 request(s) requeued");
  });

  it("prints its warnings, e.g. that no state file was found", () => {
    const text = formatSummary(
      buildReport({ ...run([]), windowSource: "initial-lookback", warnings: ["no state file at /s.json"], scanned: { sentOrders: 10, vouchers: 8, voidedVouchers: 3, rechecked: 0 } }),
    );
    expect(text.split("\n")[1]).to.equal("  WARNING: no state file at /s.json");
    expect(text).to.contain("scanned: 10 sent orders, 8 vouchers (3 of them voided)");
  });

  it("summarises a failed run with its error first", () => {
    const text = formatSummary(buildReport(run([], "ListSentOrders on the order service failed: Unavailable")), "/r.json");
    expect(text.split("\n")[0]).to.contain("RUN FAILED (exit 2)");
    expect(text).to.contain("error:   ListSentOrders").and.contain("report:  /r.json");
  });
});

// The report file is what operators read the next morning; keep it valid JSON.
describe("report file", () => {
  it("is written whole under the report folder", async () => {
    const { writeReport } = await import("../src/report.js");
    const dir = mkdtempSync(path.join(tmpdir(), "reconcile-report-"));
    try {
      const report = buildReport({
        runId: "01RUN",
        dryRun: true,
        startedAt: new Date("2024-05-02T02:30:00.000Z"),
        finishedAt: new Date("2024-05-02T02:30:00.010Z"),
        window: { until: new Date("2024-05-02T02:20:00Z") },
        scanned: { sentOrders: 0, vouchers: 0, voidedVouchers: 0, rechecked: 0 },
        drift: [],
        racedWithRelay: 0,
        voids: { cap: 10, voided: 0, skippedByCap: 0, outsideWindow: 0, capReached: false },
        payments: emptyPaymentTally(10),
        calls: {},
      });
      const file = await writeReport(dir, report);
      expect(path.basename(file)).to.equal("2024-05-02T02-30-00-000Z-01RUN-dry-run.json");
      expect(JSON.parse(readFileSync(file, "utf8"))).to.deep.equal(report);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
