import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import { pino } from "pino";
import { createPool, type Pool } from "@shop/platform/db";
import { Registry } from "@shop/platform/metrics";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { ack } from "../src/ack.js";
import { claimDue } from "../src/claim.js";
import { removeDeliveredBatch } from "../src/cleanup.js";
import { listDead, requeueDead } from "../src/dead.js";
import { defineFlow, outboxTableDdl, type ItemResult } from "../src/flow.js";
import { createDeliveryMetrics, registerOutboxGauges } from "../src/metrics.js";
import { Relay, RELAY_DEFAULTS, type RelayConfig } from "../src/relay.js";
import { readOutboxStats } from "../src/stats.js";

/**
 * "A new flow costs a table, a row type and a deliver function": a flow the
 * engine has never heard of (notes sent to a fake receiver) gets claiming,
 * leasing, fenced acks, backoff, splitting, dead rows, requeue, gauges and
 * retention from the engine, on real MariaDB. Nothing here is voucher code.
 */

interface Note {
  key: string;
  body: string;
}
interface Receipt {
  receipt: string;
}

/**
 * The receiver: idempotent per key (a second send answers the first receipt
 * with created=false), and scriptable: down (every call UNAVAILABLE), a
 * poison key that makes any batch holding it fail INTERNAL as a whole, and
 * keys it refuses for good (INVALID_ARGUMENT per item).
 */
class FakeReceiver {
  readonly receipts = new Map<string, string>();
  effects = 0;
  batchCalls = 0;
  down = false;
  readonly poison = new Set<string>();
  readonly refused = new Set<string>();

  private send(note: Note): ItemResult<Receipt> {
    if (this.refused.has(note.key)) return { code: Code.InvalidArgument, message: `note ${note.key} refused by the test` };
    let receipt = this.receipts.get(note.key);
    const created = receipt === undefined;
    if (receipt === undefined) {
      receipt = `r-${note.key}`;
      this.receipts.set(note.key, receipt);
      this.effects++;
    }
    return { result: { receipt }, created };
  }

  async batch(notes: Note[]): Promise<Array<ItemResult<Receipt>>> {
    this.batchCalls++;
    if (this.down) throw new ConnectError("receiver down", Code.Unavailable);
    if (notes.some((n) => this.poison.has(n.key))) throw new ConnectError("internal error", Code.Internal);
    return notes.map((n) => this.send(n));
  }

  async single(note: Note): Promise<ItemResult<Receipt>> {
    if (this.down) throw new ConnectError("receiver down", Code.Unavailable);
    if (this.poison.has(note.key)) throw new ConnectError("internal error", Code.Internal);
    const r = this.send(note);
    if ("code" in r) throw new ConnectError(r.message, r.code);
    return r;
  }
}

function noteFlow(receiver: FakeReceiver) {
  return defineFlow<Note, Receipt>({
    name: "note",
    table: "note_outbox",
    columns: ["note_key", "body"],
    fromRow: (r) => ({ key: String(r.note_key), body: String(r.body) }),
    key: { name: "noteKey", of: (n) => n.key },
    resultColumns: ["receipt"],
    resultValues: (r) => [r.receipt],
    deliver: {
      batchMethod: "SendNotes",
      singleMethod: "SendNote",
      batch: (rows) => receiver.batch(rows),
      single: (row) => receiver.single(row),
    },
    archive: {
      columns: ["note_key"],
      async copy(conn, rows) {
        await conn.query("INSERT INTO note_archive (note_key, receipt) VALUES ?", [rows.map((r) => [r.note_key, r.receipt])]);
      },
    },
  });
}

const quiet = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

/** Fast retries, so a scripted failure comes back within the test without waiting on real backoff. */
const CONFIG: RelayConfig = { ...RELAY_DEFAULTS, batchSize: 50, concurrency: 2, pollIntervalMs: 20, retryBaseMs: 1, retryMaxMs: 5, leaseMs: 30_000 };

