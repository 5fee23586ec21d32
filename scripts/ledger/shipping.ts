/**
 * check:ledger's shipping invariants S1–S7 (docs/design.md, "Invariants"):
 * the order database's shipping state (orders.shipping_status, sent_by, the
 * shipment_outbox requests, the inbox of shipment events) against the
 * delivery database's shipments, their transitions and their event outbox.
 *
 * Written from the schemas and the contract alone, in SQL, without the
 * services' code: what can be decided inside one database is decided by a
 * query that returns the offending orders; what needs both (the two may live
 * on different servers) joins the rows those queries read. Every violation
 * names its order.
 *
 * Reading order, for a live system (drained false): the order database
 * first, then the delivery database in one consistent snapshot, then the
 * order database again. A shipment is never older than the order state it is
 * compared with, so an order behind its shipment is an event in flight (a
 * violation only once drained) while an order ahead of its shipment, or
 * contradicting it, is a violation live or not. What the delivery side shows
 * (a shipment, a delivered event) is judged against the orders read after it.
 */
import type { RowDataPacket } from "mysql2/promise";
import { createPool, type Pool } from "@shop/platform/db";

export interface ShippingLedgerOptions {
  /** The delivery service's database; without it S1–S7 are skipped. */
  deliveryDatabaseUrl?: string;
  /** True on a quiet system (default): events and requests in flight are violations. False: they are counted, not failed. */
  drained?: boolean;
  /** S7: the oldest pending shipment request or event must be younger than this. Default 60000 ms. */
  lagTargetMs?: number;
}

/** The same shape as check-ledger's InvariantResult. */
export interface ShippingInvariantResult {
  id: string;
  title: string;
  verdict: "PASS" | "FAIL" | "SKIP";
  counts: Record<string, number>;
  detail?: string;
}

export const SHIPPING_TITLES = {
  S1: "every order in shipping has exactly one shipment, of its customer, total and currency (a request still pending is in flight on a live system)",
  S2: "every shipment belongs to an order in shipping",
  S3: "every order agrees with its shipment (CREATED/CONFIRMED: PENDING or PAID and REQUESTED; SHIPPED: SENT; DELIVERED: DELIVERED; DECLINED: CANCELLED, a charged one refunded or refund pending); an order behind its shipment is in flight on a live system",
  S4: "a sent order in shipping was sent by its shipment (sent_by SHIPMENT) and the shipment shipped; a sent order not in shipping was sent by hand",
  S5: "every shipment's transitions are its path: one per status reached, in lifecycle order, each from the one before, ending at its status; each status time set iff its transition",
  S6: "every SHIPPED, DELIVERED or DECLINED a shipment reached has its one event row (or, cleaned up, the order took it in); no event row or taken-in event the shipment did not reach",
  S7: "the oldest pending shipment request and shipment event is younger than the lag target; dead ones are listed",
} as const;

type Queryable = Pick<Pool, "query">;

const q = async (db: Queryable, sql: string, params: unknown[] = []): Promise<RowDataPacket[]> => (await db.query<RowDataPacket[]>(sql, params))[0];

function sample(items: Iterable<string>, n = 5): string {
  const list = [...items];
  return list.length === 0 ? "" : `${list.slice(0, n).join("; ")}${list.length > n ? ` … (+${list.length - n})` : ""}`;
}

function verdict(id: keyof typeof SHIPPING_TITLES, failures: string[], counts: Record<string, number>, title: string = SHIPPING_TITLES[id]): ShippingInvariantResult {
  return { id, title, verdict: failures.length === 0 ? "PASS" : "FAIL", counts, detail: failures.length === 0 ? undefined : sample(failures, 5) };
}

async function hasColumn(db: Queryable, table: string, column: string): Promise<boolean> {
  const rows = await q(db, "SELECT COUNT(*) AS n FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?", [table, column]);
  return Number(rows[0]!.n) > 0;
}

interface OrderRow {
  id: string;
  customerId: string;
  totalCents: number;
  currency: string;
  status: string;
  shipping: string;
  sentBy: string | null;
  payment: string;
}

interface ShipmentRow {
  id: string;
  orderId: string;
  customerId: string;
  totalCents: number;
  currency: string;
  status: string;
  shipped: boolean;
}

