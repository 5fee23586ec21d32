import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import { createPool, SESSION_SETUP, type Pool } from "../src/db.js";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

type Queryable = Pick<Pool, "query">;

/** The session's isolation level: @@tx_isolation on MariaDB, @@transaction_isolation on MySQL 8 (which dropped the old name). */
async function isolationLevel(conn: Queryable): Promise<string> {
  try {
    const [rows] = await conn.query<RowDataPacket[]>("SELECT @@tx_isolation AS level");
    return String(rows[0]!.level);
  } catch (err) {
    if ((err as { errno?: number }).errno !== 1193) throw err; // ER_UNKNOWN_SYSTEM_VARIABLE
    const [rows] = await conn.query<RowDataPacket[]>("SELECT @@transaction_isolation AS level");
    return String(rows[0]!.level);
  }
}

describe("database sessions", function () {
  this.timeout(30_000);
  let db: TestDatabase;
  before(async () => {
    db = await freshDatabase("order");
  });
  after(() => db?.drop());

  it("run their first statement already in READ COMMITTED and UTC, on every new connection, whichever way it is borrowed", async () => {
    const pool = createPool({ url: db.url, connectionLimit: 4 });
    try {
      // Four connections borrowed at once, so each is new; the first statement on each reads the session.
      const conns = await Promise.all([0, 1, 2, 3].map(() => pool.getConnection()));
      const seen = await Promise.all(
        conns.map(async (c) => {
          const level = await isolationLevel(c);
          const [rows] = await c.query<RowDataPacket[]>("SELECT @@time_zone AS tz");
          return { level, tz: rows[0]!.tz };
        }),
      );
      expect(new Set(conns.map((c) => c.threadId)).size).to.equal(4);
      expect(seen).to.deep.equal(Array(4).fill({ level: "READ-COMMITTED", tz: "+00:00" }));
      conns.forEach((c) => c.release());
    } finally {
      await pool.end();
    }
    // pool.query and pool.execute borrow too: a pool's very first statement, made through them.
    for (const how of ["query", "execute"] as const) {
      const fresh = createPool({ url: db.url, connectionLimit: 1 });
      try {
        const sql = "SELECT @@tx_isolation AS level, @@time_zone AS tz";
        const [rows] = how === "query" ? await fresh.query<RowDataPacket[]>(sql) : await fresh.execute<RowDataPacket[]>(sql);
        expect({ ...rows[0] }, how).to.deep.equal({ level: "READ-COMMITTED", tz: "+00:00" });
      } finally {
        await fresh.end();
      }
    }
  });

  it("are not handed out when their setup fails: the borrower gets the error, and the connection is dropped", async () => {
    // An account allowed as many statements as the setup minus one: the last SET of the setup is refused.
    const user = `lim_${db.name}`.slice(0, 32);
    await db.server.sql(
      `CREATE USER '${user}'@'127.0.0.1' IDENTIFIED BY 'pw' WITH MAX_QUERIES_PER_HOUR ${SESSION_SETUP.length - 1};` +
        `GRANT SELECT ON \`${db.name}\`.* TO '${user}'@'127.0.0.1';`,
    );
    const pool = createPool({ url: db.url.replace(/\/\/[^@]+@/, `//${user}:pw@`), connectionLimit: 1 });
    try {
      const borrowed = await pool.getConnection().then(
        (c) => c,
        (err: { errno?: number }) => err,
      );
      expect(borrowed, "a connection whose session setup failed was handed out").to.have.property("errno", 1226); // ER_USER_LIMIT_REACHED
      // The pool did not keep it: the next borrower gets a new connection (refused the same way), not the half-set-up one.
      const again = await pool.query("SELECT 1").catch((err: { errno?: number }) => err);
      expect(again).to.have.property("errno", 1226);
    } finally {
      await pool.end();
      await db.server.sql(`DROP USER '${user}'@'127.0.0.1'`);
    }
  });
});
