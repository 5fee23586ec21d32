import type { PoolConnection } from "mysql2/promise";
import type { Pool } from "@shop/platform/db";

/**
 * Runs fn in a transaction on one pooled connection. A connection whose
 * rollback also fails is destroyed rather than handed back: it is most
 * likely dead (server restarted), and the next borrower should get a new one.
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
