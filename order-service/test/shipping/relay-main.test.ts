import path from "node:path";
import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import { ServiceProcess } from "@shop/testkit/service-process";
import { OrderStore } from "../../src/db/order-store.js";
import { quietLogger } from "../outbox/fake-voucher-service.js";
import { eventually, freshOutboxDb, type OutboxDb } from "../outbox/outbox-db.js";
import { DeliveryReceiver } from "./delivery-receiver.js";

const ENTRY = path.resolve(import.meta.dirname, "../../src/relay-main.ts");

describe("relay process (relay-main) and the shipment flow", function () {
  this.timeout(60_000);
  let o: OutboxDb;
  let receiver: DeliveryReceiver;
  let proc: ServiceProcess | undefined;

  before(async () => {
    [o, receiver] = await Promise.all([freshOutboxDb(), DeliveryReceiver.start()]);
  });
  afterEach(async () => {
    if (proc?.running) await proc.kill();
    proc = undefined;
  });
  after(async () => {
    await Promise.allSettled([o?.close(), receiver?.stop()]);
  });

  it("with DELIVERY_SERVICE_URL it delivers shipment requests too, and exits 0 on SIGTERM", async () => {
    const store = new OrderStore({ pool: o.pool, logger: quietLogger });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const { order } = await store.create({ customerId: "main-cust", totalCents: 700 + i, currency: "EUR", requestId: `main-${i}` });
      await store.releaseForShipping(order.id);
      ids.push(order.id);
    }
    proc = new ServiceProcess({
      name: "order-relay-shipments",
      entry: ENTRY,
      env: { ORDER_DATABASE_URL: o.db.url, DELIVERY_SERVICE_URL: receiver.url, VOUCHER_SERVICE_URL: "http://127.0.0.1:1", RELAY_POLL_INTERVAL_MS: "50" },
    });
    await proc.start();
    await eventually("every shipment request is delivered", async () => {
      const [rows] = await o.pool.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM shipment_outbox WHERE status = 'delivered' AND order_id IN (?)", [ids]);
      return Number(rows[0]!.n) === ids.length;
    }, 15_000);
    for (const id of ids) expect(receiver.callsFor(id).filter((c) => c.created === true), id).to.have.length(1);
    expect(await proc.stop("SIGTERM")).to.equal(0);
  });
});
