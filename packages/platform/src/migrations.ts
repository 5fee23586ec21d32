import { readFileSync } from "node:fs";
import path from "node:path";
import { drizzle } from "drizzle-orm/mysql2";
import { migrate } from "drizzle-orm/mysql2/migrator";
import { envReader } from "./config.js";
import { createPool, migrateWithLock, waitForDatabase, withMigrationPool, type Pool } from "./db.js";
import { createLogger, type Logger } from "./logger.js";
import { dieOnStartupError } from "./shutdown.js";

/** A service's drizzle-kit migrations. */
export interface ServiceMigrations {
  /**
   * The service's folder and name, e.g. "order-service": the migration lock is
   * `<service>-migrate`, and the migration job is `node <service>/dist/migrate-main.js`.
   */
  service: string;
  /** The prefix of the service's settings (<P>_DATABASE_URL, <P>_MIGRATE_ON_START, ...): ORDER, VOUCHER, PAYMENT, DELIVERY. */
  prefix: string;
  /** drizzle-kit's output folder: the SQL files and meta/_journal.json. */
  folder: string;
}

/** One migration of drizzle-kit's meta/_journal.json. */
export interface JournalEntry {
  idx: number;
  /** When drizzle-kit generated it (ms); drizzle's migrator records it as created_at when it applies the migration. */
  when: number;
  tag: string;
}

/** The table drizzle's migrator records applied migrations in (its default name; the services do not change it). */
const MIGRATIONS_TABLE = "__drizzle_migrations";
const ER_NO_SUCH_TABLE = 1146;

/** The migrations of a folder's meta/_journal.json, in order. */
export function readJournal(folder: string): JournalEntry[] {
  const file = path.join(folder, "meta", "_journal.json");
  const journal = JSON.parse(readFileSync(file, "utf8")) as { entries?: JournalEntry[] };
  if (!Array.isArray(journal.entries)) throw new Error(`${file} has no entries`);
  return journal.entries;
}

/**
 * The journal's migrations the database has not applied, judged exactly as
 * drizzle's MySQL migrator judges before it applies them: it reads the
 * newest row of __drizzle_migrations (by created_at) and applies every
 * journal entry whose `when` is later; with no row or no table, all of them.
 * So an empty answer means a migration run would change nothing.
 */
export async function pendingMigrations(pool: Pool, migrations: ServiceMigrations): Promise<JournalEntry[]> {
  const entries = readJournal(migrations.folder);
  let last: number | undefined;
  try {
    const [rows] = await pool.query(`SELECT created_at FROM \`${MIGRATIONS_TABLE}\` ORDER BY created_at DESC LIMIT 1`);
    const row = (rows as Array<{ created_at: number | string | null }>)[0];
    if (row && row.created_at !== null) last = Number(row.created_at);
  } catch (err) {
    // No table: nothing was ever migrated here.
    if ((err as { errno?: number }).errno !== ER_NO_SUCH_TABLE) throw err;
  }
  return entries.filter((e) => last === undefined || last < e.when);
}

/**
 * Applies a service's pending migrations under its migration lock (replicas
 * and migration jobs starting together take turns; the later ones find
 * nothing to do) and logs "database schema is up to date" with the tags it
 * applied. Returns those tags (empty when the schema was already current).
 */
export async function applyMigrations(pool: Pool, migrations: ServiceMigrations, logger: Logger): Promise<string[]> {
  let applied: string[] = [];
  await migrateWithLock(
    pool,
    `${migrations.service}-migrate`,
    async () => {
      // Read under the lock: what this run applies, not what another replica did meanwhile.
      applied = (await pendingMigrations(pool, migrations)).map((e) => e.tag);
      if (applied.length > 0) await migrate(drizzle(pool), { migrationsFolder: migrations.folder });
      return { applied };
    },
    logger,
  );
  return applied;
}

/** The start-up error of a service told not to migrate whose database lacks some of its migrations. */
export class SchemaBehindError extends Error {
  constructor(
    readonly migrations: ServiceMigrations,
    readonly pending: string[],
  ) {
    const { service, prefix } = migrations;
    super(
      `the database schema is behind: ${pending.length} migration(s) of ${service} not applied (${pending.join(", ")}); ` +
        `run the migration job \`node ${service}/dist/migrate-main.js\` first (it reads ${prefix}_MIGRATION_DATABASE_URL, ` +
        `else ${prefix}_DATABASE_URL), or let the process migrate at start (${prefix}_MIGRATE_ON_START=true, the default)`,
    );
    this.name = "SchemaBehindError";
  }
}

