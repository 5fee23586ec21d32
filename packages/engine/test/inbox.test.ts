import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import { createPool, inTransaction, type Pool } from "@shop/platform/db";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { handleOnce, inboxTableSql, recordedOutcome, type InboxAnswer } from "../src/inbox.js";

describe("inbox: handleOnce", () => {
  let db: TestDatabase;
  let pool: Pool;
  before(async () => {
    db = await freshDatabase("order");
    await db.sql(inboxTableSql());
    await db.sql(inboxTableSql("other_inbox"));
    // The effect under test: one row per run, so running twice shows.
    await db.sql("CREATE TABLE effects (id int AUTO_INCREMENT PRIMARY KEY, message_key varchar(128) COLLATE utf8mb4_bin NOT NULL)");
    pool = createPool({ url: db.url, connectionLimit: 25 });
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  async function effects(key: string): Promise<number> {
    const [rows] = await pool.query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM effects WHERE message_key = ?", [key]);
    return Number(rows[0]!.n);
  }

  function handle(key: string, facts = "f", table?: string): Promise<InboxAnswer<{ run: number }>> {
    return inTransaction(pool, (conn) =>
      handleOnce(conn, {
        key,
        facts,
        table,
        effect: async () => {
          await conn.query("INSERT INTO effects (message_key) VALUES (?)", [key]);
          return { run: 1 };
        },
      }),
    );
  }

  it("runs the effect once, records its outcome, and answers a replay from the record", async () => {
    expect(await handle("k1")).to.deep.equal({ kind: "handled", outcome: { run: 1 } });
    expect(await handle("k1")).to.deep.equal({ kind: "replayed", outcome: { run: 1 } });
    expect(await effects("k1")).to.equal(1);
    expect(await recordedOutcome(pool, "k1")).to.deep.equal({ run: 1 });
    expect(await recordedOutcome(pool, "never-sent")).to.equal(undefined);
  });

  it("tells a replay with other facts apart as a conflict, and runs nothing", async () => {
    await handle("k2", "amount=100");
    expect(await handle("k2", "amount=200")).to.deep.equal({ kind: "conflict", recordedFacts: "amount=100" });
    expect(await effects("k2")).to.equal(1);
  });

  it("compares keys exactly: keys differing in case are two messages", async () => {
    await handle("Case-Key");
    expect((await handle("case-key")).kind).to.equal("handled");
    expect(await effects("Case-Key")).to.equal(1);
    expect(await effects("case-key")).to.equal(1);
  });

  it("records nothing when the transaction rolls back, so the next delivery runs the effect", async () => {
    const failed = await inTransaction(pool, async (conn) => {
      await handleOnce(conn, { key: "k3", facts: "f", effect: async () => ({ run: 0 }) });
      throw new Error("the effect's transaction fails after the claim");
    }).catch((e: Error) => e.message);
    expect(failed).to.equal("the effect's transaction fails after the claim");
    expect(await recordedOutcome(pool, "k3")).to.equal(undefined);
    expect(await handle("k3")).to.deep.equal({ kind: "handled", outcome: { run: 1 } });
  });

  it("runs the effect once among 20 concurrent deliveries of one key; the others get its outcome", async () => {
    const answers = await Promise.all(Array.from({ length: 20 }, () => handle("k4")));
    expect(answers.filter((a) => a.kind === "handled")).to.have.length(1);
    expect(answers.filter((a) => a.kind === "replayed")).to.have.length(19);
    for (const a of answers) expect(a).to.have.deep.property("outcome", { run: 1 });
    expect(await effects("k4")).to.equal(1);
  });

  it("keeps each inbox table's keys its own", async () => {
    await handle("k5");
    expect((await handle("k5", "f", "other_inbox")).kind).to.equal("handled");
    expect(await effects("k5")).to.equal(2);
  });

  it("accepts only a plain identifier as the table name", async () => {
    const refused = await handle("k6", "f", "inbox; DROP TABLE effects").catch((e: Error) => e.message);
    expect(refused).to.match(/is not a plain identifier/);
    expect(await effects("k6")).to.equal(0);
  });
});
