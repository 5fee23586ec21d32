import { hostname } from "node:os";
import type { envReader } from "@shop/platform/config";
import { retryTransient, type Pool } from "@shop/platform/db";
import { failpoint } from "@shop/platform/failpoints";
import { newId } from "@shop/platform/ids";
import type { Logger } from "@shop/platform/logger";
import type { Counter, Histogram } from "@shop/platform/metrics";
import { ack } from "./ack.js";
import { errorPauseMs, retryDelayMs } from "./backoff.js";
import { claimDue } from "./claim.js";
import { codeName } from "./classify.js";
import { deliverRows, type CallFailure, type Delivered, type Failed, type Outcome } from "./deliver.js";
import { markDead, scheduleRetries, type Death } from "./fail.js";
import type { Flow, FlowDefinition } from "./flow.js";

/** What a relay records; optional so tests and tools can run a relay without it. */
export interface DeliveryMetrics {
  /** Rows settled, by result: delivered (acked), retry, dead, stale (the lease was lost and the write fenced off). */
  deliveries: Pick<Counter<"result">, "inc">;
  /** Calls that failed as a whole, by status name and cause (see FailureCause). */
  callFailures: Pick<Counter<"code" | "cause">, "inc">;
  /** Rows of batches that failed as a whole and were split to find a poison row. */
  splits: Pick<Counter, "inc">;
  /** Seconds from the outbox row's commit (created_at) to the ack of its delivery. */
  commitToAck: Pick<Histogram, "observe">;
}

export interface RelayConfig {
  /**
   * Rows per claim, sent as one batch call. Default 250: batching is the main
   * throughput lever (claim+ack ~0.65k rows/s at 1, ~25k/s at 100), and the
   * voucher flow's backlog drain measured ~5.8k vouchers/s at 100 against
   * ~6.6–7.8k/s at 250 (500 gained nothing more). Only a backlog fills a
   * batch; steady traffic sends what is due. The voucher service accepts at
   * most 1000 items per call.
   */
  batchSize: number;
  /**
   * Claim loops per relay, each with at most one call in flight. Default 4:
   * enough to overlap the network call of one batch with the claim and ack of
   * others; the pool needs at least this many connections.
   */
  concurrency: number;
  /**
   * How long a claim owns its rows before any relay may take them again.
   * Default 30000 ms. Must exceed twice callTimeoutMs (a batch call refused
   * as a whole is followed by per-row calls), or rows would be reclaimed
   * while still being delivered; too long only delays recovery from a relay
   * that died mid-call. Splitting a batch that failed as a whole uses what is
   * left, one call timeout per level, and stops a call timeout before the
   * lease ends (see claimAndDeliver).
   */
  leaseMs: number;
  /**
   * Pause after a claim found fewer rows than batchSize. Default 1000 ms: a
   * safety net for rows written by other processes; rows written in this
   * process call wake() and go at once.
   */
  pollIntervalMs: number;
  /** Deadline of each call to the receiver. Default 5000 ms: grpc-js has none, and a hung call holds a lease. */
  callTimeoutMs: number;
  /**
   * Ceiling of the first retry's delay (full jitter, doubling per attempt).
   * Default 500 ms: a blip is retried almost at once.
   */
  retryBaseMs: number;
  /**
   * Longest delay between two attempts of one row. Default 300000 ms (5 min):
   * bounds the delivery lag after a long outage of the receiver without
   * hammering it while it is down.
   */
  retryMaxMs: number;
  /**
   * Attempts (the row's attempts column: every claim counts) from which a
   * row whose attempt fails on its own account is parked dead, with
   * last_error "gave up after N attempts: <that error>". Default 20: with the
   * default backoff about half an hour of retrying, long after the lagging
   * alert (5 min) has called a person, after which a poison row stops being
   * retried forever. Only a failure that is the row's own parks it (see
   * Failed.ownFault): an outage, a wrong token or scope, or a batch failing as
   * a whole for everyone never does, however many attempts the row has had.
   */
  maxAttempts: number;
  /**
   * The largest request the receiver accepts, in bytes (the voucher service's
   * VOUCHER_MAX_REQUEST_BYTES, default 1 MiB). The relay refuses to start if a
   * batch of batchSize rows could exceed it (flow.largestRequestBytes).
   */
  maxRequestBytes: number;
}

