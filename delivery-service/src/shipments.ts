import type { PoolConnection, ResultSetHeader, RowDataPacket } from "mysql2/promise";
import { inTransaction, retryTransient, type Pool } from "@shop/platform/db";
import { alreadyExists, failedPrecondition, notFound } from "@shop/platform/errors";
import { failpoint } from "@shop/platform/failpoints";
import { newId } from "@shop/platform/ids";
import type { Logger } from "@shop/platform/logger";
import { ANY_ID, decodeTimeToken, encodeTimeToken, timeWindow } from "@shop/platform/paging";

/**
 * Shipments over the delivery database: exactly one per order, and every
 * status change in one transaction with its transition record and, for the
 * changes the order service must learn (SHIPPED, DELIVERED, DECLINED), its
 * shipment_event_outbox row. A transaction that dies on a deadlock or lock
 * timeout is run again whole.
 *
 * The lifecycle: CREATED → CONFIRMED → SHIPPED → DELIVERED, or DECLINED from
 * CREATED or CONFIRMED. A report that jumps ahead (DELIVERED for a CREATED
 * shipment) records the steps it skipped too, each as its own transition
 * ("implied by ..."), so every shipment that reached a status went through
 * every status before it, and the order learns SHIPPED before or alongside
 * DELIVERED. A report of a status the shipment has already reached or passed
 * changes nothing (carriers repeat themselves); one the lifecycle forbids
 * (DECLINED after SHIPPED, anything after DECLINED) is FAILED_PRECONDITION.
 */

export type ShipmentStatus = "CREATED" | "CONFIRMED" | "SHIPPED" | "DELIVERED" | "DECLINED";
export type CarrierWork = "HANDOFF" | "TRACKING" | "PARKED" | "DONE";
export type ReportedStatus = Exclude<ShipmentStatus, "CREATED">;
/** The changes the order service learns, each once: shipment_event_outbox.event. */
export type ShipmentEvent = "SHIPPED" | "DELIVERED" | "DECLINED";

export interface Shipment {
  id: string;
  orderId: string;
  customerId: string;
  totalCents: number;
  currency: string;
  carrier: string;
  status: ShipmentStatus;
  trackingNumber: string | null;
  declineReason: string | null;
  createdAt: Date;
  updatedAt: Date;
  confirmedAt: Date | null;
  shippedAt: Date | null;
  deliveredAt: Date | null;
  declinedAt: Date | null;
  carrierWork: CarrierWork;
  carrierAttempts: number;
  carrierLastError: string | null;
  nextCheckAt: Date | null;
  traceparent: string | null;
}

export interface Transition {
  fromStatus: ShipmentStatus | null;
  toStatus: ShipmentStatus;
  at: Date;
  source: string;
  detail: string | null;
}

/** What a carrier (a plugin, or a business over CarrierService) says happened. */
export interface CarrierReport {
  status: ReportedStatus;
  /** With SHIPPED (or a later status): the carrier's tracking number. */
  trackingNumber?: string;
  /** With DECLINED: why, as a short code (NO_CAPACITY, ...). */
  declineReason?: string;
  /** Free text kept on the transition. */
  detail?: string;
}

export interface CreateShipmentInput {
  orderId: string;
  customerId: string;
  totalCents: number;
  currency: string;
  /** "" for the default carrier. */
  carrier: string;
  traceparent?: string;
}

/** The carriers this service runs, as the store needs to know them. */
export interface KnownCarriers {
  isKnown(name: string): boolean;
  readonly defaultCarrier: string;
}

/** ListShipments' page sizes. */
export const SHIPMENTS_PAGE = { default: 500, max: 1000 } as const;

/** The reason a shipment for a carrier this service does not run is declined with. */
export const UNKNOWN_CARRIER = "UNKNOWN_CARRIER";

/** Who records what the service does on its own (creation, an unknown carrier's decline). */
export const SERVICE_SOURCE = "delivery-service";

/** The order service's inbox key of a shipment's event: one row, one message, ever. */
export function eventMessageKey(orderId: string, event: ShipmentEvent): string {
  return `shipment:${orderId}:${event}`;
}

