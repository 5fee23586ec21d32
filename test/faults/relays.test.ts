import { readFileSync } from "node:fs";
import { expect } from "chai";
import { Cluster, waitFor } from "./cluster.js";
import { driveTraffic } from "./traffic.js";

describe("relays: competing, frozen and starved", function () {
  this.timeout(90_000);
  let cluster: Cluster;
  afterEach(() => cluster?.stop());

  it("fences the acks of a relay frozen (SIGSTOP) past its lease while another relay delivers its rows", async () => {
    // Slow calls (under the 1000 ms call timeout) so the frozen relay surely holds a claim.
    // One loop, so the frozen relay is almost surely in its call (holding a committed lease), not inside a claim transaction.
    cluster = new Cluster({ name: "sigstop", inProcessRelay: false, relays: 1, proxy: true, relayEnv: () => ({ RELAY_CONCURRENCY: "1" }) });
    await cluster.start();
    cluster.proxy!.setMode({ kind: "delay", ms: 250 });
    const traffic = driveTraffic(cluster.orders, { count: 60, prefix: "sigstop", cancelEvery: 0 });
    const frozen = cluster.relays[0]!;
    // Freeze it the moment it holds a claim whose call is in flight.
    await waitFor(
      async () => Number(await cluster.orderDb.sql("SELECT COUNT(*) FROM voucher_outbox WHERE status = 'pending' AND locked_by LIKE 'relay-0:%'")) > 0,
    );
    process.kill(frozen.pid!, "SIGSTOP");
    let t;
    try {
      const held = (await cluster.orderDb.sql("SELECT id FROM voucher_outbox WHERE status = 'pending' AND locked_by LIKE 'relay-0:%'"))
        .trim()
        .split("\n")
        .filter(Boolean);
      expect(held).to.not.be.empty;
      t = await traffic;
      await cluster.addRelay();
      // The other relay takes the frozen relay's leased rows over once the 2500 ms lease has run out, while it is still frozen.
      // (Rows the frozen relay holds inside an uncommitted claim or ack transaction stay row-locked until it resumes:
      // delayed, never lost or doubled; they are delivered after SIGCONT below.)
      await waitFor(
        async () => Number(await cluster.orderDb.sql(`SELECT COUNT(*) FROM voucher_outbox WHERE status = 'delivered' AND id IN (${held.join(",")})`)) === held.length,
        20_000,
      );
    } finally {
      process.kill(frozen.pid!, "SIGCONT");
    }
    await cluster.drained(20_000);
    // The woken relay's late ack or retry is fenced off: it finds its claim token gone.
    await waitFor(async () => readFileSync(frozen.logFile, "utf8").includes("lease lost before settling"), 10_000);
    expect(frozen.running).to.equal(true);
    await cluster.expectLedgerClean(t);
  });

  it("gives exactly one voucher per order with four relays (three standalone, one in-process) competing", async () => {
    cluster = new Cluster({ name: "many-relays", relays: 3 });
    await cluster.start();
    const t = await driveTraffic(cluster.orders, { count: 200, prefix: "many", concurrency: 16 });
    const byRelay = await cluster.orderDb.sql("SELECT COUNT(*) FROM voucher_outbox WHERE status = 'delivered'");
    expect(Number(byRelay)).to.be.greaterThan(0);
    await cluster.expectLedgerClean(t);
  });

  it("backs off while the voucher service is down and delivers everything once it is back", async () => {
    cluster = new Cluster({ name: "voucher-down" });
    await cluster.start();
    await cluster.voucher.kill();
    const t = await driveTraffic(cluster.orders, { count: 60, prefix: "down" });
    // Retried, not given up on: rows come back for a second attempt and none is parked dead.
    const retried = async () => Number(await cluster.orderDb.sql("SELECT COUNT(*) FROM voucher_outbox WHERE status = 'pending' AND attempts > 1"));
    await waitFor(async () => (await retried()) > 0, 20_000, "a row retried while the voucher service is down");
    expect((await cluster.outboxCounts()).dead).to.equal(0);
    await cluster.restartVoucher();
    await cluster.expectLedgerClean(t);
  });
});