async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("a second flow on the engine (note_outbox, a fake receiver)", () => {
  let db: TestDatabase;
  let pool: Pool;
  let receiver: FakeReceiver;
  let flow: ReturnType<typeof noteFlow>;

  before(async () => {
    db = await freshDatabase("order");
    pool = createPool({ url: db.url, connectionLimit: 10 });
    await pool.query(
      outboxTableDdl(
        "note_outbox",
        ["note_key VARCHAR(64) COLLATE utf8mb4_bin NOT NULL", "body VARCHAR(255) NOT NULL", "receipt VARCHAR(64) COLLATE utf8mb4_bin"],
        ["UNIQUE KEY note_outbox_key_uq (note_key)"],
      ),
    );
    await pool.query("CREATE TABLE note_archive (note_key VARCHAR(64) COLLATE utf8mb4_bin PRIMARY KEY, receipt VARCHAR(64) NOT NULL)");
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });
  beforeEach(async () => {
    await pool.query("DELETE FROM note_outbox");
    await pool.query("DELETE FROM note_archive");
    receiver = new FakeReceiver();
    flow = noteFlow(receiver);
  });

  async function write(keys: string[]): Promise<void> {
    await pool.query("INSERT INTO note_outbox (note_key, body, status, next_attempt_at, created_at) VALUES ?", [
      keys.map((k) => [k, `body of ${k}`, "pending", new Date(), new Date()]),
    ]);
  }

  async function rows(): Promise<Array<{ key: string; status: string; attempts: number; receipt: string | null; lastError: string | null }>> {
    const [r] = await pool.query<RowDataPacket[]>("SELECT note_key, status, attempts, receipt, last_error FROM note_outbox ORDER BY id");
    return r.map((x) => ({ key: x.note_key, status: x.status, attempts: Number(x.attempts), receipt: x.receipt, lastError: x.last_error }));
  }

  async function runUntil(what: string, check: () => Promise<boolean>, config: Partial<RelayConfig> = {}): Promise<void> {
    const relay = new Relay({ pool, flow, logger: quiet, config: { ...CONFIG, ...config }, component: "note-relay" });
    relay.start();
    try {
      await eventually(what, check);
    } finally {
      await relay.stop();
    }
  }

  it("refuses a table, index or column name that is not a plain identifier, or that is one of the engine's columns", () => {
    const base = { ...noteFlow(new FakeReceiver()).def };
    expect(() => defineFlow({ ...base, table: "note_outbox; DROP TABLE orders" })).to.throw(/invalid outbox table/);
    expect(() => defineFlow({ ...base, table: "note-outbox" })).to.throw(/invalid outbox table/);
    expect(() => defineFlow({ ...base, claimIndex: "idx`x" })).to.throw(/invalid claim index/);
    expect(() => defineFlow({ ...base, columns: ["note_key", "body, (SELECT 1)"] })).to.throw(/invalid column/);
    expect(() => defineFlow({ ...base, columns: ["note_key", "status"] })).to.throw(/one of the engine's own/);
    expect(() => outboxTableDdl("x y", [])).to.throw(/invalid outbox table/);
  });

  it("claims through its claim index, without a filesort, like the voucher flow", async () => {
    // The voucher flow's sql.test in its harder shape: every row pending and due.
    await write(Array.from({ length: 300 }, (_, i) => `k${i}`));
    await pool.query("ANALYZE TABLE note_outbox");
    const [plan] = await pool.query<RowDataPacket[]>(`EXPLAIN ${flow.sql.claimSelect}`, [100]);
    expect(plan).to.have.length(1);
    expect(plan[0]!.key).to.equal("note_outbox_claim_idx");
    expect(String(plan[0]!.Extra ?? "")).not.to.match(/filesort/i);
  });

  it("delivers every row once, keeping each receipt, with competing relays", async () => {
    const keys = Array.from({ length: 120 }, (_, i) => `n${i}`);
    await write(keys);
    const a = new Relay({ pool, flow, logger: quiet, config: CONFIG, relayId: "a", component: "note-relay" });
    const b = new Relay({ pool, flow, logger: quiet, config: CONFIG, relayId: "b", component: "note-relay" });
    a.start();
    b.start();
    try {
      await eventually("every note is delivered", async () => (await rows()).every((r) => r.status === "delivered"));
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
    const all = await rows();
    expect(all.map((r) => r.receipt)).to.deep.equal(keys.map((k) => `r-${k}`));
    expect(receiver.effects).to.equal(keys.length);
    expect(all.every((r) => r.attempts === 1), "no row needed a second attempt").to.equal(true);
  });

  it("counts its deliveries and shows its outbox in gauges under names of its own", async () => {
    await write(["m1", "m2", "m3"]);
    receiver.refused.add("m3");
    const registry = new Registry();
    const metrics = createDeliveryMetrics(registry, {
      deliveries: { name: "note_deliveries_total", help: "Notes settled." },
      callFailures: { name: "note_call_failures_total", help: "Note calls failed as a whole." },
      splits: { name: "note_batch_split_rows_total", help: "Note rows split." },
      commitToAck: { name: "note_commit_to_ack_seconds", help: "Commit to ack." },
    });
    registerOutboxGauges({
      registry,
      pool,
      flow,
      logger: quiet,
      cacheMs: 0,
      names: {
        pending: { name: "note_outbox_pending", help: "Pending notes." },
        dead: { name: "note_outbox_dead", help: "Dead notes." },
        oldestPendingAgeSeconds: { name: "note_outbox_oldest_pending_age_seconds", help: "Oldest pending note." },
      },
    });
    const relay = new Relay({ pool, flow, logger: quiet, config: CONFIG, component: "note-relay", metrics });
    relay.start();
    try {
      await eventually("every row is settled", async () => (await rows()).every((r) => r.status !== "pending"));
    } finally {
      await relay.stop();
    }
    const text = await registry.metrics();
    expect(text).to.include('note_deliveries_total{result="delivered"} 2');
    expect(text).to.include('note_deliveries_total{result="dead"} 1');
    expect(text).to.include("note_commit_to_ack_seconds_count 2");
    expect(text).to.include("note_outbox_pending 0");
    expect(text).to.include("note_outbox_dead 1");
  });

  it("leases disjoint rows to concurrent claims, and fences the ack of a claimer whose lease ran out", async () => {
    await write(["a", "b", "c", "d"]);
    const [first, second] = await Promise.all([
      claimDue(pool, flow, { limit: 2, leaseMs: 30_000, token: "t1" }),
      claimDue(pool, flow, { limit: 2, leaseMs: 30_000, token: "t2" }),
    ]);
    expect([...first, ...second].map((r) => r.key).sort()).to.deep.equal(["a", "b", "c", "d"]);
    expect(await claimDue(pool, flow, { limit: 10, leaseMs: 30_000, token: "t3" })).to.deep.equal([]);

    // A lease of 0 ms is over at once: another claim takes the row, and the first claimer's ack changes nothing.
    await pool.query("DELETE FROM note_outbox");
    await write(["e"]);
    const [stale] = await claimDue(pool, flow, { limit: 1, leaseMs: 0, token: "old" });
    const [fresh] = await claimDue(pool, flow, { limit: 1, leaseMs: 30_000, token: "new" });
    expect(fresh!.id).to.equal(stale!.id);
    expect(fresh!.attempts).to.equal(2);
    expect(await ack(pool, flow, "old", [{ id: stale!.id, values: ["from-old"] }])).to.deep.equal([stale!.id]);
    expect((await rows())[0]).to.include({ status: "pending", receipt: null });
    expect(await ack(pool, flow, "new", [{ id: fresh!.id, values: ["from-new"] }])).to.deep.equal([]);
    expect((await rows())[0]).to.include({ status: "delivered", receipt: "from-new" });
  });

  it("backs off while the receiver is down, never parking a row, and delivers once it is back", async () => {
    await write(["x", "y"]);
    receiver.down = true;
    await runUntil("both rows were tried three times", async () => (await rows()).every((r) => r.attempts >= 3));
    const failed = await rows();
    expect(failed.map((r) => r.status)).to.deep.equal(["pending", "pending"]);
    expect(failed[0]!.lastError).to.equal("SendNotes: UNAVAILABLE: receiver down");
    const [due] = await pool.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM note_outbox WHERE locked_by IS NULL");
    expect(Number(due[0]!.n), "the leases were released for the retry").to.equal(2);

    receiver.down = false;
    await runUntil("both rows are delivered", async () => (await rows()).every((r) => r.status === "delivered"), { maxAttempts: 3 });
    expect(receiver.effects).to.equal(2);
  });

  it("splits a batch a poison row fails, delivers its neighbours, parks the row after maxAttempts, and requeues it", async () => {
    const keys = Array.from({ length: 8 }, (_, i) => `p${i}`);
    await write(keys);
    receiver.poison.add("p5");
    await runUntil("the poison row is dead", async () => (await rows()).some((r) => r.status === "dead"), { maxAttempts: 2 });
    const after = await rows();
    expect(after.filter((r) => r.status === "delivered").map((r) => r.key)).to.deep.equal(keys.filter((k) => k !== "p5"));
    const dead = await listDead(pool, flow, 0, 10);
    expect(dead.map((d) => d.key)).to.deep.equal(["p5"]);
    expect(dead[0]!.lastError).to.match(/^gave up after 2 attempts: failed on its own: SendNotes: INTERNAL: internal error$/);
    expect(await readOutboxStats(pool, flow, 2_000)).to.include({ pending: 0, dead: 1 });

    receiver.poison.clear();
    expect(await requeueDead(pool, flow, [dead[0]!.id])).to.equal(1);
    expect(await requeueDead(pool, flow, [dead[0]!.id]), "a row no longer dead is not requeued twice").to.equal(0);
    await runUntil("the requeued row is delivered", async () => (await rows()).every((r) => r.status === "delivered"));
    expect(receiver.effects).to.equal(keys.length);
  });

  it("parks a row the receiver refuses for good, without holding back the rest of its batch", async () => {
    await write(["ok1", "bad", "ok2"]);
    receiver.refused.add("bad");
    await runUntil("every row is settled", async () => (await rows()).every((r) => r.status !== "pending"));
    expect((await rows()).map((r) => [r.key, r.status])).to.deep.equal([
      ["ok1", "delivered"],
      ["bad", "dead"],
      ["ok2", "delivered"],
    ]);
    expect((await rows())[1]!.lastError).to.equal("SendNotes item: INVALID_ARGUMENT: note bad refused by the test");
  });

  it("removes delivered rows past retention after its archive hook copied their receipts, and nothing else", async () => {
    await write(["old1", "old2", "young", "waiting"]);
    await pool.query(
      "UPDATE note_outbox SET status = 'delivered', receipt = CONCAT('r-', note_key), delivered_at = NOW(3) - INTERVAL 2 DAY WHERE note_key LIKE 'old%'",
    );
    await pool.query("UPDATE note_outbox SET status = 'delivered', receipt = 'r-young', delivered_at = NOW(3) WHERE note_key = 'young'");
    expect(await removeDeliveredBatch(pool, flow, 24 * 3_600_000, 100)).to.equal(2);
    expect((await rows()).map((r) => r.key)).to.deep.equal(["young", "waiting"]);
    const [archived] = await pool.query<RowDataPacket[]>("SELECT note_key, receipt FROM note_archive ORDER BY note_key");
    expect(archived.map((r) => [r.note_key, r.receipt])).to.deep.equal([
      ["old1", "r-old1"],
      ["old2", "r-old2"],
    ]);
    expect(await removeDeliveredBatch(pool, flow, 24 * 3_600_000, 100)).to.equal(0);
  });
});
