import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { OrderStatus, PaymentMethod, PaymentStatus, SentBy, ShippingStatus } from "@shop/sdk/order";
import { accountState, orderEntries } from "@shop/testkit/payments";
import { Cluster } from "../faults/cluster.js";
import { awaitShipment, newTraffic, withRetry, type Traffic } from "../faults/traffic.js";
import { inParallel } from "./stack.js";

const ORDERS = 500;
const DECLINED = 12;
const CUSTOMERS = 10;

/** A small deterministic generator (so a failure can be run again as it was). */
function random(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1_664_525) + 1_013_904_223) >>> 0;
    return x / 2 ** 32;
  };
}

/**
 * The whole shipping chain with every part a real process on its own
 * database: the order service (its relay: vouchers, charges, refunds,
 * shipment requests; SHIP_PAID_ORDERS on), the voucher service, the payment
 * service (its relay: outcomes), and the delivery service (its carrier
 * worker running the delayed carrier at 50/100/200 ms, its relay: shipment
 * events). Paid orders go PAID → shipment → SHIPPED → SENT (sent by the
 * shipment) → DELIVERED with nobody marking anything by hand.
 */
describe("the shipping chain end to end: order, payment, delivery and voucher services", function () {
  this.timeout(120_000);
  const cluster = new Cluster({ name: "ship-e2e", shipping: true, reconciler: false });
  const next = random(20_261_202);
  const t: Traffic = newTraffic();
  const customers = Array.from({ length: CUSTOMERS }, (_, k) => `ship-e2e-${k}`);

  before(() => cluster.start());
  after(() => cluster.stop());

  const orderStatuses = async (ids: string[]): Promise<Map<string, string>> => {
    const out = await cluster.orderDb.sql(`SELECT id, status FROM orders WHERE id IN (${ids.map((id) => `'${id}'`).join(",")})`);
    return new Map(out.split("\n").filter(Boolean).map((l) => l.split("\t") as [string, string]));
  };
  /** Polls the order database until every order is in `status`; fails naming a few that are not after timeoutMs. */
  async function allReach(ids: string[], status: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const now = await orderStatuses(ids);
      const behind = ids.filter((id) => now.get(id) !== status);
      if (behind.length === 0) return;
      if (Date.now() > deadline) throw new Error(`${behind.length} of ${ids.length} orders not ${status} after ${timeoutMs} ms: ${behind.slice(0, 5).map((id) => `${id} ${now.get(id)}`).join(", ")}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  it(`${ORDERS} concurrent paid orders with random totals all end DELIVERED, sent by their shipments, one voucher for each over 100 EUR and none for the others; ${DECLINED} manual ones declined are cancelled and refunded once; every ledger check clean`, async () => {
    // Totals from 0.01 to 300.00 EUR, the 100.00 line and both of its neighbours among them.
    const totals = Array.from({ length: ORDERS }, (_, i) => (i < 3 ? [10_000n, 10_001n, 9_999n][i]! : BigInt(1 + Math.floor(next() * 30_000))));
    const declinedTotals = Array.from({ length: DECLINED }, () => BigInt(1 + Math.floor(next() * 30_000)));
    const owner = (i: number) => customers[i % CUSTOMERS]!;
    // Each customer is funded with exactly what their orders cost: nothing is refused, and what is left at the end is what was refunded.
    const need = new Map<string, bigint>();
    totals.forEach((c, i) => need.set(owner(i), (need.get(owner(i)) ?? 0n) + c));
    declinedTotals.forEach((c, i) => need.set(owner(i), (need.get(owner(i)) ?? 0n) + c));
    for (const [customerId, amountCents] of need) {
      await cluster.payments.openAccount({ customerId, currency: "EUR" });
      await cluster.payments.topUp({ customerId, amountCents, currency: "EUR", requestId: `ship-e2e-fund-${customerId}` });
      t.funding.set(customerId, amountCents);
    }

    const started = Date.now();
    const create = (customerId: string, totalCents: bigint, requestId: string, carrier: string) =>
      withRetry(() => cluster.orders.createOrder({ customerId, totalCents, currency: "EUR", requestId, paymentMethod: PaymentMethod.ACCOUNT, carrier }), 20_000);
    const [ids, declinedIds] = await Promise.all([
      inParallel(totals, 50, async (totalCents, i) => (await create(owner(i), totalCents, `ship-e2e-${i}`, "")).order!.id),
      inParallel(declinedTotals, DECLINED, async (totalCents, i) => (await create(owner(i), totalCents, `ship-e2e-manual-${i}`, "manual")).order!.id),
    ]);
    expect(new Set(ids).size).to.equal(ORDERS);

    // The manual carrier's shipments wait for a person: each is confirmed, then declined.
    await inParallel(declinedIds, DECLINED, async (orderId) => {
      await awaitShipment(cluster.deliveries, orderId, 30_000);
      expect((await cluster.carriers.confirmShipment({ orderId })).changed).to.equal(true);
      const d = await cluster.carriers.declineShipment({ orderId, reason: "NO_CAPACITY" });
      expect(d.changed).to.equal(true);
      // Declined again: a replay; shipped after a decline: refused.
      expect((await cluster.carriers.declineShipment({ orderId, reason: "NO_CAPACITY" })).changed).to.equal(false);
      const late = await cluster.carriers.markShipmentShipped({ orderId, trackingNumber: "" }).then(
        () => "OK",
        (err) => Code[ConnectError.from(err).code],
      );
      expect(late).to.equal(Code[Code.FailedPrecondition]);
    });

    await allReach(ids, "DELIVERED", 45_000);
    await allReach(declinedIds, "CANCELLED", 15_000);
    const chainMs = Date.now() - started;
    if (process.env.FAULT_VERBOSE) console.log(`      ${ORDERS} orders created → DELIVERED in ${chainMs} ms`);

    // The API tells the same story: delivered, sent by the shipment; declined, cancelled and refunded.
    for (let i = 0; i < ids.length; i += 250) {
      const { orders } = await cluster.orders.batchGetOrders({ orderIds: ids.slice(i, i + 250) });
      for (const o of orders) {
        expect([OrderStatus[o.status], ShippingStatus[o.shipping!.status], SentBy[o.sentBy], PaymentStatus[o.payment!.status]], o.id).to.deep.equal([
          "DELIVERED",
          "DELIVERED",
          "SHIPMENT",
          "CHARGED",
        ]);
        expect(o.sentAt, o.id).to.not.equal(undefined);
      }
    }
    await cluster.drained(30_000);
    const { orders: declinedOrders } = await cluster.orders.batchGetOrders({ orderIds: declinedIds });
    for (const o of declinedOrders) {
      expect([OrderStatus[o.status], ShippingStatus[o.shipping!.status], o.shipping!.declineReason, PaymentStatus[o.payment!.status]], o.id).to.deep.equal([
        "CANCELLED",
        "DECLINED",
        "NO_CAPACITY",
        "REFUNDED",
      ]);
    }
    const { shipments } = await cluster.deliveries.batchGetShipments({ orderIds: [...ids, ...declinedIds] });
    expect(shipments.length).to.equal(ORDERS + DECLINED);

    // Vouchers, asked of the voucher service: exactly one for each delivered order over 100.00 EUR, for its customer and total; none for any other.
    const { vouchers } = await cluster.vouchers.batchGetVouchersByOrder({ orderIds: [...ids, ...declinedIds] });
    const byOrder = new Map<string, typeof vouchers>();
    for (const v of vouchers) byOrder.set(v.orderId, [...(byOrder.get(v.orderId) ?? []), v]);
    const qualifying = ids.filter((_, i) => totals[i]! > 10_000n);
    expect(qualifying.length).to.be.within(100, ORDERS - 100);
    for (const [i, id] of ids.entries()) {
      const mine = byOrder.get(id) ?? [];
      if (totals[i]! > 10_000n) {
        expect(mine.map((v) => [v.customerId, v.orderTotalCents]), `${id} (${totals[i]} cents)`).to.deep.equal([[owner(i), totals[i]]]);
      } else {
        expect(mine, `${id} (${totals[i]} cents) is owed no voucher`).to.deep.equal([]);
      }
    }
    for (const id of declinedIds) expect(byOrder.get(id) ?? [], `${id} was declined`).to.deep.equal([]);
    expect(await cluster.voucherCount()).to.equal(qualifying.length);

    // Money: one debit per order, one refund per declined one, and each customer left with exactly their refunds.
    const entries = await orderEntries(cluster.paymentDb!);
    const refunded = new Map<string, bigint>();
    for (const [i, id] of declinedIds.entries()) {
      expect((entries.get(id) ?? []).map((e) => `${e.kind} ${e.amountCents}`).sort(), id).to.deep.equal([`CHARGE -${declinedTotals[i]}`, `REFUND ${declinedTotals[i]}`]);
      refunded.set(owner(i), (refunded.get(owner(i)) ?? 0n) + declinedTotals[i]!);
    }
    for (const customerId of customers) {
      const a = await accountState(cluster.paymentDb!, customerId);
      expect(a, customerId).to.deep.include({ balance: refunded.get(customerId) ?? 0n, entriesSum: refunded.get(customerId) ?? 0n });
    }

    // The oracles (shipping, vouchers, money), then check:ledger's I*, P* and S* over all four databases.
    ids.forEach((id, i) => {
      const fact = { customerId: owner(i), totalCents: totals[i]! };
      t.orderIds.push(id);
      t.facts.set(id, fact);
      t.acknowledgedSent.push(id);
      t.payments.set(id, { ...fact, end: "sent" });
      t.shipping.set(id, { ...fact, paid: true, carrier: "", end: "delivered" });
    });
    declinedIds.forEach((id, i) => {
      const fact = { customerId: owner(i), totalCents: declinedTotals[i]! };
      t.orderIds.push(id);
      t.facts.set(id, fact);
      t.payments.set(id, { ...fact, end: "cancelled-paid" });
      t.shipping.set(id, { ...fact, paid: true, carrier: "manual", end: "declined", declineReason: "NO_CAPACITY" });
    });
    await cluster.expectLedgerClean(t);
  });
});
