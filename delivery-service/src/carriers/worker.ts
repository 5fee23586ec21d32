import { hostname } from "node:os";
import type { ResultSetHeader, RowDataPacket } from "mysql2/promise";
import { errorPauseMs, retryDelayMs } from "@shop/engine/backoff";
import { clip } from "@shop/platform/clip";
import { inTransaction, retryTransient, type Pool } from "@shop/platform/db";
import { DomainError } from "@shop/platform/errors";
import { failpoint } from "@shop/platform/failpoints";
import { newId } from "@shop/platform/ids";
import type { Logger } from "@shop/platform/logger";
import { Counter, Histogram, type Registry } from "@shop/platform/metrics";
import { withChildSpan } from "@shop/platform/tracing";
import type { CarrierReport, CarrierWork, ReportedStatus, Shipment, ShipmentStatus, ShipmentStore } from "../shipments.js";
import type { CarrierPlugin } from "./plugin.js";
import { carrierSettingsProblems, type CarrierRegistry, type CarrierSettings } from "./registry.js";

export type CarrierCall = "accept" | "poll";
export type CallOutcome = "ok" | "error" | "timeout";

/**
 * What the carrier worker records:
 * - carrier_calls_total{carrier,call,outcome}: accept() and poll() calls;
 *   ok (returned, and every report it made was recorded or already known),
 *   error (threw, returned something malformed, or reported what the
 *   lifecycle forbids), timeout (no answer within CARRIER_CALL_TIMEOUT_MS);
 * - carrier_call_seconds{carrier,call}: how long the calls took;
 * - carrier_reports_total{carrier,status,result}: reports the plugins made,
 *   applied (the shipment changed), unchanged (already reached) or refused;
 * - carrier_shipments_parked_total{carrier}: shipments given up on after
 *   CARRIER_MAX_ATTEMPTS failures in a row (until ResumeShipment);
 * - carrier_lease_lost_total{carrier}: settles fenced off because the lease
 *   had passed to another worker (the call outlived CARRIER_LEASE_MS);
 * - carrier_worker_errors_total: claim rounds that failed (database).
 */
export interface CarrierMetrics {
  calls: Counter<"carrier" | "call" | "outcome">;
  callSeconds: Histogram<"carrier" | "call">;
  reports: Counter<"carrier" | "status" | "result">;
  parked: Counter<"carrier">;
  leaseLost: Counter<"carrier">;
  workerErrors: Counter;
}

/** Seconds: a healthy carrier answers in milliseconds; the top buckets are calls running into the timeout (5 s by default). */
const CALL_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** The carrier worker's metrics on `registry` (the delivery service's metrics.ts calls this whether or not the worker runs). */
export function createCarrierMetrics(registry: Registry): CarrierMetrics {
  return {
    calls: new Counter({
      name: "carrier_calls_total",
      help: "Carrier plugin calls by carrier, call (accept, poll) and outcome: ok, error (threw or reported what the lifecycle forbids), timeout.",
      labelNames: ["carrier", "call", "outcome"] as const,
      registers: [registry],
    }),
    callSeconds: new Histogram({
      name: "carrier_call_seconds",
      help: "Time carrier plugin calls took, by carrier and call, up to CARRIER_CALL_TIMEOUT_MS.",
      labelNames: ["carrier", "call"] as const,
      buckets: CALL_BUCKETS,
      registers: [registry],
    }),
    reports: new Counter({
      name: "carrier_reports_total",
      help: "Reports carrier plugins made, by carrier, reported status and result: applied, unchanged (already reached), refused.",
      labelNames: ["carrier", "status", "result"] as const,
      registers: [registry],
    }),
    parked: new Counter({
      name: "carrier_shipments_parked_total",
      help: "Shipments parked after CARRIER_MAX_ATTEMPTS failed carrier calls in a row; they wait for ResumeShipment.",
      labelNames: ["carrier"] as const,
      registers: [registry],
    }),
    leaseLost: new Counter({
      name: "carrier_lease_lost_total",
      help: "Carrier work whose settle was fenced off because its lease had passed to another worker (a call outlived CARRIER_LEASE_MS).",
      labelNames: ["carrier"] as const,
      registers: [registry],
    }),
    workerErrors: new Counter({
      name: "carrier_worker_errors_total",
      help: "Carrier worker claim rounds that failed (database errors); the worker pauses and tries again.",
      registers: [registry],
    }),
  };
}

