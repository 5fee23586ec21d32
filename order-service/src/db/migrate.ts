import path from "node:path";
import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import { applyMigrations, type ServiceMigrations } from "@shop/platform/migrations";

/** The committed drizzle-kit migrations (the same folder from src/ and dist/). */
export const ORDER_MIGRATIONS: ServiceMigrations = {
  service: "order-service",
  prefix: "ORDER",
  folder: path.resolve(import.meta.dirname, "../../drizzle"),
};

/** Applies the committed drizzle-kit migrations (idempotent; safe with replicas starting together). */
export async function migrateOrderDatabase(pool: Pool, logger: Logger): Promise<void> {
  await applyMigrations(pool, ORDER_MIGRATIONS, logger);
}
