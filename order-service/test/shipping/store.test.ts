import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import type { Pool } from "@shop/platform/db";
import { DomainError, type ErrorKind } from "@shop/platform/errors";
import type { TestDatabase } from "@shop/testkit/shared-servers";
import { OrderStore, type ShipmentEventMessage } from "../../src/db/order-store.js";
import { count, migratedOrderDatabase, silentLogger } from "../db/helpers.js";

async function refusedWith(kind: ErrorKind, p: Promise<unknown>): Promise<DomainError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof DomainError && err.kind === kind) return err;
    throw err;
  }
  throw new Error(`expected ${kind}`);
}

async function rows(pool: Pool, sql: string, params: unknown[] = []): Promise<RowDataPacket[]> {
  const [r] = await pool.query<RowDataPacket[]>(sql, params);
  return r.map((x) => ({ ...x }) as RowDataPacket);
}

/** Everything an order's shipping touches, to show a refused call wrote nothing. */
async function shippingSnapshot(pool: Pool): Promise<unknown> {
  return {
    orders: await rows(pool, "SELECT * FROM orders ORDER BY id"),
    shipments: await rows(pool, "SELECT * FROM shipment_outbox ORDER BY id"),
    vouchers: await rows(pool, "SELECT * FROM voucher_outbox ORDER BY id"),
    refunds: await rows(pool, "SELECT * FROM refund_outbox ORDER BY id"),
    inbox: await rows(pool, "SELECT * FROM inbox ORDER BY message_key"),
  };
}

