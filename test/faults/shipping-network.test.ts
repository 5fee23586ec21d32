import { expect } from "chai";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { OrderStatus, PaymentMethod, SentBy, ShipmentEvent, ShippingStatus } from "@shop/sdk/order";
import { Cluster, sleep, waitFor } from "./cluster.js";
import type { ProxyMode } from "./fault-proxy.js";
import { awaitOrderStatus, awaitPayment, driveShippingTraffic, newTraffic, shippingTally, withRetry, type Traffic } from "./traffic.js";

const ORDERS = 24;

/**
 * Shipping through fault proxies on both links between the order and the
 * delivery service: the order relay calling CreateShipment ("delivery") and
 * the delivery relay calling RecordShipmentEvent ("shipmentEvents"). The
 * tests' own calls go direct. Each fault is held while shipping traffic
 * runs, then lifted; every order ends as the client saw it, and the
 * oracles and I/P/S ledger pass after drain. Then events duplicated and
 * reordered on purpose, straight to the order service. One cluster for all
 * (every check covers the whole history so far).
 */
describe("shipping network: fault proxies between the order and delivery services, both ways; events replayed and reordered", function () {
  this.timeout(120_000);
  let cluster: Cluster;
  before(async () => {
    cluster = new Cluster({ name: "ship-net", shipping: true, proxy: true, reconciler: false });
    await cluster.start();
  });
  after(() => cluster?.stop());

  const count = (db: { sql(s: string): Promise<string> }, sql: string) => db.sql(sql).then((out) => Number(out.trim()));
  /** Shipments the delivery service created, and shipment requests the order relay saw answered. */
  const created = () => count(cluster.deliveryDb!, "SELECT COUNT(*) FROM shipments");
  const ackedRequests = () => count(cluster.orderDb, "SELECT COUNT(*) FROM shipment_outbox WHERE status = 'delivered'");
  /** Events the order service took in (its inbox), and event rows the delivery relay saw answered. */
  const recordedEvents = () => count(cluster.orderDb, "SELECT COUNT(*) FROM inbox WHERE message_key LIKE 'shipment-event:%'");
  const ackedEvents = () => count(cluster.deliveryDb!, "SELECT COUNT(*) FROM shipment_event_outbox WHERE status = 'delivered'");
  /** Event rows delivered more than once over (the relay tried again after its first call). */
  const redelivered = () => count(cluster.deliveryDb!, "SELECT COUNT(*) FROM shipment_event_outbox WHERE status = 'delivered' AND attempts > 1");

  async function underFault(link: "delivery" | "shipmentEvents", mode: ProxyMode, prefix: string, hold: () => Promise<void>): Promise<Traffic> {
    cluster.proxies[link]!.setMode(mode);
    const traffic = driveShippingTraffic(
      { orders: cluster.orders, payments: cluster.payments, deliveries: cluster.deliveries, carriers: cluster.carriers },
      { count: ORDERS, prefix, customers: 3, concurrency: 8 },
      newTraffic(),
    );
    // A traffic failure must fail the test, not hang in the background.
    traffic.catch(() => {});
    try {
      await hold();
    } finally {
      cluster.proxies[link]!.setMode({ kind: "pass" });
    }
    const t = await traffic;
    expect(t.shipping.size).to.equal(ORDERS);
    if (process.env.FAULT_VERBOSE) console.log(`      ${prefix}: ${shippingTally(t)}`);
    await cluster.expectLedgerClean(t);
    return t;
  }

  for (const [link, caller] of [["delivery", "the order relay's CreateShipment calls"], ["shipmentEvents", "the delivery relay's RecordShipmentEvent calls"]] as const) {
    it(`${link} link: a delay longer than the call timeout (${caller} time out after the work is done): each shipment created once, each event taken once`, async () => {
      await underFault(link, { kind: "delay", ms: 1_500 }, `sn-delay-${link}`, async () => {
        await sleep(4_000);
      });
    });

    it(`${link} link: responses dropped after the work is done (${caller} never hear, so everything is sent again), then healed: the replays change nothing`, async () => {
      const before = link === "delivery" ? { done: await created(), acked: await ackedRequests() } : { done: await recordedEvents(), acked: await ackedEvents() };
      const redeliveredBefore = await redelivered();
      await underFault(link, { kind: "drop-response" }, `sn-drop-${link}`, async () => {
        // The far side does the work while the caller hears nothing.
        if (link === "delivery") {
          await waitFor(async () => (await created()) >= before.done + 3, 30_000, "shipments created behind dropped responses");
          expect(await ackedRequests(), "shipment requests acked through dropped responses").to.equal(before.acked);
        } else {
          await waitFor(async () => (await recordedEvents()) >= before.done + 3, 30_000, "events recorded behind dropped responses");
          expect(await ackedEvents(), "events acked through dropped responses").to.equal(before.acked);
          // Held long enough that the relay has sent them again, unheard again.
          await sleep(2_000);
        }
      });
      if (link === "shipmentEvents") expect(await redelivered(), "events delivered again after their acks were lost").to.be.greaterThan(redeliveredBefore + 2);
    });

    it(`${link} link: every connection reset for a while (${caller} refused), then healed`, async () => {
      const before = link === "delivery" ? await created() : await recordedEvents();
      await underFault(link, { kind: "reset" }, `sn-reset-${link}`, async () => {
        await sleep(3_000);
        expect(link === "delivery" ? await created() : await recordedEvents(), "nothing crossed the refused link").to.equal(before);
      });
    });
  }

  it("deliveryDb link: every connection of the delivery service to its database reset for 2.5 s, then 200 ms of delay, under shipping traffic", async () => {
    const proxy = cluster.proxies.deliveryDb!;
    const traffic = driveShippingTraffic(
      { orders: cluster.orders, payments: cluster.payments, deliveries: cluster.deliveries, carriers: cluster.carriers },
      { count: ORDERS, prefix: "sn-db", customers: 3, concurrency: 8 },
      newTraffic(),
    );
    traffic.catch(() => {});
    try {
      await waitFor(async () => (await created()) > 0 && (await ackedEvents()) > 0, 30_000, "shipments under way");
      proxy.setMode({ kind: "reset" });
      await sleep(2_500);
      proxy.setMode({ kind: "delay", ms: 200 });
      await sleep(2_500);
    } finally {
      proxy.setMode({ kind: "pass" });
    }
    const t = await traffic;
    expect(t.shipping.size).to.equal(ORDERS);
    await cluster.expectLedgerClean(t);
  });

  it("shipment events duplicated and reordered on purpose, straight to the order service with the delivery relay's token (DELIVERED before SHIPPED, the same event many times at once, a decline twice), then redelivered by the relay: one SENT, one DELIVERED, one voucher per order", async () => {
    const t = newTraffic();
    const customerId = "sn-replay-buyer";
    await withRetry(() => cluster.payments.openAccount({ customerId, currency: "EUR" }));
    await withRetry(() => cluster.payments.topUp({ customerId, amountCents: 10_000_000n, currency: "EUR", requestId: "sn-replay-fund" }));
    t.funding.set(customerId, 10_000_000n);
    const N = 12;
    // Each order: paid or not, over 100 EUR or not, and which way its events are played.
    const ways = ["delivered-first", "shipped-twice-first", "delivered-first", "declined-twice"] as const;
    const orders = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const paid = i % 2 === 0;
        const totalCents = i % 3 === 0 ? 9_000n : 15_000n + BigInt(i);
        const { order } = await withRetry(() =>
          cluster.orders.createOrder({ customerId, totalCents, currency: "EUR", requestId: `sn-replay-${i}`, paymentMethod: paid ? PaymentMethod.ACCOUNT : PaymentMethod.UNSPECIFIED, carrier: "manual" }),
        );
        const id = order!.id;
        if (paid) expect(await awaitPayment(cluster.orders, id)).to.not.equal(OrderStatus.PAYMENT_FAILED);
        else await withRetry(() => cluster.orders.releaseOrderForShipping({ orderId: id, carrier: "" }));
        return { id, paid, totalCents, way: ways[i % ways.length]! };
      }),
    );

    const shipmentIdOf = async (orderId: string) => {
      let id = "";
      await waitFor(async () => {
        id = (await cluster.deliveries.batchGetShipments({ orderIds: [orderId] })).shipments[0]?.id ?? "";
        return id !== "";
      }, 30_000, `${orderId}'s shipment`);
      return id;
    };
    const record = (orderId: string, shipmentId: string, event: ShipmentEvent, declineReason = "") =>
      cluster.shipmentEvents.recordShipmentEvent({
        messageKey: `shipment:${orderId}:${ShipmentEvent[event]}`,
        orderId,
        event,
        shipmentId,
        carrier: "manual",
        declineReason,
        occurredAt: timestampFromDate(new Date()),
      });
    const changes = async (calls: Array<Promise<{ changed: boolean }>>) => (await Promise.all(calls)).filter((r) => r.changed).length;

    await Promise.all(
      orders.map(async (o) => {
        const shipmentId = await shipmentIdOf(o.id);
        if (o.way === "delivered-first") {
          // DELIVERED five times at once: exactly one takes the order PENDING/PAID → SENT → DELIVERED.
          expect(await changes(Array.from({ length: 5 }, () => record(o.id, shipmentId, ShipmentEvent.DELIVERED))), `${o.id}: DELIVERED ×5`).to.equal(1);
          expect((await record(o.id, shipmentId, ShipmentEvent.DELIVERED)).changed, `${o.id}: DELIVERED replayed`).to.equal(false);
          // SHIPPED after DELIVERED: passed already, twice.
          expect(await changes([record(o.id, shipmentId, ShipmentEvent.SHIPPED), record(o.id, shipmentId, ShipmentEvent.SHIPPED)]), `${o.id}: SHIPPED after DELIVERED`).to.equal(0);
          const { order } = await cluster.orders.getOrder({ orderId: o.id });
          expect([OrderStatus[order!.status], ShippingStatus[order!.shipping!.status], SentBy[order!.sentBy]]).to.deep.equal(["DELIVERED", "DELIVERED", "SHIPMENT"]);
        } else if (o.way === "shipped-twice-first") {
          expect(await changes(Array.from({ length: 5 }, () => record(o.id, shipmentId, ShipmentEvent.SHIPPED))), `${o.id}: SHIPPED ×5`).to.equal(1);
          const { order } = await cluster.orders.getOrder({ orderId: o.id });
          expect([OrderStatus[order!.status], SentBy[order!.sentBy]]).to.deep.equal(["SENT", "SHIPMENT"]);
        } else {
          expect(await changes(Array.from({ length: 3 }, () => record(o.id, shipmentId, ShipmentEvent.DECLINED, "NO_CAPACITY"))), `${o.id}: DECLINED ×3`).to.equal(1);
          expect((await cluster.orders.getOrder({ orderId: o.id })).order!.status).to.equal(OrderStatus.CANCELLED);
        }
        // Now the carrier says the same through the delivery service, whose relay delivers each event again: replays, or (DELIVERED after SHIPPED) the next step.
        if (o.way === "declined-twice") {
          await withRetry(() => cluster.carriers.declineShipment({ orderId: o.id, reason: "NO_CAPACITY" }));
        } else {
          await withRetry(() => cluster.carriers.markShipmentShipped({ orderId: o.id, trackingNumber: `SN-${o.id}` }));
          await withRetry(() => cluster.carriers.markShipmentDelivered({ orderId: o.id }));
        }
        const declined = o.way === "declined-twice";
        await awaitOrderStatus(cluster.orders, o.id, [declined ? OrderStatus.CANCELLED : OrderStatus.DELIVERED]);
        const fact = { customerId, totalCents: o.totalCents };
        t.orderIds.push(o.id);
        t.facts.set(o.id, fact);
        t.shipping.set(o.id, { ...fact, paid: o.paid, carrier: "manual", end: declined ? "declined" : "delivered", declineReason: declined ? "NO_CAPACITY" : undefined });
        if (!declined) t.acknowledgedSent.push(o.id);
        if (o.paid) t.payments.set(o.id, { ...fact, end: declined ? "cancelled-paid" : "sent" });
      }),
    );
    await cluster.drained();
    // Every event the delivery service wrote reached the order service, which had taken each in already or took it now, once.
    const keys = orders.map((o) => `'shipment-event:shipment:${o.id}:%'`);
    const inbox = await cluster.orderDb.sql(`SELECT message_key FROM inbox WHERE ${keys.map((k) => `message_key LIKE ${k}`).join(" OR ")}`);
    const taken = inbox.split("\n").filter(Boolean);
    expect(new Set(taken).size).to.equal(taken.length);
    expect(taken.length).to.equal(orders.filter((o) => o.way !== "declined-twice").length * 2 + orders.filter((o) => o.way === "declined-twice").length);
    await cluster.expectLedgerClean(t);
  });
});