/** Throws a SchemaBehindError unless every migration of the service's journal is recorded as applied. */
export async function checkMigrationsApplied(pool: Pool, migrations: ServiceMigrations, logger: Logger): Promise<void> {
  const pending = await pendingMigrations(pool, migrations);
  if (pending.length > 0) throw new SchemaBehindError(migrations, pending.map((e) => e.tag));
  logger.info({ migrations: readJournal(migrations.folder).length }, `database schema is up to date (checked, not migrated: ${migrations.prefix}_MIGRATE_ON_START=false)`);
}

/** How a process gets its schema at start. */
export interface SchemaAtStart {
  /**
   * <P>_MIGRATE_ON_START, default true: apply pending migrations (as
   * migrationDatabaseUrl when given). False: only check that none is
   * pending, with the process's own pool (its user needs no DDL rights then),
   * and refuse to start when one is: the migration job applies them.
   */
  migrateOnStart?: boolean;
  /** <P>_MIGRATION_DATABASE_URL: a user that may change the schema, used only to migrate. */
  migrationDatabaseUrl?: string;
}

/** Migrates at start, or only checks the schema when told not to (see SchemaAtStart). */
export async function prepareSchema(pool: Pool, migrations: ServiceMigrations, opts: SchemaAtStart, logger: Logger): Promise<void> {
  if (opts.migrateOnStart === false) return checkMigrationsApplied(pool, migrations, logger);
  await withMigrationPool(opts.migrationDatabaseUrl, pool, async (p) => {
    await applyMigrations(p, migrations, logger);
  });
}

/**
 * A service's migration job as a process (`node <service>/dist/migrate-main.js`,
 * a Kubernetes Job or an init container): applies the pending migrations as
 * <P>_MIGRATION_DATABASE_URL (default <P>_DATABASE_URL) under the migration
 * lock, logs "database schema is up to date" with what it applied and exits
 * 0; a bad or missing setting, an unreachable database or a failed migration
 * is logged and exits 1. Run twice, the second run applies nothing.
 * waitMs bounds the wait for the database (default 30 s, as the services wait).
 */
export async function runMigrationJob(migrations: ServiceMigrations, waitMs?: number): Promise<never> {
  const logger = createLogger(`${migrations.service}-migrate`);
  let url: string;
  try {
    const env = envReader();
    const migrationName = `${migrations.prefix}_MIGRATION_DATABASE_URL`;
    const appName = `${migrations.prefix}_DATABASE_URL`;
    url = env.optionalDatabaseUrl(migrationName) ?? env.optionalDatabaseUrl(appName) ?? "";
    if (env.optionalString(migrationName) === undefined && env.optionalString(appName) === undefined) {
      env.problem(`${migrationName} (or ${appName}) is required (mysql://user:password@host:port/database): the user that applies the migrations`);
    }
    env.finish();
  } catch (err) {
    dieOnStartupError(logger, err);
  }
  // Two connections: migrateWithLock holds one for the lock while the migrator uses the other.
  const pool = createPool({ url, connectionLimit: 2 });
  try {
    await waitForDatabase(pool, logger, waitMs);
    await applyMigrations(pool, migrations, logger);
  } catch (err) {
    logger.fatal({ err }, `migrations of ${migrations.service} failed: ${failureText(err)}`);
    await pool.end().catch(() => {});
    process.exit(1);
  }
  await pool.end();
  process.exit(0);
}

/**
 * An error's message on one line, with its cause's: drizzle wraps the
 * database's answer ("CREATE command denied ...") in a "Failed query: <the
 * SQL>" error whose message alone does not say what went wrong.
 */
function failureText(err: unknown): string {
  const text = (e: unknown) => ((e as Error)?.message ?? String(e)).replace(/\s+/g, " ").trim();
  const cause = (err as { cause?: unknown })?.cause;
  return cause === undefined ? text(err) : `${text(err)}: ${text(cause)}`;
}
