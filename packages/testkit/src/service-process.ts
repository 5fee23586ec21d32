import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import { createWriteStream, mkdirSync } from "node:fs";
import path from "node:path";
import { testAuthEnv } from "./auth.js";

const require = createRequire(import.meta.url);
const TSX_LOADER = require.resolve("tsx");
const LOG_DIR = path.resolve(import.meta.dirname, "../../../.test-logs");

export interface ServiceProcessOptions {
  /** Name for logs and errors. */
  name: string;
  /** Entry file (TypeScript), absolute path. */
  entry: string;
  env: Record<string, string>;
  /** URL polled until it answers 200, e.g. http://127.0.0.1:PORT/readyz. */
  readyUrl?: string;
  readyTimeoutMs?: number;
  args?: string[];
}

/**
 * A service started as a real process (node + tsx), its output kept in
 * .test-logs/<name>.log for when a test fails.
 */
export class ServiceProcess {
  private child?: ChildProcess;
  private exitPromise?: Promise<number | null>;
  readonly logFile: string;

  constructor(readonly opts: ServiceProcessOptions) {
    mkdirSync(LOG_DIR, { recursive: true });
    this.logFile = path.join(LOG_DIR, `${opts.name}.log`);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(): Promise<void> {
    const log = createWriteStream(this.logFile, { flags: "a" });
    const child = spawn(process.execPath, ["--import", TSX_LOADER, this.opts.entry, ...(this.opts.args ?? [])], {
      env: { ...process.env, LOG_FORMAT: "json", ...testAuthEnv, ...this.opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    child.stdout!.pipe(log, { end: false });
    child.stderr!.pipe(log, { end: false });
    this.exitPromise = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    if (this.opts.readyUrl) await this.waitReady(this.opts.readyUrl, this.opts.readyTimeoutMs ?? 30_000);
  }

  private async waitReady(url: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) throw new Error(`${this.opts.name} exited during start; see ${this.logFile}`);
      try {
        const res = await fetch(url);
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`${this.opts.name} not ready within ${timeoutMs} ms; see ${this.logFile}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Sends a signal and waits for the exit code (null when killed by a signal). */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (!this.running) return this.child?.exitCode ?? null;
    this.child!.kill(signal);
    return this.exitPromise!;
  }

  kill(): Promise<number | null> {
    return this.stop("SIGKILL");
  }

  /** Resolves with the exit code when the process ends on its own. */
  exited(): Promise<number | null> {
    return this.exitPromise ?? Promise.resolve(null);
  }
}