export const RELAY_DEFAULTS: Readonly<RelayConfig> = {
  batchSize: 250,
  concurrency: 4,
  leaseMs: 30_000,
  pollIntervalMs: 1_000,
  callTimeoutMs: 5_000,
  retryBaseMs: 500,
  retryMaxMs: 300_000,
  maxAttempts: 20,
  maxRequestBytes: 1024 * 1024,
};

/** What the request-size check needs of a flow. */
export interface RequestLimits {
  def: Pick<FlowDefinition<never, never>, "largestRequestBytes" | "receiverLimitSetting"> & { deliver: { batchMethod: string } };
}

/**
 * Problems with a config (empty when it is usable); the rules that single
 * ranges cannot express. Settings are named with `prefix` (RELAY_ for the
 * voucher flow), so the message names what the operator sets.
 */
export function relayConfigProblems(c: RelayConfig, flow?: RequestLimits, prefix = "RELAY_"): string[] {
  const problems: string[] = [];
  if (c.leaseMs <= 2 * c.callTimeoutMs) {
    problems.push(
      `${prefix}LEASE_MS=${c.leaseMs} must exceed twice ${prefix}CALL_TIMEOUT_MS=${c.callTimeoutMs} ` +
        "(a batch call and the per-row fallback after it must both finish within the lease)",
    );
  }
  if (c.retryMaxMs < c.retryBaseMs) {
    problems.push(`${prefix}RETRY_MAX_MS=${c.retryMaxMs} must not be below ${prefix}RETRY_BASE_MS=${c.retryBaseMs}`);
  }
  const largest = flow?.def.largestRequestBytes;
  if (largest) {
    const bytes = largest(c.batchSize);
    if (bytes > c.maxRequestBytes) {
      const fits = Math.floor(c.maxRequestBytes / largest(1));
      const receiver = flow.def.receiverLimitSetting ? ` (${flow.def.receiverLimitSetting})` : "";
      problems.push(
        `${prefix}BATCH_SIZE=${c.batchSize} makes ${flow.def.deliver.batchMethod} requests of up to ${bytes} bytes, more than ` +
          `${prefix}MAX_REQUEST_BYTES=${c.maxRequestBytes}${receiver} accepts: ` +
          `lower ${prefix}BATCH_SIZE to at most ${fits}`,
      );
    }
  }
  return problems;
}

/**
 * Reads a relay's settings, named `prefix` + BATCH_SIZE, CONCURRENCY, LEASE_MS,
 * POLL_INTERVAL_MS, CALL_TIMEOUT_MS, RETRY_BASE_MS, RETRY_MAX_MS, MAX_ATTEMPTS,
 * MAX_REQUEST_BYTES (RELAY_* for the voucher flow). Problems are recorded on
 * the reader; the caller calls env.finish() once it has read all its
 * settings, so one error lists them all.
 */
