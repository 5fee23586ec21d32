import { Writable } from "node:stream";
import { expect } from "chai";
import { pino } from "pino";
import type { RowDataPacket } from "mysql2/promise";
import { createPool, type Pool } from "@shop/platform/db";
import { Registry } from "@shop/platform/metrics";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { delayedTrackingNumber } from "../../src/carriers/delayed.js";
import type { CarrierContext, CarrierPlugin, CarrierReport } from "../../src/carriers/plugin.js";
import { CARRIER_DEFAULTS, createCarrierRegistry, type CarrierRegistry, type CarrierSettings } from "../../src/carriers/registry.js";
import { CarrierWorker, createCarrierMetrics, settleFailure, settleSuccess, type CarrierMetrics } from "../../src/carriers/worker.js";
import { migrateDeliveryDatabase } from "../../src/db/migrate.js";
import { ShipmentStore, type Shipment } from "../../src/shipments.js";

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** Quick settings: delays of a tenth of a second, short timeouts and backoff, three attempts. */
const FAST: CarrierSettings = {
  ...CARRIER_DEFAULTS,
  callTimeoutMs: 200,
  maxAttempts: 3,
  retryBaseMs: 20,
  retryMaxMs: 80,
  batchSize: 50,
  pollIntervalMs: 20,
  leaseMs: 2_000,
  delayed: { confirmMs: 100, shipMs: 200, deliverMs: 300 },
};

