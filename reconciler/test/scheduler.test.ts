import { expect } from "chai";
import { pino } from "pino";
import { cronTicker, ReconcileScheduler, type Ticker } from "../src/scheduler.js";

/** A logger that keeps what it was told, so a test can check what an operator would see. */
function recordingLogger() {
  const lines: Array<{ level: number; msg: string }> = [];
  const logger = pino({ level: "debug" }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { logger, lines };
}

/** A ticker the test drives by hand: no waiting on the wall clock, no tick the test did not ask for. */
function handTicker(): Ticker & { tick(): void; stopped: boolean } {
  let onTick: (() => void) | undefined;
  return {
    stopped: false,
    start(fn) {
      onTick = fn;
    },
    async stop() {
      this.stopped = true;
      onTick = undefined;
    },
    nextRun: () => null,
    tick() {
      onTick?.();
    },
  };
}

/** A run the test lets finish when it wants. */
function heldRun() {
  let running = 0;
  let maxConcurrent = 0;
  const releases: Array<() => void> = [];
  return {
    get maxConcurrent() {
      return maxConcurrent;
    },
    release: () => releases.shift()?.(),
    run: async () => {
      running++;
      maxConcurrent = Math.max(maxConcurrent, running);
      await new Promise<void>((r) => releases.push(r));
      running--;
    },
  };
}

describe("reconcile scheduler", () => {
  it("starts a run on each tick, and none after stop()", async () => {
    const { logger } = recordingLogger();
    const ticker = handTicker();
    let runs = 0;
    const scheduler = new ReconcileScheduler({ cron: "30 2 * * *", timezone: "UTC", logger, ticker, run: async () => void runs++ });
    ticker.tick();
    expect(runs, "no run before start()").to.equal(0);
    scheduler.start();
    ticker.tick();
    await scheduler.running;
    ticker.tick();
    await scheduler.running;
    expect(runs).to.equal(2);
    await scheduler.stop();
    expect(ticker.stopped).to.equal(true);
    ticker.tick();
    expect(runs, "no run after stop()").to.equal(2);
  });

  it("skips a tick while the previous run is still going, and logs that it did", async () => {
    const { logger, lines } = recordingLogger();
    const ticker = handTicker();
    const held = heldRun();
    const scheduler = new ReconcileScheduler({ cron: "30 2 * * *", timezone: "UTC", logger, ticker, run: held.run });
    scheduler.start();
    ticker.tick();
    ticker.tick();
    ticker.tick();
    expect(scheduler.stats).to.deep.equal({ started: 1, skipped: 2 });
    held.release();
    await scheduler.running;
    ticker.tick(); // the run is over: this tick starts the next one
    expect(scheduler.stats).to.deep.equal({ started: 2, skipped: 2 });
    held.release();
    await scheduler.stop();
    expect(held.maxConcurrent).to.equal(1);
    expect(lines.filter((l) => l.msg.includes("skipped: the previous run is still going")).length).to.equal(2);
  });

  it("waits for the run in flight when stopped", async () => {
    const { logger } = recordingLogger();
    const ticker = handTicker();
    let finished = false;
    let release!: () => void;
    const scheduler = new ReconcileScheduler({
      cron: "30 2 * * *",
      timezone: "UTC",
      logger,
      ticker,
      run: async () => {
        await new Promise<void>((r) => (release = r));
        finished = true;
      },
    });
    scheduler.start();
    ticker.tick();
    let stopped = false;
    const stopping = scheduler.stop().then(() => (stopped = true));
    await Promise.resolve();
    expect(stopped, "stop() returned while a run was going").to.equal(false);
    release();
    await stopping;
    expect(finished).to.equal(true);
  });

  it("keeps ticking after a run throws, and logs the error", async () => {
    const { logger, lines } = recordingLogger();
    const ticker = handTicker();
    let runs = 0;
    const scheduler = new ReconcileScheduler({
      cron: "30 2 * * *",
      timezone: "UTC",
      logger,
      ticker,
      run: async () => {
        runs++;
        throw new Error("boom");
      },
    });
    scheduler.start();
    ticker.tick();
    await scheduler.running;
    ticker.tick();
    await scheduler.running;
    await scheduler.stop();
    expect(runs).to.equal(2);
    expect(lines.filter((l) => l.msg === "scheduled reconcile run threw")).to.have.length(2);
  });

  it("refuses an invalid expression", () => {
    const { logger } = recordingLogger();
    expect(() => new ReconcileScheduler({ cron: "every night", timezone: "UTC", logger, run: async () => {} })).to.throw(/invalid cron/);
  });
});

describe("cron ticker", () => {
  it("reads the expression in its timezone: the next 02:30 in Berlin is 00:30 or 01:30 UTC", async () => {
    const { logger } = recordingLogger();
    const ticker = cronTicker("30 2 * * *", "Europe/Berlin", logger, "test-berlin");
    ticker.start(() => {});
    try {
      const next = ticker.nextRun()!;
      expect(next.getTime() - Date.now()).to.be.within(0, 25 * 3_600_000);
      expect(next.getUTCMinutes()).to.equal(30);
      expect(next.getUTCHours()).to.be.oneOf([0, 1]);
    } finally {
      await ticker.stop();
    }
  });

  it("calls the scheduler from node-cron's task, so a tick of the real task starts a run", async () => {
    const { logger } = recordingLogger();
    const ticker = cronTicker("30 2 * * *", "UTC", logger, "test-execute");
    let runs = 0;
    const scheduler = new ReconcileScheduler({ cron: "30 2 * * *", timezone: "UTC", logger, ticker, run: async () => void runs++ });
    scheduler.start();
    await ticker.task.execute();
    await scheduler.running;
    await scheduler.stop();
    expect(runs).to.equal(1);
  });
});
