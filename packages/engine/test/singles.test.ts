import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { batchOfSingles, singlesBatchLimit, singlesRelayConfigProblems } from "@shop/engine/singles";
import type { Claimed } from "@shop/engine";

type Row = { key: string };
const row = (key: string, id: number): Claimed<Row> => ({ key, id, attempts: 1 });

describe("batchOfSingles: a batch call made of per-row calls", () => {
  it("answers each row with its own call's result, in the rows' order", async () => {
    const batch = batchOfSingles<Row, string>(async (r) => ({ result: `done ${r.key}`, created: r.key !== "b" }));
    const out = await batch([row("a", 1), row("b", 2)], { timeoutMs: 1000 });
    expect(out).to.deep.equal([
      { result: "done a", created: true },
      { result: "done b", created: false },
    ]);
  });

  it("turns a row refused for its content into that row's error and keeps its neighbours' results", async () => {
    const batch = batchOfSingles<Row, string>(async (r) => {
      if (r.key === "bad") throw new ConnectError("amount is not the order's total", Code.FailedPrecondition);
      return { result: r.key, created: true };
    });
    const out = await batch([row("a", 1), row("bad", 2), row("c", 3)], { timeoutMs: 1000 });
    expect(out[0]).to.deep.equal({ result: "a", created: true });
    expect(out[1]).to.deep.equal({ code: Code.FailedPrecondition, message: "amount is not the order's total" });
    expect(out[2]).to.deep.equal({ result: "c", created: true });
  });

  for (const code of [Code.Unavailable, Code.Unauthenticated, Code.Internal, Code.DeadlineExceeded]) {
    it(`fails the whole batch when a call fails with ${Code[code]} (not the row's content)`, async () => {
      const seen: string[] = [];
      const batch = batchOfSingles<Row, string>(async (r) => {
        seen.push(r.key);
        if (r.key === "b") throw new ConnectError("no", code);
        return { result: r.key, created: true };
      });
      const err = await batch([row("a", 1), row("b", 2), row("c", 3)], { timeoutMs: 1000 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(ConnectError);
      expect((err as ConnectError).code).to.equal(code);
      // Every call was made (side by side), so the batch waited for all of them before failing.
      expect(seen.sort()).to.deep.equal(["a", "b", "c"]);
    });
  }

  it("keeps at most inFlight calls outstanding, and still makes every row's call", async () => {
    let now = 0;
    let peak = 0;
    const batch = batchOfSingles<Row, string>(async (r) => {
      now++;
      peak = Math.max(peak, now);
      await new Promise((resolve) => setTimeout(resolve, 2));
      now--;
      return { result: r.key, created: true };
    }, 3);
    const rows = Array.from({ length: 20 }, (_, i) => row(`r${i}`, i));
    const out = await batch(rows, { timeoutMs: 1000 });
    expect(out.map((o) => ("result" in o ? o.result : undefined))).to.deep.equal(rows.map((r) => r.key));
    expect(peak).to.equal(3);
  });

  it("refuses an inFlight that is not a positive integer", () => {
    expect(() => batchOfSingles<Row, string>(async () => ({ result: "", created: true }), 0)).to.throw(/positive integer/);
  });

  it("treats an error that is not a ConnectError as UNKNOWN: the batch fails", async () => {
    const batch = batchOfSingles<Row, string>(async () => {
      throw new Error("socket hang up");
    });
    const err = await batch([row("a", 1)], { timeoutMs: 1000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(ConnectError.from(err).code).to.equal(Code.Unknown);
  });
});

describe("singlesBatchLimit", () => {
  it("is the largest claim whose waves of calls, each up to the call timeout, end within the lease", () => {
    // 30 s lease, 5 s calls: 5 waves of 16 (25 s) end within it, 6 (30 s) would not.
    expect(singlesBatchLimit({ leaseMs: 30_000, callTimeoutMs: 5_000 })).to.equal(80);
    expect(singlesBatchLimit({ leaseMs: 30_001, callTimeoutMs: 5_000 })).to.equal(96);
    // Never below one wave.
    expect(singlesBatchLimit({ leaseMs: 1_000, callTimeoutMs: 900 })).to.equal(16);
  });
});

describe("singlesRelayConfigProblems", () => {
  const names = { prefix: "X_RELAY_", method: "RecordThing" };
  it("accepts a claim up to singlesBatchLimit and names every setting of a larger one", () => {
    expect(singlesRelayConfigProblems({ batchSize: 80, leaseMs: 30_000, callTimeoutMs: 5_000 }, names)).to.deep.equal([]);
    const [problem, ...more] = singlesRelayConfigProblems({ batchSize: 81, leaseMs: 30_000, callTimeoutMs: 5_000 }, names);
    expect(more).to.deep.equal([]);
    expect(problem).to.equal(
      "X_RELAY_BATCH_SIZE=81 is 6 waves of 16 RecordThing calls, up to 6 × X_RELAY_CALL_TIMEOUT_MS=5000 ms, which must end within X_RELAY_LEASE_MS=30000: " +
        "lower the batch size or the call timeout, or raise the lease",
    );
  });
});
