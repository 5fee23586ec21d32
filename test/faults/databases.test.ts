import { expect } from "chai";
import { Cluster, sleep, waitFor } from "./cluster.js";
import { driveTraffic, newTraffic } from "./traffic.js";

describe("databases: kill -9 each MariaDB server under load", function () {
  this.timeout(120_000);
  let cluster: Cluster;
  afterEach(() => cluster?.stop());

  for (const which of ["order", "voucher"] as const) {
    it(`loses no acknowledged MarkOrderSent and no voucher when the ${which} database is killed and restarted`, async () => {
      cluster = new Cluster({ name: `db-${which}`, dedicatedDatabases: true });
      await cluster.start();
      const progress = newTraffic();
      const traffic = driveTraffic(cluster.orders, { count: 120, prefix: `db-${which}`, concurrency: 6 }, progress);
      // Struck once the traffic is flowing (a sixth of it acknowledged), not after a guessed delay.
      await waitFor(() => progress.acknowledgedSent.length >= 20, 30_000, "20 orders acknowledged");
      const server = (which === "order" ? cluster.orderDb : cluster.voucherDb).server;
      await server.kill();
      // The outage lasts this long: a fault's length, not a wait for something to happen.
      await sleep(1_500);
      await server.start();
      const t = await traffic;
      expect(t.acknowledgedSent.length + t.cancelled.length).to.equal(120);
      await cluster.expectLedgerClean(t);
    });
  }
});
