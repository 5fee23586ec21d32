import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { freePort } from "@shop/testkit/ports";

const require = createRequire(import.meta.url);
const MAIN = path.resolve(import.meta.dirname, "../src/main.ts");

/** Runs `npm run reconcile -- <args>` as the real command, returning its exit code and output. */
function reconcileCommand(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", require.resolve("tsx"), MAIN, ...args],
      { env: { ...process.env, LOG_FORMAT: "json", ...env }, timeout: 20_000 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
    );
  });
}

describe("the reconcile command", function () {
  this.timeout(30_000);
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(path.join(tmpdir(), "reconcile-cli-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("exits 2 with a clear message and a JSON report when a service is down, and saves no state", async () => {
    const [orderPort, voucherPort] = await Promise.all([freePort(), freePort()]);
    const { code, stdout, stderr } = await reconcileCommand(["--once", "--json"], {
      ORDER_SERVICE_URL: `http://127.0.0.1:${orderPort}`,
      VOUCHER_SERVICE_URL: `http://127.0.0.1:${voucherPort}`,
      RECONCILE_STATE_FILE: path.join(dir, "state.json"),
      RECONCILE_REPORT_DIR: path.join(dir, "reports"),
      RECONCILE_TOKEN: "any-token",
    });
    expect(code).to.equal(2);
    const report = JSON.parse(stdout);
    expect(report).to.include({ outcome: "failed", exitCode: 2, dryRun: false });
    expect(report.error).to.equal(
      `ListSentOrders on the order service at http://127.0.0.1:${orderPort} failed: Unavailable: connect ECONNREFUSED 127.0.0.1:${orderPort} (is it running and reachable?)`,
    );
    expect(Object.keys(report)).to.include.members(["runId", "window", "durationMs", "counts", "ids", "drift", "scanned", "totals"]);
    expect(stderr).to.contain("run failed");
    expect(readdirSync(dir)).to.deep.equal(["reports"]);
    expect(readdirSync(path.join(dir, "reports"))).to.have.length(1);
  });

  it("prints a readable summary by default", async () => {
    const port = await freePort();
    const { code, stdout } = await reconcileCommand(["--once"], {
      ORDER_SERVICE_URL: `http://127.0.0.1:${port}`,
      VOUCHER_SERVICE_URL: `http://127.0.0.1:${port}`,
      RECONCILE_STATE_FILE: path.join(dir, "state.json"),
      RECONCILE_REPORT_DIR: path.join(dir, "reports"),
      RECONCILE_TOKEN: "any-token",
    });
    expect(code).to.equal(2);
    expect(stdout).to.match(/^reconcile \w+: RUN FAILED \(exit 2\)/);
    expect(stdout).to.contain("is it running and reachable?");
  });

  it("answers a bad flag with the usage and exit code 2", async () => {
    const { code, stderr } = await reconcileCommand(["--once", "--since", "last tuesday"], {});
    expect(code).to.equal(2);
    expect(stderr).to.contain('--since "last tuesday" is not an ISO 8601 time').and.contain("usage: npm run reconcile");
  });

  it("refuses an invalid cron setting by name", async () => {
    const { code, stderr } = await reconcileCommand(["--once"], { RECONCILE_CRON: "99 * * * *", RECONCILE_STATE_FILE: path.join(dir, "s.json") });
    expect(code).to.equal(2);
    expect(stderr).to.contain('RECONCILE_CRON="99 * * * *" is not a valid cron expression');
  });
});