const FORWARD: readonly ShipmentStatus[] = ["CREATED", "CONFIRMED", "SHIPPED", "DELIVERED"];
const AT_COLUMN: Record<ReportedStatus, string> = {
  CONFIRMED: "confirmed_at",
  SHIPPED: "shipped_at",
  DELIVERED: "delivered_at",
  DECLINED: "declined_at",
};
const EVENT_OF: Partial<Record<ShipmentStatus, ShipmentEvent>> = { SHIPPED: "SHIPPED", DELIVERED: "DELIVERED", DECLINED: "DECLINED" };
const FINAL = new Set<ShipmentStatus>(["DELIVERED", "DECLINED"]);

/**
 * The statuses a shipment at `from` passes through to reach `to`, in order,
 * or "already" when it has reached or passed `to`, or "forbidden" when the
 * lifecycle does not allow it. Pure: the lifecycle's one statement.
 */
export function pathTo(from: ShipmentStatus, to: ReportedStatus): ShipmentStatus[] | "already" | "forbidden" {
  if (from === to) return "already";
  if (from === "DECLINED") return "forbidden";
  if (to === "DECLINED") return from === "CREATED" || from === "CONFIRMED" ? ["DECLINED"] : "forbidden";
  const i = FORWARD.indexOf(from);
  const j = FORWARD.indexOf(to);
  if (j <= i) return "already";
  return FORWARD.slice(i + 1, j + 1);
}

const SELECT_COLUMNS = `id, order_id AS orderId, customer_id AS customerId, total_cents AS totalCents, currency, carrier, status,
  tracking_number AS trackingNumber, decline_reason AS declineReason, created_at AS createdAt, updated_at AS updatedAt,
  confirmed_at AS confirmedAt, shipped_at AS shippedAt, delivered_at AS deliveredAt, declined_at AS declinedAt,
  carrier_work AS carrierWork, carrier_attempts AS carrierAttempts, carrier_last_error AS carrierLastError,
  next_check_at AS nextCheckAt, traceparent`;

function toShipment(r: RowDataPacket): Shipment {
  return {
    id: String(r.id),
    orderId: String(r.orderId),
    customerId: String(r.customerId),
    totalCents: Number(r.totalCents),
    currency: String(r.currency),
    carrier: String(r.carrier),
    status: String(r.status) as ShipmentStatus,
    trackingNumber: r.trackingNumber === null ? null : String(r.trackingNumber),
    declineReason: r.declineReason === null ? null : String(r.declineReason),
    createdAt: r.createdAt as Date,
    updatedAt: r.updatedAt as Date,
    confirmedAt: (r.confirmedAt as Date | null) ?? null,
    shippedAt: (r.shippedAt as Date | null) ?? null,
    deliveredAt: (r.deliveredAt as Date | null) ?? null,
    declinedAt: (r.declinedAt as Date | null) ?? null,
    carrierWork: String(r.carrierWork) as CarrierWork,
    carrierAttempts: Number(r.carrierAttempts),
    carrierLastError: r.carrierLastError === null ? null : String(r.carrierLastError),
    nextCheckAt: (r.nextCheckAt as Date | null) ?? null,
    traceparent: r.traceparent === null ? null : String(r.traceparent),
  };
}

function isDuplicateKey(err: unknown): boolean {
  return (err as { errno?: number } | null)?.errno === 1062;
}

export interface ShipmentStoreDeps {
  pool: Pool;
  logger: Logger;
  carriers: KnownCarriers;
  /** Called after a commit that wrote shipment_event_outbox rows: wakes the delivery relay. */
  onEvent?: () => void;
  /** Called after a commit that gave the carrier worker something to do: wakes it. */
  onCreated?: () => void;
}

export class ShipmentStore {
  constructor(private readonly deps: ShipmentStoreDeps) {}

  async ping(): Promise<void> {
    await this.deps.pool.query("SELECT 1");
  }

