import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";
import { pino } from "pino";
import { createPool } from "@shop/platform/db";
import { startOrderService, type RunningOrderService } from "@shop/order-service/service";
import { RELAY_DEFAULTS } from "@shop/order-service/outbox/relay";
import { startVoucherService, type RunningVoucherService } from "@shop/voucher-service/service";
import { createOrderClient } from "@shop/sdk/clients";
import { VoucherStatus } from "@shop/sdk/order";
import { allScopesToken, roleToken, testAuth } from "@shop/testkit/auth";
import { sharedServer } from "@shop/testkit/shared-servers";

/**
 * ops/mariadb/least-privilege.sh, the script docker-compose.yml runs on each
 * database's first start, run here against a real MariaDB: both services work
 * with users that may only read and write rows (schema changes go through a
 * separate migration user), and neither service's users can touch the other
 * service's database, even with both databases on one server.
 */
const run = promisify(execFile);
const script = path.resolve(import.meta.dirname, "../../ops/mariadb/least-privilege.sh");
const silent = pino({ level: process.env.TEST_LOG ?? "silent" });
const suffix = Math.random().toString(36).slice(2, 8);

describe("least-privilege database users (ops/mariadb/least-privilege.sh)", function () {
  this.timeout(60_000);
  const server = () => sharedServer("order");
  const dbs = { order: `lp_orders_${suffix}`, voucher: `lp_vouchers_${suffix}` };
  const url = (user: string, db: string) => `mysql://${user}:pw-${user}@127.0.0.1:${server().port}/${db}`;
  const users = (which: "order" | "voucher") => ({ app: `${which}_app_${suffix}`, migrate: `${which}_mig_${suffix}` });
  let orderSvc: RunningOrderService | undefined;
  let voucherSvc: RunningVoucherService | undefined;

  async function createUsers(which: "order" | "voucher"): Promise<string> {
    const u = users(which);
    await server().sql(`CREATE DATABASE \`${dbs[which]}\``);
    const { stdout } = await run("sh", [script], {
      env: {
        PATH: process.env.PATH,
        MARIADB_CLIENT: `mariadb --no-defaults --socket=${server().socket} -uroot`,
        MARIADB_DATABASE: dbs[which],
        APP_USER: u.app,
        APP_PASSWORD: `pw-${u.app}`,
        MIGRATE_USER: u.migrate,
        MIGRATE_PASSWORD: `pw-${u.migrate}`,
      },
    });
    return stdout;
  }

  /** The MariaDB error number a statement fails with as this user, or 0 when it succeeds. */
  async function errnoAs(user: string, db: string, sql: string): Promise<number> {
    const pool = createPool({ url: url(user, db), connectionLimit: 1 });
    try {
      await pool.query(sql);
      return 0;
    } catch (err) {
      return (err as { errno?: number }).errno ?? -1;
    } finally {
      await pool.end();
    }
  }

  before(async () => {
    expect(await createUsers("order")).to.contain(`users ${users("order").migrate} (schema changes) and ${users("order").app} (rows only)`);
    await createUsers("voucher");
  });

  after(async () => {
    await Promise.allSettled([orderSvc?.stop(), voucherSvc?.stop()]);
    const drop = Object.values(dbs).map((d) => `DROP DATABASE IF EXISTS \`${d}\`;`);
    const dropUsers = [users("order"), users("voucher")].flatMap((u) => [u.app, u.migrate]).map((n) => `DROP USER IF EXISTS '${n}'@'%';`);
    await server().sql([...drop, ...dropUsers].join(""));
  });

  it("are enough to run both services, the relay included, with migrations applied by the migration users", async () => {
    voucherSvc = await startVoucherService({
      auth: testAuth,
      databaseUrl: url(users("voucher").app, dbs.voucher),
      migrationDatabaseUrl: url(users("voucher").migrate, dbs.voucher),
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      logger: silent,
      graceMs: 200,
    });
    orderSvc = await startOrderService({
      config: {
        databaseUrl: url(users("order").app, dbs.order),
        migrationDatabaseUrl: url(users("order").migrate, dbs.order),
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        poolSize: 4,
        voucherServiceUrl: `http://127.0.0.1:${voucherSvc.grpcPort}`,
        relayEnabled: true,
        auth: testAuth,
        relayToken: roleToken("relay"),
      },
      relay: { ...RELAY_DEFAULTS, pollIntervalMs: 100 },
      logger: silent,
      shutdownGraceMs: 200,
    });
    const { client, close } = createOrderClient({ baseUrl: `http://127.0.0.1:${orderSvc.grpcPort}`, token: allScopesToken });
    try {
      const { order } = await client.createOrder({ customerId: "lp-1", totalCents: 15_000n, currency: "EUR", requestId: `lp-${suffix}` });
      await client.markOrderSent({ orderId: order!.id });
      const deadline = Date.now() + 15_000;
      let status = VoucherStatus.PENDING;
      while (status !== VoucherStatus.ISSUED && Date.now() < deadline) {
        status = (await client.getOrder({ orderId: order!.id })).order!.voucher!.status;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(VoucherStatus[status]).to.equal("ISSUED");
    } finally {
      close();
    }
  });

  it("keep the services' own users to rows: no schema changes", async () => {
    const ACCESS_DENIED = [1142, 1044]; // table / database access denied
    for (const which of ["order", "voucher"] as const) {
      const { app } = users(which);
      expect(await errnoAs(app, dbs[which], "SELECT 1")).to.equal(0);
      expect(ACCESS_DENIED, `${app} CREATE TABLE`).to.include(await errnoAs(app, dbs[which], "CREATE TABLE sneaky (id INT)"));
      const table = which === "order" ? "orders" : "vouchers";
      expect(ACCESS_DENIED, `${app} DROP TABLE`).to.include(await errnoAs(app, dbs[which], `DROP TABLE ${table}`));
      expect(ACCESS_DENIED, `${app} ALTER TABLE`).to.include(await errnoAs(app, dbs[which], `ALTER TABLE ${table} ADD COLUMN x INT`));
    }
  });

  it("keep each service out of the other's database, migration users included", async () => {
    for (const [which, other, table] of [
      ["order", "voucher", "vouchers"],
      ["voucher", "order", "orders"],
    ] as const) {
      for (const user of Object.values(users(which))) {
        const errno = await errnoAs(user, dbs[which], `SELECT COUNT(*) FROM \`${dbs[other]}\`.${table}`);
        expect([1142, 1044], `${user} reading ${dbs[other]}.${table}`).to.include(errno);
        const connectErrno = await errnoAs(user, dbs[other], "SELECT 1");
        expect(connectErrno, `${user} connecting to ${dbs[other]}`).to.equal(1044);
      }
    }
  });
});
