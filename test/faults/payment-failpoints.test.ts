import { readFileSync } from "node:fs";
import { expect } from "chai";
import type { ServiceProcess } from "@shop/testkit/service-process";
import { Cluster, diesWithin } from "./cluster.js";
import { drivePaidTraffic, newTraffic, tally } from "./traffic.js";

type Where = "order" | "relay" | "payment";

/**
 * Every failpoint on the paid-order path, the process it lives in, and the
 * pass on which it fires (late enough that paid traffic is flowing): the
 * order service taking a paid order and recording outcomes, the order
 * relay's charge and refund flows (a standalone relay, so the API stays up),
 * the payment service deciding charges, refunds and top-ups, and its relay
 * delivering outcomes.
 */
const FAILPOINTS: Array<{ name: string; where: Where; pass: number }> = [
  { name: "order.create-paid.before-commit", where: "order", pass: 5 },
  { name: "order.payment-outcome.before-commit", where: "order", pass: 5 },
  { name: "order.payment-outcome.after-commit", where: "order", pass: 5 },
  { name: "order.payment-outcome.before-reply", where: "order", pass: 5 },
  { name: "charge-relay.after-claim", where: "relay", pass: 3 },
  { name: "charge-relay.before-ack", where: "relay", pass: 3 },
  { name: "refund-relay.after-claim", where: "relay", pass: 2 },
  { name: "refund-relay.before-ack", where: "relay", pass: 2 },
  { name: "payment.charge.before-commit", where: "payment", pass: 4 },
  { name: "payment.charge.after-commit", where: "payment", pass: 4 },
  { name: "payment.charge.before-reply", where: "payment", pass: 4 },
  { name: "payment.refund.before-commit", where: "payment", pass: 2 },
  { name: "payment.refund.after-commit", where: "payment", pass: 2 },
  { name: "payment.refund.before-reply", where: "payment", pass: 2 },
  { name: "payment.topup.before-commit", where: "payment", pass: 2 },
  { name: "payment.topup.after-commit", where: "payment", pass: 2 },
  { name: "payment-relay.after-claim", where: "payment", pass: 3 },
  { name: "payment-relay.before-ack", where: "payment", pass: 3 },
];

const ORDERS = 30;

/**
 * One cluster for all of them (its history grows from test to test, and
 * every check covers all of it): before each test the process the failpoint
 * lives in is restarted with it armed, and after it unarmed, as an
 * orchestrator would restart it.
 */
describe("payment failpoints: every crash point on the paid-order path, for real", function () {
  this.timeout(120_000);
  let cluster: Cluster;
  before(async () => {
    cluster = new Cluster({ name: "payfp", inProcessRelay: false, relays: 1, reconciler: false });
    await cluster.start();
  });
  after(() => cluster?.stop());

  const victim = (where: Where): ServiceProcess => (where === "order" ? cluster.order : where === "payment" ? cluster.payment! : cluster.relays[0]!);
  const restart = (where: Where, env: Record<string, string> = {}) =>
    where === "order" ? cluster.restartOrder(env) : where === "payment" ? cluster.restartPayment(env) : cluster.restartRelay(0, env);

  for (const [n, fp] of FAILPOINTS.entries()) {
    for (const action of ["kill", "throw"] as const) {
      it(`${fp.name}=${action}: ${action === "kill" ? "killed -9, restarted" : "an error survived"}; every paid order charged and refunded at most once, the ledger sound`, async () => {
        await restart(fp.where, { FAILPOINTS: `${fp.name}=${action}@${fp.pass}` });
        const proc = victim(fp.where);
        const prefix = `payfp-${n}-${action}`;
        const progress = newTraffic();
        const traffic = drivePaidTraffic(cluster.orders, cluster.payments, { count: ORDERS, prefix, customers: 3, fundCents: 80_000n, topUpEvery: 6 }, progress);
        traffic.catch(() => {});
        if (action === "kill") {
          // The traffic's own failure ends the wait too (and fails the test), and traffic that ends without the kill means it never fired.
          const died = await Promise.race([diesWithin(proc, 40_000), traffic.then(() => false)]);
          expect(died, `${fp.name} never fired`).to.equal(true);
          await restart(fp.where);
        }
        const t = await traffic;
        if (action === "throw") {
          expect(proc.running, `${fp.where} survived the error`).to.equal(true);
          expect(readFileSync(proc.logFile, "utf8"), `${fp.name} fired`).to.include(`failpoint ${fp.name}: throw`);
          await restart(fp.where);
        }
        if (process.env.FAULT_VERBOSE) console.log(`      ${fp.name}=${action}: ${tally(t)}`);
        await cluster.expectLedgerClean(t);
      });
    }
  }
});
