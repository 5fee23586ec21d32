import { expect } from "chai";
import type { PoolConnection } from "mysql2/promise";
import type { Pool } from "@shop/platform/db";
import { CLAIM_SELECT_SQL, claimDueRows } from "../../src/outbox/claim.js";
import { freshOutboxDb, insertOutboxRows, type OutboxDb } from "./outbox-db.js";

/**
 * The claim's SKIP LOCKED scan is safe against concurrent inserts only in
 * READ COMMITTED (design.md, "Claim"). This reads the isolation level of the
 * claim's own transaction from InnoDB, while that transaction holds its row
 * locks, rather than trusting the session variable.
 */
describe("the outbox claim's isolation", function () {
  this.timeout(30_000);
  let o: OutboxDb;
  before(async () => {
    o = await freshOutboxDb();
  });
  after(() => o?.close());

  /** The pool, with every borrowed connection reporting the level of its transaction right after the claim's SELECT. */
  function observedPool(levels: string[]): Pool {
    const watch = (conn: PoolConnection): PoolConnection =>
      new Proxy(conn, {
        get(target, prop, receiver) {
          const value = Reflect.get(target, prop, receiver);
          if (prop !== "query") return typeof value === "function" ? value.bind(target) : value;
          return async (...args: unknown[]) => {
            const result = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
            if (args[0] === CLAIM_SELECT_SQL) {
              // As root, on another connection: the claim's transaction is paused here, holding its locks.
              const level = await o.db.sql(`SELECT trx_isolation_level FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ${target.threadId}`);
              levels.push(level.trim());
            }
            return result;
          };
        },
      });
    return new Proxy(o.pool, {
      get(target, prop, receiver) {
        if (prop === "getConnection") return async () => watch(await target.getConnection());
        const value = Reflect.get(target, prop, receiver);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  }

  it("claimDueRows runs in a READ COMMITTED transaction on a pool from createPool", async () => {
    await insertOutboxRows(o.pool, 3);
    const levels: string[] = [];
    const claimed = await claimDueRows(observedPool(levels), { limit: 10, leaseMs: 10_000, token: "t:isolation" });
    expect(claimed).to.have.length(3);
    expect(levels).to.deep.equal(["READ COMMITTED"]);
  });
});
