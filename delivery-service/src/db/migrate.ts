import path from "node:path";
import { drizzle } from "drizzle-orm/mysql2";
import { migrate } from "drizzle-orm/mysql2/migrator";
import { migrateWithLock, type Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";

const MIGRATIONS = path.resolve(import.meta.dirname, "../../drizzle");

/** Applies the committed drizzle-kit migrations (idempotent; safe with replicas starting together). */
export async function migrateDeliveryDatabase(pool: Pool, logger: Logger): Promise<void> {
  await migrateWithLock(pool, "delivery-service-migrate", () => migrate(drizzle(pool), { migrationsFolder: MIGRATIONS }), logger);
}