// ---------------------------------------------------------------------------
// The database side: claim and the fenced settles.

const COLUMNS = `id, order_id, customer_id, total_cents, currency, carrier, status, tracking_number, decline_reason,
  created_at, updated_at, confirmed_at, shipped_at, delivered_at, declined_at, carrier_work, carrier_attempts,
  carrier_last_error, next_check_at, traceparent`;

function toShipment(r: RowDataPacket): Shipment {
  const str = (v: unknown) => (v === null || v === undefined ? null : String(v));
  const date = (v: unknown) => (v === null || v === undefined ? null : (v as Date));
  return {
    id: String(r.id),
    orderId: String(r.order_id),
    customerId: String(r.customer_id),
    totalCents: Number(r.total_cents),
    currency: String(r.currency),
    carrier: String(r.carrier),
    status: String(r.status) as ShipmentStatus,
    trackingNumber: str(r.tracking_number),
    declineReason: str(r.decline_reason),
    createdAt: r.created_at as Date,
    updatedAt: r.updated_at as Date,
    confirmedAt: date(r.confirmed_at),
    shippedAt: date(r.shipped_at),
    deliveredAt: date(r.delivered_at),
    declinedAt: date(r.declined_at),
    carrierWork: String(r.carrier_work) as CarrierWork,
    carrierAttempts: Number(r.carrier_attempts),
    carrierLastError: str(r.carrier_last_error),
    nextCheckAt: date(r.next_check_at),
    traceparent: str(r.traceparent),
  };
}

/**
 * Leases up to `limit` due shipments of these carriers to `token`, in one
 * short READ COMMITTED transaction (the pool's sessions): SKIP LOCKED lets
 * any number of workers claim disjoint shipments without waiting on each
 * other; the lease is next_check_at pushed out by leaseMs, so a worker that
 * dies mid-call needs no sweep (its shipments are simply due again, and the
 * next claim's token fences it off). Oldest due first
 * (shipments_next_check_idx). The row locks never outlive this transaction.
 */
export async function claimDueShipments(
  pool: Pool,
  opts: { carriers: string[]; limit: number; leaseMs: number; token: string },
): Promise<Shipment[]> {
  if (opts.carriers.length === 0 || opts.limit <= 0) return [];
  return inTransaction(pool, async (conn) => {
    const [rows] = await conn.query<RowDataPacket[]>(
      `SELECT ${COLUMNS} FROM shipments
        WHERE next_check_at <= NOW(3) AND carrier IN (?)
        ORDER BY next_check_at LIMIT ? FOR UPDATE SKIP LOCKED`,
      [opts.carriers, opts.limit],
    );
    if (rows.length === 0) return [];
    await conn.query(`UPDATE shipments SET next_check_at = NOW(3) + INTERVAL ? MICROSECOND, carrier_lease = ? WHERE id IN (?)`, [
      opts.leaseMs * 1000,
      opts.token,
      rows.map((r) => String(r.id)),
    ]);
    return rows.map(toShipment);
  });
}

// A shipment that reached DELIVERED or DECLINED is done with its carrier whatever carrier_work says
// (the store sets DONE in the report's transaction; this keeps a settle from undoing it).
const IS_DONE = "(carrier_work = 'DONE' OR status IN ('DELIVERED', 'DECLINED'))";

/**
 * The call went well: TRACKING (unless the shipment is done), attempts 0, no
 * error, due again in nextCheckInMs (null: not until a report or a resume).
 * Fenced on the lease: false when `token` no longer holds it (nothing written).
 * Assignments run left to right, so next_check_at reads carrier_work before it changes.
 */
export async function settleSuccess(pool: Pool, shipmentId: string, token: string, nextCheckInMs: number | null): Promise<boolean> {
  const [res] = await pool.query<ResultSetHeader>(
    `UPDATE shipments
        SET next_check_at = IF(${IS_DONE}, NULL, NOW(3) + INTERVAL ? MICROSECOND),
            carrier_work = IF(${IS_DONE}, 'DONE', 'TRACKING'),
            carrier_attempts = 0, carrier_last_error = NULL, carrier_lease = NULL
      WHERE id = ? AND carrier_lease = ?`,
    [nextCheckInMs === null ? null : nextCheckInMs * 1000, shipmentId, token],
  );
  return res.affectedRows === 1;
}

