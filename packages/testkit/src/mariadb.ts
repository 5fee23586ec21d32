import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freePort } from "./ports.js";

const run = promisify(execFile);

// Servers still running when this process exits (a crashed or aborted test
// run) are killed with it, so no mariadbd is ever left behind. InnoDB
// recovers from SIGKILL, so data kept in a folder survives.
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

export interface MariaDbOptions {
  /** Folder for data, socket and logs; kept across restarts. Default: a new temporary folder, removed on stop(). */
  dir?: string;
  /** Port on 127.0.0.1. Default: a free one. */
  port?: number;
  /** Extra mariadbd arguments. */
  args?: string[];
}

/**
 * A private MariaDB server for tests and for `npm start`: its own data
 * folder, port and socket, no systemd, root over the socket only. start()
 * initialises the folder the first time and reuses it afterwards.
 */
export class MariaDbServer {
  readonly dir: string;
  port = 0;
  private child?: ChildProcess;
  private readonly ownsDir: boolean;

  constructor(private readonly opts: MariaDbOptions = {}) {
    this.ownsDir = !opts.dir;
    this.dir = opts.dir ?? mkdtempSync(path.join(tmpdir(), "shop-mariadb-"));
  }

  get socket(): string {
    return path.join(this.dir, "mysqld.sock");
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  static binary(): string {
    for (const p of ["/usr/sbin/mariadbd", "/usr/bin/mariadbd", "/usr/sbin/mysqld"]) if (existsSync(p)) return p;
    throw new Error("mariadbd not found: install it with `apt-get install -y mariadb-server` (or set the database URLs)");
  }

  async start(): Promise<void> {
    const data = path.join(this.dir, "data");
    // Each server gets its own temporary folder: two mariadb-install-db runs
    // sharing /tmp clash on their scratch tables.
    const tmp = path.join(this.dir, "tmp");
    mkdirSync(tmp, { recursive: true });
    if (!existsSync(path.join(data, "mysql"))) {
      mkdirSync(data, { recursive: true });
      await run("mariadb-install-db", [
        "--no-defaults",
        `--datadir=${data}`,
        "--user=root",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--skip-name-resolve",
      ], { env: { ...process.env, TMPDIR: tmp }, timeout: 120_000 });
    }
    this.port ||= this.opts.port ?? (await freePort());
    this.child = spawn(
      MariaDbServer.binary(),
      [
        "--no-defaults",
        `--datadir=${data}`,
        "--user=root",
        "--bind-address=127.0.0.1",
        `--port=${this.port}`,
        `--socket=${this.socket}`,
        `--pid-file=${path.join(this.dir, "mysqld.pid")}`,
        `--log-error=${path.join(this.dir, "error.log")}`,
        `--tmpdir=${tmp}`,
        "--skip-name-resolve",
        "--innodb-buffer-pool-size=128M",
        "--innodb-log-file-size=64M",
        "--max-connections=500",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci",
        ...(this.opts.args ?? []),
      ],
      { stdio: "ignore" },
    );
    const child = this.child;
    live.add(child);
    let exited = false;
    child.once("exit", () => {
      exited = true;
      live.delete(child);
    });
    const deadline = Date.now() + 30_000;
    while (!(await this.ping())) {
      if (exited) throw new Error(`mariadbd exited during start; see ${path.join(this.dir, "error.log")}`);
      if (Date.now() > deadline) throw new Error(`mariadbd did not answer within 30 s; see ${path.join(this.dir, "error.log")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private async ping(): Promise<boolean> {
    try {
      await run("mariadb-admin", ["--no-defaults", `--socket=${this.socket}`, "-uroot", "--connect-timeout=2", "ping"], { timeout: 5_000 });
      return true;
    } catch {
      return false;
    }
  }

  /** Runs SQL as root over the socket. */
  async sql(statement: string, database?: string): Promise<string> {
    const args = ["--no-defaults", `--socket=${this.socket}`, "-uroot", "-N", "-B", "-e", statement];
    if (database) args.push(database);
    // A bound on every call: a wedged client must fail the test, not hang the run.
    const { stdout } = await run("mariadb", args, { maxBuffer: 64 * 1024 * 1024, timeout: 120_000 });
    return stdout;
  }

  /** Creates (if missing) a database and a user with rights on it only; returns its URL over TCP. */
  async createDatabase(name: string, user = `u_${name}`.slice(0, 32), password = "pw"): Promise<string> {
    await this.sql(
      `CREATE DATABASE IF NOT EXISTS \`${name}\`;` +
        `CREATE USER IF NOT EXISTS '${user}'@'127.0.0.1' IDENTIFIED BY '${password}';` +
        `CREATE USER IF NOT EXISTS '${user}'@'localhost' IDENTIFIED BY '${password}';` +
        `GRANT ALL ON \`${name}\`.* TO '${user}'@'127.0.0.1';` +
        `GRANT ALL ON \`${name}\`.* TO '${user}'@'localhost';`,
    );
    return `mysql://${user}:${password}@127.0.0.1:${this.port}/${name}`;
  }

  async dropDatabase(name: string): Promise<void> {
    await this.sql(`DROP DATABASE IF EXISTS \`${name}\``);
  }

  /** Graceful stop; removes a temporary folder. */
  async stop(): Promise<void> {
    await this.signal("SIGTERM");
    if (this.ownsDir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** kill -9, keeping the data folder so start() can bring it back (crash recovery). */
  async kill(): Promise<void> {
    await this.signal("SIGKILL");
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill(sig);
    await exited;
    this.child = undefined;
  }
}
