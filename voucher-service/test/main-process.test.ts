import { readFileSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { createVoucherClient } from "@shop/sdk/clients";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { allScopesToken } from "@shop/testkit/auth";

const ENTRY = path.resolve(import.meta.dirname, "../src/main.ts");

describe("voucher service as a process (main.ts)", () => {
  let db: TestDatabase;
  let proc: ServiceProcess | undefined;
  before(async () => {
    db = await freshDatabase("voucher");
  });
  afterEach(async () => {
    await proc?.kill();
    proc = undefined;
  });
  after(async () => {
    await db?.drop();
  });

  it("starts, answers /readyz and gRPC, and exits 0 on SIGTERM", async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    proc = new ServiceProcess({
      name: "voucher-service-main",
      entry: ENTRY,
      env: { VOUCHER_DATABASE_URL: db.url, VOUCHER_GRPC_PORT: String(grpcPort), VOUCHER_HTTP_PORT: String(httpPort), LOG_LEVEL: "info" },
      readyUrl: `http://127.0.0.1:${httpPort}/readyz`,
    });
    await proc.start();
    const ready = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
    expect(ready.status).to.equal(200);

    const { client, close } = createVoucherClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${grpcPort}` });
    try {
      const res = await client.issueVoucher({ orderId: "main-1", customerId: "c-1", orderTotalCents: 15_000n, currency: "EUR" });
      expect(res.created).to.equal(true);
    } finally {
      close();
    }
    expect(await proc.stop("SIGTERM")).to.equal(0);
  });

  it("refuses to start with a bad port, exits 1 and names the variable", async () => {
    proc = new ServiceProcess({
      name: "voucher-service-bad-config",
      entry: ENTRY,
      env: { VOUCHER_DATABASE_URL: db.url, VOUCHER_GRPC_PORT: "not-a-port" },
    });
    const logStart = fileSize(proc.logFile);
    await proc.start();
    expect(await proc.exited()).to.equal(1);
    // The log file is written through a pipe: give it a moment to catch up with the exit.
    const wanted = 'VOUCHER_GRPC_PORT=\\"not-a-port\\" is not a whole number';
    const deadline = Date.now() + 2_000;
    let log = "";
    while (!(log = readFileSync(proc.logFile, "utf8").slice(logStart)).includes(wanted) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(log).to.include(wanted);
  });
});

function fileSize(file: string): number {
  try {
    return readFileSync(file).length;
  } catch {
    return 0;
  }
}
