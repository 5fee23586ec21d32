import { runMigrationJob } from "@shop/platform/migrations";
import { VOUCHER_MIGRATIONS } from "./db/migrate.js";

/**
 * The voucher service's migration job (`node voucher-service/dist/migrate-main.js`,
 * `npm run migrate:voucher` from source): applies its migrations as
 * VOUCHER_MIGRATION_DATABASE_URL (else VOUCHER_DATABASE_URL) and exits; see runMigrationJob.
 */
await runMigrationJob(VOUCHER_MIGRATIONS);