/**
 * The call failed: the shipment keeps its carrier_work (HANDOFF or
 * TRACKING) with `attempts` and the error, due again in retryInMs, or
 * PARKED with nothing due when retryInMs is null. A shipment done meanwhile
 * (a report over RPC) stays done. Fenced on the lease like settleSuccess.
 */
export async function settleFailure(
  pool: Pool,
  shipmentId: string,
  token: string,
  f: { attempts: number; error: string; retryInMs: number | null },
): Promise<boolean> {
  const [res] = await pool.query<ResultSetHeader>(
    `UPDATE shipments
        SET next_check_at = IF(${IS_DONE} OR ? IS NULL, NULL, NOW(3) + INTERVAL ? MICROSECOND),
            carrier_work = IF(${IS_DONE}, 'DONE', IF(? IS NULL, 'PARKED', carrier_work)),
            carrier_attempts = ?, carrier_last_error = ?, carrier_lease = NULL
      WHERE id = ? AND carrier_lease = ?`,
    [
      f.retryInMs,
      f.retryInMs === null ? null : f.retryInMs * 1000,
      f.retryInMs,
      f.attempts,
      clip(f.error, 1000),
      shipmentId,
      token,
    ],
  );
  return res.affectedRows === 1;
}

/** A due shipment with nothing to call (done, parked, or tracked by a carrier without poll): nothing due any more. */
async function settleIdle(pool: Pool, shipmentId: string, token: string): Promise<boolean> {
  const [res] = await pool.query<ResultSetHeader>(
    `UPDATE shipments SET next_check_at = NULL, carrier_work = IF(${IS_DONE}, 'DONE', carrier_work), carrier_lease = NULL
      WHERE id = ? AND carrier_lease = ?`,
    [shipmentId, token],
  );
  return res.affectedRows === 1;
}

/** Gives claimed shipments back unworked: due now, lease cleared (fenced on the token). */
export async function releaseClaims(pool: Pool, shipmentIds: string[], token: string): Promise<number> {
  if (shipmentIds.length === 0) return 0;
  const [res] = await pool.query<ResultSetHeader>(
    `UPDATE shipments SET next_check_at = NOW(3), carrier_lease = NULL WHERE id IN (?) AND carrier_lease = ?`,
    [shipmentIds, token],
  );
  return res.affectedRows;
}

// ---------------------------------------------------------------------------
// The worker.

export interface CarrierWorkerDeps {
  pool: Pool;
  store: ShipmentStore;
  registry: CarrierRegistry;
  logger: Logger;
  settings: CarrierSettings;
  /** Names this worker in lease tokens and logs. Default: host name and pid. Need not be unique (every claim adds a ULID). */
  workerId?: string;
  metrics?: CarrierMetrics;
  /** Milliseconds now, for the plugins' ctx.now(). Default Date.now. */
  now?: () => number;
}

/** A lease token is workerId + ":" + a 26-character ULID and must fit carrier_lease VARCHAR(64). */
const WORKER_ID_MAX = 64 - 27;
const REPORTED: readonly ReportedStatus[] = ["CONFIRMED", "SHIPPED", "DELIVERED", "DECLINED"];
const FINAL: readonly ShipmentStatus[] = ["DELIVERED", "DECLINED"];

function defaultWorkerId(): string {
  return `${hostname().replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 24)}-${process.pid}`;
}

