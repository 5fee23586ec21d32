import { execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";
import { readJournal } from "@shop/platform/migrations";
import { createOrderClient, createVoucherClient } from "@shop/sdk/clients";
import { allScopesToken, roleToken, testAuthEnv } from "@shop/testkit/auth";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, sharedServer, type TestDatabase } from "@shop/testkit/shared-servers";
import { loadDeliveryServiceConfig } from "@shop/delivery-service/config";
import { loadOrderServiceConfig } from "@shop/order-service/config";
import { loadPaymentServiceConfig } from "@shop/payment-service/config";
import { loadVoucherServiceConfig } from "@shop/voucher-service/config";

/**
 * The migration jobs (<svc>/src/migrate-main.ts, `node <svc>/dist/migrate-main.js`
 * in the image) and <P>_MIGRATE_ON_START=false, as real processes on real
 * MariaDB: the job applies a service's journal and exits; a service or a
 * standalone relay told not to migrate refuses a database that is behind,
 * naming the job, and starts once the job ran, with a user that may not
 * change the schema.
 */
const root = path.resolve(import.meta.dirname, "..");
const require = createRequire(import.meta.url);
const TSX_LOADER = require.resolve("tsx");
const sh = promisify(execFile);

const SERVICES = [
  { service: "order-service", prefix: "ORDER" },
  { service: "voucher-service", prefix: "VOUCHER" },
  { service: "payment-service", prefix: "PAYMENT" },
  { service: "delivery-service", prefix: "DELIVERY" },
] as const;

const journalTags = (service: string) => readJournal(path.join(root, service, "drizzle")).map((e) => e.tag);

interface Finished {
  code: number | null;
  output: string;
  /** The JSON log lines. */
  lines: Array<Record<string, unknown> & { msg?: string }>;
}

/**
 * Runs a process that is expected to end by itself (a job, a refused start)
 * from its source, as ServiceProcess does, and returns its exit code and all
 * of its output ('close': the output streams are drained). Killed, and so
 * failing the test, if it is still running after two minutes.
 */
function runToEnd(entry: string, env: Record<string, string>): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", TSX_LOADER, path.join(root, entry)], {
      env: { ...process.env, LOG_FORMAT: "json", ...testAuthEnv, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const guard = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(guard);
      const lines = output
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Finished["lines"][number]);
      resolve({ code, output, lines });
    });
  });
}

/** The rows of drizzle's record of applied migrations, or -1 when the table is missing. */
async function recordedMigrations(db: TestDatabase): Promise<number> {
  const out = await db.sql(`SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '${db.name}' AND table_name = '__drizzle_migrations'`);
  if (out.trim() === "0") return -1;
  return Number((await db.sql("SELECT COUNT(*) FROM __drizzle_migrations")).trim());
}

/** The settings a service's main needs besides its database: free ports, no relay that needs other services. */
async function serviceEnv(prefix: "ORDER" | "VOUCHER"): Promise<{ env: Record<string, string>; grpcPort: number; httpPort: number }> {
  const [grpcPort, httpPort] = await Promise.all([freePort(), freePort()]);
  const env: Record<string, string> = { [`${prefix}_GRPC_PORT`]: String(grpcPort), [`${prefix}_HTTP_PORT`]: String(httpPort) };
  if (prefix === "ORDER") env.RELAY_ENABLED = "false";
  return { env, grpcPort, httpPort };
}