export function relayConfigFromEnv(
  env: ReturnType<typeof envReader>,
  opts: { prefix?: string; defaults?: Readonly<RelayConfig>; flow?: RequestLimits } = {},
): RelayConfig {
  const d = opts.defaults ?? RELAY_DEFAULTS;
  const p = opts.prefix ?? "RELAY_";
  const config: RelayConfig = {
    batchSize: env.int(`${p}BATCH_SIZE`, d.batchSize, { min: 1, max: 1000 }),
    concurrency: env.int(`${p}CONCURRENCY`, d.concurrency, { min: 1, max: 64 }),
    leaseMs: env.int(`${p}LEASE_MS`, d.leaseMs, { min: 100, max: 3_600_000 }),
    pollIntervalMs: env.int(`${p}POLL_INTERVAL_MS`, d.pollIntervalMs, { min: 1, max: 3_600_000 }),
    callTimeoutMs: env.int(`${p}CALL_TIMEOUT_MS`, d.callTimeoutMs, { min: 10, max: 600_000 }),
    retryBaseMs: env.int(`${p}RETRY_BASE_MS`, d.retryBaseMs, { min: 1, max: 3_600_000 }),
    retryMaxMs: env.int(`${p}RETRY_MAX_MS`, d.retryMaxMs, { min: 1, max: 86_400_000 }),
    maxAttempts: env.int(`${p}MAX_ATTEMPTS`, d.maxAttempts, { min: 1, max: 1_000_000 }),
    // The voucher service's own range for VOUCHER_MAX_REQUEST_BYTES.
    maxRequestBytes: env.int(`${p}MAX_REQUEST_BYTES`, d.maxRequestBytes, { min: 1024, max: 16 * 1024 * 1024 }),
  };
  for (const problem of relayConfigProblems(config, opts.flow, p)) env.problem(problem);
  return config;
}

export interface RelayDeps<Row extends object, Result> {
  pool: Pool;
  flow: Flow<Row, Result>;
  logger: Logger;
  config: RelayConfig;
  /**
   * Names the relay in log lines (component, "<component> started"), its
   * failpoints (`<component>.after-claim`, `<component>.before-ack`) and its
   * delivery span (`<component>.deliver`). Default "relay", the voucher flow's.
   */
  component?: string;
  /**
   * Names this relay in claim tokens and logs. Default: host name and pid.
   * Need not be unique: every claim token adds a fresh ULID.
   */
  relayId?: string;
  /** Delivery counters and the commit → ack latency. Default: none recorded. */
  metrics?: DeliveryMetrics;
  /** The prefix of the settings named in config problems. Default "RELAY_". */
  settingsPrefix?: string;
  /** Milliseconds now, for the lease budget of one claim's calls. Default Date.now. */
  now?: () => number;
}

/** A claim token is relayId + ":" + a 26-character ULID and must fit locked_by VARCHAR(64). */
const RELAY_ID_MAX = 64 - 27;

function defaultRelayId(): string {
  return `${hostname().replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 24)}-${process.pid}`;
}

/** A pause that wake() or stop() can end early. */
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
 * Drains one flow's outbox into its receiver: `concurrency` loops each claim
 * a batch (SKIP LOCKED, leased to a unique claim token), deliver it with one
 * call outside any transaction, then ack or fail each row fenced on that
 * token. Any number of relays, in-process or standalone, may share one
 * outbox; the receiver's idempotency per key makes a redelivery after a lost
 * ack harmless.
 */
export class Relay<Row extends object, Result> {
  private readonly pool: Pool;
  private readonly flow: Flow<Row, Result>;
  private readonly component: string;
  private readonly log: Logger;
  private readonly config: RelayConfig;
  private readonly metrics?: DeliveryMetrics;
  private readonly now: () => number;
  readonly relayId: string;
  private stopping = false;
  private running?: Promise<void>;
  private stopped?: Promise<void>;
  private readonly napping = new Set<Nap>();
  private wakePending = false;
  /** Loops between claim and settle: a wake() while one is busy waits for it rather than starting a second small round. */
  private inRound = 0;
  /** A wake() since the last claim began has already arranged a claim to come; further wakes ride on it. */
  private claimArranged = false;

  constructor(deps: RelayDeps<Row, Result>) {
    const problems = relayConfigProblems(deps.config, deps.flow, deps.settingsPrefix);
    if (problems.length > 0) throw new Error(`invalid relay config: ${problems.join("; ")}`);
    this.pool = deps.pool;
    this.flow = deps.flow;
    this.component = deps.component ?? "relay";
    this.config = { ...deps.config };
    this.relayId = (deps.relayId ?? defaultRelayId()).slice(0, RELAY_ID_MAX);
    this.metrics = deps.metrics;
    this.now = deps.now ?? Date.now;
    this.log = deps.logger.child({ component: this.component, relayId: this.relayId });
  }