/** Polls until check() is true; fails naming `what` after timeoutMs. Bounds a test, never measures it. */
async function eventually(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

let seq = 0;
const uniqueId = (prefix: string) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${seq++}`;

/** A promise and its resolver: a plugin call the test holds until it lets go. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

/** Counts calls per order id. */
class Calls {
  private readonly byOrder = new Map<string, number>();
  add(orderId: string): number {
    const n = (this.byOrder.get(orderId) ?? 0) + 1;
    this.byOrder.set(orderId, n);
    return n;
  }
  of(orderId: string): number {
    return this.byOrder.get(orderId) ?? 0;
  }
  get total(): number {
    return [...this.byOrder.values()].reduce((a, b) => a + b, 0);
  }
}

describe("carrier worker (real MariaDB)", function () {
  this.timeout(60_000);
  let db: TestDatabase;
  let pool: Pool;
  const running: CarrierWorker[] = [];

  before(async () => {
    db = await freshDatabase("order");
    pool = createPool({ url: db.url, connectionLimit: 20 });
    await migrateDeliveryDatabase(pool, pino({ level: "silent" }));
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((w) => w.stop()));
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  interface Harness {
    worker: CarrierWorker;
    store: ShipmentStore;
    registry: CarrierRegistry;
    metrics: CarrierMetrics;
    lines: LogLine[];
    ship(carrier: string): Promise<string>;
  }

  /** A worker (started) with its own registry, store, metrics and captured log. */
  function startWorker(opts: { settings?: Partial<CarrierSettings>; extra?: CarrierPlugin[]; workerId?: string } = {}): Harness {
    const settings = { ...FAST, ...opts.settings };
    const lines: LogLine[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        for (const l of String(chunk).split("\n")) if (l) lines.push(JSON.parse(l));
        done();
      },
    });
    const logger = pino({ level: "debug" }, sink);
    const registry = createCarrierRegistry(settings, opts.extra);
    const metrics = createCarrierMetrics(new Registry());
    let worker: CarrierWorker | undefined;
    const store = new ShipmentStore({ pool, logger, carriers: registry, onCreated: () => worker?.wake() });
    worker = new CarrierWorker({ pool, store, registry, logger, settings, metrics, workerId: opts.workerId });
    worker.start();
    running.push(worker);
    return {
      worker,
      store,
      registry,
      metrics,
      lines,
      async ship(carrier) {
        const orderId = uniqueId("ord");
        await store.create({ orderId, customerId: "c-1", totalCents: 12_000, currency: "EUR", carrier });
        return orderId;
      },
    };
  }

  async function row(orderId: string): Promise<RowDataPacket> {
    const [rows] = await pool.query<RowDataPacket[]>(
      `SELECT status, carrier_work, carrier_attempts, carrier_last_error, next_check_at, carrier_lease, tracking_number,
              created_at, confirmed_at, shipped_at, delivered_at
         FROM shipments WHERE order_id = ?`,
      [orderId],
    );
    expect(rows, `shipment of ${orderId}`).to.have.length(1);
    return rows[0]!;
  }
  const statusOf = async (orderId: string) => String((await row(orderId)).status);
  const workOf = async (orderId: string) => String((await row(orderId)).carrier_work);
  const path = async (store: ShipmentStore, orderId: string) =>
    (await store.transitions(orderId)).map((t) => `${t.fromStatus ?? "-"}>${t.toStatus} ${t.source}`);
  const events = async (orderId: string) => {
    const [rows] = await pool.query<RowDataPacket[]>("SELECT message_key FROM shipment_event_outbox WHERE order_id = ? ORDER BY id", [orderId]);
    return rows.map((r) => String(r.message_key));
  };
  const count = async (metrics: CarrierMetrics, name: keyof CarrierMetrics, labels: Record<string, string>) => {
    const { values } = await metrics[name].get();
    return values.filter((v) => Object.entries(labels).every(([k, x]) => (v.labels as Record<string, unknown>)[k] === x)).reduce((a, v) => a + v.value, 0);
  };

  it("the delayed carrier moves a shipment CREATED → CONFIRMED → SHIPPED → DELIVERED on its schedule: one transition each, the SHIPPED and DELIVERED events, one accept", async () => {
    const h = startWorker();
    const orderId = await h.ship("delayed");
    await eventually("the shipment is delivered", async () => (await statusOf(orderId)) === "DELIVERED");

    expect(await path(h.store, orderId)).to.deep.equal([
      "->CREATED delivery-service",
      "CREATED>CONFIRMED carrier:delayed",
      "CONFIRMED>SHIPPED carrier:delayed",
      "SHIPPED>DELIVERED carrier:delayed",
    ]);
    // The order service learns SHIPPED and DELIVERED, once each (CONFIRMED is the delivery service's own).
    expect(await events(orderId)).to.deep.equal([`shipment:${orderId}:SHIPPED`, `shipment:${orderId}:DELIVERED`]);
    const r = await row(orderId);
    expect(r).to.include({ carrier_work: "DONE", carrier_attempts: 0, carrier_last_error: null, next_check_at: null, carrier_lease: null });
    expect(r.tracking_number).to.equal(delayedTrackingNumber(orderId));
    // Each step no earlier than its delay after creation (one clock: the test's database runs on this machine).
    const after = (col: string) => (r[col] as Date).getTime() - (r.created_at as Date).getTime();
    expect(after("confirmed_at")).to.be.at.least(FAST.delayed.confirmMs - 1);
    expect(after("shipped_at")).to.be.at.least(FAST.delayed.shipMs - 1);
    expect(after("delivered_at")).to.be.at.least(FAST.delayed.deliverMs - 1);
    expect(await count(h.metrics, "calls", { carrier: "delayed", call: "accept" })).to.equal(1);
    expect(await count(h.metrics, "calls", { carrier: "delayed", call: "accept", outcome: "ok" })).to.equal(1);
    expect(await count(h.metrics, "calls", { carrier: "delayed", outcome: "error" })).to.equal(0);
    expect(await count(h.metrics, "reports", { carrier: "delayed", result: "applied" })).to.be.at.least(1);
  });

  it("the manual carrier: the handoff, then nothing until someone reports over CarrierService", async () => {
    const h = startWorker();
    const manual = await h.ship("manual");
    await eventually("the manual shipment is handed off", async () => (await workOf(manual)) === "TRACKING");
    // A delayed shipment created after it goes all the way, so the worker has claimed many times since.
    const delayed = await h.ship("delayed");
    await eventually("the delayed shipment is delivered", async () => (await statusOf(delayed)) === "DELIVERED");

    expect(await row(manual)).to.include({ status: "CREATED", carrier_work: "TRACKING", carrier_attempts: 0, next_check_at: null, carrier_lease: null });
    expect(await path(h.store, manual)).to.deep.equal(["->CREATED delivery-service"]);
    expect(await count(h.metrics, "calls", { carrier: "manual", call: "accept", outcome: "ok" })).to.equal(1);
    expect(await count(h.metrics, "calls", { carrier: "manual", call: "poll" })).to.equal(0);

    // Reports over RPC are for carriers that take them: the manual one does, the delayed one does not.
    const rpc = { carrierMustTakeRpcReports: (c: string) => h.registry.takesRpcReports(c) };
    await h.store.report(manual, { status: "SHIPPED", trackingNumber: "MAN-1" }, "operator:test", rpc);
    expect(await row(manual)).to.include({ status: "SHIPPED", carrier_work: "TRACKING", tracking_number: "MAN-1", next_check_at: null });
    await h.store.report(manual, { status: "DELIVERED" }, "operator:test", rpc);
    expect(await row(manual)).to.include({ status: "DELIVERED", carrier_work: "DONE" });
    const refused = await h.store.report(delayed, { status: "DELIVERED" }, "operator:test", rpc).then(() => undefined, (e: Error) => e);
    expect(refused?.message).to.match(/does not take reports over RPC/);
  });

  it("a hung carrier does not hold up the others: it gets at most CARRIER_BATCH_SIZE calls in flight, and stop() waits for them to time out and settle", async () => {
    const aborted: unknown[] = [];
    const stuckCalls = new Calls();
    const stuck: CarrierPlugin = {
      name: "stuck",
      takesRpcReports: false,
      // Never answers, and ignores its signal (it only notes it).
      accept: (s: Shipment, ctx: CarrierContext) => {
        stuckCalls.add(s.orderId);
        ctx.signal.addEventListener("abort", () => aborted.push(ctx.signal.reason));
        return new Promise<CarrierReport[]>(() => {});
      },
    };
    const h = startWorker({ settings: { callTimeoutMs: 1_500, leaseMs: 4_000, batchSize: 3 }, extra: [stuck] });
    // The stuck carrier's shipments first, so they are the oldest due.
    const stuckOrders = [];
    for (let i = 0; i < 6; i++) stuckOrders.push(await h.ship("stuck"));
    const delayedOrders = await Promise.all([1, 2, 3, 4].map(() => h.ship("delayed")));
    await eventually("every delayed shipment is delivered", async () => (await Promise.all(delayedOrders.map(statusOf))).every((s) => s === "DELIVERED"));

    // Delivered before the stuck calls timed out: none has failed yet, and only CARRIER_BATCH_SIZE were ever called.
    for (const o of stuckOrders) expect(await row(o)).to.include({ status: "CREATED", carrier_work: "HANDOFF", carrier_attempts: 0 });
    expect(stuckCalls.total).to.equal(3);
    expect(aborted).to.have.length(0);

    await h.worker.stop();
    // stop() returned after the three calls timed out, were aborted, and their shipments were settled for a retry.
    expect(aborted).to.have.length(3);
    expect(aborted.every((reason) => (reason as Error).name === "CallTimeout")).to.equal(true);
    const attempts = await Promise.all(stuckOrders.map(async (o) => Number((await row(o)).carrier_attempts)));
    expect(attempts.filter((a) => a === 1)).to.have.length(3);
    expect(attempts.filter((a) => a === 0)).to.have.length(3);
    for (const o of stuckOrders.filter((o) => stuckCalls.of(o) === 1)) {
      const r = await row(o);
      expect(r).to.include({ carrier_work: "HANDOFF", carrier_lease: null });
      expect(r.carrier_last_error).to.equal("accept timed out: no answer within 1500 ms (CARRIER_CALL_TIMEOUT_MS)");
      expect(r.next_check_at).to.be.instanceOf(Date);
    }
    expect(await count(h.metrics, "calls", { carrier: "stuck", call: "accept", outcome: "timeout" })).to.equal(3);
    expect(h.lines.some((l) => l.msg === "carrier worker stopped")).to.equal(true);
  });

  it("throwing, hanging, refused and malformed carriers are retried with backoff and parked after CARRIER_MAX_ATTEMPTS, while a healthy carrier's shipments are delivered", async () => {
    const calls = { flaky: new Calls(), hang: new Calls(), refusedAccept: new Calls(), refusedPoll: new Calls(), malformed: new Calls() };
    const plugins: CarrierPlugin[] = [
      {
        name: "flaky",
        takesRpcReports: false,
        accept: async (s) => {
          calls.flaky.add(s.orderId);
          throw new Error("boom");
        },
      },
      {
        name: "hang",
        takesRpcReports: false,
        // Hangs until aborted, then gives up as a well-behaved plugin should.
        accept: (s, ctx) => {
          calls.hang.add(s.orderId);
          return new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason as Error)));
        },
      },
      {
        name: "refused",
        takesRpcReports: false,
        accept: async (s) => {
          calls.refusedAccept.add(s.orderId);
          return [{ status: "SHIPPED", trackingNumber: "T-1" }];
        },
        // DECLINED after SHIPPED: the lifecycle forbids it, so the store refuses it.
        poll: async (s) => {
          calls.refusedPoll.add(s.orderId);
          return [{ status: "DECLINED", declineReason: "LOST" }];
        },
      },
      {
        name: "malformed",
        takesRpcReports: false,
        accept: async (s) => {
          calls.malformed.add(s.orderId);
          return [{ status: "LOST" }] as unknown as CarrierReport[];
        },
      },
    ];
    const h = startWorker({ settings: { callTimeoutMs: 100, leaseMs: 1_000 }, extra: plugins });
    const orders: Record<string, string[]> = {};
    for (const carrier of ["flaky", "hang", "refused", "malformed", "delayed"]) {
      orders[carrier] = await Promise.all([1, 2].map(() => h.ship(carrier)));
    }
    const failing = ["flaky", "hang", "refused", "malformed"].flatMap((c) => orders[c]!);
    await eventually("the failing carriers' shipments are parked", async () => (await Promise.all(failing.map(workOf))).every((w) => w === "PARKED"));
    await eventually("the delayed shipments are delivered", async () => (await Promise.all(orders.delayed!.map(statusOf))).every((s) => s === "DELIVERED"));

    const expectParked = async (orderId: string, status: string, error: RegExp) => {
      const r = await row(orderId);
      expect(r).to.include({ status, carrier_work: "PARKED", carrier_attempts: 3, next_check_at: null, carrier_lease: null });
      expect(r.carrier_last_error).to.match(error);
    };
    for (const o of orders.flaky!) {
      await expectParked(o, "CREATED", /^gave up after 3 attempts: accept failed: boom$/);
      expect(calls.flaky.of(o)).to.equal(3);
    }
    for (const o of orders.hang!) {
      await expectParked(o, "CREATED", /^gave up after 3 attempts: accept timed out: no answer within 100 ms/);
      expect(calls.hang.of(o)).to.equal(3);
    }
    for (const o of orders.refused!) {
      // Accepted once (and shipped, which stands); then each poll's report was refused.
      await expectParked(o, "SHIPPED", /^gave up after 3 attempts: reported DECLINED, refused: .* is SHIPPED: it cannot become DECLINED$/);
      expect([calls.refusedAccept.of(o), calls.refusedPoll.of(o)]).to.deep.equal([1, 3]);
      expect(await events(o)).to.deep.equal([`shipment:${o}:SHIPPED`]);
    }
    for (const o of orders.malformed!) {
      await expectParked(o, "CREATED", /^gave up after 3 attempts: accept returned a report with status "LOST"$/);
      expect(calls.malformed.of(o)).to.equal(3);
      expect(await path(h.store, o)).to.deep.equal(["->CREATED delivery-service"]);
    }

    // Backoff: capped, jittered, doubling: the delay after failure n is below min(80, 20·2^(n-1)) ms.
    const retries = h.lines.filter((l) => l.msg === "carrier call failed; retrying later");
    expect(retries).to.have.length(failing.length * 2);
    for (const l of retries) {
      const attempts = l.attempts as number;
      expect(attempts).to.be.oneOf([1, 2]);
      expect(l.retryInMs).to.be.within(0, Math.min(80, 20 * 2 ** (attempts - 1)) - 1);
    }
    // Each parked shipment is logged once as an error, with its carrier and order.
    const parked = h.lines.filter((l) => l.msg === "carrier failed too often in a row; shipment parked until ResumeShipment");
    expect(parked.map((l) => `${l.carrier} ${l.orderId}`).sort()).to.deep.equal(
      ["flaky", "hang", "refused", "malformed"].flatMap((c) => orders[c]!.map((o) => `${c} ${o}`)).sort(),
    );
    expect(parked.every((l) => l.level === 50 && l.attempts === 3)).to.equal(true);

    for (const carrier of ["flaky", "hang", "refused", "malformed"]) expect(await count(h.metrics, "parked", { carrier })).to.equal(2);
    expect(await count(h.metrics, "calls", { carrier: "flaky", call: "accept", outcome: "error" })).to.equal(6);
    expect(await count(h.metrics, "calls", { carrier: "hang", call: "accept", outcome: "timeout" })).to.equal(6);
    expect(await count(h.metrics, "calls", { carrier: "refused", call: "accept", outcome: "ok" })).to.equal(2);
    expect(await count(h.metrics, "calls", { carrier: "refused", call: "poll", outcome: "error" })).to.equal(6);
    expect(await count(h.metrics, "reports", { carrier: "refused", status: "DECLINED", result: "refused" })).to.equal(6);
    expect(await count(h.metrics, "calls", { carrier: "delayed", outcome: "error" })).to.equal(0);
    expect(await count(h.metrics, "parked", { carrier: "delayed" })).to.equal(0);
  });

  it("two workers competing never call a carrier twice at once for one shipment, and every shipment ends delivered once", async () => {
    const accepts = new Calls();
    const polls = new Calls();
    const busy = new Map<string, number>();
    let overlaps = 0;
    const workersSeen = new Set<string>();
    const bothWorking = gate();
    const guard = async <T>(orderId: string, fn: () => Promise<T>): Promise<T> => {
      const n = (busy.get(orderId) ?? 0) + 1;
      busy.set(orderId, n);
      if (n > 1) overlaps++;
      try {
        return await fn();
      } finally {
        busy.set(orderId, (busy.get(orderId) ?? 1) - 1);
      }
    };
    const counting: CarrierPlugin = {
      name: "counting",
      takesRpcReports: false,
      accept: (s, ctx) =>
        guard(s.orderId, async () => {
          accepts.add(s.orderId);
          // Hold the first calls until both workers have made one, so both are seen to compete (bounded by the call timeout).
          workersSeen.add(String(ctx.logger.bindings().workerId));
          if (workersSeen.size === 2) bothWorking.open();
          await Promise.race([bothWorking.opened, new Promise((r) => setTimeout(r, 500))]);
          return [{ status: "CONFIRMED" }];
        }),
      poll: (s) =>
        guard(s.orderId, async () => {
          polls.add(s.orderId);
          return [{ status: "DELIVERED", trackingNumber: `C-${s.orderId.slice(-20)}` }];
        }),
    };
    const settings = { batchSize: 5, callTimeoutMs: 1_000, leaseMs: 3_000 };
    const a = startWorker({ settings, extra: [counting], workerId: "worker-a" });
    const b = startWorker({ settings, extra: [counting], workerId: "worker-b" });
    const orders = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).ship("counting")));
    await eventually("all 40 shipments are delivered", async () => {
      const [rows] = await pool.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM shipments WHERE order_id IN (?) AND status = 'DELIVERED' AND carrier_work = 'DONE'", [orders]);
      return Number(rows[0]!.n) === orders.length;
    });

    expect(workersSeen).to.deep.equal(new Set(["worker-a", "worker-b"]));
    expect(overlaps).to.equal(0);
    for (const o of orders) {
      expect(accepts.of(o), `accepts of ${o}`).to.equal(1);
      expect(polls.of(o), `polls of ${o}`).to.equal(1);
      expect(await path(a.store, o)).to.deep.equal([
        "->CREATED delivery-service",
        "CREATED>CONFIRMED carrier:counting",
        "CONFIRMED>SHIPPED carrier:counting",
        "SHIPPED>DELIVERED carrier:counting",
      ]);
      expect(await events(o)).to.deep.equal([`shipment:${o}:SHIPPED`, `shipment:${o}:DELIVERED`]);
      expect(await row(o)).to.include({ carrier_attempts: 0, carrier_lease: null, next_check_at: null });
    }
    const acceptsBy = async (h: Harness) => count(h.metrics, "calls", { carrier: "counting", call: "accept", outcome: "ok" });
    expect((await acceptsBy(a)) + (await acceptsBy(b))).to.equal(40);
    expect(await count(a.metrics, "leaseLost", {})).to.equal(0);
    expect(await count(b.metrics, "leaseLost", {})).to.equal(0);
  });

  it("a parked shipment resumed goes back to work where it stopped: the handoff if never accepted, else tracking", async () => {
    const failAccept = new Set<string>();
    const failPoll = new Set<string>();
    const accepts = new Calls();
    const gated: CarrierPlugin = {
      name: "gated",
      takesRpcReports: false,
      accept: async (s) => {
        accepts.add(s.orderId);
        if (failAccept.has(s.orderId)) throw new Error("carrier closed");
        return [{ status: "CONFIRMED" }];
      },
      poll: async (s) => {
        if (failPoll.has(s.orderId)) throw new Error("tracking down");
        return [{ status: "DELIVERED", trackingNumber: "G-1" }];
      },
    };
    const h = startWorker({ extra: [gated] });
    const neverAccepted = uniqueId("ord");
    const accepted = uniqueId("ord");
    failAccept.add(neverAccepted);
    failPoll.add(accepted);
    for (const orderId of [neverAccepted, accepted]) await h.store.create({ orderId, customerId: "c-1", totalCents: 100, currency: "EUR", carrier: "gated" });
    await eventually("both are parked", async () => (await workOf(neverAccepted)) === "PARKED" && (await workOf(accepted)) === "PARKED");
    expect(await statusOf(neverAccepted)).to.equal("CREATED");
    expect(await statusOf(accepted)).to.equal("CONFIRMED");

    failAccept.clear();
    failPoll.clear();
    const r1 = await h.store.resume(neverAccepted);
    const r2 = await h.store.resume(accepted);
    expect([r1.resumed, r1.shipment.carrierWork, r2.resumed, r2.shipment.carrierWork]).to.deep.equal([true, "HANDOFF", true, "TRACKING"]);
    await eventually("both are delivered", async () => (await statusOf(neverAccepted)) === "DELIVERED" && (await statusOf(accepted)) === "DELIVERED");

    expect(accepts.of(neverAccepted)).to.equal(FAST.maxAttempts + 1);
    expect(accepts.of(accepted)).to.equal(1);
    for (const o of [neverAccepted, accepted]) {
      expect(await row(o)).to.include({ carrier_work: "DONE", carrier_attempts: 0, next_check_at: null });
      expect(await events(o)).to.deep.equal([`shipment:${o}:SHIPPED`, `shipment:${o}:DELIVERED`]);
    }
  });

  it("a settle whose lease has passed to another worker changes nothing", async () => {
    const held = gate();
    const started = new Set<string>();
    const slow: CarrierPlugin = {
      name: "slow",
      takesRpcReports: false,
      accept: async (s) => {
        started.add(s.orderId);
        await held.opened;
        if (s.orderId.endsWith("-fails")) throw new Error("late failure");
        return [];
      },
    };
    // A call timeout far beyond any pause under load: the calls must still be in flight when the lease is taken over.
    const h = startWorker({ extra: [slow], settings: { callTimeoutMs: 120_000, leaseMs: 300_000 } });
    const ok = uniqueId("ord");
    const fails = `${uniqueId("ord")}-fails`;
    for (const orderId of [ok, fails]) await h.store.create({ orderId, customerId: "c-1", totalCents: 100, currency: "EUR", carrier: "slow" });
    await eventually("both calls have started", () => started.size === 2);
    // What a second worker does after the lease ran out: claim with its own token.
    await pool.query("UPDATE shipments SET carrier_lease = 'other-worker:01TOKEN', next_check_at = '2030-01-01 00:00:00.000' WHERE order_id IN (?)", [[ok, fails]]);
    const before = await Promise.all([ok, fails].map(row));
    held.open();
    await eventually("both settles were fenced off", async () => (await count(h.metrics, "leaseLost", { carrier: "slow" })) === 2);

    expect(await Promise.all([ok, fails].map(row))).to.deep.equal(before);
    expect(before[0]).to.include({ carrier_work: "HANDOFF", carrier_attempts: 0, carrier_lease: "other-worker:01TOKEN", carrier_last_error: null });
    const lost = h.lines.filter((l) => l.msg === "carrier work outlived its lease; another worker holds the shipment now, so nothing was written");
    expect(lost.map((l) => `${l.orderId} ${l.what}`).sort()).to.deep.equal([`${fails} retry`, `${ok} success`].sort());
  });

  it("settleSuccess and settleFailure are fenced on the lease token; a final shipment stays DONE", async () => {
    const h = startWorker({ settings: { enabled: ["manual"], defaultCarrier: "manual" } });
    await h.worker.stop();
    const orderId = await h.ship("manual");
    const [[{ id }]] = (await pool.query<RowDataPacket[]>("SELECT id FROM shipments WHERE order_id = ?", [orderId])) as unknown as [[{ id: string }]];
    await pool.query("UPDATE shipments SET carrier_lease = 'mine', next_check_at = '2030-01-01 00:00:00.000' WHERE id = ?", [id]);
    const before = await row(orderId);

    expect(await settleSuccess(pool, id, "stale", 100)).to.equal(false);
    expect(await settleFailure(pool, id, "stale", { attempts: 5, error: "x", retryInMs: null })).to.equal(false);
    expect(await row(orderId)).to.deep.equal(before);

    expect(await settleFailure(pool, id, "mine", { attempts: 1, error: "first", retryInMs: 60_000 })).to.equal(true);
    expect(await row(orderId)).to.include({ carrier_work: "HANDOFF", carrier_attempts: 1, carrier_last_error: "first", carrier_lease: null });
    await pool.query("UPDATE shipments SET carrier_lease = 'mine' WHERE id = ?", [id]);
    expect(await settleSuccess(pool, id, "mine", null)).to.equal(true);
    expect(await row(orderId)).to.include({ carrier_work: "TRACKING", carrier_attempts: 0, carrier_last_error: null, next_check_at: null, carrier_lease: null });

    // A report that ended the shipment meanwhile is not undone by a late settle.
    await h.store.report(orderId, { status: "DELIVERED" }, "operator:test");
    await pool.query("UPDATE shipments SET carrier_lease = 'mine' WHERE id = ?", [id]);
    expect(await settleFailure(pool, id, "mine", { attempts: 10, error: "late", retryInMs: null })).to.equal(true);
    expect(await row(orderId)).to.include({ status: "DELIVERED", carrier_work: "DONE", next_check_at: null });
  });
});
