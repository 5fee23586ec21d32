import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import { newId } from "@shop/platform/ids";
import { shipmentOutbox } from "../../src/outbox/shipment-flow.js";
import { freshOutboxDb, type OutboxDb } from "../outbox/outbox-db.js";

/**
 * Migration 0005_shipping as MariaDB sees it: the collations it sets by
 * hand (ids and keys exact, statuses ASCII like the engine's tables), and
 * the plans of the shipment claim and of ListOrdersByShippingStatus.
 */
describe("migration 0005_shipping", () => {
  let o: OutboxDb;
  before(async () => {
    o = await freshOutboxDb();
  });
  after(async () => {
    await o?.close();
  });

  it("compares ids and keys exactly and keeps statuses ASCII", async () => {
    const [cols] = await o.pool.query<RowDataPacket[]>(
      `SELECT TABLE_NAME AS t, COLUMN_NAME AS c, COLLATION_NAME AS coll, COLUMN_DEFAULT AS def, IS_NULLABLE AS nullable FROM information_schema.COLUMNS
        WHERE TABLE_SCHEMA = DATABASE() AND ((TABLE_NAME = 'shipment_outbox' AND COLUMN_NAME IN ('message_key', 'order_id', 'customer_id', 'currency', 'carrier', 'status', 'locked_by'))
           OR (TABLE_NAME = 'orders' AND COLUMN_NAME IN ('shipping_status', 'carrier', 'shipping_decline_reason', 'sent_by')))`,
    );
    const coll = Object.fromEntries(cols.map((r) => [`${r.t}.${r.c}`, r.coll]));
    expect(coll).to.deep.equal({
      "shipment_outbox.message_key": "utf8mb4_bin",
      "shipment_outbox.order_id": "utf8mb4_bin",
      "shipment_outbox.customer_id": "utf8mb4_bin",
      "shipment_outbox.currency": "utf8mb4_bin",
      "shipment_outbox.carrier": "utf8mb4_bin",
      "shipment_outbox.status": "ascii_bin",
      "shipment_outbox.locked_by": "utf8mb4_bin",
      "orders.shipping_status": "ascii_bin",
      "orders.carrier": "utf8mb4_bin",
      "orders.shipping_decline_reason": "ascii_bin",
      "orders.sent_by": "ascii_bin",
    });
    const shipping = cols.find((r) => r.t === "orders" && r.c === "shipping_status")!;
    expect([String(shipping.def).replace(/'/g, ""), shipping.nullable]).to.deep.equal(["NONE", "NO"]);
  });

  it("claims shipment requests through the claim index, without a filesort", async () => {
    const rows = Array.from({ length: 300 }, (_, i) => {
      const id = newId();
      return [`shipment:${id}`, id, "c", 100, "EUR", "", i % 10 === 0 ? "pending" : "delivered"];
    });
    await o.pool.query(
      "INSERT INTO shipment_outbox (message_key, order_id, customer_id, total_cents, currency, carrier, status, next_attempt_at, created_at) VALUES ?",
      [rows.map((r) => [...r, new Date(), new Date()])],
    );
    await o.pool.query("ANALYZE TABLE shipment_outbox");
    const [plan] = await o.pool.query<RowDataPacket[]>(`EXPLAIN ${shipmentOutbox.sql.claimSelect}`, [100]);
    expect(plan).to.have.length(1);
    expect(plan[0]!.key).to.equal("shipment_outbox_claim_idx");
    expect(String(plan[0]!.Extra ?? "")).not.to.match(/filesort/i);
  });

  it("lists orders by shipping state on (shipping_status, shipping_requested_at, id), without a filesort", async () => {
    const values = Array.from({ length: 300 }, (_, i) => [newId(), "c", 100, "EUR", "PENDING", `req-${i}`, new Date(), new Date(), i % 3 === 0 ? "REQUESTED" : "NONE", new Date(Date.UTC(2020, 0, 1, 0, 0, i))]);
    await o.pool.query(
      "INSERT INTO orders (id, customer_id, total_cents, currency, status, request_id, created_at, updated_at, shipping_status, shipping_requested_at) VALUES ?",
      [values],
    );
    await o.pool.query("ANALYZE TABLE orders");
    const [plan] = await o.pool.query<RowDataPacket[]>(
      `EXPLAIN SELECT o.id FROM orders o WHERE o.shipping_status = 'REQUESTED' AND o.shipping_requested_at < NOW(3)
         AND (o.shipping_requested_at > '2020-01-01' OR (o.shipping_requested_at = '2020-01-01' AND o.id > '0')) ORDER BY o.shipping_requested_at, o.id LIMIT 10`,
    );
    expect(plan[0]!.key).to.equal("orders_shipping_status_idx");
    expect(String(plan[0]!.Extra ?? "")).not.to.match(/filesort/i);
  });
});