class CallTimeout extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms (CARRIER_CALL_TIMEOUT_MS)`);
    this.name = "CallTimeout";
  }
}

/** A failure of one shipment's work: own = the carrier's (counts toward parking), else ours (the database). */
interface Failure {
  error: string;
  own: boolean;
}

/** A pause that wake() or stop() ends early. */
class Nap {
  private timer?: NodeJS.Timeout;
  private done!: () => void;
  readonly over: Promise<void>;
  constructor(ms: number) {
    this.over = new Promise((resolve) => {
      this.done = resolve;
      this.timer = setTimeout(resolve, ms);
    });
  }
  end(): void {
    clearTimeout(this.timer);
    this.done();
  }
}

/**
 * Moves shipments along with their carriers. One loop claims due
 * shipments (claimDueShipments) and starts the work of each at once,
 * concurrently: accept() for a shipment in HANDOFF, poll() for one in
 * TRACKING, outside any transaction, bounded by CARRIER_CALL_TIMEOUT_MS
 * and an AbortSignal; then the reports go through ShipmentStore.report
 * (source "carrier:<name>") and the shipment is settled fenced on its lease.
 *
 * A carrier that throws or hangs costs its own shipments only: each
 * shipment's work ends by the call timeout whatever the plugin does, and a
 * carrier with CARRIER_BATCH_SIZE calls in flight is left out of claims
 * until some end (a claim that brings it more gives the surplus back at
 * once), so it never takes the room of the others. The loop does not wait
 * for a batch to finish before claiming the next.
 *
 * Any number of workers (in this or other processes) may share a database:
 * the lease makes one worker at a time call a carrier for one shipment.
 */
export class CarrierWorker {
  readonly workerId: string;
  private readonly pool: Pool;
  private readonly store: ShipmentStore;
  private readonly registry: CarrierRegistry;
  private readonly settings: CarrierSettings;
  private readonly metrics?: CarrierMetrics;
  private readonly log: Logger;
  private readonly now: () => number;
  private stopping = false;
  private running?: Promise<void>;
  private stopped?: Promise<void>;
  private nap?: Nap;
  private wakePending = false;
  /** The last claim left a carrier out for having too many calls in flight: a call's end wakes the loop. */
  private capacityBlocked = false;
  private readonly inFlightByCarrier = new Map<string, number>();
  /** Shipments whose work runs in this process (by id): a shipment reclaimed while still here is left alone. */
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(deps: CarrierWorkerDeps) {
    const problems = carrierSettingsProblems(deps.settings);
    if (problems.length > 0) throw new Error(`invalid carrier settings: ${problems.join("; ")}`);
    this.pool = deps.pool;
    this.store = deps.store;
    this.registry = deps.registry;
    this.settings = { ...deps.settings };
    this.metrics = deps.metrics;
    this.now = deps.now ?? Date.now;
    this.workerId = (deps.workerId ?? defaultWorkerId()).slice(0, WORKER_ID_MAX);
    this.log = deps.logger.child({ component: "carrier-worker", workerId: this.workerId });
    // Present from the start, so rate() and alerts see 0 rather than no series.
    for (const carrier of this.registry.names()) {
      for (const call of ["accept", "poll"]) for (const outcome of ["ok", "error", "timeout"]) this.metrics?.calls.inc({ carrier, call, outcome }, 0);
      this.metrics?.parked.inc({ carrier }, 0);
    }
  }

  start(): void {
    if (this.running || this.stopping) return;
    const { callTimeoutMs, maxAttempts, retryBaseMs, retryMaxMs, batchSize, pollIntervalMs, leaseMs } = this.settings;
    this.log.info(
      { carriers: this.registry.names(), callTimeoutMs, maxAttempts, retryBaseMs, retryMaxMs, batchSize, pollIntervalMs, leaseMs },
      "carrier worker started",
    );
    this.running = this.loop();
  }

  /** Claims at once (a shipment was just created or resumed) instead of after the poll interval. A wake is never lost. */
  wake(): void {
    if (this.stopping) return;
    this.wakePending = true;
    this.nap?.end();
  }

  /** Stops claiming and waits for the work in flight (each ends by the call timeout) to settle. Idempotent. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.stopping = true;
      this.nap?.end();
      await this.running;
      await Promise.allSettled([...this.inFlight.values()]);
      if (this.running) this.log.info("carrier worker stopped");
    })();
    return this.stopped;
  }

  private async pause(ms: number): Promise<void> {
    if (this.wakePending) {
      this.wakePending = false;
      return;
    }
    const nap = new Nap(ms);
    this.nap = nap;
    await nap.over;
    if (this.nap === nap) this.nap = undefined;
  }

  private async loop(): Promise<void> {
    let consecutiveErrors = 0;
    while (!this.stopping) {
      let pauseMs = this.settings.pollIntervalMs;
      try {
        const claimed = await this.claimRound();
        consecutiveErrors = 0;
        // A full batch means a backlog: go again at once.
        if (claimed >= this.settings.batchSize) pauseMs = 0;
      } catch (err) {
        consecutiveErrors++;
        pauseMs = errorPauseMs(consecutiveErrors, {
          baseMs: Math.min(this.settings.retryBaseMs, this.settings.pollIntervalMs),
          maxMs: Math.max(this.settings.pollIntervalMs, 5_000),
        });
        this.metrics?.workerErrors.inc();
        this.log.error({ err, consecutiveErrors, retryInMs: pauseMs }, "carrier worker could not claim shipments; retrying");
      }
      if (pauseMs > 0 && !this.stopping) await this.pause(pauseMs);
    }
  }

  /** Claims due shipments of the carriers with room and starts their work; returns how many were claimed. */
  private async claimRound(): Promise<number> {
    const all = this.registry.names();
    const carriers = all.filter((c) => (this.inFlightByCarrier.get(c) ?? 0) < this.settings.batchSize);
    this.capacityBlocked = carriers.length < all.length;
    if (carriers.length === 0) return 0;
    // This claim's SELECT goes out after now, so it covers every wake so far.
    this.wakePending = false;
    const token = `${this.workerId}:${newId()}`;
    const { batchSize, leaseMs } = this.settings;
    // No more than the carriers with room can take, so a carrier with one free slot does not bring back a whole batch to give back.
    const limit = Math.min(batchSize, carriers.reduce((sum, c) => sum + batchSize - (this.inFlightByCarrier.get(c) ?? 0), 0));
    const shipments = await retryTransient(() => claimDueShipments(this.pool, { carriers, limit, leaseMs, token }));
    if (shipments.length === 0) return 0;
    failpoint("carrier.after-claim");
    // One claim may bring a carrier more shipments than it has room for; those go back at once, due as they were.
    const room = new Map(carriers.map((c) => [c, this.settings.batchSize - (this.inFlightByCarrier.get(c) ?? 0)]));
    const surplus: Shipment[] = [];
    for (const s of shipments) {
      const left = room.get(s.carrier) ?? 0;
      if (left <= 0) {
        surplus.push(s);
        continue;
      }
      room.set(s.carrier, left - 1);
      this.dispatch(s, token);
    }
    if (surplus.length > 0) {
      this.capacityBlocked = true; // the end of one of its calls brings the surplus back
      await this.release(surplus, token);
    }
    return shipments.length;
  }

  /** Gives claimed shipments back unworked, due now; on a database error they come back after their lease. */
  private async release(shipments: Shipment[], token: string): Promise<void> {
    try {
      await retryTransient(() => releaseClaims(this.pool, shipments.map((s) => s.id), token));
    } catch (err) {
      this.log.error({ err, orderIds: shipments.map((s) => s.orderId) }, "could not give back claimed shipments; they are claimed again after their lease");
    }
  }

  private dispatch(s: Shipment, token: string): void {
    if (this.inFlight.has(s.id)) {
      // Its lease ran out while its work is still here (a settle stuck on the database):
      // calling the carrier again now would overlap; the row comes back after this lease.
      this.log.warn({ carrier: s.carrier, orderId: s.orderId }, "shipment claimed again while its carrier work still runs here; left for later");
      return;
    }
    this.inFlightByCarrier.set(s.carrier, (this.inFlightByCarrier.get(s.carrier) ?? 0) + 1);
    const work = this.work(s, token)
      .catch((err: unknown) => {
        this.log.error({ err, carrier: s.carrier, orderId: s.orderId }, "carrier work failed unexpectedly; the shipment is claimed again after its lease");
      })
      .finally(() => {
        this.inFlight.delete(s.id);
        this.inFlightByCarrier.set(s.carrier, (this.inFlightByCarrier.get(s.carrier) ?? 1) - 1);
        if (this.capacityBlocked) this.wake();
      });
    this.inFlight.set(s.id, work);
  }

  /** One shipment: call its plugin, record the reports, settle. Never throws for the carrier's faults. */
  private async work(s: Shipment, token: string): Promise<void> {
    const plugin = this.registry.get(s.carrier);
    const log = this.log.child({ carrier: s.carrier, orderId: s.orderId });
    if (!plugin || s.carrierWork === "DONE" || s.carrierWork === "PARKED" || FINAL.includes(s.status)) {
      // Nothing to ask (claims only name carriers run here; the rest is data written by hand or an older version).
      await this.settle(log, s, token, "idle", () => settleIdle(this.pool, s.id, token));
      return;
    }
    const call: CarrierCall = s.carrierWork === "HANDOFF" ? "accept" : "poll";
    if (call === "poll" && !plugin.poll) {
      // TRACKING with a carrier that reports by RPC only: nothing to do until it does.
      await this.settle(log, s, token, "idle", () => settleIdle(this.pool, s.id, token));
      return;
    }
    await withChildSpan(`carrier.${call}`, s.traceparent, async () => {
      const callLog = log.child({ call });
      const answer = await this.callPlugin(plugin, call, s, callLog);
      let failure: Failure | undefined;
      let outcome: CallOutcome;
      let last: Shipment | undefined;
      if (answer.kind === "reports") {
        const applied = await this.applyReports(plugin, s, answer.reports, callLog);
        failure = applied.failure;
        last = applied.last;
        outcome = failure?.own ? "error" : "ok";
      } else {
        failure = { error: answer.error, own: true };
        outcome = answer.kind;
      }
      this.metrics?.calls.inc({ carrier: s.carrier, call, outcome });
      failpoint("carrier.before-settle");
      if (!failure) {
        if (last?.carrierWork === "DONE") return; // the store settled it with the final report (and cleared the lease)
        const interval = plugin.pollIntervalMs ?? this.settings.pollIntervalMs;
        const hinted = plugin.poll ? plugin.nextPollInMs?.(last ?? s, new Date()) : undefined;
        const next = plugin.poll ? (hinted !== undefined && Number.isFinite(hinted) ? Math.max(1, Math.ceil(hinted)) : interval) : null;
        await this.settle(callLog, s, token, "success", () => settleSuccess(this.pool, s.id, token, next));
        callLog.debug({ nextCheckInMs: next }, call === "accept" ? "carrier accepted the shipment" : "carrier polled");
        return;
      }
      await this.settleFailed(callLog, s, token, failure);
    });
  }

  /** Calls accept or poll with the timeout; never throws. */
  private async callPlugin(
    plugin: CarrierPlugin,
    call: CarrierCall,
    s: Shipment,
    log: Logger,
  ): Promise<{ kind: "reports"; reports: CarrierReport[] } | { kind: "error" | "timeout"; error: string }> {
    const { callTimeoutMs } = this.settings;
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new CallTimeout(callTimeoutMs);
        controller.abort(err);
        reject(err);
      }, callTimeoutMs);
    });
    const ctx = { signal: controller.signal, logger: log, now: () => new Date(this.now()) };
    const started = performance.now();
    try {
      // The plugin's promise is raced, not awaited: one that ignores its signal is left behind at the timeout.
      const result = await Promise.race([Promise.resolve().then(() => (call === "accept" ? plugin.accept(s, ctx) : plugin.poll!(s, ctx))), timedOut]);
      const problem = malformed(result);
      if (problem) return { kind: "error", error: `${call} returned ${problem}` };
      return { kind: "reports", reports: result };
    } catch (err) {
      if (err instanceof CallTimeout) return { kind: "timeout", error: `${call} timed out: ${err.message}` };
      return { kind: "error", error: `${call} failed: ${err instanceof Error ? err.message : String(err)}` };
    } finally {
      clearTimeout(timer);
      this.metrics?.callSeconds.observe({ carrier: s.carrier, call }, (performance.now() - started) / 1000);
    }
  }

  /**
   * Records the reports in order; stops at the first that fails. A refusal
   * (the lifecycle forbids it) is the carrier's fault; a database error is
   * not, and costs no attempt.
   */
  private async applyReports(
    plugin: CarrierPlugin,
    s: Shipment,
    reports: CarrierReport[],
    log: Logger,
  ): Promise<{ failure?: Failure; last?: Shipment }> {
    let last: Shipment | undefined;
    for (const report of reports) {
      try {
        const res = await this.store.report(s.orderId, report, `carrier:${plugin.name}`);
        last = res.shipment;
        this.metrics?.reports.inc({ carrier: plugin.name, status: report.status, result: res.changed ? "applied" : "unchanged" });
      } catch (err) {
        if (err instanceof DomainError) {
          this.metrics?.reports.inc({ carrier: plugin.name, status: report.status, result: "refused" });
          return { failure: { own: true, error: `reported ${report.status}, refused: ${err.message}` }, last };
        }
        log.error({ err, status: report.status }, "could not record a carrier's report; the call is made again later");
        return { failure: { own: false, error: `could not record the report ${report.status}: ${(err as Error).message}` }, last };
      }
    }
    return { last };
  }

  private async settleFailed(log: Logger, s: Shipment, token: string, failure: Failure): Promise<void> {
    const { maxAttempts, retryBaseMs, retryMaxMs } = this.settings;
    // Only the carrier's own failures count toward parking; ours (the database) are retried as they are.
    const attempts = failure.own ? s.carrierAttempts + 1 : s.carrierAttempts;
    const parks = failure.own && attempts >= maxAttempts;
    const retryInMs = parks ? null : retryDelayMs(Math.max(attempts, 1), { baseMs: retryBaseMs, maxMs: retryMaxMs });
    const error = failure.own && parks ? `gave up after ${attempts} attempts: ${failure.error}` : failure.error;
    const settled = await this.settle(log, s, token, parks ? "park" : "retry", () => settleFailure(this.pool, s.id, token, { attempts, error, retryInMs }));
    if (!settled) return;
    if (parks) {
      this.metrics?.parked.inc({ carrier: s.carrier });
      log.error({ attempts, error: failure.error }, "carrier failed too often in a row; shipment parked until ResumeShipment");
    } else if (failure.own) {
      log.warn({ attempts, maxAttempts, retryInMs, error: failure.error }, "carrier call failed; retrying later");
    }
  }

  /**
   * Runs a fenced settle; true when it wrote. A settle that finds its lease
   * gone is logged and counted, unless the shipment was finished meanwhile
   * (a final report clears the lease). A database error is logged: the
   * shipment is claimed again when its lease runs out.
   */
  private async settle(log: Logger, s: Shipment, token: string, what: string, write: () => Promise<boolean>): Promise<boolean> {
    try {
      if (await retryTransient(write)) return true;
      const [rows] = await this.pool.query<RowDataPacket[]>(`SELECT carrier_work, carrier_lease FROM shipments WHERE id = ?`, [s.id]);
      if (rows[0] && String(rows[0].carrier_work) === "DONE") return false;
      this.metrics?.leaseLost.inc({ carrier: s.carrier });
      log.warn({ what, token }, "carrier work outlived its lease; another worker holds the shipment now, so nothing was written");
      return false;
    } catch (err) {
      log.error({ err, what }, "could not settle carrier work; the shipment is claimed again after its lease");
      return false;
    }
  }
}

/** Why a plugin's answer is not a list of reports, or undefined when it is one. */
function malformed(result: unknown): string | undefined {
  if (!Array.isArray(result)) return `${typeof result} instead of an array of reports`;
  for (const r of result as unknown[]) {
    const report = r as Partial<CarrierReport> | null;
    if (typeof report !== "object" || report === null) return "a report that is not an object";
    if (!REPORTED.includes(report.status as ReportedStatus)) return `a report with status ${clip(JSON.stringify(report.status) ?? "undefined")}`;
    if (report.trackingNumber !== undefined && (typeof report.trackingNumber !== "string" || report.trackingNumber.length > 64)) {
      return "a tracking number that is not a string of at most 64 characters";
    }
    if (report.declineReason !== undefined && (typeof report.declineReason !== "string" || report.declineReason.length > 64)) {
      return "a decline reason that is not a string of at most 64 characters";
    }
    if (report.detail !== undefined && typeof report.detail !== "string") return "a detail that is not a string";
  }
  return undefined;
}
