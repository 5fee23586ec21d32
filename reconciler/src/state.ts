import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";

/** What survives between runs: how far reconciliation is known to be complete, and what is still open. */
export interface ReconcilerState {
  /** End (exclusive) of the window of the last run that completed. */
  windowEnd: string;
  /** The run that wrote this state. */
  runId: string;
  /** Order ids of drift a completed run could not repair; the next run looks at them again whatever its window. */
  unresolvedOrderIds: string[];
}

export interface Window {
  /** Inclusive lower bound; undefined means the beginning of time. */
  since?: Date;
  /** Exclusive upper bound. */
  until: Date;
}

/** Reads the state file; undefined when there is none (a first run, or a lost file: the run looks back RECONCILE_INITIAL_LOOKBACK_MS). */
export async function readState(file: string): Promise<ReconcilerState | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  let parsed: Partial<ReconcilerState>;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`state file ${file} is not valid JSON; fix or delete it (deleting makes the next run look back only RECONCILE_INITIAL_LOOKBACK_MS; --since or --full reach further)`);
  }
  if (typeof parsed.windowEnd !== "string" || Number.isNaN(Date.parse(parsed.windowEnd))) {
    throw new Error(`state file ${file} has no valid windowEnd; fix or delete it (deleting makes the next run look at everything)`);
  }
  return {
    windowEnd: parsed.windowEnd,
    runId: String(parsed.runId ?? ""),
    unresolvedOrderIds: Array.isArray(parsed.unresolvedOrderIds) ? parsed.unresolvedOrderIds.map(String) : [],
  };
}

/** Writes through a temporary file and a rename, so a crash leaves the old state or the new one, never half of one. */
export async function writeJsonAtomically(file: string, value: unknown): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(tmp, JSON.stringify(value, null, 2) + "\n", "utf8");
  await rename(tmp, file);
}

/**
 * The default window: from the end of the last completed run minus the
 * overlap up to now minus the grace period, so orders the relay may still be
 * delivering are left alone. Without a state (a first run, or the file was
 * lost) it reaches back initialLookbackMs before that end, not to the
 * beginning of time: a lost file must not turn a nightly run into a run over
 * all of history, with all the repairs (and voids) that may bring. Reaching
 * further is an explicit --since or --full.
 */
export function defaultWindow(state: ReconcilerState | undefined, now: Date, graceMs: number, overlapMs: number, initialLookbackMs: number): Window {
  const until = new Date(now.getTime() - graceMs);
  if (!state) return { since: new Date(until.getTime() - initialLookbackMs), until };
  const since = new Date(Date.parse(state.windowEnd) - overlapMs);
  return { since: since < until ? since : until, until };
}

/**
 * Where completed coverage ends after a run over `window`: it moves forward
 * only when the window starts at or before the current end, so a manual run
 * over a later slice never hides a gap, and never moves backwards. Without a
 * state nothing is known to be covered, and the first finished run's end
 * becomes the start of coverage (its summary says how far back it looked).
 */
export function nextWindowEnd(state: ReconcilerState | undefined, window: Window): Date | undefined {
  if (!state) return window.until;
  const covered = new Date(state.windowEnd);
  const contiguous = window.since === undefined || window.since <= covered;
  if (!contiguous) return covered;
  if (covered > window.until) return covered;
  return window.until;
}