  /**
   * The order's shipment, recorded once. A replay with the same order,
   * customer, total and currency returns it (created=false); the carrier of a
   * replay is not compared, as the first request chose it. A carrier this
   * service does not run declines the shipment in the same transaction
   * (UNKNOWN_CARRIER), so the order learns of it like any decline.
   */
  async create(req: CreateShipmentInput): Promise<{ shipment: Shipment; created: boolean }> {
    const carrier = req.carrier === "" ? this.deps.carriers.defaultCarrier : req.carrier;
    const known = this.deps.carriers.isKnown(carrier);
    const run = () =>
      inTransaction(this.deps.pool, async (conn) => {
        const existing = await this.lockShipment(conn, req.orderId);
        if (existing) return { shipment: sameOrder(existing, req), created: false };
        const id = newId();
        await conn.query(
          `INSERT INTO shipments (id, order_id, customer_id, total_cents, currency, carrier, status, created_at, updated_at,
             carrier_work, carrier_attempts, next_check_at, traceparent)
           VALUES (?, ?, ?, ?, ?, ?, 'CREATED', NOW(3), NOW(3), 'HANDOFF', 0, NOW(3), ?)`,
          [id, req.orderId, req.customerId, req.totalCents, req.currency, carrier, req.traceparent ?? null],
        );
        await insertTransition(conn, id, req.orderId, null, "CREATED", SERVICE_SOURCE, null);
        let shipment = (await this.lockShipment(conn, req.orderId))!;
        if (!known) {
          shipment = await this.applyPath(conn, shipment, ["DECLINED"], { status: "DECLINED", declineReason: UNKNOWN_CARRIER }, SERVICE_SOURCE, {
            detail: `carrier ${JSON.stringify(carrier)} is not one this service runs`,
          });
        }
        failpoint("delivery.create.before-commit");
        return { shipment, created: true };
      });
    let result: { shipment: Shipment; created: boolean };
    try {
      result = await retryTransient(run);
    } catch (err) {
      // Two first requests for one order raced: the loser's insert hit the
      // unique order id. The winner's row is committed now; answer it.
      if (!isDuplicateKey(err)) throw err;
      result = await retryTransient(run);
    }
    failpoint("delivery.create.after-commit");
    if (result.created) {
      this.deps.logger.info(
        { orderId: req.orderId, shipmentId: result.shipment.id, carrier: result.shipment.carrier, status: result.shipment.status },
        known ? "shipment created" : "shipment declined at once: its carrier is not one this service runs",
      );
      if (known) this.deps.onCreated?.();
      else this.deps.onEvent?.();
    }
    return result;
  }

  /**
   * Applies a carrier's report. `source` is recorded on the transition(s):
   * "carrier:<name>" for a plugin, "operator:<subject>" for CarrierService.
   * carrierMustTakeRpcReports, when given, refuses shipments whose carrier
   * does not take reports over RPC (FAILED_PRECONDITION).
   */
  async report(
    orderId: string,
    report: CarrierReport,
    source: string,
    opts: { carrierMustTakeRpcReports?: (carrier: string) => boolean } = {},
  ): Promise<{ shipment: Shipment; changed: boolean }> {
    const result = await retryTransient(() =>
      inTransaction(this.deps.pool, async (conn) => {
        const shipment = await this.lockShipment(conn, orderId);
        if (!shipment) throw notFound(`order ${JSON.stringify(orderId)} has no shipment`);
        if (opts.carrierMustTakeRpcReports && !opts.carrierMustTakeRpcReports(shipment.carrier)) {
          throw failedPrecondition(
            `the shipment of order ${JSON.stringify(orderId)} is carried by ${JSON.stringify(shipment.carrier)}, which does not take reports over RPC`,
          );
        }
        const path = pathTo(shipment.status, report.status);
        if (path === "already") return { shipment, changed: false, events: false };
        if (path === "forbidden") {
          throw failedPrecondition(`the shipment of order ${JSON.stringify(orderId)} is ${shipment.status}: it cannot become ${report.status}`);
        }
        const updated = await this.applyPath(conn, shipment, path, report, source, { detail: report.detail });
        failpoint("delivery.report.before-commit");
        return { shipment: updated, changed: true, events: path.some((s) => EVENT_OF[s] !== undefined) };
      }),
    );
    failpoint("delivery.report.after-commit");
    if (result.changed) {
      this.deps.logger.info(
        { orderId, shipmentId: result.shipment.id, carrier: result.shipment.carrier, status: result.shipment.status, source },
        "shipment status changed",
      );
      if (result.events) this.deps.onEvent?.();
    }
    return { shipment: result.shipment, changed: result.changed };
  }

  async get(orderId: string): Promise<Shipment | undefined> {
    const [rows] = await this.deps.pool.query<RowDataPacket[]>(`SELECT ${SELECT_COLUMNS} FROM shipments WHERE order_id = ?`, [orderId]);
    return rows[0] ? toShipment(rows[0]) : undefined;
  }

