import { readFileSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { ServiceProcess } from "@shop/testkit/service-process";
import { startFakeVoucherServer, type FakeVoucherServer } from "./fake-voucher-service.js";
import { allDelivered, eventually, freshOutboxDb, insertOutboxRows, type OutboxDb } from "./outbox-db.js";

const ENTRY = path.resolve(import.meta.dirname, "../../src/relay-main.ts");

describe("relay process (relay-main)", () => {
  let o: OutboxDb;
  let srv: FakeVoucherServer;
  let proc: ServiceProcess | undefined;

  beforeEach(async () => {
    o = await freshOutboxDb();
    srv = await startFakeVoucherServer();
  });

  afterEach(async () => {
    if (proc?.running) await proc.kill();
    proc = undefined;
    await srv.close();
    await o.close();
  });

  it("drains the outbox on its own and exits 0 on SIGTERM", async () => {
    const orders = await insertOutboxRows(o.pool, 30);
    proc = new ServiceProcess({
      name: "order-relay",
      entry: ENTRY,
      env: {
        ORDER_DATABASE_URL: o.db.url,
        VOUCHER_SERVICE_URL: `http://127.0.0.1:${srv.port}`,
        RELAY_POLL_INTERVAL_MS: "50",
        RELAY_BATCH_SIZE: "10",
      },
    });
    await proc.start();
    await eventually("all rows are delivered", () => allDelivered(o.pool), 15_000);
    expect(orders.every((id) => srv.fake.requests.get(id) === 1)).to.equal(true);
    expect(await proc.stop("SIGTERM")).to.equal(0);
  });

  it("exits 1 at start, naming the bad settings", async () => {
    proc = new ServiceProcess({
      name: "order-relay-bad-config",
      entry: ENTRY,
      env: {
        ORDER_DATABASE_URL: o.db.url,
        RELAY_LEASE_MS: "1000",
        RELAY_CALL_TIMEOUT_MS: "1000",
        VOUCHER_SERVICE_URL: "nope",
        RELAY_BATCH_SIZE: "1000",
        RELAY_MAX_REQUEST_BYTES: "65536",
      },
    });
    const logStart = safeSize(proc.logFile);
    await proc.start();
    const code = await new Promise<number | null>((resolve) => {
      const poll = setInterval(() => {
        if (!proc!.running) {
          clearInterval(poll);
          resolve(proc!.stop());
        }
      }, 20);
    });
    expect(code).to.equal(1);
    // The child's output reaches the log file through a stream that may still be writing after the exit.
    const logged = () => readFileSync(proc!.logFile, "utf8").slice(logStart);
    await eventually("the refusal is in the log", () => logged().includes("invalid configuration"), 5_000);
    const log = logged();
    expect(log).to.include("RELAY_LEASE_MS=1000");
    expect(log).to.include("VOUCHER_SERVICE_URL");
    expect(log).to.match(/RELAY_BATCH_SIZE=1000 makes BatchIssueVouchers requests of up to \d+ bytes, more than RELAY_MAX_REQUEST_BYTES=65536/);
  });
});

function safeSize(file: string): number {
  try {
    return readFileSync(file).length;
  } catch {
    return 0;
  }
}
