import { randomBytes } from "node:crypto";
import { MariaDbServer } from "./mariadb.js";

/**
 * Two private MariaDB servers for the whole test run, one standing for the
 * order service's database and one for the voucher service's, as in
 * production. Each test suite takes fresh databases on them.
 */
let servers: { order: MariaDbServer; voucher: MariaDbServer } | undefined;

export async function startSharedServers(): Promise<void> {
  const order = new MariaDbServer();
  const voucher = new MariaDbServer();
  const started = await Promise.allSettled([order.start(), voucher.start()]);
  const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    // Stop the one that did start, or it would keep the test run alive.
    await Promise.allSettled([order.stop(), voucher.stop()]);
    throw failed.reason;
  }
  servers = { order, voucher };
}

export async function stopSharedServers(): Promise<void> {
  if (!servers) return;
  await Promise.all([servers.order.stop(), servers.voucher.stop()]);
  servers = undefined;
}

export function sharedServer(which: "order" | "voucher"): MariaDbServer {
  if (!servers) throw new Error("shared MariaDB servers are not running (test/fixtures.ts starts them)");
  return servers[which];
}

export interface TestDatabase {
  name: string;
  url: string;
  server: MariaDbServer;
  /** Runs SQL as root in this database (tab-separated output). */
  sql(statement: string): Promise<string>;
  drop(): Promise<void>;
}

/** A new empty database with its own user on one of the shared servers. */
export async function freshDatabase(which: "order" | "voucher"): Promise<TestDatabase> {
  const server = sharedServer(which);
  const name = `${which}_${randomBytes(4).toString("hex")}`;
  const url = await server.createDatabase(name, `u_${name}`);
  return {
    name,
    url,
    server,
    sql: (statement) => server.sql(statement, name),
    drop: () => server.dropDatabase(name),
  };
}
