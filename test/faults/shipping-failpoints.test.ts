import { readFileSync } from "node:fs";
import { expect } from "chai";
import type { ServiceProcess } from "@shop/testkit/service-process";
import { Cluster, diesWithin } from "./cluster.js";
import { driveShippingTraffic, newTraffic, shippingTally, type Traffic } from "./traffic.js";

type Where = "order" | "relay" | "delivery";

/**
 * Every failpoint on the shipping path, the process it lives in, and the
 * pass on which it fires (late enough that shipping traffic is flowing): the
 * order service releasing orders (by ReleaseOrderForShipping, and with the
 * outcome that makes a paid order PAID under SHIP_PAID_ORDERS) and taking in
 * shipment events, the order relay's shipment flow (a standalone relay, so
 * the API stays up), the delivery service creating shipments and recording
 * carrier reports, its carrier worker around a plugin call, and its relay
 * delivering events.
 */
const FAILPOINTS: Array<{ name: string; where: Where; pass: number }> = [
  { name: "order.release.before-commit", where: "order", pass: 2 },
  { name: "order.shipment-event.before-commit", where: "order", pass: 4 },
  { name: "order.shipment-event.after-commit", where: "order", pass: 4 },
  { name: "order.shipment-event.before-reply", where: "order", pass: 4 },
  // With SHIP_PAID_ORDERS the outcome that makes an order PAID releases it in the same transaction.
  { name: "order.payment-outcome.before-commit", where: "order", pass: 3 },
  { name: "order.payment-outcome.after-commit", where: "order", pass: 3 },
  { name: "shipment-relay.after-claim", where: "relay", pass: 3 },
  { name: "shipment-relay.before-ack", where: "relay", pass: 3 },
  { name: "delivery.create.before-commit", where: "delivery", pass: 3 },
  { name: "delivery.create.after-commit", where: "delivery", pass: 3 },
  { name: "delivery.create.before-reply", where: "delivery", pass: 3 },
  { name: "delivery.report.before-commit", where: "delivery", pass: 5 },
  { name: "delivery.report.after-commit", where: "delivery", pass: 5 },
  { name: "carrier.after-claim", where: "delivery", pass: 4 },
  { name: "carrier.before-settle", where: "delivery", pass: 4 },
  { name: "delivery-relay.after-claim", where: "delivery", pass: 2 },
  { name: "delivery-relay.before-ack", where: "delivery", pass: 2 },
];

const ORDERS = 10;

/**
 * One cluster for all of them (its history grows from test to test, and
 * every check covers all of it). A kill: before the test the process the
 * failpoint lives in is restarted with it armed, and once it has died,
 * unarmed, as an orchestrator would restart it. A throw fires once (on its
 * pass) and leaves the failpoint inert: every throw failpoint of a process
 * is armed at once, each on its own pass, and the process must survive them
 * all while traffic flows. The traffic mixes paid orders the order service
 * releases itself, orders released by ReleaseOrderForShipping, the delayed
 * carrier, an unknown carrier, and manual shipments confirmed, shipped,
 * delivered and declined over CarrierService.
 */
describe("shipping failpoints: every crash point on the shipping path, for real", function () {
  this.timeout(90_000);
  let cluster: Cluster;
  before(async () => {
    cluster = new Cluster({ name: "shipfp", shipping: true, inProcessRelay: false, relays: 1, reconciler: false });
    await cluster.start();
  });
  after(() => cluster?.stop());

  const victim = (where: Where): ServiceProcess => (where === "order" ? cluster.order : where === "delivery" ? cluster.delivery! : cluster.relays[0]!);
  const restart = (where: Where, env: Record<string, string> = {}) =>
    where === "order" ? cluster.restartOrder(env) : where === "delivery" ? cluster.restartDelivery(env) : cluster.restartRelay(0, env);
  const traffic = (prefix: string, count = ORDERS) => {
    const done = driveShippingTraffic(
      { orders: cluster.orders, payments: cluster.payments, deliveries: cluster.deliveries, carriers: cluster.carriers },
      { count, prefix, customers: 3, concurrency: 6 },
      newTraffic(),
    );
    // A traffic failure must fail the test, not go unhandled while the test waits for something else.
    done.catch(() => {});
    return done;
  };
  async function finish(label: string, done: Promise<Traffic>, count = ORDERS): Promise<void> {
    const t = await done;
    expect(t.shipping.size).to.equal(count);
    if (process.env.FAULT_VERBOSE) console.log(`      ${label}: ${shippingTally(t)}`);
    await cluster.expectLedgerClean(t);
  }

  for (const [n, fp] of FAILPOINTS.entries()) {
    it(`${fp.name}=kill: killed -9, restarted; every order shipped once, sent and delivered once, one voucher, declines refunded once, the ledger sound`, async () => {
      await restart(fp.where, { FAILPOINTS: `${fp.name}=kill@${fp.pass}` });
      const proc = victim(fp.where);
      const done = traffic(`shipfp-${n}-kill`);
      // The traffic's own failure ends the wait too (and fails the test); traffic that ends without the kill means it never fired.
      const died = await Promise.race([diesWithin(proc, 40_000), done.then(() => false)]);
      expect(died, `${fp.name} never fired`).to.equal(true);
      await restart(fp.where);
      await finish(`${fp.name}=kill`, done);
    });
  }

  for (const where of ["order", "relay", "delivery"] as const) {
    const mine = FAILPOINTS.filter((fp) => fp.where === where);
    it(`every ${where} failpoint throws once (${mine.map((fp) => fp.name).join(", ")}): the ${where === "relay" ? "order relay" : `${where} service`} survives each error, and every order still ships once`, async () => {
      await restart(where, { FAILPOINTS: mine.map((fp) => `${fp.name}=throw@${fp.pass}`).join(",") });
      const proc = victim(where);
      const count = 2 * ORDERS;
      const done = traffic(`shipfp-throw-${where}`, count);
      await done.catch(() => {});
      expect(proc.running, `the ${where} process survived the errors`).to.equal(true);
      const log = readFileSync(proc.logFile, "utf8");
      expect(mine.filter((fp) => !log.includes(`failpoint ${fp.name}: throw`)).map((fp) => fp.name), "failpoints that never fired").to.deep.equal([]);
      // Each fired on its pass and is inert now: the process stays as it is.
      await finish(`${where} throws`, done, count);
    });
  }
});
