import { runMigrationJob } from "@shop/platform/migrations";
import { ORDER_MIGRATIONS } from "./db/migrate.js";

/**
 * The order service's migration job (`node order-service/dist/migrate-main.js`,
 * `npm run migrate:order` from source): applies its migrations as
 * ORDER_MIGRATION_DATABASE_URL (else ORDER_DATABASE_URL) and exits; see runMigrationJob.
 */
await runMigrationJob(ORDER_MIGRATIONS);
