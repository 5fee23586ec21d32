import { runMigrationJob } from "@shop/platform/migrations";
import { DELIVERY_MIGRATIONS } from "./db/migrate.js";

/**
 * The delivery service's migration job (`node delivery-service/dist/migrate-main.js`,
 * `npm run migrate:delivery` from source): applies its migrations as
 * DELIVERY_MIGRATION_DATABASE_URL (else DELIVERY_DATABASE_URL) and exits; see runMigrationJob.
 */
await runMigrationJob(DELIVERY_MIGRATIONS);