/** Orders read by the given condition (ids as parameters, in chunks), with the payment status where the column exists. */
async function readOrders(db: Queryable, payments: boolean, where: string, ids?: string[]): Promise<OrderRow[]> {
  const select = `SELECT id, customer_id AS customerId, total_cents AS totalCents, currency, status, shipping_status AS shipping, sent_by AS sentBy,
                         ${payments ? "payment_status" : "'NONE'"} AS payment
                    FROM orders`;
  const toRow = (r: RowDataPacket): OrderRow => ({ ...(r as OrderRow), totalCents: Number(r.totalCents), sentBy: r.sentBy === null ? null : String(r.sentBy) });
  if (!ids) return (await q(db, `${select} WHERE ${where}`)).map(toRow);
  const out: OrderRow[] = [];
  for (let i = 0; i < ids.length; i += 1000) {
    const chunk = ids.slice(i, i + 1000);
    out.push(...(await q(db, `${select} WHERE id IN (${chunk.map(() => "?").join(",")})`, chunk)).map(toRow));
  }
  return out;
}

/** Order status and shipping status that belong together (they change in one transaction). */
const ORDER_PAIRS_SQL = `(shipping_status = 'REQUESTED' AND status IN ('PENDING', 'PAID'))
  OR (shipping_status = 'SHIPPED' AND status = 'SENT')
  OR (shipping_status = 'DELIVERED' AND status = 'DELIVERED')
  OR (shipping_status = 'DECLINED' AND status = 'CANCELLED')`;

/**
 * S5 in SQL over the delivery database: one row per problem, naming the
 * order. The lifecycle's paths are CREATED > CONFIRMED > SHIPPED > DELIVERED
 * (a prefix of it) or CREATED [> CONFIRMED] > DECLINED; a report that jumps
 * ahead records the skipped steps, so no other path is sound.
 */
const S5_SQL = `
SELECT s.order_id AS orderId,
       CONCAT('status ', s.status, ' but transitions ', COALESCE(p.path, '(none)')) AS problem
  FROM shipments s
  LEFT JOIN (SELECT order_id, GROUP_CONCAT(to_status ORDER BY id SEPARATOR '>') AS path
               FROM shipment_transitions GROUP BY order_id) p ON p.order_id = s.order_id
 WHERE NOT COALESCE(
         (s.status = 'CREATED' AND p.path = 'CREATED')
      OR (s.status = 'CONFIRMED' AND p.path = 'CREATED>CONFIRMED')
      OR (s.status = 'SHIPPED' AND p.path = 'CREATED>CONFIRMED>SHIPPED')
      OR (s.status = 'DELIVERED' AND p.path = 'CREATED>CONFIRMED>SHIPPED>DELIVERED')
      OR (s.status = 'DECLINED' AND p.path IN ('CREATED>DECLINED', 'CREATED>CONFIRMED>DECLINED')), FALSE)
UNION ALL
SELECT x.order_id,
       CONCAT('transition ', x.id, ' to ', x.to_status, ' is recorded from ', COALESCE(x.from_status, '(nothing)'),
              ', the status before it was ', COALESCE(x.prev, '(nothing)'))
  FROM (SELECT id, order_id, from_status, to_status, LAG(to_status) OVER (PARTITION BY order_id ORDER BY id) AS prev
          FROM shipment_transitions) x
 WHERE NOT (x.from_status <=> x.prev)
UNION ALL
SELECT s.order_id,
       CONCAT('status times disagree with the transitions: confirmed_at ', IF(s.confirmed_at IS NULL, 'unset', 'set'),
              ', shipped_at ', IF(s.shipped_at IS NULL, 'unset', 'set'), ', delivered_at ', IF(s.delivered_at IS NULL, 'unset', 'set'),
              ', declined_at ', IF(s.declined_at IS NULL, 'unset', 'set'), '; transitions to ', COALESCE(f.tos, '(none)'))
  FROM shipments s
  LEFT JOIN (SELECT order_id,
                    MAX(to_status = 'CONFIRMED') AS confirmed, MAX(to_status = 'SHIPPED') AS shipped,
                    MAX(to_status = 'DELIVERED') AS delivered, MAX(to_status = 'DECLINED') AS declined,
                    GROUP_CONCAT(to_status ORDER BY id) AS tos
               FROM shipment_transitions GROUP BY order_id) f ON f.order_id = s.order_id
 WHERE (s.confirmed_at IS NOT NULL) <> COALESCE(f.confirmed, 0)
    OR (s.shipped_at IS NOT NULL) <> COALESCE(f.shipped, 0)
    OR (s.delivered_at IS NOT NULL) <> COALESCE(f.delivered, 0)
    OR (s.declined_at IS NOT NULL) <> COALESCE(f.declined, 0)
UNION ALL
SELECT t.order_id, CONCAT('transition ', t.id, ' to ', t.to_status, ' belongs to shipment ', t.shipment_id, ', ',
                          IF(s.id IS NULL, 'and the order has no shipment', CONCAT('the order''s shipment is ', s.id)))
  FROM shipment_transitions t LEFT JOIN shipments s ON s.order_id = t.order_id
 WHERE s.id IS NULL OR s.id <> t.shipment_id`;

