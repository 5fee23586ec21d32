import { randomUUID } from "node:crypto";
import { expect } from "chai";
import { createOrderClient, createVoucherClient } from "@shop/sdk/clients";
import { OrderStatus, VoucherStatus as OrderVoucherStatus } from "@shop/sdk/order";
import { VoucherStatus } from "@shop/sdk/voucher";
import { roleToken } from "@shop/testkit/auth";
import { Stack } from "./stack.js";

/**
 * "Exactly one voucher" is exactly one the customer can use. A voided
 * voucher is history, not the order's voucher: an order that is owed a
 * voucher and whose only voucher was voided gets a new one, and the order
 * service shows that live one. Real processes: the order service with its
 * relay, the voucher service, each on its own MariaDB.
 */
describe("end to end: an owed order whose voucher was voided gets a new live one", function () {
  this.timeout(120_000);
  const stack = new Stack("e2e-live");
  // The callers the system really has for these steps.
  let reconcilerVouchers: ReturnType<typeof createVoucherClient>;
  let reconcilerOrders: ReturnType<typeof createOrderClient>;

  before(async () => {
    await stack.start();
    reconcilerVouchers = createVoucherClient({ token: roleToken("reconciler"), baseUrl: `http://127.0.0.1:${stack.voucher.opts.env.VOUCHER_GRPC_PORT}` });
    reconcilerOrders = createOrderClient({ token: roleToken("reconciler"), baseUrl: `http://127.0.0.1:${stack.order.opts.env.ORDER_GRPC_PORT}` });
  });
  after(async () => {
    reconcilerVouchers?.close();
    reconcilerOrders?.close();
    await stack.stop();
  });

  /** The order's vouchers straight from the voucher database: id and status, oldest first. */
  async function rowsOf(orderId: string): Promise<Array<[string, string]>> {
    const out = await stack.voucherDb.sql(`SELECT id, status FROM vouchers WHERE order_id = '${orderId}' ORDER BY id`);
    return out
      .trim()
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => l.split("\t") as [string, string]);
  }

  async function qualifyingOrder(customerId: string) {
    const { order } = await stack.orders.createOrder({ customerId, totalCents: 12_000n, currency: "EUR", requestId: randomUUID() });
    return order!;
  }

  /** Waits until the relay has nothing pending, then reads the order as the order service shows it. */
  async function settled(orderId: string) {
    const counts = await stack.drained();
    expect(counts.pending, "outbox rows still pending").to.equal(0);
    expect(counts.dead, "outbox rows dead").to.equal(0);
    return (await stack.orders.getOrder({ orderId })).order!;
  }

  it("voided after delivery, then requeued with redeliver: one live voucher, one voided, and the order shows the live one", async () => {
    const order = await qualifyingOrder("cust-live-a");
    await stack.orders.markOrderSent({ orderId: order.id });
    const delivered = await settled(order.id);
    expect(delivered.voucher!.status).to.equal(OrderVoucherStatus.ISSUED);
    const firstId = delivered.voucher!.voucherId;

    const voided = await reconcilerVouchers.client.voidVoucher({ voucherId: firstId, reason: "voided by mistake" });
    expect(voided.changed).to.equal(true);
    // What the reconciler does for an owed order without a live voucher.
    const requeued = await reconcilerOrders.client.requeueVoucher({ orderId: order.id, redeliver: true });
    expect(requeued.requeued).to.equal(true);

    const after = await settled(order.id);
    const rows = await rowsOf(order.id);
    expect(rows.map(([, status]) => status)).to.deep.equal(["VOIDED", "ISSUED"]);
    expect(rows[0]![0]).to.equal(firstId);
    const liveId = rows[1]![0];
    expect(after.status).to.equal(OrderStatus.SENT);
    expect(after.voucher!.status).to.equal(OrderVoucherStatus.ISSUED);
    expect(after.voucher!.voucherId).to.equal(liveId);

    const { vouchers } = await stack.vouchers.batchGetVouchersByOrder({ orderIds: [order.id] });
    expect(vouchers.map((v) => [v.id, v.status])).to.deep.equal([[liveId, VoucherStatus.ISSUED]]);
    expect(vouchers[0]).to.include({ customerId: "cust-live-a" });
  });

  it("voided while the order looked unsent, then the order is marked sent: a new live voucher, shown on the order", async () => {
    const order = await qualifyingOrder("cust-live-b");
    // A voucher for the order exists before the order service knows it as
    // sent (its commit lost in a database failover, say), and the reconciler
    // voids it as owed to no one.
    const early = await stack.vouchers.issueVoucher({
      orderId: order.id,
      customerId: order.customerId,
      orderTotalCents: order.totalCents,
      currency: "EUR",
    });
    expect(early.created).to.equal(true);
    await reconcilerVouchers.client.voidVoucher({ voucherId: early.voucher!.id, reason: "order not sent" });

    await stack.orders.markOrderSent({ orderId: order.id });
    const after = await settled(order.id);
    const rows = await rowsOf(order.id);
    expect(rows).to.have.length(2);
    expect(rows[0]).to.deep.equal([early.voucher!.id, "VOIDED"]);
    expect(rows[1]![1]).to.equal("ISSUED");
    expect(after.voucher!.status).to.equal(OrderVoucherStatus.ISSUED);
    expect(after.voucher!.voucherId).to.equal(rows[1]![0]);
    expect(after.voucher!.voucherId).not.to.equal(early.voucher!.id);
  });
});
