import path from "node:path";
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { createOrderClient, createShipmentEventClient } from "@shop/sdk/clients";
import { ShipmentEvent, ShippingStatus, OrderStatus } from "@shop/sdk/order";
import { createPool, type Pool } from "@shop/platform/db";
import { allScopesToken } from "@shop/testkit/auth";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { count } from "../db/helpers.js";

const ENTRY = path.resolve(import.meta.dirname, "../../src/main.ts");

/**
 * The shipping failpoints of the order service, thrown once each in a real
 * order-service process: a release or a shipment event that fails before its
 * commit leaves nothing behind (no request row, no inbox row, the order as it
 * was), and the caller's retry then does it once; one that fails after its
 * commit is answered from the inbox on the retry.
 */
describe("shipping failpoints in the order service", function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let pool: Pool;
  let proc: ServiceProcess;
  let close: () => void;
  let orders: ReturnType<typeof createOrderClient>["client"];
  let events: ReturnType<typeof createShipmentEventClient>["client"];

  before(async () => {
    db = await freshDatabase("order");
    const [grpcPort, httpPort] = await Promise.all([freePort(), freePort()]);
    proc = new ServiceProcess({
      name: "order-shipping-failpoints",
      entry: ENTRY,
      env: {
        ORDER_DATABASE_URL: db.url,
        ORDER_GRPC_PORT: String(grpcPort),
        ORDER_HTTP_PORT: String(httpPort),
        RELAY_ENABLED: "false",
        FAILPOINTS: "order.release.before-commit=throw@1,order.shipment-event.before-commit=throw@1,order.shipment-event.after-commit=throw@1",
      },
      readyUrl: `http://127.0.0.1:${httpPort}/readyz`,
    });
    await proc.start();
    pool = createPool({ url: db.url, connectionLimit: 2 });
    const baseUrl = `http://127.0.0.1:${grpcPort}`;
    const o = createOrderClient({ baseUrl, token: allScopesToken });
    const e = createShipmentEventClient({ baseUrl, token: allScopesToken });
    orders = o.client;
    events = e.client;
    close = () => {
      o.close();
      e.close();
    };
  });
  after(async () => {
    close?.();
    // Its shutdown is not under test here.
    await proc?.kill();
    await pool?.end();
    await db?.drop();
  });

  const failure = async (p: Promise<unknown>): Promise<Code> => {
    try {
      await p;
    } catch (err) {
      return ConnectError.from(err).code;
    }
    throw new Error("expected the call to fail");
  };

  it("release: a failure before the commit leaves no trace; the retry releases once; then events fail before and after their commit and their retries change the order once", async () => {
    const { order } = await orders.createOrder({ customerId: "fp-cust", totalCents: 15_000n, currency: "EUR", requestId: "fp-1" });
    const id = order!.id;
    expect(await failure(orders.releaseOrderForShipping({ orderId: id }))).to.not.equal(Code.FailedPrecondition);
    expect(await count(pool, "SELECT COUNT(*) FROM shipment_outbox WHERE order_id = ?", [id])).to.equal(0);
    expect((await orders.getOrder({ orderId: id })).order!.shipping!.status).to.equal(ShippingStatus.NONE);
    const released = await orders.releaseOrderForShipping({ orderId: id });
    expect([released.changed, released.order!.shipping!.status]).to.deep.equal([true, ShippingStatus.REQUESTED]);
    expect(await count(pool, "SELECT COUNT(*) FROM shipment_outbox WHERE order_id = ?", [id])).to.equal(1);

    const shipped = { messageKey: `shipment:${id}:SHIPPED`, orderId: id, event: ShipmentEvent.SHIPPED, shipmentId: "S-fp" };
    // 1st pass before the commit throws: rolled back with its inbox row.
    await failure(events.recordShipmentEvent(shipped));
    expect(await count(pool, "SELECT COUNT(*) FROM inbox WHERE message_key LIKE 'shipment-event:%'")).to.equal(0);
    expect(await count(pool, "SELECT COUNT(*) FROM voucher_outbox WHERE order_id = ?", [id])).to.equal(0);
    // 2nd pass: committed, then the after-commit failpoint throws; the sender never hears it.
    await failure(events.recordShipmentEvent(shipped));
    expect((await orders.getOrder({ orderId: id })).order!.status).to.equal(OrderStatus.SENT);
    // The retry is answered from the inbox: nothing changes twice.
    const retry = await events.recordShipmentEvent(shipped);
    expect([retry.changed, retry.order!.status]).to.deep.equal([false, OrderStatus.SENT]);
    expect(await count(pool, "SELECT COUNT(*) FROM voucher_outbox WHERE order_id = ?", [id])).to.equal(1);
    expect(await count(pool, "SELECT COUNT(*) FROM inbox WHERE message_key = ?", [`shipment-event:shipment:${id}:SHIPPED`])).to.equal(1);
  });
});