  start(): void {
    if (this.running || this.stopping) return;
    this.log.info({ ...this.config }, `${this.component} started`);
    const loops = Array.from({ length: this.config.concurrency }, (_, i) => this.loop(i));
    this.running = Promise.all(loops).then(() => undefined);
  }

  /**
   * Ends the pause of one idle loop so a row just committed goes now, not
   * after the poll interval. If a loop is busy delivering, the next one to
   * finish skips its pause instead, so a wake is never lost.
   *
   * Wakes coalesce: the caller has committed before calling, so any claim
   * that starts after this call sees the row. While a claim is already
   * arranged, or a round is in flight (whose loop goes again at once), a
   * wake adds nothing. Under steady load one loop then takes every row
   * committed during the previous round in one batch, instead of each
   * commit starting a round of one row with its own claim, call and ack
   * (4 loops of 1-row rounds cost ~15 round trips per order). A backlog
   * still brings in every loop (full batches wake an idle one).
   */
  wake(): void {
    if (this.stopping || this.claimArranged) return;
    this.claimArranged = true;
    if (this.inRound > 0 || !this.wakeOneNapper()) this.wakePending = true;
  }

  /** Stops claiming, lets calls in flight finish and ack, then resolves. Idempotent. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.stopping = true;
      for (const nap of this.napping) nap.end();
      this.napping.clear();
      await this.running;
      if (this.running) this.log.info(`${this.component} stopped`);
    })();
    return this.stopped;
  }

  private wakeOneNapper(): boolean {
    const nap = this.napping.values().next().value;
    if (!nap) return false;
    this.napping.delete(nap);
    nap.end();
    return true;
  }

  private async pause(ms: number): Promise<void> {
    if (this.wakePending) {
      this.wakePending = false;
      return;
    }
    const nap = new Nap(ms);
    this.napping.add(nap);
    await nap.over;
    this.napping.delete(nap);
  }

  private async loop(worker: number): Promise<void> {
    let consecutiveErrors = 0;
    while (!this.stopping) {
      let pauseMs: number;
      try {
        const claimed = await this.claimDeliverSettle(worker);
        consecutiveErrors = 0;
        if (claimed >= this.config.batchSize) {
          // A full batch means a backlog: go again at once, and bring an idle loop in to share it.
          this.wakeOneNapper();
          pauseMs = 0;
        } else {
          pauseMs = this.config.pollIntervalMs;
        }
      } catch (err) {
        consecutiveErrors++;
        pauseMs = errorPauseMs(consecutiveErrors, {
          baseMs: Math.min(this.config.retryBaseMs, this.config.pollIntervalMs),
          maxMs: Math.max(this.config.pollIntervalMs, 5_000),
        });
        this.log.error({ err, worker, consecutiveErrors, retryInMs: pauseMs }, `${this.component} loop failed; retrying`);
      }
      if (pauseMs > 0 && !this.stopping) await this.pause(pauseMs);
    }
  }

  /** One round: returns how many rows were claimed. Throws only on database errors. */
  private async claimDeliverSettle(worker: number): Promise<number> {
    const token = `${this.relayId}:${newId()}`;
    // This claim's SELECT goes out after now, so it covers every wake so far.
    this.claimArranged = false;
    this.inRound++;
    try {
      return await this.claimAndDeliver(worker, token);
    } finally {
      this.inRound--;
    }
  }