describe("OrderStore: shipping", function () {
  let db: TestDatabase;
  let pool: Pool;
  let store: OrderStore;
  let wakes: string[];
  let n = 0;

  before(async () => {
    ({ db, pool } = await migratedOrderDatabase());
    store = new OrderStore({
      pool,
      logger: silentLogger,
      onShipmentRequested: () => wakes.push("shipment"),
      onVoucherRequested: () => wakes.push("voucher"),
      onPaymentRequested: (kind) => wakes.push(kind),
    });
  });
  beforeEach(() => (wakes = []));
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  const create = async (totalCents = 12_000, carrier?: string) =>
    (await store.create({ customerId: "ship-cust", totalCents, currency: "EUR", requestId: `ship-${++n}`, carrier })).order;
  const createPaid = async (totalCents = 12_000, s: OrderStore = store) =>
    (await s.create({ customerId: "ship-cust", totalCents, currency: "EUR", requestId: `ship-paid-${++n}`, paymentMethod: "ACCOUNT" })).order;
  const charge = (orderId: string, totalCents = 12_000, s: OrderStore = store) =>
    s.recordPaymentOutcome({ messageKey: `charge:${orderId}`, orderId, event: "CHARGED", amountCents: totalCents, currency: "EUR" });
  const event = (orderId: string, ev: ShipmentEventMessage["event"], over: Partial<ShipmentEventMessage> = {}): ShipmentEventMessage => ({
    messageKey: `shipment:${orderId}:${ev}`,
    orderId,
    event: ev,
    shipmentId: `S-${orderId}`,
    carrier: "delayed",
    ...over,
  });
  const shipmentRows = (orderId: string) =>
    rows(pool, "SELECT message_key, order_id, customer_id, total_cents, currency, carrier, status FROM shipment_outbox WHERE order_id = ?", [orderId]);

  describe("ReleaseOrderForShipping", () => {
    it("releases a PENDING order without payment: REQUESTED and one shipment request with its snapshot, in one transaction; wakes the shipment relay", async () => {
      const order = await create(12_345);
      const r = await store.releaseForShipping(order.id, "manual");
      expect([r.changed, r.order.status, r.order.shippingStatus, r.order.carrier]).to.deep.equal([true, "PENDING", "REQUESTED", "manual"]);
      expect(r.order.shippingRequestedAt).to.be.instanceOf(Date);
      expect(await shipmentRows(order.id)).to.deep.equal([
        { message_key: `shipment:${order.id}`, order_id: order.id, customer_id: "ship-cust", total_cents: 12_345, currency: "EUR", carrier: "manual", status: "pending" },
      ]);
      expect(wakes).to.deep.equal(["shipment"]);
      expect((await store.get(order.id))!.shippingStatus).to.equal("REQUESTED");
    });

    it("takes the carrier of the request, else the one given at CreateOrder, else none", async () => {
      const chosen = await create(1_000, "manual");
      expect(chosen.carrier).to.equal("manual");
      await store.releaseForShipping(chosen.id);
      expect((await shipmentRows(chosen.id))[0]!.carrier).to.equal("manual");
      const overridden = await create(1_000, "manual");
      await store.releaseForShipping(overridden.id, "delayed");
      expect((await shipmentRows(overridden.id))[0]!.carrier).to.equal("delayed");
      const none = await create(1_000);
      const r = await store.releaseForShipping(none.id);
      expect(r.order.carrier).to.equal(null);
      expect((await shipmentRows(none.id))[0]!.carrier).to.equal("");
    });

    it("is idempotent: a second release (even naming another carrier) changes nothing and writes no second request", async () => {
      const order = await create();
      await store.releaseForShipping(order.id, "delayed");
      wakes = [];
      const again = await store.releaseForShipping(order.id, "manual");
      expect([again.changed, again.order.shippingStatus, again.order.carrier]).to.deep.equal([false, "REQUESTED", "delayed"]);
      expect(await count(pool, "SELECT COUNT(*) FROM shipment_outbox WHERE order_id = ?", [order.id])).to.equal(1);
      expect(wakes).to.deep.equal([]);
    });

    it("20 concurrent releases of one order write one request", async () => {
      const order = await create();
      const results = await Promise.all(Array.from({ length: 20 }, () => store.releaseForShipping(order.id)));
      expect(results.filter((r) => r.changed)).to.have.length(1);
      expect(await count(pool, "SELECT COUNT(*) FROM shipment_outbox WHERE order_id = ?", [order.id])).to.equal(1);
    });

    it("releases a PAID order; refuses one awaiting payment, refused, cancelled or sent by hand, saying why, and writes nothing", async () => {
      const paid = await createPaid();
      await charge(paid.id);
      expect((await store.releaseForShipping(paid.id)).order).to.deep.include({ status: "PAID", paymentStatus: "CHARGED", shippingStatus: "REQUESTED" });

      const awaiting = await createPaid();
      const refused = await createPaid();
      await store.recordPaymentOutcome({ messageKey: `charge:${refused.id}`, orderId: refused.id, event: "REFUSED", reason: "INSUFFICIENT_FUNDS", amountCents: 12_000, currency: "EUR" });
      const cancelled = await create();
      await store.cancel(cancelled.id);
      const sent = await create();
      await store.markSent(sent.id);
      const delivered = await create();
      await store.markSent(delivered.id);
      await store.markDelivered(delivered.id);
      const before = await shippingSnapshot(pool);
      const why = async (id: string) => (await refusedWith("failed_precondition", store.releaseForShipping(id))).message;
      expect(await why(awaiting.id)).to.match(/awaiting payment; it can be released for shipping once it is PAID/);
      expect(await why(refused.id)).to.match(/payment was refused/);
      expect(await why(cancelled.id)).to.match(/is cancelled and cannot be shipped/);
      expect(await why(sent.id)).to.match(/already marked sent by hand/);
      expect(await why(delivered.id)).to.match(/already marked delivered by hand/);
      await refusedWith("not_found", store.releaseForShipping("01NOSUCHORDER000000000000X"));
      expect(await shippingSnapshot(pool)).to.deep.equal(before);
    });

    it("CreateOrder keeps the carrier; a retry naming another carrier is a conflict", async () => {
      const req = { customerId: "ship-cust", totalCents: 500, currency: "EUR" as const, requestId: `carrier-retry-${++n}`, carrier: "manual" };
      const first = await store.create(req);
      expect((await store.create(req)).created).to.equal(false);
      const err = await refusedWith("already_exists", store.create({ ...req, carrier: "delayed" }));
      expect(err.message).to.contain(first.order.id).and.to.match(/carrier/);
    });
  });

  describe("hand changes of an order in shipping", () => {
    it("MarkOrderSent, MarkOrderDelivered and CancelOrder refuse a released order, naming the delivery service, and write nothing", async () => {
      const order = await create();
      await store.releaseForShipping(order.id);
      const before = await shippingSnapshot(pool);
      for (const call of [() => store.markSent(order.id), () => store.markDelivered(order.id), () => store.cancel(order.id)]) {
        const err = await refusedWith("failed_precondition", call());
        expect(err.message).to.match(/in shipping \(shipping status REQUESTED\): the delivery service's shipment events move it/);
      }
      expect(await shippingSnapshot(pool)).to.deep.equal(before);
    });

    it("their idempotent answers stay: a shipped order is 'already sent', a declined one 'already cancelled', a delivered one 'already delivered'", async () => {
      const shipped = await create();
      await store.releaseForShipping(shipped.id);
      await store.recordShipmentEvent(event(shipped.id, "SHIPPED"));
      expect((await store.markSent(shipped.id)).changed).to.equal(false);
      const err = await refusedWith("failed_precondition", store.markDelivered(shipped.id));
      expect(err.message).to.match(/shipping status SHIPPED/);
      await refusedWith("failed_precondition", store.cancel(shipped.id));

      const declined = await create();
      await store.releaseForShipping(declined.id);
      await store.recordShipmentEvent(event(declined.id, "DECLINED", { declineReason: "NO_CAPACITY" }));
      expect((await store.cancel(declined.id)).changed).to.equal(false);

      const delivered = await create();
      await store.releaseForShipping(delivered.id);
      await store.recordShipmentEvent(event(delivered.id, "DELIVERED"));
      expect((await store.markDelivered(delivered.id)).changed).to.equal(false);
      expect((await store.markSent(delivered.id)).changed).to.equal(false);
    });

    it("an order never released keeps today's behaviour, and MarkOrderSent records sent_by HAND", async () => {
      const order = await create(15_000);
      const sent = await store.markSent(order.id);
      expect([sent.order.status, sent.order.sentBy, sent.order.shippingStatus, sent.order.voucher.status]).to.deep.equal(["SENT", "HAND", "NONE", "PENDING"]);
      expect((await store.markDelivered(order.id)).order.status).to.equal("DELIVERED");
      expect((await store.get(order.id))!.sentBy).to.equal("HAND");
    });
  });

  describe("RecordShipmentEvent", () => {
    it("SHIPPED marks a PENDING order SENT by its shipment, with the voucher request exactly as MarkOrderSent writes it", async () => {
      const order = await create(15_000);
      await store.releaseForShipping(order.id);
      wakes = [];
      const r = await store.recordShipmentEvent(event(order.id, "SHIPPED"));
      expect([r.changed, r.order.status, r.order.sentBy, r.order.shippingStatus, r.order.voucher.status]).to.deep.equal([
        true,
        "SENT",
        "SHIPMENT",
        "SHIPPED",
        "PENDING",
      ]);
      expect(r.order.sentAt).to.be.instanceOf(Date);
      expect(await rows(pool, "SELECT order_id, customer_id, total_cents, currency, status FROM voucher_outbox WHERE order_id = ?", [order.id])).to.deep.equal([
        { order_id: order.id, customer_id: "ship-cust", total_cents: 15_000, currency: "EUR", status: "pending" },
      ]);
      expect(wakes).to.deep.equal(["voucher"]);
      expect(await count(pool, "SELECT COUNT(*) FROM inbox WHERE message_key = ?", [`shipment-event:shipment:${order.id}:SHIPPED`])).to.equal(1);
    });

    it("SHIPPED of an order that does not qualify writes no voucher request; of a PAID one keeps its payment", async () => {
      const small = await create(5_000);
      await store.releaseForShipping(small.id);
      const r = await store.recordShipmentEvent(event(small.id, "SHIPPED"));
      expect([r.order.status, r.order.voucher.status]).to.deep.equal(["SENT", "NOT_ELIGIBLE"]);
      expect(await count(pool, "SELECT COUNT(*) FROM voucher_outbox WHERE order_id = ?", [small.id])).to.equal(0);
      const paid = await createPaid();
      await charge(paid.id);
      await store.releaseForShipping(paid.id);
      const p = await store.recordShipmentEvent(event(paid.id, "SHIPPED"));
      expect([p.order.status, p.order.paymentStatus, p.order.sentBy]).to.deep.equal(["SENT", "CHARGED", "SHIPMENT"]);
    });

    it("DELIVERED after SHIPPED delivers the order; the voucher row stays one", async () => {
      const order = await create(15_000);
      await store.releaseForShipping(order.id);
      await store.recordShipmentEvent(event(order.id, "SHIPPED"));
      const d = await store.recordShipmentEvent(event(order.id, "DELIVERED"));
      expect([d.changed, d.order.status, d.order.shippingStatus, d.order.sentBy]).to.deep.equal([true, "DELIVERED", "DELIVERED", "SHIPMENT"]);
      expect(d.order.deliveredAt).to.be.instanceOf(Date);
      expect(await count(pool, "SELECT COUNT(*) FROM voucher_outbox WHERE order_id = ?", [order.id])).to.equal(1);
    });

    it("DELIVERED before SHIPPED sends and delivers in one step with one voucher row; the late SHIPPED changes nothing", async () => {
      const order = await create(15_000);
      await store.releaseForShipping(order.id);
      const d = await store.recordShipmentEvent(event(order.id, "DELIVERED"));
      expect([d.changed, d.order.status, d.order.shippingStatus, d.order.sentBy, d.order.voucher.status]).to.deep.equal([
        true,
        "DELIVERED",
        "DELIVERED",
        "SHIPMENT",
        "PENDING",
      ]);
      expect(d.order.sentAt).to.be.instanceOf(Date);
      expect(d.order.deliveredAt!.getTime()).to.equal(d.order.sentAt!.getTime());
      const s = await store.recordShipmentEvent(event(order.id, "SHIPPED"));
      expect([s.changed, s.order.status]).to.deep.equal([false, "DELIVERED"]);
      expect(await count(pool, "SELECT COUNT(*) FROM voucher_outbox WHERE order_id = ?", [order.id])).to.equal(1);
      // Both events are recorded, so their replays are answered from the inbox.
      expect(await count(pool, "SELECT COUNT(*) FROM inbox WHERE message_key LIKE ?", [`shipment-event:shipment:${order.id}:%`])).to.equal(2);
    });

    it("DECLINED cancels a PENDING order with the carrier's reason; no refund without payment", async () => {
      const order = await create();
      await store.releaseForShipping(order.id);
      const r = await store.recordShipmentEvent(event(order.id, "DECLINED", { declineReason: "UNKNOWN_CARRIER" }));
      expect([r.changed, r.order.status, r.order.shippingStatus, r.order.shippingDeclineReason, r.order.paymentStatus]).to.deep.equal([
        true,
        "CANCELLED",
        "DECLINED",
        "UNKNOWN_CARRIER",
        "NONE",
      ]);
      expect(r.order.cancelledAt).to.be.instanceOf(Date);
      expect(await count(pool, "SELECT COUNT(*) FROM refund_outbox WHERE order_id = ?", [order.id])).to.equal(0);
    });

    it("DECLINED of a charged order: REFUND_PENDING and exactly one refund row, as CancelOrder of a PAID order writes it, however often it arrives", async () => {
      const order = await createPaid(7_700);
      await charge(order.id, 7_700);
      await store.releaseForShipping(order.id);
      wakes = [];
      const results = await Promise.all(
        Array.from({ length: 10 }, () => store.recordShipmentEvent(event(order.id, "DECLINED", { declineReason: "NO_CAPACITY" }))),
      );
      expect(results.filter((r) => r.changed)).to.have.length(1);
      const after = (await store.get(order.id))!;
      expect([after.status, after.paymentStatus, after.shippingStatus]).to.deep.equal(["CANCELLED", "REFUND_PENDING", "DECLINED"]);
      expect(await rows(pool, "SELECT order_id, amount_cents, currency, status FROM refund_outbox WHERE order_id = ?", [order.id])).to.deep.equal([
        { order_id: order.id, amount_cents: 7_700, currency: "EUR", status: "pending" },
      ]);
      expect(wakes).to.deep.equal(["refund"]);
      // The same as a hand cancel of a PAID order writes.
      const byHand = await createPaid(7_700);
      await charge(byHand.id, 7_700);
      await store.cancel(byHand.id);
      const [mine, theirs] = await Promise.all(
        [order.id, byHand.id].map((id) => rows(pool, "SELECT amount_cents, currency, status, attempts FROM refund_outbox WHERE order_id = ?", [id])),
      );
      expect(mine).to.deep.equal(theirs);
    });

    it("a replay answers the order as it is now with changed=false and changes nothing; concurrent deliveries change it once", async () => {
      const order = await create(15_000);
      await store.releaseForShipping(order.id);
      const results = await Promise.all(Array.from({ length: 20 }, () => store.recordShipmentEvent(event(order.id, "SHIPPED"))));
      expect(results.filter((r) => r.changed)).to.have.length(1);
      const before = await shippingSnapshot(pool);
      const replay = await store.recordShipmentEvent(event(order.id, "SHIPPED"));
      expect([replay.changed, replay.order.status, replay.order.voucher.status]).to.deep.equal([false, "SENT", "PENDING"]);
      expect(await shippingSnapshot(pool)).to.deep.equal(before);
    });

    it("refuses contradictions, a key that is not the event's, other facts under a key, an unknown order, and writes nothing", async () => {
      const never = await create();
      const shipped = await create();
      await store.releaseForShipping(shipped.id);
      await store.recordShipmentEvent(event(shipped.id, "SHIPPED"));
      const declined = await create();
      await store.releaseForShipping(declined.id);
      await store.recordShipmentEvent(event(declined.id, "DECLINED", { declineReason: "NO_CAPACITY" }));
      const before = await shippingSnapshot(pool);

      const notReleased = await refusedWith("failed_precondition", store.recordShipmentEvent(event(never.id, "SHIPPED")));
      expect(notReleased.message).to.match(/never released for shipping/);
      const declineAfterShip = await refusedWith("failed_precondition", store.recordShipmentEvent(event(shipped.id, "DECLINED")));
      expect(declineAfterShip.message).to.match(/DECLINED .* already shipped/);
      const shipAfterDecline = await refusedWith("failed_precondition", store.recordShipmentEvent(event(declined.id, "SHIPPED")));
      expect(shipAfterDecline.message).to.match(/SHIPPED .* its shipment was declined/);
      await refusedWith("failed_precondition", store.recordShipmentEvent(event(declined.id, "DELIVERED")));
      const key = await refusedWith("invalid_argument", store.recordShipmentEvent(event(shipped.id, "DELIVERED", { messageKey: `shipment:${shipped.id}:SHIPPED` })));
      expect(key.message).to.match(/expected "shipment:.*:DELIVERED"/);
      const other = await refusedWith("failed_precondition", store.recordShipmentEvent(event(shipped.id, "SHIPPED", { shipmentId: "S-OTHER" })));
      expect(other.message).to.match(/taken in before with other facts/);
      await refusedWith("not_found", store.recordShipmentEvent(event("01NOSUCHORDER000000000000X", "SHIPPED")));
      expect(await shippingSnapshot(pool)).to.deep.equal(before);
    });
  });

  describe("SHIP_PAID_ORDERS", () => {
    it("off (the default): CHARGED makes the order PAID and nothing more", async () => {
      const order = await createPaid();
      const r = await charge(order.id);
      expect([r.order.status, r.order.shippingStatus]).to.deep.equal(["PAID", "NONE"]);
      expect(await count(pool, "SELECT COUNT(*) FROM shipment_outbox WHERE order_id = ?", [order.id])).to.equal(0);
    });

    it("on: the CHARGED outcome that makes an order PAID releases it in the same transaction, once; a replay writes nothing more", async () => {
      const shipping = new OrderStore({ pool, logger: silentLogger, shipPaidOrders: true, onShipmentRequested: () => wakes.push("shipment") });
      const order = await createPaid(9_900, shipping);
      const r = await charge(order.id, 9_900, shipping);
      expect([r.changed, r.order.status, r.order.paymentStatus, r.order.shippingStatus]).to.deep.equal([true, "PAID", "CHARGED", "REQUESTED"]);
      expect(wakes).to.deep.equal(["shipment"]);
      expect(await shipmentRows(order.id)).to.deep.equal([
        { message_key: `shipment:${order.id}`, order_id: order.id, customer_id: "ship-cust", total_cents: 9_900, currency: "EUR", carrier: "", status: "pending" },
      ]);
      wakes = [];
      expect((await charge(order.id, 9_900, shipping)).changed).to.equal(false);
      expect(await count(pool, "SELECT COUNT(*) FROM shipment_outbox WHERE order_id = ?", [order.id])).to.equal(1);
      expect(wakes).to.deep.equal([]);
    });

    it("on: an order cancelled while its charge was undecided is refunded, not shipped; a refused charge ships nothing", async () => {
      const shipping = new OrderStore({ pool, logger: silentLogger, shipPaidOrders: true });
      const cancelled = await createPaid(4_000, shipping);
      await shipping.cancel(cancelled.id);
      const r = await charge(cancelled.id, 4_000, shipping);
      expect([r.order.status, r.order.paymentStatus, r.order.shippingStatus]).to.deep.equal(["CANCELLED", "REFUND_PENDING", "NONE"]);
      const refused = await createPaid(4_000, shipping);
      await shipping.recordPaymentOutcome({ messageKey: `charge:${refused.id}`, orderId: refused.id, event: "REFUSED", reason: "NO_ACCOUNT", amountCents: 4_000, currency: "EUR" });
      expect(await count(pool, "SELECT COUNT(*) FROM shipment_outbox WHERE order_id IN (?, ?)", [cancelled.id, refused.id])).to.equal(0);
    });
  });

  describe("RequeueShipment", () => {
    it("records a missing request, revives a dead one, leaves a pending or delivered one alone; wakes the relay only when requeued", async () => {
      const order = await create(3_000, "manual");
      await store.releaseForShipping(order.id);
      wakes = [];
      expect((await store.requeueShipment(order.id)).requeued).to.equal(false);
      await pool.query("UPDATE shipment_outbox SET status = 'dead', last_error = 'INVALID_ARGUMENT: x', next_attempt_at = NOW(3) + INTERVAL 1 DAY WHERE order_id = ?", [order.id]);
      expect((await store.requeueShipment(order.id)).requeued).to.equal(true);
      const [revived] = await rows(pool, "SELECT status, last_error, next_attempt_at <= NOW(3) AS due FROM shipment_outbox WHERE order_id = ?", [order.id]);
      expect(revived).to.deep.include({ status: "pending", last_error: "INVALID_ARGUMENT: x", due: 1 });
      await pool.query("UPDATE shipment_outbox SET status = 'delivered', delivered_at = NOW(3) WHERE order_id = ?", [order.id]);
      expect((await store.requeueShipment(order.id)).requeued).to.equal(false);
      await pool.query("DELETE FROM shipment_outbox WHERE order_id = ?", [order.id]);
      expect((await store.requeueShipment(order.id)).requeued).to.equal(true);
      expect(await shipmentRows(order.id)).to.deep.equal([
        { message_key: `shipment:${order.id}`, order_id: order.id, customer_id: "ship-cust", total_cents: 3_000, currency: "EUR", carrier: "manual", status: "pending" },
      ]);
      expect(wakes).to.deep.equal(["shipment", "shipment"]);
    });

    it("refuses an order not in shipping or already moved by its shipment", async () => {
      const never = await create();
      expect((await refusedWith("failed_precondition", store.requeueShipment(never.id))).message).to.match(/not in shipping/);
      const shipped = await create();
      await store.releaseForShipping(shipped.id);
      await store.recordShipmentEvent(event(shipped.id, "SHIPPED"));
      expect((await refusedWith("failed_precondition", store.requeueShipment(shipped.id))).message).to.match(/already moved it \(shipping status SHIPPED\)/);
      await refusedWith("not_found", store.requeueShipment("01NOSUCHORDER000000000000X"));
    });
  });

  describe("listByShippingStatus", () => {
    it("lists one shipping state oldest request first, requested before a time, with keyset paging", async () => {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const o = await create();
        await store.releaseForShipping(o.id);
        ids.push(o.id);
      }
      // Two share one request time: the id breaks the tie.
      await pool.query("UPDATE orders SET shipping_requested_at = '2001-01-01 00:00:00.000' WHERE id IN (?)", [ids.slice(0, 2)]);
      await pool.query("UPDATE orders SET shipping_requested_at = '2001-01-01 00:00:01.000' WHERE id IN (?)", [ids.slice(2)]);
      const before = new Date("2001-01-02T00:00:00Z");
      const first = await store.listByShippingStatus({ shippingStatus: "REQUESTED", requestedBefore: before, limit: 3 });
      expect(first.map((o) => o.id)).to.deep.equal([...ids.slice(0, 2).sort(), ids.slice(2).sort()[0]]);
      const last = first[2]!;
      const rest = await store.listByShippingStatus({ shippingStatus: "REQUESTED", requestedBefore: before, from: { at: last.shippingRequestedAt!, id: last.id }, limit: 10 });
      expect(rest.map((o) => o.id)).to.deep.equal(ids.slice(2).sort().slice(1));
      expect(await store.listByShippingStatus({ shippingStatus: "SHIPPED", requestedBefore: before, limit: 10 })).to.deep.equal([]);
      expect(await store.listByShippingStatus({ shippingStatus: "REQUESTED", requestedBefore: new Date("2001-01-01T00:00:00Z"), limit: 10 })).to.deep.equal([]);
    });
  });
});