  async transitions(orderId: string): Promise<Transition[]> {
    const [rows] = await this.deps.pool.query<RowDataPacket[]>(
      `SELECT from_status AS fromStatus, to_status AS toStatus, at, source, detail
         FROM shipment_transitions WHERE order_id = ? ORDER BY id`,
      [orderId],
    );
    return rows.map((r) => ({
      fromStatus: r.fromStatus === null ? null : (String(r.fromStatus) as ShipmentStatus),
      toStatus: String(r.toStatus) as ShipmentStatus,
      at: r.at as Date,
      source: String(r.source),
      detail: r.detail === null ? null : String(r.detail),
    }));
  }

  /** The shipments of these orders (repeats looked up once); orders without one are absent. */
  async batchGet(orderIds: string[]): Promise<Shipment[]> {
    const ids = [...new Set(orderIds)];
    if (ids.length === 0) return [];
    const [rows] = await this.deps.pool.query<RowDataPacket[]>(`SELECT ${SELECT_COLUMNS} FROM shipments WHERE order_id IN (?)`, [ids]);
    return rows.map(toShipment);
  }

  /**
   * Shipments in one status changed in [updatedAfter, updatedBefore), by
   * (updated_at, order_id), served by shipments_status_updated_idx. A
   * shipment that changes again moves out of the status, so a listing never
   * shows it twice.
   */
  async list(q: {
    status: ShipmentStatus;
    updatedAfter?: Date;
    updatedBefore?: Date;
    pageSize: number;
    pageToken?: string;
  }): Promise<{ shipments: Shipment[]; nextPageToken: string }> {
    const window = timeWindow("updated", q.updatedAfter, q.updatedBefore);
    const position = decodeTimeToken(q.pageToken ?? "", ANY_ID);
    const size = q.pageSize <= 0 ? SHIPMENTS_PAGE.default : Math.min(q.pageSize, SHIPMENTS_PAGE.max);
    const where = ["status = ?"];
    const args: unknown[] = [q.status];
    if (window.after) {
      where.push("updated_at >= ?");
      args.push(window.after);
    }
    if (window.before) {
      where.push("updated_at < ?");
      args.push(window.before);
    }
    if (position) {
      where.push("(updated_at > ? OR (updated_at = ? AND order_id > ?))");
      args.push(position.at, position.at, position.id);
    }
    const [rows] = await this.deps.pool.query<RowDataPacket[]>(
      `SELECT ${SELECT_COLUMNS} FROM shipments FORCE INDEX (shipments_status_updated_idx)
        WHERE ${where.join(" AND ")} ORDER BY updated_at, order_id LIMIT ?`,
      [...args, size + 1],
    );
    const shipments = rows.slice(0, size).map(toShipment);
    const last = shipments[shipments.length - 1];
    return { shipments, nextPageToken: rows.length > size && last ? encodeTimeToken(last.updatedAt, last.orderId) : "" };
  }

  /**
   * Puts a shipment its carrier failed on (PARKED) back to work: to the
   * handoff if the carrier never accepted it (no CONFIRMED or later, and no
   * transition by the carrier), else to tracking; due at once, attempts
   * reset. resumed=false for a shipment that was not parked.
   */
  async resume(orderId: string): Promise<{ shipment: Shipment; resumed: boolean }> {
    const result = await retryTransient(() =>
      inTransaction(this.deps.pool, async (conn) => {
        const shipment = await this.lockShipment(conn, orderId);
        if (!shipment) throw notFound(`order ${JSON.stringify(orderId)} has no shipment`);
        if (shipment.carrierWork !== "PARKED") return { shipment, resumed: false };
        const [accepted] = await conn.query<RowDataPacket[]>(
          `SELECT 1 FROM shipment_transitions WHERE order_id = ? AND source = ? LIMIT 1`,
          [orderId, `carrier:${shipment.carrier}`],
        );
        const work: CarrierWork = shipment.status === "CREATED" && accepted.length === 0 ? "HANDOFF" : "TRACKING";
        await conn.query(
          `UPDATE shipments SET carrier_work = ?, carrier_attempts = 0, next_check_at = NOW(3), carrier_lease = NULL
            WHERE order_id = ?`,
          [work, orderId],
        );
        return { shipment: (await this.lockShipment(conn, orderId))!, resumed: true };
      }),
    );
    if (result.resumed) {
      this.deps.logger.info({ orderId, carrier: result.shipment.carrier, carrierWork: result.shipment.carrierWork }, "parked shipment resumed");
      this.deps.onCreated?.();
    }
    return result;
  }

