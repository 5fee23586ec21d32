import path from "node:path";
import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import { applyMigrations, type ServiceMigrations } from "@shop/platform/migrations";

/** The committed drizzle-kit migrations (the same folder from src/ and dist/). */
export const DELIVERY_MIGRATIONS: ServiceMigrations = {
  service: "delivery-service",
  prefix: "DELIVERY",
  folder: path.resolve(import.meta.dirname, "../../drizzle"),
};

/** Applies the committed drizzle-kit migrations (idempotent; safe with replicas starting together). */
export async function migrateDeliveryDatabase(pool: Pool, logger: Logger): Promise<void> {
  await applyMigrations(pool, DELIVERY_MIGRATIONS, logger);
}
