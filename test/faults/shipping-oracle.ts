import { expect } from "chai";
import type { OutboxTally } from "@shop/testkit/payments";
import type { Traffic } from "./traffic.js";

/**
 * The shipping oracle of the fault tests: reads straight from the order and
 * delivery databases and states on its own, without the code under test or
 * check:ledger, what every shipped order of the traffic must look like once
 * everything has drained.
 */

type Sql = { sql(statement: string): Promise<string> };

const lines = (out: string) => out.split("\n").filter(Boolean).map((l) => l.split("\t"));
const nul = (v: string | undefined) => (v === undefined || v === "NULL" ? null : v);

async function tableNames(db: Sql): Promise<Set<string>> {
  return new Set(lines(await db.sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")).map(([t]) => t!));
}

/**
 * Rows by status of the shipping outboxes (shipment_outbox in the order
 * database, shipment_event_outbox in the delivery database), and the
 * shipments the carrier worker still has work on (handoff or tracking with a
 * check due: it may still report and write events) as "carrier_work"
 * pending. A shipment parked after too many failures counts as dead.
 */
export async function shippingOutboxCounts(orderDb: Sql, deliveryDb: Sql): Promise<OutboxTally> {
  const tally: OutboxTally = { pending: 0, dead: 0, byTable: {} };
  const from = async (db: Sql, table: string) => {
    if (!(await tableNames(db)).has(table)) return;
    const counts: Record<string, number> = { pending: 0, delivered: 0, dead: 0 };
    for (const [status, n] of lines(await db.sql(`SELECT status, COUNT(*) FROM ${table} GROUP BY status`))) counts[status!] = Number(n);
    tally.byTable[table] = counts;
    tally.pending += counts.pending!;
    tally.dead += counts.dead!;
  };
  await from(orderDb, "shipment_outbox");
  await from(deliveryDb, "shipment_event_outbox");
  if ((await tableNames(deliveryDb)).has("shipments")) {
    const [row] = lines(
      await deliveryDb.sql(
        `SELECT COALESCE(SUM(carrier_work IN ('HANDOFF', 'TRACKING') AND next_check_at IS NOT NULL), 0),
                COALESCE(SUM(carrier_work = 'PARKED'), 0),
                COALESCE(SUM(carrier_work = 'DONE'), 0)
           FROM shipments`,
      ),
    );
    const due = Number(row![0]);
    const parked = Number(row![1]);
    tally.byTable.carrier_work = { pending: due, dead: parked, delivered: Number(row![2]) };
    tally.pending += due;
    tally.dead += parked;
  }
  return tally;
}

interface OrderShipping {
  status: string;
  shippingStatus: string;
  sentBy: string | null;
  carrier: string | null;
  declineReason: string | null;
  sentAt: string | null;
}

interface ShipmentRow {
  id: string;
  customerId: string;
  totalCents: bigint;
  carrier: string;
  status: string;
  declineReason: string | null;
  shippedAt: string | null;
  carrierWork: string;
}

const ESC = (s: string) => s.replace(/[^A-Za-z0-9._:-]/g, "");

/** For ids in batches of 500 (IN lists), the rows of `query(idList)`. */
async function byIds(db: Sql, ids: string[], query: (inList: string) => string): Promise<string[][]> {
  const out: string[][] = [];
  for (let i = 0; i < ids.length; i += 500) {
    const list = ids.slice(i, i + 500).map((id) => `'${ESC(id)}'`).join(",");
    out.push(...lines(await db.sql(query(list))));
  }
  return out;
}

/**
 * For every order in t.shipping, by how the test saw it end:
 * - delivered: the order DELIVERED, shipping DELIVERED, sent by its
 *   shipment, sent_at set; its shipment (the order's customer and total, the
 *   carrier asked for) DELIVERED with shipped_at, its carrier work DONE; one
 *   transition for each of CREATED, CONFIRMED, SHIPPED, DELIVERED and no
 *   other; one event row each for SHIPPED and DELIVERED, none DECLINED, all
 *   delivered; the order's inbox took each of them once.
 * - declined: the order CANCELLED, shipping DECLINED with the reason given,
 *   never sent; its shipment DECLINED with that reason, no shipped_at; its
 *   transitions CREATED, possibly CONFIRMED, DECLINED; exactly one event row,
 *   DECLINED, delivered.
 * - refused: the payment was refused before any release: shipping NONE, no
 *   shipment, no shipment request.
 * Every order in shipping has exactly one shipment request (shipment_outbox
 * row), delivered. No shipping outbox row anywhere is dead, and no shipment
 * is parked. Vouchers and money are the other oracles' (expectLiveVouchers,
 * expectPayments): a delivered order is in acknowledgedSent, a paid one in
 * payments.
 */
export async function expectShipping(orderDb: Sql, deliveryDb: Sql, t: Traffic): Promise<void> {
  const ids = [...t.shipping.keys()];
  const orders = new Map<string, OrderShipping>();
  for (const [id, status, shippingStatus, sentBy, carrier, reason, sentAt] of await byIds(
    orderDb,
    ids,
    (list) => `SELECT id, status, shipping_status, sent_by, carrier, shipping_decline_reason, sent_at FROM orders WHERE id IN (${list})`,
  )) {
    orders.set(id!, { status: status!, shippingStatus: shippingStatus!, sentBy: nul(sentBy), carrier: nul(carrier), declineReason: nul(reason), sentAt: nul(sentAt) });
  }
  const requests = new Map<string, string[]>();
  for (const [orderId, status] of await byIds(orderDb, ids, (list) => `SELECT order_id, status FROM shipment_outbox WHERE order_id IN (${list})`)) {
    requests.set(orderId!, [...(requests.get(orderId!) ?? []), status!]);
  }
  const inbox = new Map<string, string[]>();
  for (const [key] of lines(await orderDb.sql("SELECT message_key FROM inbox WHERE message_key LIKE 'shipment-event:%'"))) {
    // shipment-event:shipment:<order id>:<EVENT>
    const m = /^shipment-event:shipment:(.+):([A-Z]+)$/.exec(key!);
    if (m) inbox.set(m[1]!, [...(inbox.get(m[1]!) ?? []), m[2]!]);
  }
  const shipments = new Map<string, ShipmentRow[]>();
  for (const [orderId, id, customerId, total, carrier, status, reason, shippedAt, work] of await byIds(
    deliveryDb,
    ids,
    (list) =>
      `SELECT order_id, id, customer_id, total_cents, carrier, status, decline_reason, shipped_at, carrier_work FROM shipments WHERE order_id IN (${list})`,
  )) {
    const row = { id: id!, customerId: customerId!, totalCents: BigInt(total!), carrier: carrier!, status: status!, declineReason: nul(reason), shippedAt: nul(shippedAt), carrierWork: work! };
    shipments.set(orderId!, [...(shipments.get(orderId!) ?? []), row]);
  }
  const transitions = new Map<string, string[]>();
  for (const [orderId, to] of await byIds(deliveryDb, ids, (list) => `SELECT order_id, to_status FROM shipment_transitions WHERE order_id IN (${list}) ORDER BY id`)) {
    transitions.set(orderId!, [...(transitions.get(orderId!) ?? []), to!]);
  }
  const events = new Map<string, string[]>();
  for (const [orderId, event, status] of await byIds(deliveryDb, ids, (list) => `SELECT order_id, event, status FROM shipment_event_outbox WHERE order_id IN (${list})`)) {
    events.set(orderId!, [...(events.get(orderId!) ?? []), `${event}:${status}`]);
  }

  const problems: string[] = [];
  const sorted = (xs: string[] | undefined) => [...(xs ?? [])].sort().join(",");
  for (const [id, want] of t.shipping) {
    const o = orders.get(id);
    const mine = shipments.get(id) ?? [];
    const s = mine[0];
    const path = transitions.get(id) ?? [];
    const ev = sorted(events.get(id));
    const seen = `order ${o?.status}/${o?.shippingStatus} sent_by ${o?.sentBy}; shipment ${s?.status ?? "none"} (${s?.carrierWork ?? "-"}) path ${path.join(">")}; events ${ev || "none"}; requests ${sorted(requests.get(id)) || "none"}`;
    const fail = (why: string) => problems.push(`${id} (${want.end}${want.carrier ? `, ${want.carrier}` : ""}): ${why}; ${seen}`);
    if (!o) {
      fail("not in the order database");
      continue;
    }
    if (want.end === "refused") {
      if (o.status !== "PAYMENT_FAILED" || o.shippingStatus !== "NONE" || mine.length > 0 || requests.has(id)) fail("a refused order must never go to shipping");
      continue;
    }
    if (mine.length !== 1) {
      fail(`${mine.length} shipments`);
      continue;
    }
    if (sorted(requests.get(id)) !== "delivered") fail("want exactly one shipment request, delivered");
    if (s!.customerId !== want.customerId || s!.totalCents !== want.totalCents) fail(`shipment is for ${s!.customerId}/${s!.totalCents}, the order ${want.customerId}/${want.totalCents}`);
    const carrier = want.carrier || "delayed";
    if (s!.carrier !== carrier) fail(`shipment carrier ${s!.carrier}, want ${carrier}`);
    if (new Set(path).size !== path.length) fail("a status reached twice");
    if (want.end === "delivered") {
      if (o.status !== "DELIVERED" || o.shippingStatus !== "DELIVERED" || o.sentBy !== "SHIPMENT" || !o.sentAt) fail("want the order DELIVERED/DELIVERED, sent by SHIPMENT");
      if (s!.status !== "DELIVERED" || !s!.shippedAt || s!.carrierWork !== "DONE") fail("want the shipment DELIVERED with shipped_at, carrier work DONE");
      if (sorted(path) !== "CONFIRMED,CREATED,DELIVERED,SHIPPED" || path[0] !== "CREATED" || path.at(-1) !== "DELIVERED") fail("want the path CREATED, CONFIRMED, SHIPPED, DELIVERED");
      if (ev !== "DELIVERED:delivered,SHIPPED:delivered") fail("want one SHIPPED and one DELIVERED event, both delivered");
      if (sorted(inbox.get(id)) !== "DELIVERED,SHIPPED") fail(`order inbox took ${sorted(inbox.get(id)) || "nothing"}, want DELIVERED and SHIPPED once each`);
    } else {
      const reason = want.declineReason ?? "";
      if (o.status !== "CANCELLED" || o.shippingStatus !== "DECLINED" || o.sentBy !== null || o.sentAt !== null) fail("want the order CANCELLED/DECLINED, never sent");
      if (o.declineReason !== reason) fail(`order decline reason ${o.declineReason}, want ${reason}`);
      if (s!.status !== "DECLINED" || s!.declineReason !== reason || s!.shippedAt !== null) fail(`want the shipment DECLINED (${reason}) without shipped_at`);
      const core = path.filter((x) => x !== "CONFIRMED");
      if (core.join(">") !== "CREATED>DECLINED") fail("want the path CREATED, (CONFIRMED,) DECLINED");
      if (ev !== "DECLINED:delivered") fail("want exactly one DECLINED event, delivered");
      if (sorted(inbox.get(id)) !== "DECLINED") fail(`order inbox took ${sorted(inbox.get(id)) || "nothing"}, want DECLINED once`);
    }
  }
  const tally = await shippingOutboxCounts(orderDb, deliveryDb);
  for (const [table, counts] of Object.entries(tally.byTable)) {
    if (counts.dead) problems.push(`${table}: ${counts.dead} ${table === "carrier_work" ? "parked shipments" : "dead rows"}`);
  }
  expect(problems, `${problems.length} problems over ${t.shipping.size} shipped orders: ${problems.slice(0, 6).join(" | ")}`).to.deep.equal([]);
}
