import { expect } from "chai";
import { pino } from "pino";
import { ReconcileScheduler } from "../src/scheduler.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A logger that keeps what it was told, so a test can check what an operator would see. */
function recordingLogger() {
  const lines: Array<{ level: number; msg: string }> = [];
  const logger = pino({ level: "debug" }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { logger, lines };
}

describe("reconcile scheduler", function () {
  this.timeout(15_000);

  it("fires on a per-second schedule", async () => {
    const { logger } = recordingLogger();
    let runs = 0;
    const scheduler = new ReconcileScheduler({ cron: "* * * * * *", timezone: "UTC", logger, run: async () => void runs++ });
    scheduler.start();
    await sleep(2_600);
    await scheduler.stop();
    expect(runs).to.be.within(2, 3);
    const after = runs;
    await sleep(1_200);
    expect(runs, "no run after stop()").to.equal(after);
  });

  it("skips a tick while the previous run is still going, and logs that it did", async () => {
    const { logger, lines } = recordingLogger();
    let running = 0;
    let maxConcurrent = 0;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const scheduler = new ReconcileScheduler({
      cron: "* * * * * *",
      timezone: "UTC",
      logger,
      run: async () => {
        running++;
        maxConcurrent = Math.max(maxConcurrent, running);
        await held;
        running--;
      },
    });
    scheduler.start();
    while (scheduler.stats.started === 0) await sleep(20);
    await sleep(2_300);
    const skippedWhileHeld = scheduler.stats.skipped;
    release();
    await scheduler.stop();
    expect(scheduler.stats.started).to.equal(1);
    expect(maxConcurrent).to.equal(1);
    expect(skippedWhileHeld).to.be.at.least(2);
    expect(lines.filter((l) => l.msg.includes("skipped: the previous run is still going")).length).to.equal(scheduler.stats.skipped);
  });

  it("waits for the run in flight when stopped", async () => {
    const { logger } = recordingLogger();
    let finished = false;
    const scheduler = new ReconcileScheduler({
      cron: "* * * * * *",
      timezone: "UTC",
      logger,
      run: async () => {
        await sleep(800);
        finished = true;
      },
    });
    scheduler.start();
    while (scheduler.stats.started === 0) await sleep(20);
    await scheduler.stop();
    expect(finished).to.equal(true);
  });

  it("refuses an invalid expression", () => {
    const { logger } = recordingLogger();
    expect(() => new ReconcileScheduler({ cron: "every night", timezone: "UTC", logger, run: async () => {} })).to.throw(/invalid cron/);
  });
});
