import { expect } from "chai";
import { Cluster, sleep, SLOW_CARRIER, waitFor } from "./cluster.js";
import { driveShippingTraffic, newTraffic, shippingTally, type ShippingTrafficOptions, type Traffic } from "./traffic.js";

const ORDERS = 36;

/**
 * kill -9 of the delivery service and of its database under shipping
 * traffic, and of the delivery service while its carrier worker waits on
 * plugin calls. One cluster for the three (the delivery database on a
 * MariaDB server of its own, the reconciler repairing for real throughout,
 * paused only for each test's final checks); every check covers the whole
 * history so far.
 */
describe("shipping: kill -9 the delivery service and its database under shipping traffic", function () {
  this.timeout(150_000);
  let cluster: Cluster;
  before(async () => {
    cluster = new Cluster({ name: "ship-kill", shipping: true, slowCarrier: true, dedicatedDatabases: ["delivery"] });
    await cluster.start();
  });
  beforeEach(() => cluster.resumeReconciler());
  after(() => cluster?.stop());

  /** Shipping traffic in the background; `progress` fills as orders end, so a test can strike once it is flowing. */
  function traffic(prefix: string, more: Partial<ShippingTrafficOptions> = {}): { progress: Traffic; done: Promise<Traffic> } {
    const progress = newTraffic();
    const done = driveShippingTraffic(
      { orders: cluster.orders, payments: cluster.payments, deliveries: cluster.deliveries, carriers: cluster.carriers },
      { count: ORDERS, prefix, customers: 4, concurrency: 8, ...more },
      progress,
    );
    done.catch(() => {});
    return { progress, done };
  }
  async function finish(done: Promise<Traffic>, label: string): Promise<void> {
    const t = await done;
    expect(t.shipping.size).to.equal(ORDERS);
    if (process.env.FAULT_VERBOSE) console.log(`      ${label}: ${shippingTally(t)}; reconciler exit codes so far ${cluster.reconcileRuns.join(" ")}`);
    await cluster.expectLedgerClean(t);
    // The reconciler, comparing shipping too (RECONCILE_SHIPPING), completed runs among the faults: 0 (no drift) or 1 (all repaired).
    expect(cluster.reconcileRuns.filter((code) => code === 0 || code === 1).length, `reconciler exit codes ${cluster.reconcileRuns.join(" ")}`).to.be.greaterThan(0);
  }

  it("the delivery service killed -9 twice and restarted: every shipment created once, every event recorded once, one voucher per delivered qualifying order, declines refunded once", async () => {
    const { progress, done } = traffic("ship-kill-svc");
    for (const at of [ORDERS / 6, ORDERS / 2]) {
      await waitFor(() => progress.shipping.size >= at, 60_000, `${at} orders shipped to their end`);
      await cluster.delivery!.kill();
      // Down for this long: a fault's length, not a wait for something to happen.
      await sleep(1_500);
      await cluster.restartDelivery();
    }
    await finish(done, "delivery service killed");
  });

  it("the delivery database killed -9 and restarted: no shipment, report or event lost or doubled", async () => {
    const { progress, done } = traffic("ship-kill-db");
    await waitFor(() => progress.shipping.size >= ORDERS / 6, 60_000, "orders shipped to their end");
    const server = cluster.deliveryDb!.server;
    await server.kill();
    await sleep(1_500);
    await server.start();
    await finish(done, "delivery database killed");
  });

  it("the delivery service killed -9 twice while carrier calls are in flight (a carrier whose every call takes 400 ms): the calls are made again after the leases lapse, and each status is recorded once", async () => {
    const { progress, done } = traffic("ship-kill-call", { delayedCarrier: SLOW_CARRIER });
    const leased = () => cluster.deliveryDb!.sql(`SELECT COUNT(*) FROM shipments WHERE carrier = '${SLOW_CARRIER}' AND carrier_lease IS NOT NULL`).then((o) => Number(o.trim()));
    for (const at of [ORDERS / 6, ORDERS / 2]) {
      await waitFor(() => progress.shipping.size >= at, 60_000, `${at} orders shipped to their end`);
      // Strike while the worker holds shipments of the slow carrier, i.e. while their calls are under way. The
      // leases a dead worker held stay in the database: none there means the strike fell between two calls, and
      // it is made again (a few times at most).
      let held = 0;
      for (let strike = 0; strike < 5 && held === 0; strike++) {
        await waitFor(async () => (await leased()) > 0, 20_000, "a slow carrier call in flight");
        await cluster.delivery!.kill();
        held = await leased();
        await sleep(1_000);
        await cluster.restartDelivery();
      }
      expect(held, "leases the killed worker held (calls in flight)").to.be.greaterThan(0);
    }
    await finish(done, "delivery service killed mid-call");
  });
});
