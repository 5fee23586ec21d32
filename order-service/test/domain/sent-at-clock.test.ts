import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import type { Pool } from "@shop/platform/db";
import type { TestDatabase } from "@shop/testkit/shared-servers";
import { OrderStore } from "../../src/db/order-store.js";
import { migratedOrderDatabase, silentLogger } from "../db/helpers.js";

/**
 * The voucher rule is judged at sent_at, and the reconciler's window compares
 * sent_at too, so sent_at must come from one clock whatever host stamps it:
 * the order database's, read in the MarkOrderSent transaction.
 */
describe("sent_at is the order database's clock", function () {
  let db: TestDatabase;
  let pool: Pool;
  before(async () => ({ db, pool } = await migratedOrderDatabase()));
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  const dbNow = async (): Promise<Date> => {
    const [rows] = await pool.query<RowDataPacket[]>("SELECT NOW(3) AS now");
    return rows[0]!.now as Date;
  };

  it("is stamped from NOW(3) in the transaction, not from the service's own clock", async () => {
    // The service's clock is twenty-five years off; only created_at (and the id) may show it.
    const skewed = Date.UTC(2001, 0, 1);
    const store = new OrderStore({ pool, logger: silentLogger, now: () => skewed });
    const { order } = await store.create({ customerId: "clock", totalCents: 15_000, currency: "EUR", requestId: "clock-1" });
    expect(order.createdAt.getTime()).to.equal(skewed);

    const before = await dbNow();
    const { order: sent } = await store.markSent(order.id);
    const after = await dbNow();
    expect(sent.sentAt!.getTime()).to.be.within(before.getTime(), after.getTime());
    const [rows] = await pool.query<RowDataPacket[]>("SELECT sent_at, updated_at FROM orders WHERE id = ?", [order.id]);
    expect((rows[0]!.sent_at as Date).getTime()).to.equal(sent.sentAt!.getTime());
    expect((rows[0]!.updated_at as Date).getTime()).to.equal(sent.sentAt!.getTime());
    expect(sent.voucher.status).to.equal("PENDING");
  });
});
