import { expect } from "chai";
import { Cluster, sleep, waitFor } from "./cluster.js";
import { drivePaidTraffic, newTraffic, tally, type Traffic } from "./traffic.js";

const ORDERS = 60;

/** Paid traffic in the background, and a way to strike once it is flowing (a sixth of it decided), not after a guessed delay. */
function paidTraffic(cluster: Cluster, prefix: string): { progress: Traffic; done: Promise<Traffic> } {
  const progress = newTraffic();
  const done = drivePaidTraffic(cluster.orders, cluster.payments, { count: ORDERS, prefix, customers: 4, fundCents: 150_000n, concurrency: 6 }, progress);
  done.catch(() => {});
  return { progress, done };
}
const flowing = (t: Traffic) => waitFor(() => t.payments.size >= ORDERS / 6, 60_000, `${ORDERS / 6} paid orders decided`);

async function finish(cluster: Cluster, done: Promise<Traffic>, label: string): Promise<void> {
  const t = await done;
  expect(t.payments.size).to.equal(ORDERS);
  if (process.env.FAULT_VERBOSE) console.log(`      ${label}: ${tally(t)}`);
  await cluster.expectLedgerClean(t);
}

describe("payments: kill -9 the payment service and its database under paid traffic", function () {
  this.timeout(180_000);
  let cluster: Cluster;
  afterEach(() => cluster?.stop());

  it("the payment service killed -9 twice and restarted: every paid order decided once, charged and refunded at most once", async () => {
    cluster = new Cluster({ name: "pay-kill" });
    await cluster.start();
    const { progress, done } = paidTraffic(cluster, "pay-kill");
    for (const at of [ORDERS / 6, ORDERS / 2]) {
      await waitFor(() => progress.payments.size >= at, 60_000, `${at} paid orders decided`);
      await cluster.payment!.kill();
      // Down for this long: a fault's length, not a wait for something to happen.
      await sleep(1_500);
      await cluster.restartPayment();
    }
    await finish(cluster, done, "payment service killed");
  });

  it("the payment database killed -9 and restarted: no decision lost, none made twice", async () => {
    cluster = new Cluster({ name: "pay-db-kill", dedicatedDatabases: true });
    await cluster.start();
    const { progress, done } = paidTraffic(cluster, "pay-db-kill");
    await flowing(progress);
    const server = cluster.paymentDb!.server;
    await server.kill();
    await sleep(1_500);
    await server.start();
    await finish(cluster, done, "payment database killed");
  });

  it("the order database killed -9 under paid traffic: every recorded outcome kept, every charge asked once", async () => {
    cluster = new Cluster({ name: "pay-odb-kill", dedicatedDatabases: true });
    await cluster.start();
    const { progress, done } = paidTraffic(cluster, "pay-odb-kill");
    await flowing(progress);
    const server = cluster.orderDb.server;
    await server.kill();
    await sleep(1_500);
    await server.start();
    await finish(cluster, done, "order database killed");
  });
});

/** The services' connections to their databases through fault proxies: reset or slowed for a while, then healed. */
describe("payments: faults between the services and their databases", function () {
  this.timeout(180_000);
  let cluster: Cluster;
  afterEach(() => cluster?.stop());

  for (const link of ["paymentDb", "orderDb"] as const) {
    it(`${link}: every connection reset for 2.5 s, then 200 ms of delay, under paid traffic`, async () => {
      cluster = new Cluster({ name: `pay-${link}`, proxy: true });
      await cluster.start();
      const { progress, done } = paidTraffic(cluster, `pay-${link}`);
      await flowing(progress);
      const proxy = cluster.proxies[link]!;
      proxy.setMode({ kind: "reset" });
      await sleep(2_500);
      proxy.setMode({ kind: "delay", ms: 200 });
      await sleep(2_500);
      proxy.setMode({ kind: "pass" });
      await finish(cluster, done, `${link} reset and delayed`);
    });
  }
});
