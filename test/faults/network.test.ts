import { expect } from "chai";
import { Cluster, sleep, waitFor } from "./cluster.js";
import { driveTraffic } from "./traffic.js";

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
