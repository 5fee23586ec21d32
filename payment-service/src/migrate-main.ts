import { runMigrationJob } from "@shop/platform/migrations";
import { PAYMENT_MIGRATIONS } from "./db/migrate.js";

/**
 * The payment service's migration job (`node payment-service/dist/migrate-main.js`,
 * `npm run migrate:payment` from source): applies its migrations as
 * PAYMENT_MIGRATION_DATABASE_URL (else PAYMENT_DATABASE_URL) and exits; see runMigrationJob.
 */
await runMigrationJob(PAYMENT_MIGRATIONS);