/** The events each shipment must have: one row per (order, event) reached, with its event row if any. */
const S6_EXPECTED_SQL = `
SELECT s.order_id AS orderId, s.id AS shipmentId, ev.event, o.id AS rowId, o.order_id AS rowOrderId, o.shipment_id AS rowShipmentId, o.event AS rowEvent
  FROM shipments s
  JOIN (SELECT 'SHIPPED' AS event UNION ALL SELECT 'DELIVERED' UNION ALL SELECT 'DECLINED') ev
    ON (ev.event = 'SHIPPED' AND s.status IN ('SHIPPED', 'DELIVERED')) OR (ev.event = s.status AND s.status IN ('DELIVERED', 'DECLINED'))
  LEFT JOIN shipment_event_outbox o ON o.message_key = CONCAT('shipment:', s.order_id, ':', ev.event)`;

/** Event rows no reached status explains: of no shipment, of a status the shipment did not reach, or under another key. */
const S6_STRAY_SQL = `
SELECT o.order_id AS orderId,
       CONCAT('event row ', o.message_key, ' (', o.event, ', ', o.status, ') ',
              IF(s.id IS NULL, 'of an order with no shipment', CONCAT('but the shipment is ', s.status))) AS problem
  FROM shipment_event_outbox o LEFT JOIN shipments s ON s.order_id = o.order_id
 WHERE s.id IS NULL
    OR NOT ((o.event = 'SHIPPED' AND s.status IN ('SHIPPED', 'DELIVERED')) OR (o.event = s.status AND s.status IN ('DELIVERED', 'DECLINED')))
    OR o.message_key <> CONCAT('shipment:', o.order_id, ':', o.event)
    OR o.shipment_id <> s.id`;

/** Outbox rows by status: pending count and the oldest pending ones' ages and orders, dead ones' orders. */
async function outboxLag(db: Queryable, table: string): Promise<{ pending: number; oldestMs: number; late: { orderId: string; ageMs: number }[]; dead: string[] }> {
  const rows = await q(
    db,
    `SELECT order_id AS orderId, status, TIMESTAMPDIFF(MICROSECOND, created_at, NOW(3)) / 1000 AS ageMs
       FROM ${table} WHERE status IN ('pending', 'dead') ORDER BY created_at, id`,
  );
  const pending = rows.filter((r) => r.status === "pending");
  return {
    pending: pending.length,
    oldestMs: pending.length ? Math.max(...pending.map((r) => Number(r.ageMs))) : 0,
    late: pending.map((r) => ({ orderId: String(r.orderId), ageMs: Number(r.ageMs) })),
    dead: rows.filter((r) => r.status === "dead").map((r) => String(r.orderId)),
  };
}

