import { expect } from "chai";
import { Cluster, diesWithin } from "./cluster.js";
import { driveTraffic } from "./traffic.js";

type Where = "order" | "relay" | "voucher";

/** Every named failpoint, the process it lives in, and the pass on which it fires (late enough that traffic is flowing). */
const FAILPOINTS: Array<{ name: string; where: Where; pass: number }> = [
  { name: "order.mark-sent.before-commit", where: "order", pass: 5 },
  { name: "order.mark-sent.after-commit", where: "order", pass: 5 },
  { name: "order.mark-sent.before-reply", where: "order", pass: 5 },
  { name: "relay.after-claim", where: "relay", pass: 3 },
  { name: "relay.before-ack", where: "relay", pass: 3 },
  { name: "voucher.issue.before-commit", where: "voucher", pass: 3 },
  { name: "voucher.issue.after-commit", where: "voucher", pass: 3 },
  { name: "voucher.issue.before-reply", where: "voucher", pass: 3 },
];

const ORDERS = 100;

/** A cluster with the failpoint armed in its process; relay failpoints go to a standalone relay so the API stays up. */
function clusterWith(name: string, where: Where, spec: string): Cluster {
  const armed = { FAILPOINTS: spec };
  return new Cluster({
    name,
    inProcessRelay: where !== "relay",
    relays: where === "relay" ? 1 : 0,
    orderEnv: where === "order" ? armed : {},
    voucherEnv: where === "voucher" ? armed : {},
    relayEnv: () => (where === "relay" ? armed : {}),
  });
}

describe("failpoints: every named crash point, for real", function () {
  this.timeout(90_000);

  for (const fp of FAILPOINTS) {
    describe(fp.name, () => {
      let cluster: Cluster;
      afterEach(() => cluster?.stop());

      it(`kill -9 at ${fp.name}, restart, drain: exactly one voucher per qualifying sent order`, async () => {
        cluster = clusterWith(`kill-${fp.name}`, fp.where, `${fp.name}=kill@${fp.pass}`);
        await cluster.start();
        const victim = () => (fp.where === "order" ? cluster.order : fp.where === "voucher" ? cluster.voucher : cluster.relays[0]!);
        const proc = victim();
        const traffic = driveTraffic(cluster.orders, { count: ORDERS, prefix: `kill-${fp.name}` });
        const died = await diesWithin(proc, 30_000);
        expect(died, `${fp.name} never fired`).to.equal(true);
        // Back without the failpoint, as an orchestrator would restart it.
        if (fp.where === "order") await cluster.restartOrder();
        else if (fp.where === "voucher") await cluster.restartVoucher();
        else await cluster.restartRelay(0);
        const t = await traffic;
        await cluster.expectLedgerClean(t);
      });

      it(`an error thrown at ${fp.name} is survived without a restart`, async () => {
        cluster = clusterWith(`throw-${fp.name}`, fp.where, `${fp.name}=throw@${fp.pass}`);
        await cluster.start();
        const t = await driveTraffic(cluster.orders, { count: ORDERS / 2, prefix: `throw-${fp.name}` });
        expect(cluster.order.running && cluster.voucher.running).to.equal(true);
        await cluster.expectLedgerClean(t);
      });
    });
  }
});
