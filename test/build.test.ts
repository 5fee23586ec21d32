import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { appendFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { createOrderClient, createVoucherClient } from "@shop/sdk/clients";
import { allScopesToken, testAuthEnv } from "@shop/testkit/auth";
import { freePort } from "@shop/testkit/ports";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

const root = path.resolve(import.meta.dirname, "..");

interface Stage {
  name: string;
  dir: string;
  env: Record<string, string>;
  user?: string;
  entrypoint?: string[];
  cmd?: string[];
  copies: Array<{ from?: string; sources: string[]; dest: string }>;
  runs: string[];
}

/** The Dockerfile's instructions by stage, continuation lines joined and comments dropped. */
function dockerfileStages(text: string): Array<{ name: string; lines: string[] }> {
  const stages: Array<{ name: string; lines: string[] }> = [];
  const joined = text.replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  for (const line of joined) {
    const from = /^FROM\s+\S+(?:\s+AS\s+(\S+))?$/i.exec(line);
    if (from) stages.push({ name: from[1] ?? String(stages.length), lines: [] });
    else stages.at(-1)!.lines.push(line);
  }
  return stages;
}

/** Whether .dockerignore keeps a path (relative to the context) out of the build context. */
function dockerIgnored(patterns: string[], rel: string): boolean {
  return patterns.some((p) => path.matchesGlob(rel, p));
}

/**
 * Carries out the Dockerfile without a Docker engine, one folder per stage: COPY from the build context (minus
 * .dockerignore) or from an earlier stage, and the RUN steps that make the image's files (npm ci, npm run build).
 * Steps that only touch the image's system (mkdir of /data, chown) are skipped, and npm's cache is left alone;
 * any other step fails the test, so a new step cannot slip past it.
 */
async function carryOutDockerfile(work: string): Promise<Map<string, Stage>> {
  const ignore = readFileSync(path.join(root, ".dockerignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  expect(ignore.filter((p) => p.startsWith("!")), "exceptions in .dockerignore are not carried out here").to.deep.equal([]);
  const stages = new Map<string, Stage>();
  for (const { name, lines } of dockerfileStages(readFileSync(path.join(root, "Dockerfile"), "utf8"))) {
    const stage: Stage = { name, dir: path.join(work, name), env: {}, copies: [], runs: [] };
    mkdirSync(stage.dir, { recursive: true });
    stages.set(name, stage);
    for (const line of lines) {
      const [instruction, rest = ""] = line.split(/\s+(.*)/s);
      switch (instruction!.toUpperCase()) {
        case "WORKDIR":
          expect(rest, "every stage works in /app").to.equal("/app");
          break;
        case "ENV":
          for (const m of rest.matchAll(/(\w+)=(\S+)/g)) stage.env[m[1]!] = m[2]!;
          break;
        case "USER":
          stage.user = rest;
          break;
        case "ENTRYPOINT":
          stage.entrypoint = JSON.parse(rest);
          break;
        case "CMD":
          stage.cmd = JSON.parse(rest);
          break;
        case "COPY": {
          const words = rest.split(/\s+/);
          const from = words[0]!.startsWith("--from=") ? words.shift()!.slice("--from=".length) : undefined;
          const dest = words.pop()!;
          stage.copies.push({ from, sources: words, dest });
          for (const source of words) {
            const src = from ? path.join(stages.get(from)!.dir, path.relative("/app", source)) : path.join(root, source);
            const target = dest.endsWith("/") ? path.join(stage.dir, dest, path.basename(source)) : path.join(stage.dir, dest);
            if (!existsSync(src)) throw new Error(`Dockerfile: COPY ${source}: not found`);
            cpSync(src, target, {
              recursive: true,
              filter: (p) => from !== undefined || !dockerIgnored(ignore, path.relative(root, p)),
            });
          }
          break;
        }
        case "RUN":
          for (const step of rest.split("&&").map((s) => s.trim())) {
            stage.runs.push(step);
            if (/^npm cache clean\b/.test(step) || /^(mkdir|chown)\b/.test(step)) continue;
            if (/^npm ci\b/.test(step)) await npm(stage.dir, [...step.split(/\s+/).slice(1), "--prefer-offline"]);
            else if (step === "npm run build") await npm(stage.dir, ["run", "build"]);
            else throw new Error(`Dockerfile: RUN ${step}: not carried out by this test; teach it the step`);
          }
          break;
        default:
          throw new Error(`Dockerfile: ${instruction}: not carried out by this test`);
      }
    }
  }
  return stages;
}

function run(cmd: string, args: string[], cwd: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: process.env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.once("error", reject);
    child.once("exit", (code) => resolve({ code, output }));
  });
}

async function npm(cwd: string, args: string[]): Promise<string> {
  const { code, output } = await run("npm", args, cwd);
  if (code !== 0) throw new Error(`npm ${args.join(" ")} in ${cwd} exited ${code}:\n${output}`);
  return output;
}

/** A service of the image: its ENTRYPOINT and an entry, in the runtime folder, with nothing of the workspace's environment. */
class ImageProcess {
  private child?: ChildProcess;
  output = "";

  constructor(
    private readonly stage: Stage,
    private readonly entry: string,
    private readonly env: Record<string, string>,
  ) {}

  start(): void {
    const [node, ...flags] = this.stage.entrypoint!;
    expect(node).to.equal("node");
    // Only the image's ENV and the service's settings: no NODE_OPTIONS, so no shop-source condition and no tsx.
    const env = { PATH: process.env.PATH!, HOME: this.stage.dir, ...this.stage.env, ...testAuthEnv, ...this.env };
    this.child = spawn(process.execPath, [...flags, this.entry], { cwd: this.stage.dir, env, stdio: ["ignore", "pipe", "pipe"] });
    this.child.stdout!.on("data", (d) => (this.output += d));
    this.child.stderr!.on("data", (d) => (this.output += d));
  }

  async waitReady(url: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.child!.exitCode !== null) throw new Error(`${this.entry} exited ${this.child!.exitCode}:\n${this.output}`);
      try {
        if ((await fetch(url)).ok) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`${this.entry} not ready within ${timeoutMs} ms:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async stop(): Promise<number | null> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    return exited;
  }
}

/** Every file below dir, relative to it, skipping node_modules. */
function filesBelow(dir: string, base = dir): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    if (name === "node_modules") return [];
    return statSync(p).isDirectory() ? filesBelow(p, base) : [path.relative(base, p)];
  });
}

describe("the production build and image (npm run build, the Dockerfile's stages, node dist/…)", function () {
  this.timeout(300_000);
  let work: string;
  let stages: Map<string, Stage>;
  let runtime: Stage;
  let build: Stage;

  before(async () => {
    work = mkdtempSync(path.join(tmpdir(), "shop-image-"));
    stages = await carryOutDockerfile(work);
    build = stages.get("build")!;
    runtime = [...stages.values()].at(-1)!;
  });

  after(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("compiles every workspace that production runs to its dist/, with declarations and no test files", () => {
    for (const entry of [
      "order-service/dist/main.js",
      "order-service/dist/relay-main.js",
      "order-service/dist/migrate-main.js",
      "voucher-service/dist/main.js",
      "voucher-service/dist/migrate-main.js",
      "payment-service/dist/main.js",
      "payment-service/dist/relay-main.js",
      "payment-service/dist/migrate-main.js",
      "delivery-service/dist/main.js",
      "delivery-service/dist/relay-main.js",
      "delivery-service/dist/migrate-main.js",
      "reconciler/dist/main.js",
    ]) {
      expect(existsSync(path.join(build.dir, entry)), entry).to.equal(true);
    }
    for (const ws of ["packages/platform", "packages/rules", "packages/sdk", "order-service", "voucher-service", "payment-service", "delivery-service", "reconciler"]) {
      const files = filesBelow(path.join(build.dir, ws, "dist"));
      expect(files.filter((f) => f.endsWith(".js")), ws).not.to.be.empty;
      expect(files.filter((f) => f.endsWith(".js") && !files.includes(f.replace(/\.js$/, ".d.ts"))), `${ws}: .js without .d.ts`).to.deep.equal([]);
      expect(files.filter((f) => /\.test\.|(^|\/)test\//.test(f)), `${ws}: test files in dist`).to.deep.equal([]);
    }
    expect(existsSync(path.join(build.dir, "packages/testkit/dist")), "the test kit is not built").to.equal(false);
  });

  it("makes a runtime image of production dependencies, compiled code and migrations only, run by plain node as a non-root user", () => {
    expect(runtime.runs.filter((s) => /^npm ci\b/.test(s))).to.have.length(1);
    expect(runtime.runs.find((s) => /^npm ci\b/.test(s))).to.match(/--omit=dev\b/);
    expect(runtime.user).to.be.a("string").and.not.match(/^(root|0)(:|$)/);
    expect(runtime.entrypoint).to.deep.equal(["node"]);
    expect(runtime.cmd).to.have.length(1);
    expect(runtime.cmd![0]).to.match(/^[\w-]+\/dist\/[\w-]+\.js$/);
    expect(runtime.env.NODE_ENV).to.equal("production");

    const modules = path.join(runtime.dir, "node_modules");
    for (const devOnly of ["tsx", "typescript", "mocha", "chai", "@types/mocha", "@bufbuild/buf", "drizzle-kit", "fast-check", "@shop/testkit"]) {
      expect(existsSync(path.join(modules, devOnly)), `${devOnly} in the runtime image`).to.equal(false);
    }
    for (const needed of ["@grpc/grpc-js", "@connectrpc/connect-node", "mysql2", "@shop/platform", "@shop/sdk"]) {
      expect(existsSync(path.join(modules, needed)), `${needed} missing from the runtime image`).to.equal(true);
    }
    const files = filesBelow(runtime.dir);
    expect(files.filter((f) => /(^|\/)(src|test|proto)\//.test(f) || f.endsWith(".ts") && !f.endsWith(".d.ts"))).to.deep.equal([]);
    expect(files).to.include.members([
      "order-service/drizzle/meta/_journal.json",
      "voucher-service/drizzle/meta/_journal.json",
      "payment-service/drizzle/meta/_journal.json",
      "delivery-service/drizzle/meta/_journal.json",
    ]);
    for (const entry of [
      "delivery-service/dist/main.js",
      "delivery-service/dist/relay-main.js",
      "payment-service/dist/main.js",
      "order-service/dist/migrate-main.js",
      "voucher-service/dist/migrate-main.js",
      "payment-service/dist/migrate-main.js",
      "delivery-service/dist/migrate-main.js",
    ]) {
      expect(files, entry).to.include(entry);
    }
  });

  it("loads every module of the standalone relays, the migration jobs, the delivery service and the reconciler (they get as far as refusing an empty configuration)", async () => {
    for (const entry of [
      "order-service/dist/relay-main.js",
      "payment-service/dist/relay-main.js",
      "delivery-service/dist/main.js",
      "delivery-service/dist/relay-main.js",
      "reconciler/dist/main.js",
      "order-service/dist/migrate-main.js",
      "voucher-service/dist/migrate-main.js",
      "payment-service/dist/migrate-main.js",
      "delivery-service/dist/migrate-main.js",
    ]) {
      const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
        const child = spawn(process.execPath, [...runtime.entrypoint!.slice(1), entry], {
          cwd: runtime.dir,
          env: { PATH: process.env.PATH!, HOME: runtime.dir, ...runtime.env },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let output = "";
        child.stdout.on("data", (d) => (output += d));
        child.stderr.on("data", (d) => (output += d));
        child.once("error", reject);
        child.once("exit", (code) => resolve({ code, output }));
      });
      expect(output, entry).to.match(/invalid configuration/);
      expect(output, entry).not.to.match(/ERR_MODULE_NOT_FOUND|ERR_PACKAGE_PATH_NOT_EXPORTED|ERR_UNKNOWN_FILE_EXTENSION/);
      expect(code, entry).to.equal(1);
    }
  });

  it("fails the build on a type error", async () => {
    // The build stage's copy, already built: the incremental build rechecks the changed workspace and its dependents.
    appendFileSync(path.join(build.dir, "order-service/src/main.ts"), '\nexport const notANumber: number = "a string";\n');
    const { code, output } = await run("npm", ["run", "build"], build.dir);
    expect(code).not.to.equal(0);
    expect(output).to.match(/order-service\/src\/main\.ts\(\d+,\d+\): error TS2322/);
  });

  describe("the compiled services started from the runtime image's files", () => {
    let orderDb: TestDatabase;
    let voucherDb: TestDatabase;
    let order: ImageProcess;
    let voucher: ImageProcess;
    const ports = { og: 0, oh: 0, vg: 0, vh: 0 };

    before(async () => {
      [orderDb, voucherDb] = await Promise.all([freshDatabase("order"), freshDatabase("voucher")]);
      [ports.og, ports.oh, ports.vg, ports.vh] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
      voucher = new ImageProcess(runtime, "voucher-service/dist/main.js", {
        VOUCHER_DATABASE_URL: voucherDb.url,
        VOUCHER_GRPC_PORT: String(ports.vg),
        VOUCHER_HTTP_PORT: String(ports.vh),
      });
      // The image's own command: the order service with its in-process relay.
      order = new ImageProcess(runtime, runtime.cmd![0]!, {
        ORDER_DATABASE_URL: orderDb.url,
        ORDER_GRPC_PORT: String(ports.og),
        ORDER_HTTP_PORT: String(ports.oh),
        VOUCHER_SERVICE_URL: `http://127.0.0.1:${ports.vg}`,
        RELAY_RETRY_BASE_MS: "100",
        RELAY_RETRY_MAX_MS: "1000",
      });
      voucher.start();
      order.start();
      await Promise.all([voucher.waitReady(`http://127.0.0.1:${ports.vh}/readyz`), order.waitReady(`http://127.0.0.1:${ports.oh}/readyz`)]);
    });

    after(async () => {
      await Promise.all([order?.stop(), voucher?.stop()]);
      await Promise.all([orderDb?.drop(), voucherDb?.drop()]);
    });

    it("answers /healthz and /readyz on both services", async () => {
      for (const port of [ports.oh, ports.vh]) {
        for (const probe of ["healthz", "readyz"]) {
          const res = await fetch(`http://127.0.0.1:${port}/${probe}`);
          expect(res.status, `:${port}/${probe}`).to.equal(200);
        }
      }
    });

    it("serves the compiled order service's OpenAPI document and Swagger UI (/openapi.json, /docs) without a token", async () => {
      const doc = await fetch(`http://127.0.0.1:${ports.oh}/openapi.json`);
      expect(doc.status).to.equal(200);
      expect(Object.keys(((await doc.json()) as { paths: object }).paths)).to.include("/shop.order.v1.OrderService/CreateOrder");
      for (const page of ["/docs", "/docs/swagger-ui-bundle.js"]) {
        expect((await fetch(`http://127.0.0.1:${ports.oh}${page}`)).status, page).to.equal(200);
      }
    });

    it("refuses a gRPC call without a token, serves one with a token, and its relay delivers the voucher", async () => {
      const anonymous = createOrderClient({ baseUrl: `http://127.0.0.1:${ports.og}` });
      const orders = createOrderClient({ baseUrl: `http://127.0.0.1:${ports.og}`, token: allScopesToken });
      const vouchers = createVoucherClient({ baseUrl: `http://127.0.0.1:${ports.vg}`, token: allScopesToken });
      try {
        const refused = await anonymous.client.getOrder({ orderId: randomUUID() }).then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
        expect(refused?.code).to.equal(Code.Unauthenticated);

        const { order: created } = await orders.client.createOrder({ customerId: "build-test", totalCents: 15_000n, currency: "EUR", requestId: randomUUID() });
        await orders.client.markOrderSent({ orderId: created!.id });
        const deadline = Date.now() + 20_000;
        let found: string[] = [];
        while (found.length === 0 && Date.now() < deadline) {
          found = (await vouchers.client.batchGetVouchersByOrder({ orderIds: [created!.id] })).vouchers.map((v) => v.orderId);
          if (found.length === 0) await new Promise((r) => setTimeout(r, 100));
        }
        expect(found).to.deep.equal([created!.id]);
      } finally {
        anonymous.close();
        orders.close();
        vouchers.close();
      }
    });

    it("stops on SIGTERM with exit code 0", async () => {
      expect(await order.stop()).to.equal(0);
      expect(await voucher.stop()).to.equal(0);
    });
  });
});