export async function checkShippingLedger(opts: ShippingLedgerOptions, orderPool: Pool): Promise<ShippingInvariantResult[]> {
  const skipAll = (detail: string) =>
    Object.entries(SHIPPING_TITLES).map(([id, title]): ShippingInvariantResult => ({ id, title, verdict: "SKIP", counts: {}, detail }));
  if (!(await hasColumn(orderPool, "orders", "shipping_status"))) return skipAll("the order database has no shipping columns (before migration 0005)");
  if (!opts.deliveryDatabaseUrl) {
    const n = Number((await q(orderPool, "SELECT COUNT(*) AS n FROM orders WHERE shipping_status <> 'NONE'"))[0]!.n);
    return skipAll(`no delivery database given (--delivery-db, DELIVERY_DATABASE_URL); ${n} orders in shipping unchecked`);
  }
  const settled = opts.drained ?? true;
  const target = opts.lagTargetMs ?? 60_000;
  const payments = await hasColumn(orderPool, "orders", "payment_status");
  const deliveryPool = createPool({ url: opts.deliveryDatabaseUrl, connectionLimit: 2 });
  try {
    // 1. The order side first.
    const inShipping = await readOrders(orderPool, payments, "shipping_status <> 'NONE'");
    const requests = new Map((await q(orderPool, "SELECT order_id AS orderId, status FROM shipment_outbox")).map((r) => [String(r.orderId), String(r.status)]));
    const takenBefore = (await q(orderPool, "SELECT message_key AS k FROM inbox WHERE message_key LIKE 'shipment-event:%'")).map((r) => String(r.k));
    const pairs = await q(
      orderPool,
      `SELECT id AS orderId, status, shipping_status AS shipping${payments ? ", payment_status AS payment" : ""} FROM orders
        WHERE shipping_status <> 'NONE' AND (NOT (${ORDER_PAIRS_SQL})${payments ? " OR (shipping_status = 'DECLINED' AND payment_status = 'CHARGED')" : ""})`,
    );
    const sentBy = await q(
      orderPool,
      `SELECT id AS orderId, status, shipping_status AS shipping, sent_by AS sentBy FROM orders
        WHERE (status IN ('SENT', 'DELIVERED') AND shipping_status <> 'NONE' AND NOT (sent_by <=> 'SHIPMENT'))
           OR (status IN ('SENT', 'DELIVERED') AND shipping_status = 'NONE' AND sent_by = 'SHIPMENT')
           OR (status NOT IN ('SENT', 'DELIVERED') AND sent_by IS NOT NULL)
           OR (sent_by IS NOT NULL AND sent_by NOT IN ('HAND', 'SHIPMENT'))`,
    );
    const requestLag = await outboxLag(orderPool, "shipment_outbox");

    // 2. The delivery side in one consistent snapshot.
    const conn = await deliveryPool.getConnection();
    let shipments: ShipmentRow[], doubled: RowDataPacket[], s5: RowDataPacket[], expected: RowDataPacket[], stray: RowDataPacket[], eventLag: Awaited<ReturnType<typeof outboxLag>>;
    try {
      await conn.query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ");
      await conn.query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY");
      shipments = (
        await q(conn, `SELECT id, order_id AS orderId, customer_id AS customerId, total_cents AS totalCents, currency, status,
                              shipped_at IS NOT NULL AS shipped FROM shipments`)
      ).map((r) => ({ ...(r as ShipmentRow), totalCents: Number(r.totalCents), shipped: Number(r.shipped) === 1 }));
      doubled = await q(conn, "SELECT order_id AS orderId, COUNT(*) AS n FROM shipments GROUP BY order_id HAVING COUNT(*) > 1");
      s5 = await q(conn, S5_SQL);
      expected = await q(conn, S6_EXPECTED_SQL);
      stray = await q(conn, S6_STRAY_SQL);
      eventLag = await outboxLag(conn, "shipment_event_outbox");
      await conn.query("COMMIT");
    } finally {
      conn.release();
    }

    // 3. The orders again, for what the delivery side shows: every shipment's order, and the events taken in since.
    const shipmentIds = [...new Set(shipments.map((s) => s.orderId))];
    const after = new Map((await readOrders(orderPool, payments, "", shipmentIds)).map((o) => [o.id, o]));
    const takenAfter = new Set((await q(orderPool, "SELECT message_key AS k FROM inbox WHERE message_key LIKE 'shipment-event:%'")).map((r) => String(r.k)));

    const shipmentByOrder = new Map(shipments.map((s) => [s.orderId, s]));
    const results: ShippingInvariantResult[] = [];

    // S1: every order in shipping has its shipment, of its facts.
    {
      const bad: string[] = [];
      let pending = 0;
      let stuck = 0;
      for (const o of inShipping) {
        const s = shipmentByOrder.get(o.id);
        if (s) {
          const differs: string[] = [];
          if (s.customerId !== o.customerId) differs.push(`customer ${JSON.stringify(s.customerId)}, the order's ${JSON.stringify(o.customerId)}`);
          if (s.totalCents !== o.totalCents || s.currency !== o.currency) differs.push(`total ${s.totalCents} ${s.currency}, the order's ${o.totalCents} ${o.currency}`);
          if (differs.length) bad.push(`order ${o.id}: its shipment ${s.id} has ${differs.join(" and ")}`);
          continue;
        }
        const request = requests.get(o.id);
        if (o.shipping !== "REQUESTED") bad.push(`order ${o.id}: shipping ${o.shipping} but the delivery database has no shipment`);
        else if (request === "dead") stuck++;
        else if (request === "pending") {
          pending++;
          if (settled) bad.push(`order ${o.id}: shipping REQUESTED, no shipment, its request still pending after drain`);
        } else bad.push(`order ${o.id}: shipping REQUESTED, no shipment, its request ${request ? `is ${request}` : "row is missing"}`);
      }
      for (const r of doubled) bad.push(`order ${r.orderId}: ${r.n} shipments`);
      results.push(
        verdict("S1", bad, {
          "orders in shipping": inShipping.length,
          shipments: shipments.length,
          [settled ? "request pending (drained: violation)" : "request in flight"]: pending,
          "request dead (S7)": stuck,
          violations: bad.length,
        }),
      );
    }

    // S2: every shipment's order is in shipping.
    {
      const bad: string[] = [];
      for (const s of shipments) {
        const o = after.get(s.orderId);
        if (!o) bad.push(`order ${s.orderId}: shipment ${s.id} (${s.status}) of an order the order database does not have`);
        else if (o.shipping === "NONE") bad.push(`order ${s.orderId}: shipment ${s.id} (${s.status}) but the order is not in shipping (${o.status}, sent by ${o.sentBy ?? "nobody"})`);
      }
      results.push(verdict("S2", bad, { shipments: shipments.length, "without an order in shipping": bad.length }));
    }

    // S3: the order agrees with its shipment; an order behind it is in flight on a live system.
    {
      const bad: string[] = pairs.map(
        (r) => `order ${r.orderId}: ${r.status} with shipping ${r.shipping}${r.payment === "CHARGED" ? " and its charge neither refunded nor refund pending" : ""}`,
      );
      const pairBroken = new Set(pairs.map((r) => String(r.orderId)));
      let agree = 0;
      let behind = 0;
      const RANK: Record<string, number> = { REQUESTED: 0, CREATED: 0, CONFIRMED: 0, SHIPPED: 1, DELIVERED: 2 };
      for (const o of inShipping) {
        const s = shipmentByOrder.get(o.id);
        if (!s || pairBroken.has(o.id)) continue;
        const want = s.status === "CREATED" || s.status === "CONFIRMED" ? "REQUESTED" : s.status;
        if (o.shipping === want) {
          agree++;
          continue;
        }
        // Behind: the order has not yet taken in an event the shipment reached (never past a decline, never declined after shipping).
        const isBehind =
          (o.shipping === "REQUESTED" && s.status === "DECLINED") ||
          (o.shipping in RANK && s.status in RANK && o.shipping !== "DECLINED" && s.status !== "DECLINED" && RANK[o.shipping]! < RANK[s.status]!);
        if (isBehind) behind++;
        if (!isBehind || settled) {
          bad.push(`order ${o.id}: ${o.status}, shipping ${o.shipping}, its shipment ${s.id} is ${s.status}${isBehind ? " (an event not taken in after drain)" : ""}`);
        }
      }
      results.push(
        verdict("S3", bad, {
          "orders with a shipment": inShipping.filter((o) => shipmentByOrder.has(o.id)).length,
          agree,
          [settled ? "behind (drained: violation)" : "behind (event in flight)"]: behind,
          "status and shipping disagree": pairs.length,
          violations: bad.length,
        }),
      );
    }

    // S4: who sent the order.
    {
      const bad: string[] = sentBy.map((r) => `order ${r.orderId}: ${r.status}, shipping ${r.shipping}, sent_by ${r.sentBy ?? "NULL"}`);
      let byShipment = 0;
      for (const o of inShipping) {
        if (o.status !== "SENT" && o.status !== "DELIVERED") continue;
        const s = shipmentByOrder.get(o.id);
        if (!s) continue; // S1's
        if (!s.shipped) bad.push(`order ${o.id}: ${o.status} by its shipment, but shipment ${s.id} (${s.status}) never shipped (shipped_at unset)`);
        else byShipment++;
      }
      const byHand = Number((await q(orderPool, "SELECT COUNT(*) AS n FROM orders WHERE status IN ('SENT', 'DELIVERED') AND shipping_status = 'NONE'"))[0]!.n);
      results.push(verdict("S4", bad, { "sent by shipment": byShipment, "sent by hand": byHand, violations: bad.length }));
    }

    // S5: transitions.
    {
      const bad = s5.map((r) => `order ${r.orderId}: ${r.problem}`);
      results.push(verdict("S5", bad, { shipments: shipments.length, violations: bad.length }));
    }

    // S6: one event row per event reached, or (cleaned up) the order took it in; nothing else.
    {
      const bad: string[] = [];
      let rows = 0;
      let cleaned = 0;
      const reached = new Set<string>();
      for (const r of expected) {
        const key = `shipment:${r.orderId}:${r.event}`;
        reached.add(key);
        if (r.rowId !== null) {
          rows++;
          if (r.rowOrderId !== r.orderId || r.rowShipmentId !== r.shipmentId || r.rowEvent !== r.event) {
            bad.push(`order ${r.orderId}: event row ${key} names order ${r.rowOrderId}, shipment ${r.rowShipmentId}, event ${r.rowEvent}`);
          }
        } else if (takenAfter.has(`shipment-event:${key}`)) cleaned++;
        else bad.push(`order ${r.orderId}: shipment ${r.shipmentId} reached ${r.event} but has no event row and the order never took it in`);
      }
      for (const r of stray) bad.push(`order ${r.orderId}: ${r.problem}`);
      // An event the order took in (read before the snapshot) that its shipment never reached.
      for (const k of takenBefore) {
        const key = k.slice("shipment-event:".length);
        if (!reached.has(key)) bad.push(`order ${key.split(":")[1]}: the order took in ${key}, which its shipment never reached`);
      }
      results.push(
        verdict("S6", bad, { "events reached": expected.length, "event rows": rows, "delivered and cleaned up": cleaned, "events taken in": takenBefore.length, violations: bad.length }),
      );
    }

    // S7: lag of the two shipping outboxes; dead rows listed (an operator's case, requeued by the reconciler or ResumeShipment), not failed.
    {
      const late = [
        ...requestLag.late.filter((r) => r.ageMs >= target).map((r) => `order ${r.orderId}: shipment request pending for ${Math.round(r.ageMs)} ms`),
        ...eventLag.late.filter((r) => r.ageMs >= target).map((r) => `order ${r.orderId}: shipment event pending for ${Math.round(r.ageMs)} ms`),
      ];
      const res = verdict(
        "S7",
        late,
        {
          "request pending": requestLag.pending,
          "request dead": requestLag.dead.length,
          "event pending": eventLag.pending,
          "event dead": eventLag.dead.length,
          "oldest ms": Math.round(Math.max(requestLag.oldestMs, eventLag.oldestMs)),
        },
        `${SHIPPING_TITLES.S7} (${target} ms)`,
      );
      const dead = [...requestLag.dead.map((id) => `order ${id}: shipment request dead`), ...eventLag.dead.map((id) => `order ${id}: shipment event dead`)];
      if (dead.length) res.detail = [res.detail, `dead: ${sample(dead)}`].filter(Boolean).join("; ");
      results.push(res);
    }
    return results;
  } finally {
    await deliveryPool.end().catch(() => {});
  }
}
