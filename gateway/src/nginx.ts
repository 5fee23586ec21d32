/**
 * Runs the gateway as an nginx process on this machine (npm start, tests):
 * finds nginx and its njs module, writes the rendered nginx.conf and
 * caller.js into a folder of its own, checks the configuration (nginx -t),
 * then starts nginx in the foreground and waits until both ports listen.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readSync, statSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { renderNginxConf, type GatewayConfig } from "./render.js";

const gatewayRoot = path.resolve(import.meta.dirname, "..");
/** The njs functions the configuration imports (gateway/njs/caller.js). */
export const CALLER_JS = path.join(gatewayRoot, "njs", "caller.js");

/** Where Debian's libnginx-mod-http-js and the official image's nginx-module-njs put the njs module. */
const NJS_MODULE_PATHS = ["/usr/lib/nginx/modules/ngx_http_js_module.so", "/usr/share/nginx/modules/ngx_http_js_module.so"];

/** nginx on PATH or in the sbin folders (Debian puts it in /usr/sbin, not on every user's PATH); undefined when absent. */
export function findNginx(): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"];
  for (const dir of dirs) {
    const candidate = path.join(dir, "nginx");
    if (dir && existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** The njs module for load_module, or undefined when it is not installed. */
export function findNjsModule(): string | undefined {
  return NJS_MODULE_PATHS.find((p) => existsSync(p));
}

/** What is missing for the gateway to run here, or undefined when nginx and njs are both installed. */
export function gatewayUnavailable(): string | undefined {
  if (!findNginx()) return "nginx is not installed (Debian/Ubuntu: apt-get install -y nginx-light libnginx-mod-http-js)";
  if (!findNjsModule()) return "nginx's njs module is not installed (Debian/Ubuntu: apt-get install -y libnginx-mod-http-js)";
  return undefined;
}

export interface RunningGateway {
  grpcPort: number;
  httpPort: number;
  /** The folder holding nginx.conf, caller.js, the pid file and temp files. */
  dir: string;
  process: ChildProcess;
  /** Graceful stop (SIGQUIT: requests in flight finish), SIGKILL after graceMs. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartGatewayOptions {
  /** A folder of the gateway's own; made if missing. */
  dir: string;
  /** Settings; paths are filled in for dir (nginx.conf's njsDir, pid, temp, logs to stdout/stderr). */
  config: Omit<GatewayConfig, "paths"> & { paths?: Partial<GatewayConfig["paths"]> };
  /** Each line of the access log (JSON, from access.log in dir, as it is written) and of the error log (stderr). */
  onLine?: (line: string, stream: "access" | "error") => void;
  /** How long to wait for both ports. Default 10 s. */
  readyTimeoutMs?: number;
}

/** Writes the configuration for a local run into dir and returns its path; throws with nginx's words if nginx -t refuses it. */
export function writeGatewayConfig(opts: Pick<StartGatewayOptions, "dir" | "config">): string {
  const nginx = findNginx();
  const missing = gatewayUnavailable();
  if (!nginx || missing) throw new Error(`the gateway cannot run: ${missing}`);
  const dir = path.resolve(opts.dir);
  const tempDir = path.join(dir, "temp");
  mkdirSync(tempDir, { recursive: true });
  copyFileSync(CALLER_JS, path.join(dir, "caller.js"));
  const config: GatewayConfig = {
    ...opts.config,
    // nginx started as root runs its workers as an unprivileged user that may not reach this folder; a local
    // run keeps them as the user that started it.
    user: opts.config.user ?? (process.getuid?.() === 0 ? "root" : undefined),
    paths: {
      njsModule: findNjsModule(),
      njsDir: dir,
      pidFile: path.join(dir, "nginx.pid"),
      tempDir,
      // A file, not /dev/stdout: nginx cannot open that when its stdout is a socket, as Node's pipes are.
      accessLog: path.join(dir, "access.log"),
      errorLog: "stderr",
      ...opts.config.paths,
    },
  };
  const file = path.join(dir, "nginx.conf");
  writeFileSync(file, renderNginxConf(config));
  const check = spawnSync(nginx, ["-t", "-q", "-p", dir, "-e", "stderr", "-c", file], { encoding: "utf8" });
  if (check.status !== 0) throw new Error(`nginx refused the gateway's configuration (${file}): ${check.stderr.trim()}`);
  return file;
}

async function listening(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Starts nginx with the rendered configuration; resolves once both ports accept connections. */
export async function startGateway(opts: StartGatewayOptions): Promise<RunningGateway> {
  const file = writeGatewayConfig(opts);
  const dir = path.dirname(file);
  const child = spawn(findNginx()!, ["-p", dir, "-e", "stderr", "-c", file, "-g", "daemon off;"], { stdio: ["ignore", "pipe", "pipe"] });
  let exited: string | undefined;
  const exit = new Promise<void>((resolve) =>
    child.once("exit", (code, signal) => {
      exited = signal ? `signal ${signal}` : `exit code ${code}`;
      resolve();
    }),
  );
  const errors: string[] = [];
  let rest = "";
  child.stdout!.resume();
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      errors.push(line);
      if (errors.length > 50) errors.shift();
      opts.onLine?.(line, "error");
    }
  });
  const tail = tailFile(path.join(dir, "access.log"), (line) => opts.onLine?.(line, "access"));
  watchParent(child.pid!);
  const stop = async (graceMs = 5_000) => {
    if (!exited) {
      child.kill("SIGQUIT");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exit;
      clearTimeout(timer);
    }
    tail.stop();
  };
  const host = opts.config.host === "0.0.0.0" ? "127.0.0.1" : opts.config.host;
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 10_000);
  for (;;) {
    if (exited) throw new Error(`nginx stopped at start (${exited}): ${errors.slice(-5).join(" | ")}`);
    if ((await listening(opts.config.grpcPort, host)) && (await listening(opts.config.httpPort, host))) break;
    if (Date.now() > deadline) {
      await stop(0);
      throw new Error(`nginx did not listen on ${host}:${opts.config.grpcPort} and :${opts.config.httpPort} within ${opts.readyTimeoutMs ?? 10_000} ms`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { grpcPort: opts.config.grpcPort, httpPort: opts.config.httpPort, dir, process: child, stop };
}

/**
 * nginx outlives a parent that is killed with SIGKILL (no exit handler runs): a small shell loop, detached, stops it
 * gracefully within a second of this process disappearing, and ends by itself when nginx does.
 */
function watchParent(nginxPid: number): void {
  const loop = `while kill -0 ${process.pid} 2>/dev/null && kill -0 ${nginxPid} 2>/dev/null; do sleep 1; done; kill -QUIT ${nginxPid} 2>/dev/null`;
  spawn("sh", ["-c", loop], { detached: true, stdio: "ignore" }).unref();
}

/** Calls onLine for each line appended to file from now on, polling every 100 ms, until stop (which reads the rest). */
function tailFile(file: string, onLine: (line: string) => void): { stop(): void } {
  // From the end: a folder used before keeps its earlier runs' lines, which are not this run's.
  let offset = existsSync(file) ? statSync(file).size : 0;
  let rest = "";
  const read = () => {
    let fd: number;
    try {
      fd = openSync(file, "r");
    } catch {
      return;
    }
    try {
      const buf = Buffer.alloc(64 * 1024);
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, offset);
        if (n <= 0) break;
        offset += n;
        const lines = (rest + buf.subarray(0, n).toString("utf8")).split("\n");
        rest = lines.pop()!;
        lines.forEach(onLine);
      }
    } finally {
      closeSync(fd);
    }
  };
  const timer = setInterval(read, 100);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      read();
    },
  };
}
