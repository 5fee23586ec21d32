import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import type { RowDataPacket } from "mysql2/promise";
import { pino } from "pino";
import { testAuth } from "@shop/testkit/auth";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { startDatabaseService } from "../src/database-service.js";
import { createPool, type Pool } from "../src/db.js";
import { createMetrics } from "../src/metrics.js";
import {
  applyMigrations,
  checkMigrationsApplied,
  pendingMigrations,
  prepareSchema,
  SchemaBehindError,
  type ServiceMigrations,
} from "../src/migrations.js";

const silent = pino({ level: process.env.TEST_LOG ?? "silent" });

/** A drizzle-kit output folder of its own: the journal and one SQL file per migration. */
function migrationsFolder(dir: string, entries: Array<{ when: number; tag: string; sql: string }>): string {
  mkdirSync(path.join(dir, "meta"), { recursive: true });
  const journal = {
    version: "7",
    dialect: "mysql",
    entries: entries.map((e, idx) => ({ idx, version: "5", when: e.when, tag: e.tag, breakpoints: true })),
  };
  writeFileSync(path.join(dir, "meta", "_journal.json"), JSON.stringify(journal));
  for (const e of entries) writeFileSync(path.join(dir, `${e.tag}.sql`), e.sql);
  return dir;
}

const FIRST = { when: 1_700_000_000_000, tag: "0000_things", sql: "CREATE TABLE things (id INT PRIMARY KEY)" };
const SECOND = { when: 1_700_000_100_000, tag: "0001_things_name", sql: "ALTER TABLE things ADD COLUMN name VARCHAR(20)" };

async function tables(pool: Pool): Promise<string[]> {
  const [rows] = await pool.query<RowDataPacket[]>("SELECT table_name AS t FROM information_schema.tables WHERE table_schema = DATABASE()");
  return rows.map((r) => String(r.t)).sort();
}

describe("service migrations: applied under the lock, or checked without migrating", function () {
  this.timeout(30_000);
  let db: TestDatabase;
  let pool: Pool;
  let work: string;
  let one: ServiceMigrations;
  let two: ServiceMigrations;

  beforeEach(async () => {
    db = await freshDatabase("order");
    pool = createPool({ url: db.url, connectionLimit: 2 });
    work = mkdtempSync(path.join(tmpdir(), "shop-migrations-"));
    // The same service's journal before and after its second migration was added.
    one = { service: "thing-service", prefix: "THING", folder: migrationsFolder(path.join(work, "one"), [FIRST]) };
    two = { ...one, folder: migrationsFolder(path.join(work, "two"), [FIRST, SECOND]) };
  });

  afterEach(async () => {
    await pool?.end();
    await db?.drop();
    rmSync(work, { recursive: true, force: true });
  });

  it("finds every migration pending on an empty database (no __drizzle_migrations table), and none once applied", async () => {
    expect((await pendingMigrations(pool, two)).map((e) => e.tag)).to.deep.equal([FIRST.tag, SECOND.tag]);
    expect(await applyMigrations(pool, two, silent)).to.deep.equal([FIRST.tag, SECOND.tag]);
    expect(await pendingMigrations(pool, two)).to.deep.equal([]);
    expect(await tables(pool)).to.deep.equal(["__drizzle_migrations", "things"]);
    // A second run applies nothing.
    expect(await applyMigrations(pool, two, silent)).to.deep.equal([]);
    const [rows] = await pool.query<RowDataPacket[]>("SELECT created_at FROM __drizzle_migrations ORDER BY id");
    expect(rows.map((r) => Number(r.created_at))).to.deep.equal([FIRST.when, SECOND.when]);
  });

  it("judges a database migrated by the older journal as drizzle does: the newer migration is pending, and applying it applies only that one", async () => {
    expect(await applyMigrations(pool, one, silent)).to.deep.equal([FIRST.tag]);
    expect(await pendingMigrations(pool, one)).to.deep.equal([]);
    expect((await pendingMigrations(pool, two)).map((e) => e.tag)).to.deep.equal([SECOND.tag]);
    expect(await applyMigrations(pool, two, silent)).to.deep.equal([SECOND.tag]);
    const [cols] = await pool.query<RowDataPacket[]>("SELECT column_name AS c FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'things' ORDER BY ordinal_position");
    expect(cols.map((r) => String(r.c))).to.deep.equal(["id", "name"]);
  });

  it("checkMigrationsApplied refuses a schema that is behind, naming the migrations and the migration job, and passes a current one", async () => {
    const behind = await checkMigrationsApplied(pool, two, silent).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(behind).to.be.instanceOf(SchemaBehindError);
    expect((behind as SchemaBehindError).pending).to.deep.equal([FIRST.tag, SECOND.tag]);
    expect((behind as Error).message).to.match(/^the database schema is behind: 2 migration\(s\) of thing-service not applied \(0000_things, 0001_things_name\)/);
    expect((behind as Error).message).to.include("`node thing-service/dist/migrate-main.js`");
    expect((behind as Error).message).to.include("THING_MIGRATE_ON_START=true");
    // The check changed nothing: not even drizzle's table.
    expect(await tables(pool)).to.deep.equal([]);

    await applyMigrations(pool, one, silent);
    const stillBehind = await checkMigrationsApplied(pool, two, silent).catch((e: unknown) => e);
    expect((stillBehind as SchemaBehindError).pending).to.deep.equal([SECOND.tag]);
    await applyMigrations(pool, two, silent);
    await checkMigrationsApplied(pool, two, silent);
  });

  it("prepareSchema migrates by default (as the migration URL's user when given) and only checks with migrateOnStart=false", async () => {
    expect(await prepareSchema(pool, two, { migrateOnStart: false }, silent).catch((e: unknown) => e)).to.be.instanceOf(SchemaBehindError);
    expect(await tables(pool)).to.deep.equal([]);
    await prepareSchema(pool, two, { migrationDatabaseUrl: db.url }, silent);
    expect(await pendingMigrations(pool, two)).to.deep.equal([]);
    await prepareSchema(pool, two, { migrateOnStart: false }, silent);
  });

  it("startDatabaseService with migrateOnStart=false refuses an unmigrated database before building anything, and starts on a migrated one", async () => {
    let built = 0;
    const start = () =>
      startDatabaseService(
        { databaseUrl: db.url, migrateOnStart: false, host: "127.0.0.1", grpcPort: 0, httpPort: 0, logger: silent, auth: testAuth, graceMs: 100 },
        two,
        () => {
          built++;
          return { services: [], metrics: createMetrics({ processMetrics: false }), isReady: async () => true };
        },
      );
    const refused = await start().catch((e: unknown) => e);
    expect(refused).to.be.instanceOf(SchemaBehindError);
    expect(built).to.equal(0);
    expect(await tables(pool)).to.deep.equal([]);

    await applyMigrations(pool, two, silent);
    const running = await start();
    try {
      expect(built).to.equal(1);
      expect((await fetch(`http://127.0.0.1:${running.httpPort}/readyz`)).status).to.equal(200);
    } finally {
      await running.stop();
    }
  });
});