  private async claimAndDeliver(worker: number, token: string): Promise<number> {
    const { batchSize, leaseMs, callTimeoutMs } = this.config;
    // Taken before the claim, so the budget below ends before the lease the database starts a little later.
    const leaseStart = this.now();
    const rows = await retryTransient(() => claimDue(this.pool, this.flow, { limit: batchSize, leaseMs, token }));
    if (rows.length === 0) return 0;
    failpoint(`${this.component}.after-claim`);
    const started = Date.now();
    const failures: CallFailure[] = [];
    const outcomes = await deliverRows(this.flow, rows, {
      spanName: `${this.component}.deliver`,
      callTimeoutMs,
      // Calls end a call timeout before the lease does (less if the lease is shorter), leaving that for the settle.
      callsEndBy: leaseStart + leaseMs - Math.min(callTimeoutMs, leaseMs - 2 * callTimeoutMs),
      now: this.now,
      onCallFailure: (f) => {
        failures.push(f);
        this.metrics?.callFailures.inc({ code: codeLabel(f.code), cause: f.cause });
      },
      onSplit: (n) => this.metrics?.splits.inc(n),
    });
    this.reportCallFailures({ worker, token }, failures, rows.length);
    failpoint(`${this.component}.before-ack`);
    await this.settle(worker, token, outcomes, started);
    return rows.length;
  }

  /**
   * A relay its receiver refuses (wrong token, missing scope, wrong URL)
   * delivers nothing at all: an error line per round naming the code and what
   * to check (the flow's text), never the token. Its rows stay pending with backoff.
   */
  private reportCallFailures(ctx: object, failures: CallFailure[], rows: number): void {
    const misconfigured = failures.filter((f) => f.cause === "misconfigured");
    if (misconfigured.length > 0) {
      const f = misconfigured[0]!;
      this.log.error(
        { ...ctx, code: codeName(f.code), method: f.method, error: clip(f.message), rows },
        this.flow.texts.misconfigured(f.code),
      );
    }
  }

  /**
   * Records every outcome; each kind is written even if another failed, and
   * the first database error is rethrown for the loop to pause on.
   */
  private async settle(worker: number, token: string, outcomes: Array<Outcome<Row, Result>>, claimedAt: number): Promise<void> {
    const callMs = Date.now() - claimedAt;
    const keys = this.keys;
    const texts = this.flow.texts;
    const delivered = outcomes.filter((o): o is Delivered<Row, Result> => o.kind === "delivered");
    // A row that failed on its own once more at maxAttempts is parked like a refused one.
    const givesUp = (o: Failed<Row>) => o.kind === "retryable" && o.ownFault && o.row.attempts >= this.config.maxAttempts;
    const retryable = outcomes.filter((o): o is Failed<Row> => o.kind === "retryable" && !givesUp(o));
    const dead = outcomes
      .filter((o): o is Failed<Row> => o.kind === "permanent" || (o.kind === "retryable" && givesUp(o)))
      .map((o) => ({ outcome: o, error: o.kind === "permanent" ? o.error : `gave up after ${o.row.attempts} attempts: ${o.error}` }));
    const errors: unknown[] = [];
    const ctx = { worker, token };

    if (delivered.length > 0) {
      try {
        const stale = await retryTransient(() =>
          ack(this.pool, this.flow, token, delivered.map((o) => ({ id: o.row.id, values: this.flow.resultValues(o.result) }))),
        );
        const created = delivered.filter((o) => o.created).length;
        this.log.debug(
          {
            ...ctx,
            delivered: delivered.length - stale.length,
            created,
            replayed: delivered.length - created,
            callMs,
            [keys]: delivered.map((o) => this.keyOf(o.row)),
          },
          texts.delivered,
        );
        this.recordDelivered(delivered, stale, claimedAt);
        this.warnStale(ctx, "ack", stale, delivered);
      } catch (err) {
        errors.push(err);
        this.log.error(
          { ...ctx, err, rows: delivered.length, [keys]: delivered.map((o) => this.keyOf(o.row)) },
          texts.ackFailed,
        );
      }
    }

    if (retryable.length > 0) {
      const retries = retryable.map((o) => ({
        id: o.row.id,
        delayMs: retryDelayMs(o.row.attempts, { baseMs: this.config.retryBaseMs, maxMs: this.config.retryMaxMs }),
        error: o.error,
      }));
      try {
        const stale = await retryTransient(() => scheduleRetries(this.pool, this.flow, token, retries));
        const delays = retries.map((r) => r.delayMs);
        this.log.info(
          {
            ...ctx,
            rows: retries.length - stale.length,
            [keys]: retryable.map((o) => this.keyOf(o.row)),
            maxAttempts: Math.max(...retryable.map((o) => o.row.attempts)),
            retryInMs: { min: Math.min(...delays), max: Math.max(...delays) },
            errors: [...new Set(retryable.map((o) => o.error))].slice(0, 3),
            callMs,
          },
          texts.retry,
        );
        this.metrics?.deliveries.inc({ result: "retry" }, retries.length - stale.length);
        this.warnStale(ctx, "retry", stale, retryable);
      } catch (err) {
        errors.push(err);
        this.log.error(
          { ...ctx, err, rows: retries.length, [keys]: retryable.map((o) => this.keyOf(o.row)) },
          "could not schedule retries; the rows are claimed again after their lease");
      }
    }

    if (dead.length > 0) {
      for (const d of dead) {
        this.log.error(
          { ...ctx, outboxId: d.outcome.row.id, [this.flow.def.key.name]: this.keyOf(d.outcome.row), attempts: d.outcome.row.attempts, error: d.error },
          d.outcome.kind === "permanent" ? texts.refused : texts.gaveUp(d.outcome.row.attempts),
        );
      }
      try {
        const stale = await retryTransient(() =>
          markDead(this.pool, this.flow, token, dead.map((d): Death => ({ id: d.outcome.row.id, error: d.error }))),
        );
        this.metrics?.deliveries.inc({ result: "dead" }, dead.length - stale.length);
        this.warnStale(ctx, "dead", stale, dead.map((d) => d.outcome));
      } catch (err) {
        errors.push(err);
        this.log.error(
          { ...ctx, err, rows: dead.length, [keys]: dead.map((d) => this.keyOf(d.outcome.row)) },
          "could not mark rows dead; they are claimed again after their lease");
      }
    }

    if (errors.length > 0) throw errors[0];
  }

