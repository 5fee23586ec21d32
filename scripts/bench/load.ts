import { readFileSync } from "node:fs";

/** Latency summary in ms. */
export interface Latency {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

export function summarize(samples: number[]): Latency {
  if (samples.length === 0) return { count: 0, p50: NaN, p99: NaN, max: NaN };
  const s = Float64Array.from(samples).sort();
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { count: s.length, p50: round(at(0.5)), p99: round(at(0.99)), max: round(s[s.length - 1]!) };
}

export const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;

export interface ClosedLoopResult {
  calls: number;
  errors: number;
  seconds: number;
  perSecond: number;
  latencyMs: Latency;
  firstError?: string;
}

/**
 * `concurrency` workers, each calling `call` with the next item as soon as its
 * previous call returns, until the items or the time run out. The clock
 * starts after a short warm-up that is not counted.
 */
export async function closedLoop<T>(
  items: T[],
  concurrency: number,
  durationMs: number,
  call: (item: T) => Promise<unknown>,
): Promise<ClosedLoopResult> {
  let next = 0;
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const started = performance.now();
  const deadline = started + durationMs;
  const worker = async () => {
    while (next < items.length && performance.now() < deadline) {
      const item = items[next++]!;
      const t = performance.now();
      try {
        await call(item);
        latencies.push(performance.now() - t);
      } catch (err) {
        errors++;
        firstError ??= String((err as Error).message ?? err);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - started) / 1000;
  return { calls: latencies.length, errors, seconds: round(seconds), perSecond: round(latencies.length / seconds, 0), latencyMs: summarize(latencies), firstError };
}

/**
 * Offers `rate` calls per second for durationMs whatever the answers take
 * (open loop: a slow server does not slow the offered load), with at most
 * maxInFlight outstanding; calls that would exceed it are counted as dropped.
 */
export async function openLoop<T>(
  items: T[],
  rate: number,
  durationMs: number,
  maxInFlight: number,
  call: (item: T) => Promise<unknown>,
): Promise<{ offered: number; done: number; errors: number; dropped: number; used: T[]; latencyMs: Latency }> {
  const started = performance.now();
  const total = Math.min(items.length, Math.floor((rate * durationMs) / 1000));
  let issued = 0;
  let inFlight = 0;
  let errors = 0;
  let dropped = 0;
  const used: T[] = [];
  const latencies: number[] = [];
  const pending = new Set<Promise<void>>();
  while (issued < total) {
    const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate));
    while (issued < due) {
      const item = items[issued++]!;
      if (inFlight >= maxInFlight) {
        dropped++;
        continue;
      }
      inFlight++;
      used.push(item);
      const t = performance.now();
      const p: Promise<void> = call(item).then(
        () => void latencies.push(performance.now() - t),
        () => void errors++,
      ).finally(() => {
        inFlight--;
        pending.delete(p);
      });
      pending.add(p);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(pending);
  return { offered: total, done: latencies.length, errors, dropped, used, latencyMs: summarize(latencies) };
}

/** Peak resident set size (VmHWM) of a live process, in MB; undefined once it has exited. */
export function peakRssMb(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? round(Number(m[1]) / 1024, 1) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What a benchmark started, stopped in reverse order once: by `cleanUp()` at its end (or on failure), and on
 * Ctrl-C or SIGTERM, after which the process exits 130. A step that fails is reported and the rest still run.
 */
export function cleanupOnExit(say: (message: string) => void): { cleanups: Array<() => Promise<unknown> | unknown>; cleanUp: () => Promise<void> } {
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  let cleaning: Promise<void> | undefined;
  const cleanUp = () => {
    cleaning ??= (async () => {
      for (const c of cleanups.reverse()) await Promise.resolve(c()).catch((err) => say(`cleanup failed: ${String(err)}`));
    })();
    return cleaning;
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      say(`${sig}: stopping what was started`);
      void cleanUp().finally(() => process.exit(130));
    });
  }
  return { cleanups, cleanUp };
}
