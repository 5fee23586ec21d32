import path from "node:path";
import type { Pool } from "@shop/platform/db";
import type { Logger } from "@shop/platform/logger";
import { applyMigrations, type ServiceMigrations } from "@shop/platform/migrations";

/** The committed drizzle-kit migrations (the same folder from src/ and dist/). */
export const VOUCHER_MIGRATIONS: ServiceMigrations = {
  service: "voucher-service",
  prefix: "VOUCHER",
  folder: path.resolve(import.meta.dirname, "../../drizzle"),
};

/** Applies the committed drizzle-kit migrations (idempotent; safe with replicas starting together). */
export async function migrateVoucherDatabase(pool: Pool, logger: Logger): Promise<void> {
  await applyMigrations(pool, VOUCHER_MIGRATIONS, logger);
}
