import mysql, { type PoolConnection } from "mysql2/promise";
import type { Logger } from "./logger.js";

export type Pool = mysql.Pool;

export interface PoolOptions {
  /** mysql://user:password@host:port/database */
  url: string;
  /** Connections in the pool. Default 10. */
  connectionLimit?: number;
}

/**
 * What every session must be set to before its first statement: UTC, and
 * READ COMMITTED (the outbox claim with SKIP LOCKED deadlocks against
 * concurrent inserts under REPEATABLE READ's gap locks, and no query here
 * needs a repeatable snapshot). One statement each: the variable behind the
 * isolation level is named differently on MariaDB and MySQL 8, the SET
 * TRANSACTION form is the same on both.
 */
export const SESSION_SETUP = ["SET SESSION time_zone = '+00:00'", "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"] as const;

/**
 * A mysql2 pool whose connections are handed out only after SESSION_SETUP
 * has run on them and succeeded. mysql2 has no init statement for pooled
 * connections, and statements sent from its "connection" event are neither
 * awaited nor checked: a failure there would leave a connection in REPEATABLE
 * READ and nobody would know. So every way of borrowing a connection
 * (pool.query, pool.execute, getConnection: all go through the core pool's
 * getConnection) waits for the setup of a new connection; a connection whose
 * setup fails is destroyed and the borrower gets the error.
 */
export function createPool({ url, connectionLimit = 10 }: PoolOptions): Pool {
  const pool = mysql.createPool({
    uri: url.replace(/^mariadb:/, "mysql:"),
    connectionLimit,
    timezone: "Z",
    dateStrings: false,
    supportBigNumbers: true,
    bigNumberStrings: false,
    enableKeepAlive: true,
    connectTimeout: 5_000,
    multipleStatements: false,
    // COM_RESET_CONNECTION on release would undo SESSION_SETUP (it is off by
    // default; said here so that turning it on is seen to need a new setup).
    resetOnRelease: false,
    // No stack captured per query for errors: it cost ~3 % of a service's CPU
    // under load. Errors still carry code, errno and the SQL message.
    trace: false,
  });
  const core = pool.pool as unknown as { getConnection(cb: (err: Error | null, conn?: CoreConnection) => void): void };
  const borrow = core.getConnection.bind(core);
  const ready = new WeakSet<CoreConnection>();
  core.getConnection = (cb) =>
    borrow((err, conn) => {
      if (err || !conn || ready.has(conn)) return cb(err, conn);
      setUpSession(conn, 0, (setupErr) => {
        if (setupErr) {
          conn.destroy();
          return cb(setupErr);
        }
        ready.add(conn);
        cb(null, conn);
      });
    });
  return pool;
}

/** The callback side of a pooled mysql2 connection, as far as the session setup needs it. */
interface CoreConnection {
  query(sql: string, cb: (err: Error | null) => void): unknown;
  destroy(): void;
}

function setUpSession(conn: CoreConnection, step: number, done: (err: Error | null) => void): void {
  if (step === SESSION_SETUP.length) return done(null);
  conn.query(SESSION_SETUP[step], (err) => (err ? done(err) : setUpSession(conn, step + 1, done)));
}

/**
 * Runs fn in a transaction on one pooled connection and commits when fn
 * returns; any error rolls back. A connection whose rollback also fails is
 * destroyed rather than handed back: it is most likely dead (server
 * restarted), and the next borrower should get a new one.
 */
export async function inTransaction<T>(pool: Pool, fn: (conn: PoolConnection) => Promise<T>): Promise<T> {
  const conn = await pool.getConnection();
  let healthy = true;
  try {
    await conn.beginTransaction();
    const result = await fn(conn);
    await conn.commit();
    return result;
  } catch (err) {
    await conn.rollback().catch(() => {
      healthy = false;
    });
    throw err;
  } finally {
    if (healthy) conn.release();
    else conn.destroy();
  }
}

/** Waits until the database answers, logging each failed attempt; gives up after timeoutMs. */
export async function waitForDatabase(pool: Pool, logger: Logger, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 1; ; attempt++) {
    try {
      await pool.query("SELECT 1");
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`database unreachable after ${timeoutMs} ms: ${(err as Error).message}`);
      logger.warn({ attempt, err: (err as Error).message }, "database not reachable yet, retrying");
      await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
    }
  }
}

/** True for errors where running the same transaction again is the right answer. */
export function isTransientDbError(err: unknown): boolean {
  const e = err as { errno?: number; code?: string } | null;
  if (!e) return false;
  // 1213 deadlock, 1205 lock wait timeout, 1020 record changed (MariaDB optimistic), 4031 idle disconnect
  if (e.errno === 1213 || e.errno === 1205 || e.errno === 1020 || e.errno === 4031) return true;
  return ["ECONNRESET", "PROTOCOL_CONNECTION_LOST", "EPIPE"].includes(e.code ?? "");
}

/** Runs fn again (up to `attempts` times) when it fails with a deadlock or lock timeout. */
export async function retryTransient<T>(fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts || !isTransientDbError(err)) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * 10 * i));
    }
  }
}

/**
 * Runs fn with a pool for schema changes: a short-lived pool on
 * migrationUrl when given (a user that may change the schema, while the
 * service's own pool uses one that may only read and write rows), else the
 * service's pool.
 */
export async function withMigrationPool(migrationUrl: string | undefined, pool: Pool, fn: (pool: Pool) => Promise<void>): Promise<void> {
  if (!migrationUrl) return fn(pool);
  // Two: migrateWithLock holds one connection for the lock while the migrator uses another.
  const migrationPool = createPool({ url: migrationUrl, connectionLimit: 2 });
  try {
    await fn(migrationPool);
  } finally {
    await migrationPool.end();
  }
}

/**
 * Applies drizzle-kit migrations under a named lock, so replicas starting
 * together do not race each other through the same migration. What `run`
 * returns (what it applied, say) goes into the "up to date" log line.
 */
export async function migrateWithLock(
  pool: Pool,
  lockName: string,
  run: () => Promise<void | Record<string, unknown>>,
  logger: Logger,
): Promise<void> {
  const conn = await pool.getConnection();
  try {
    const [rows] = await conn.query("SELECT GET_LOCK(?, 60) AS got", [lockName]);
    if ((rows as Array<{ got: number }>)[0]?.got !== 1) throw new Error(`could not take migration lock ${lockName} within 60 s`);
    try {
      const started = Date.now();
      const details = await run();
      logger.info({ ...details, ms: Date.now() - started }, "database schema is up to date");
    } finally {
      await conn.query("SELECT RELEASE_LOCK(?)", [lockName]);
    }
  } finally {
    conn.release();
  }
}
