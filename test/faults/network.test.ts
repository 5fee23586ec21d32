import { expect } from "chai";
import { Cluster, sleep, waitFor } from "./cluster.js";
import type { ProxyMode } from "./fault-proxy.js";
import { drivePaidTraffic, driveTraffic, newTraffic, tally } from "./traffic.js";

/** The relay reaches the voucher service through a TCP fault proxy (RELAY_CALL_TIMEOUT_MS is 1000). */
describe("network: a fault proxy between the relay and the voucher service", function () {
  this.timeout(90_000);
  let cluster: Cluster;
  beforeEach(async () => {
    cluster = new Cluster({ name: "net", proxy: true });
    await cluster.start();
  });
  afterEach(() => cluster?.stop());

  it("delivers everything exactly once through a delay shorter than the call timeout", async () => {
    cluster.proxy!.setMode({ kind: "delay", ms: 300 });
    const t = await driveTraffic(cluster.orders, { count: 60, prefix: "net-delay" });
    await cluster.expectLedgerClean(t);
  });

  it("delivers exactly once after a delay longer than the call timeout (calls time out after the work is done)", async () => {
    cluster.proxy!.setMode({ kind: "delay", ms: 1_500 });
    const t = await driveTraffic(cluster.orders, { count: 60, prefix: "net-slow" });
    await sleep(3_000);
    cluster.proxy!.setMode({ kind: "pass" });
    await cluster.expectLedgerClean(t);
  });

  it("delivers exactly once after a blackhole (accepted, never answered) heals", async () => {
    cluster.proxy!.setMode({ kind: "blackhole" });
    const t = await driveTraffic(cluster.orders, { count: 60, prefix: "net-blackhole" });
    await sleep(2_500);
    expect((await cluster.outboxCounts()).delivered).to.equal(0);
    cluster.proxy!.setMode({ kind: "pass" });
    await cluster.expectLedgerClean(t);
  });

  it("issues no second voucher when responses are dropped after the voucher service did the work", async () => {
    cluster.proxy!.setMode({ kind: "drop-response" });
    const t = await driveTraffic(cluster.orders, { count: 60, prefix: "net-drop" });
    // Vouchers come to exist, yet the relay hears of none of them.
    await waitFor(async () => (await cluster.voucherCount()) > 0, 20_000, "a voucher issued behind the dropped responses");
    expect((await cluster.outboxCounts()).delivered).to.equal(0);
    cluster.proxy!.setMode({ kind: "pass" });
    await cluster.expectLedgerClean(t);
  });
});

/**
 * Paid orders through fault proxies on both payment links: the order
 * service's relay calling the payment service (charges, refunds) and the
 * payment service's relay calling the order service back (outcomes). The
 * tests' own calls go direct. Each fault is held while paid traffic runs,
 * then lifted; every order ends as the client saw it, debited and refunded
 * at most once, and the full ledger check passes after drain.
 */
describe("network: fault proxies between the order and payment services, both ways", function () {
  this.timeout(150_000);
  let cluster: Cluster;
  beforeEach(async () => {
    cluster = new Cluster({ name: "net-pay", proxy: true });
    await cluster.start();
  });
  afterEach(() => cluster?.stop());

  const count = (db: { sql(s: string): Promise<string> }, sql: string) => db.sql(sql).then((out) => Number(out.trim()));
  /** Charges the payment service decided (its inbox), and charge rows the order relay saw answered. */
  const decidedCharges = () => count(cluster.paymentDb!, "SELECT COUNT(*) FROM inbox WHERE message_key LIKE 'charge:%'");
  const ackedCharges = () => count(cluster.orderDb, "SELECT COUNT(*) FROM charge_outbox WHERE status = 'delivered'");
  /** Outcomes the order service recorded (its inbox), and outcome rows the payment relay saw answered. */
  const recordedOutcomes = () => count(cluster.orderDb, "SELECT COUNT(*) FROM inbox WHERE message_key LIKE 'payment:%'");
  const ackedOutcomes = () => count(cluster.paymentDb!, "SELECT COUNT(*) FROM payment_outbox WHERE status = 'delivered'");

  async function underFault(link: "payment" | "order", mode: ProxyMode, prefix: string, hold: () => Promise<void>): Promise<void> {
    cluster.proxies[link]!.setMode(mode);
    const progress = newTraffic();
    const traffic = drivePaidTraffic(cluster.orders, cluster.payments, { count: 40, prefix, customers: 3, fundCents: 100_000n }, progress);
    // A traffic failure must fail the test, not hang in the background.
    traffic.catch(() => {});
    await hold();
    cluster.proxies[link]!.setMode({ kind: "pass" });
    const t = await traffic;
    expect(t.payments.size).to.equal(40);
    if (process.env.FAULT_VERBOSE) console.log(`      ${prefix}: ${tally(t)}`);
    await cluster.expectLedgerClean(t);
  }

  for (const [link, caller] of [["payment", "the order relay's charges and refunds"], ["order", "the payment relay's outcomes"]] as const) {
    it(`${link} link: a delay longer than the call timeout (${caller} time out after the work is done) charges and refunds once`, async () => {
      await underFault(link, { kind: "delay", ms: 1_500 }, `np-delay-${link}`, async () => {
        await sleep(4_000);
      });
    });

    it(`${link} link: responses dropped after the work is done (${caller} never hear), then healed: replays change nothing`, async () => {
      await underFault(link, { kind: "drop-response" }, `np-drop-${link}`, async () => {
        // The far side did the work while the caller heard nothing.
        if (link === "payment") {
          await waitFor(async () => (await decidedCharges()) >= 3, 30_000, "charges decided behind dropped responses");
          expect(await ackedCharges()).to.equal(0);
        } else {
          await waitFor(async () => (await recordedOutcomes()) >= 3, 30_000, "outcomes recorded behind dropped responses");
          expect(await ackedOutcomes()).to.equal(0);
        }
      });
    });

    it(`${link} link: every connection reset for a while (${caller} refused), then healed`, async () => {
      await underFault(link, { kind: "reset" }, `np-reset-${link}`, async () => {
        await sleep(3_000);
        expect(link === "payment" ? await decidedCharges() : await recordedOutcomes()).to.equal(0);
      });
    });
  }
});