  private async lockShipment(conn: PoolConnection, orderId: string): Promise<Shipment | undefined> {
    const [rows] = await conn.query<RowDataPacket[]>(`SELECT ${SELECT_COLUMNS} FROM shipments WHERE order_id = ? FOR UPDATE`, [orderId]);
    return rows[0] ? toShipment(rows[0]) : undefined;
  }

  /**
   * Moves a locked shipment along `path` (from pathTo): one transition per
   * status, the first as reported and the rest implied, the status's time
   * column, and one event outbox row per status the order learns. Returns
   * the shipment as it now is.
   */
  private async applyPath(
    conn: PoolConnection,
    shipment: Shipment,
    path: ShipmentStatus[],
    report: CarrierReport,
    source: string,
    opts: { detail?: string },
  ): Promise<Shipment> {
    const final = path[path.length - 1] as ReportedStatus;
    let from: ShipmentStatus = shipment.status;
    for (const to of path) {
      const detail = to === final ? (opts.detail ?? report.trackingNumber ?? report.declineReason ?? null) : `implied by ${final}`;
      await insertTransition(conn, shipment.id, shipment.orderId, from, to, source, detail);
      from = to;
    }
    const sets = path.map((s) => `${AT_COLUMN[s as ReportedStatus]} = COALESCE(${AT_COLUMN[s as ReportedStatus]}, NOW(3))`);
    const done = FINAL.has(final);
    await conn.query<ResultSetHeader>(
      `UPDATE shipments SET status = ?, updated_at = NOW(3), ${sets.join(", ")},
              tracking_number = COALESCE(?, tracking_number), decline_reason = COALESCE(?, decline_reason)
              ${done ? ", carrier_work = 'DONE', next_check_at = NULL, carrier_lease = NULL" : ""}
        WHERE order_id = ?`,
      [final, report.trackingNumber ?? null, final === "DECLINED" ? (report.declineReason ?? "DECLINED") : null, shipment.orderId],
    );
    for (const status of path) {
      const event = EVENT_OF[status];
      if (!event) continue;
      await conn.query(
        `INSERT INTO shipment_event_outbox (message_key, order_id, shipment_id, event, carrier, reason, occurred_at,
           status, attempts, next_attempt_at, created_at, traceparent)
         VALUES (?, ?, ?, ?, ?, ?, NOW(3), 'pending', 0, NOW(3), NOW(3), ?)`,
        [
          eventMessageKey(shipment.orderId, event),
          shipment.orderId,
          shipment.id,
          event,
          shipment.carrier,
          event === "DECLINED" ? (report.declineReason ?? "DECLINED") : null,
          shipment.traceparent,
        ],
      );
    }
    return (await this.lockShipment(conn, shipment.orderId))!;
  }
}

async function insertTransition(
  conn: PoolConnection,
  shipmentId: string,
  orderId: string,
  from: ShipmentStatus | null,
  to: ShipmentStatus,
  source: string,
  detail: string | null,
): Promise<void> {
  await conn.query(
    `INSERT INTO shipment_transitions (shipment_id, order_id, from_status, to_status, at, source, detail) VALUES (?, ?, ?, ?, NOW(3), ?, ?)`,
    [shipmentId, orderId, from, to, source.slice(0, 96), detail === null ? null : detail.slice(0, 256)],
  );
}

/** The recorded shipment, if a replay asks for the same order; ALREADY_EXISTS when it names another customer or amount. */
function sameOrder(existing: Shipment, req: CreateShipmentInput): Shipment {
  if (existing.customerId !== req.customerId || existing.totalCents !== req.totalCents || existing.currency !== req.currency) {
    throw alreadyExists(
      `order ${JSON.stringify(req.orderId)} already has a shipment for customer ${JSON.stringify(existing.customerId)}, ` +
        `${existing.totalCents} ${existing.currency}; this request says ${JSON.stringify(req.customerId)}, ${req.totalCents} ${req.currency}`,
    );
  }
  return existing;
}