describe("migration jobs (<svc>/dist/migrate-main.js) and <P>_MIGRATE_ON_START", function () {
  this.timeout(180_000);
  const dbs: TestDatabase[] = [];
  const procs: ServiceProcess[] = [];
  const fresh = async (which: "order" | "voucher") => {
    const db = await freshDatabase(which);
    dbs.push(db);
    return db;
  };

  afterEach(async () => {
    await Promise.all(procs.splice(0).map((p) => p.stop()));
  });

  after(async () => {
    await Promise.all(dbs.map((d) => d.drop()));
  });

  it("each service's job applies its whole journal to an empty database and exits 0; run again, it applies nothing and exits 0", async () => {
    await Promise.all(
      SERVICES.map(async ({ service, prefix }, i) => {
        const db = await fresh(i % 2 === 0 ? "order" : "voucher");
        // Half of them given only the migration URL, half only the app URL (the fallback).
        const env = i % 2 === 0 ? { [`${prefix}_MIGRATION_DATABASE_URL`]: db.url, [`${prefix}_DATABASE_URL`]: "" } : { [`${prefix}_DATABASE_URL`]: db.url };
        const entry = `${service}/src/migrate-main.ts`;
        const tags = journalTags(service);
        expect(tags, service).not.to.be.empty;

        const first = await runToEnd(entry, env);
        expect(first.code, `${service}: ${first.output}`).to.equal(0);
        const done = first.lines.find((l) => l.msg === "database schema is up to date");
        expect(done?.applied, service).to.deep.equal(tags);
        expect(done?.service, service).to.equal(`${service}-migrate`);
        expect(await recordedMigrations(db), service).to.equal(tags.length);

        const second = await runToEnd(entry, env);
        expect(second.code, `${service}: ${second.output}`).to.equal(0);
        expect(second.lines.find((l) => l.msg === "database schema is up to date")?.applied, service).to.deep.equal([]);
        expect(await recordedMigrations(db), service).to.equal(tags.length);
      }),
    );
  });

  it("a job without a database URL exits 1 naming the settings; one whose user may not change the schema exits 1 naming the failure", async () => {
    const none = await runToEnd("order-service/src/migrate-main.ts", { ORDER_MIGRATION_DATABASE_URL: "", ORDER_DATABASE_URL: "" });
    expect(none.code).to.equal(1);
    expect(none.output).to.include("invalid configuration");
    expect(none.output).to.include("ORDER_MIGRATION_DATABASE_URL (or ORDER_DATABASE_URL) is required");

    const db = await fresh("order");
    const rowsOnly = `ro_${db.name}`.slice(0, 32);
    await db.server.sql(
      `CREATE USER '${rowsOnly}'@'127.0.0.1' IDENTIFIED BY 'pw'; GRANT SELECT, INSERT, UPDATE, DELETE ON \`${db.name}\`.* TO '${rowsOnly}'@'127.0.0.1';`,
    );
    try {
      const denied = await runToEnd("voucher-service/src/migrate-main.ts", {
        VOUCHER_MIGRATION_DATABASE_URL: `mysql://${rowsOnly}:pw@127.0.0.1:${db.server.port}/${db.name}`,
      });
      expect(denied.code).to.equal(1);
      const fatal = denied.lines.find((l) => l.level === 60);
      expect(fatal?.msg, denied.output).to.match(/^migrations of voucher-service failed: .*CREATE command denied/);
      expect(await recordedMigrations(db)).to.equal(-1);
    } finally {
      await db.server.sql(`DROP USER IF EXISTS '${rowsOnly}'@'127.0.0.1'`);
    }
  });

  for (const prefix of ["ORDER", "VOUCHER"] as const) {
    const service = prefix === "ORDER" ? "order-service" : "voucher-service";
    it(`${service} with ${prefix}_MIGRATE_ON_START=false refuses an unmigrated database, naming the migration job; after the job it starts and answers /readyz`, async () => {
      const db = await fresh(prefix === "ORDER" ? "order" : "voucher");
      const { env, httpPort } = await serviceEnv(prefix);
      Object.assign(env, { [`${prefix}_DATABASE_URL`]: db.url, [`${prefix}_MIGRATE_ON_START`]: "false" });

      const refused = await runToEnd(`${service}/src/main.ts`, env);
      expect(refused.code, refused.output).to.equal(1);
      const fatal = refused.lines.find((l) => l.level === 60)?.msg;
      expect(fatal).to.match(new RegExp(`^the database schema is behind: ${journalTags(service).length} migration\\(s\\) of ${service} not applied`));
      expect(fatal).to.include(`node ${service}/dist/migrate-main.js`);
      // It only looked: no table was made, not even drizzle's.
      expect(await recordedMigrations(db)).to.equal(-1);

      const job = await runToEnd(`${service}/src/migrate-main.ts`, { [`${prefix}_DATABASE_URL`]: db.url });
      expect(job.code, job.output).to.equal(0);

      const proc = new ServiceProcess({ name: `${service}-no-migrate`, entry: path.join(root, service, "src/main.ts"), env, readyUrl: `http://127.0.0.1:${httpPort}/readyz` });
      procs.push(proc);
      await proc.start();
      expect((await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status).to.equal(200);
      expect(await proc.stop()).to.equal(0);
    });
  }

  it("the standalone relays (order, payment, delivery) with <P>_MIGRATE_ON_START=false refuse an unmigrated database the same way", async () => {
    const relays: Array<{ service: string; prefix: string; env: Record<string, string> }> = [
      { service: "order-service", prefix: "ORDER", env: {} },
      { service: "payment-service", prefix: "PAYMENT", env: { PAYMENT_RELAY_TOKEN: roleToken("payment-relay") } },
      { service: "delivery-service", prefix: "DELIVERY", env: { DELIVERY_RELAY_TOKEN: roleToken("delivery-relay") } },
    ];
    await Promise.all(
      relays.map(async ({ service, prefix, env }) => {
        const db = await fresh("voucher");
        const refused = await runToEnd(`${service}/src/relay-main.ts`, { ...env, [`${prefix}_DATABASE_URL`]: db.url, [`${prefix}_MIGRATE_ON_START`]: "false" });
        expect(refused.code, `${service}: ${refused.output}`).to.equal(1);
        const fatal = refused.lines.find((l) => l.level === 60)?.msg;
        expect(fatal, service).to.match(/^the database schema is behind: /);
        expect(fatal, service).to.include(`node ${service}/dist/migrate-main.js`);
        expect(await recordedMigrations(db), service).to.equal(-1);
      }),
    );
  });

  it("refuses a <P>_MIGRATE_ON_START that is not a boolean, naming it: the services' settings, a service and a standalone relay", async () => {
    const problems = (load: () => unknown): string => {
      try {
        load();
        return "";
      } catch (err) {
        return (err as Error).message;
      }
    };
    const url = "mysql://u:p@127.0.0.1:1/db";
    expect(problems(() => loadOrderServiceConfig({ ...testAuthEnv, ORDER_DATABASE_URL: url, ORDER_MIGRATE_ON_START: "maybe" }))).to.include(
      'ORDER_MIGRATE_ON_START="maybe" is not a boolean',
    );
    expect(problems(() => loadVoucherServiceConfig({ ...testAuthEnv, VOUCHER_DATABASE_URL: url, VOUCHER_MIGRATE_ON_START: "2" }))).to.include(
      'VOUCHER_MIGRATE_ON_START="2" is not a boolean',
    );
    expect(problems(() => loadPaymentServiceConfig({ ...testAuthEnv, PAYMENT_DATABASE_URL: url, PAYMENT_RELAY_ENABLED: "false", PAYMENT_MIGRATE_ON_START: "nope" }))).to.include(
      'PAYMENT_MIGRATE_ON_START="nope" is not a boolean',
    );
    expect(problems(() => loadDeliveryServiceConfig({ ...testAuthEnv, DELIVERY_DATABASE_URL: url, DELIVERY_RELAY_ENABLED: "false", DELIVERY_MIGRATE_ON_START: "y" }))).to.include(
      'DELIVERY_MIGRATE_ON_START="y" is not a boolean',
    );
    for (const prefix of ["ORDER", "VOUCHER", "PAYMENT", "DELIVERY"]) {
      const ok = (value: string) => () => {
        const load = { ORDER: loadOrderServiceConfig, VOUCHER: loadVoucherServiceConfig, PAYMENT: loadPaymentServiceConfig, DELIVERY: loadDeliveryServiceConfig }[prefix]!;
        return load({ ...testAuthEnv, [`${prefix}_DATABASE_URL`]: url, PAYMENT_RELAY_ENABLED: "false", DELIVERY_RELAY_ENABLED: "false", [`${prefix}_MIGRATE_ON_START`]: value });
      };
      expect((ok("false")() as { migrateOnStart?: boolean }).migrateOnStart, prefix).to.equal(false);
      expect((ok("true")() as { migrateOnStart?: boolean }).migrateOnStart, prefix).to.equal(true);
    }

    const db = await fresh("order");
    const service = await runToEnd("order-service/src/main.ts", { ...(await serviceEnv("ORDER")).env, ORDER_DATABASE_URL: db.url, ORDER_MIGRATE_ON_START: "maybe" });
    expect(service.code).to.equal(1);
    expect(service.lines.find((l) => l.level === 60)?.msg).to.include("invalid configuration").and.include('ORDER_MIGRATE_ON_START="maybe" is not a boolean');
    const relay = await runToEnd("payment-service/src/relay-main.ts", {
      PAYMENT_DATABASE_URL: db.url,
      PAYMENT_RELAY_TOKEN: roleToken("payment-relay"),
      PAYMENT_MIGRATE_ON_START: "nah",
    });
    expect(relay.code).to.equal(1);
    expect(relay.lines.find((l) => l.level === 60)?.msg).to.include("invalid configuration").and.include('PAYMENT_MIGRATE_ON_START="nah" is not a boolean');
    // Neither got as far as the database.
    expect(await recordedMigrations(db)).to.equal(-1);
  });

  describe("with least-privilege users (ops/mariadb/least-privilege.sh): the job as the migration user, the services as rows-only users", () => {
    const suffix = randomUUID().slice(0, 8);
    const server = () => sharedServer("voucher");
    const names = { order: `mj_orders_${suffix}`, voucher: `mj_vouchers_${suffix}` };
    const user = (which: "order" | "voucher", role: "app" | "mig") => `mj_${which}_${role}_${suffix}`;
    const url = (which: "order" | "voucher", role: "app" | "mig") => `mysql://${user(which, role)}:pw@127.0.0.1:${server().port}/${names[which]}`;

    before(async () => {
      for (const which of ["order", "voucher"] as const) {
        await server().sql(`CREATE DATABASE \`${names[which]}\``);
        await sh("sh", [path.join(root, "ops/mariadb/least-privilege.sh")], {
          env: {
            PATH: process.env.PATH,
            MARIADB_CLIENT: `mariadb --no-defaults --socket=${server().socket} -uroot`,
            MARIADB_DATABASE: names[which],
            APP_USER: user(which, "app"),
            APP_PASSWORD: "pw",
            MIGRATE_USER: user(which, "mig"),
            MIGRATE_PASSWORD: "pw",
          },
        });
      }
    });

    after(async () => {
      const users = (["order", "voucher"] as const).flatMap((w) => [user(w, "app"), user(w, "mig")]);
      await server().sql(
        [...Object.values(names).map((n) => `DROP DATABASE IF EXISTS \`${n}\`;`), ...users.map((u) => `DROP USER IF EXISTS '${u}'@'%';`)].join(""),
      );
    });

    it("the order and voucher services start with MIGRATE_ON_START=false after their jobs ran, and serve calls as users without DDL rights", async () => {
      // The app user cannot migrate: with the default MIGRATE_ON_START=true and no migration user, the start fails on the first CREATE.
      const voucherSettings = await serviceEnv("VOUCHER");
      const migrating = await runToEnd("voucher-service/src/main.ts", { ...voucherSettings.env, VOUCHER_DATABASE_URL: url("voucher", "app") });
      expect(migrating.code, migrating.output).to.equal(1);
      expect(migrating.output).to.match(/denied/i);

      for (const [which, service, prefix] of [
        ["order", "order-service", "ORDER"],
        ["voucher", "voucher-service", "VOUCHER"],
      ] as const) {
        // The job is given both URLs, as a deployment's shared settings would: it uses the migration user.
        const job = await runToEnd(`${service}/src/migrate-main.ts`, { [`${prefix}_DATABASE_URL`]: url(which, "app"), [`${prefix}_MIGRATION_DATABASE_URL`]: url(which, "mig") });
        expect(job.code, job.output).to.equal(0);
        expect(job.lines.find((l) => l.msg === "database schema is up to date")?.applied).to.deep.equal(journalTags(service));
      }

      const orderSettings = await serviceEnv("ORDER");
      const voucher = new ServiceProcess({
        name: "voucher-service-rows-only",
        entry: path.join(root, "voucher-service/src/main.ts"),
        env: { ...voucherSettings.env, VOUCHER_DATABASE_URL: url("voucher", "app"), VOUCHER_MIGRATE_ON_START: "false" },
        readyUrl: `http://127.0.0.1:${voucherSettings.httpPort}/readyz`,
      });
      const order = new ServiceProcess({
        name: "order-service-rows-only",
        entry: path.join(root, "order-service/src/main.ts"),
        env: { ...orderSettings.env, ORDER_DATABASE_URL: url("order", "app"), ORDER_MIGRATE_ON_START: "false" },
        readyUrl: `http://127.0.0.1:${orderSettings.httpPort}/readyz`,
      });
      procs.push(voucher, order);
      await Promise.all([voucher.start(), order.start()]);

      const orders = createOrderClient({ baseUrl: `http://127.0.0.1:${orderSettings.grpcPort}`, token: allScopesToken });
      const vouchers = createVoucherClient({ baseUrl: `http://127.0.0.1:${voucherSettings.grpcPort}`, token: allScopesToken });
      try {
        const { order: created } = await orders.client.createOrder({ customerId: "mj-1", totalCents: 15_000n, currency: "EUR", requestId: randomUUID() });
        expect((await orders.client.getOrder({ orderId: created!.id })).order?.id).to.equal(created!.id);
        const batch = await vouchers.client.batchGetVouchersByOrder({ orderIds: [created!.id] });
        expect(batch.vouchers).to.deep.equal([]);
      } finally {
        orders.close();
        vouchers.close();
      }
      expect(await order.stop()).to.equal(0);
      expect(await voucher.stop()).to.equal(0);
    });
  });
});