  /** The log field of a batch's keys: orderId → orderIds. */
  private get keys(): string {
    return `${this.flow.def.key.name}s`;
  }

  private keyOf(row: Row): string {
    return this.flow.def.key.of(row);
  }

  /** Acked rows count as delivered; their latency runs from the commit to now, the ack. */
  private recordDelivered(delivered: Array<Delivered<Row, Result>>, stale: number[], claimedAt: number): void {
    if (!this.metrics) return;
    const fenced = new Set(stale);
    const sinceClaimMs = Date.now() - claimedAt;
    let acked = 0;
    for (const o of delivered) {
      if (fenced.has(o.row.id)) continue;
      acked++;
      if (o.row.ageAtClaimMs !== undefined) this.metrics.commitToAck.observe((o.row.ageAtClaimMs + sinceClaimMs) / 1000);
    }
    this.metrics.deliveries.inc({ result: "delivered" }, acked);
  }

  /**
   * A stale claimer's lease ran out and another relay claimed the rows: its
   * write was fenced off. Nothing is lost (the new owner delivers and acks),
   * but it means calls outlast the lease, so it is worth a warning.
   */
  private warnStale(ctx: object, op: string, ids: number[], outcomes: Array<Outcome<Row, Result>>): void {
    if (ids.length === 0) return;
    this.metrics?.deliveries.inc({ result: "stale" }, ids.length);
    const fenced = new Set(ids);
    const keys = outcomes.filter((o) => fenced.has(o.row.id)).map((o) => this.keyOf(o.row));
    this.log.warn({ ...ctx, op, outboxIds: ids, [this.keys]: keys }, "lease lost before settling: another relay owns these rows now; write skipped");
  }
}

/** Status names as metric label values; unknown codes share one value, so a broken peer cannot grow the series. */
function codeLabel(code: number): string {
  const name = codeName(code);
  return name.startsWith("CODE_") ? "OTHER" : name;
}

/** A peer's error message is clipped before it is logged: it is the peer's text, of any length. */
function clip(message: string, max = 300): string {
  return message.length <= max ? message : `${message.slice(0, max)}…`;
}
