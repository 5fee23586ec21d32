import { expect } from "chai";
import { errorPauseMs, retryDelayMs } from "../src/backoff.js";

describe("outbox backoff", () => {
  const policy = { baseMs: 500, maxMs: 300_000 };

  it("keeps the first retry below the base delay", () => {
    expect(retryDelayMs(1, policy, () => 0.999)).to.be.below(500);
    expect(retryDelayMs(1, policy, () => 0)).to.equal(0);
  });

  it("doubles the ceiling with every attempt", () => {
    const top = (attempts: number) => retryDelayMs(attempts, policy, () => 1);
    expect([1, 2, 3, 4].map(top)).to.deep.equal([500, 1000, 2000, 4000]);
  });

  it("never waits longer than the cap, however many attempts", () => {
    expect(retryDelayMs(20, policy, () => 1)).to.equal(300_000);
    expect(retryDelayMs(10_000, policy, () => 0.9999)).to.be.at.most(300_000);
  });

  it("spreads delays over the whole range (full jitter)", () => {
    expect(retryDelayMs(3, policy, () => 0.5)).to.equal(1000);
    const samples = Array.from({ length: 1000 }, () => retryDelayMs(5, policy));
    expect(Math.min(...samples)).to.be.below(1000);
    expect(Math.max(...samples)).to.be.above(7000);
    expect(samples.every((d) => d >= 0 && d < 8000 && Number.isInteger(d))).to.equal(true);
  });

  it("treats a zero or negative attempt count as the first attempt", () => {
    expect(retryDelayMs(0, policy, () => 1)).to.equal(500);
    expect(retryDelayMs(-3, policy, () => 1)).to.equal(500);
  });

  it("pauses a loop longer after each consecutive database error, up to its cap", () => {
    const p = { baseMs: 100, maxMs: 1000 };
    expect([1, 2, 3, 4, 5, 50].map((n) => errorPauseMs(n, p))).to.deep.equal([100, 200, 400, 800, 1000, 1000]);
  });
});
