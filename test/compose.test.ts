import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";

const root = path.resolve(import.meta.dirname, "..");
const composeFile = path.join(root, "docker-compose.yml");
/** The settings the file requires from its user. */
const composeEnv = { AUTH_PUBLIC_KEYS: "k=x", RELAY_TOKEN: "relay-token", RECONCILE_TOKEN: "reconcile-token" };

/** The Compose client to validate with: v1 `docker-compose`, else the v2 plugin; undefined when neither is installed. */
function composeCommand(): string[] | undefined {
  if (spawnSync("docker-compose", ["version"], { stdio: "ignore" }).status === 0) return ["docker-compose"];
  if (spawnSync("docker", ["compose", "version"], { stdio: "ignore" }).status === 0) return ["docker", "compose"];
  return undefined;
}

function compose(...args: string[]): string {
  const [cmd, ...pre] = composeCommand()!;
  return execFileSync(cmd!, [...pre, "-f", composeFile, ...args], { cwd: root, encoding: "utf8", stdio: "pipe", env: { ...process.env, ...composeEnv } });
}

describe("docker-compose.yml", () => {
  const text = readFileSync(composeFile, "utf8");

  it("runs every process of the image from its compiled entry (dist/*.js with plain node, never tsx or a source file)", () => {
    // Every command but the databases' server flags names the entry the image's ENTRYPOINT ["node"] runs.
    const entries = [...text.matchAll(/^\s+command: \["([^"-][^"]*)"/gm)].map((m) => m[1]!);
    expect(entries).to.have.members([
      "voucher-service/dist/main.js",
      "order-service/dist/main.js",
      "order-service/dist/relay-main.js",
      "reconciler/dist/main.js",
    ]);
    // The build compiles src/<name>.ts to dist/<name>.js: an entry whose source is gone would start nothing.
    for (const entry of entries) {
      const source = entry.replace("/dist/", "/src/").replace(/\.js$/, ".ts");
      expect(existsSync(path.join(root, source)), `${entry}: ${source} is missing`).to.equal(true);
    }
    expect(text).not.to.match(/\btsx\b|\.ts"/);
  });

  it("gives each service its own MariaDB 10.11 server, with a rows-only user and a migration user made by the least-privilege script", () => {
    expect(text).to.match(/ORDER_DATABASE_URL: mysql:\/\/orders_app:[^@]+@order-db:3306\/orders/);
    expect(text).to.match(/ORDER_MIGRATION_DATABASE_URL: mysql:\/\/orders_migrate:[^@]+@order-db:3306\/orders/);
    expect(text).to.match(/VOUCHER_DATABASE_URL: mysql:\/\/vouchers_app:[^@]+@voucher-db:3306\/vouchers/);
    expect(text).to.match(/VOUCHER_MIGRATION_DATABASE_URL: mysql:\/\/vouchers_migrate:[^@]+@voucher-db:3306\/vouchers/);
    expect(text.match(/image: mariadb:10\.11/g)).to.have.length(2);
    expect(text.match(/\.\/ops\/mariadb\/least-privilege\.sh:\/docker-entrypoint-initdb\.d\/least-privilege\.sh:ro/g)).to.have.length(2);
    expect(text).not.to.match(/MARIADB_USER/);
  });

  describe("validated by the Compose client", function () {
    before(function () {
      if (!composeCommand()) {
        // Validation needs the client only, not a Docker engine: apt-get install -y docker-compose.
        console.log("      (skipped: neither docker-compose nor `docker compose` is installed)");
        this.skip();
      }
    });

    it("is valid (config -q)", () => {
      compose("config", "-q");
    });

    it("refuses to start without the keys and tokens, naming them", () => {
      const [cmd, ...pre] = composeCommand()!;
      const env = { ...process.env, AUTH_PUBLIC_KEYS: "", RELAY_TOKEN: "", RECONCILE_TOKEN: "" };
      const r = spawnSync(cmd!, [...pre, "-f", composeFile, "config", "-q"], { cwd: root, encoding: "utf8", env });
      expect(r.status).not.to.equal(0);
      expect(r.stderr).to.match(/AUTH_PUBLIC_KEYS|RELAY_TOKEN|RECONCILE_TOKEN/);
    });

    it("defines both databases and both services, the standalone relay behind a profile", () => {
      // v1 lists services behind a profile too, so check the profile in the resolved file.
      const services = compose("--profile", "relay", "config", "--services").trim().split("\n");
      expect(services).to.include.members(["order-db", "order-service", "voucher-db", "voucher-service", "relay"]);
      expect(compose("config")).to.match(/relay:[\s\S]*profiles:\s*\n\s*- relay/);
    });

    it("resolves each service's command to its compiled entry", () => {
      const resolved = compose("--profile", "relay", "config");
      for (const entry of ["voucher-service/dist/main.js", "order-service/dist/main.js", "order-service/dist/relay-main.js", "reconciler/dist/main.js"]) {
        expect(resolved).to.include(entry);
      }
      expect(resolved).not.to.match(/\/src\/[\w-]+\.ts/);
    });

    it("publishes the gRPC and HTTP ports of both services", () => {
      const resolved = compose("config");
      for (const port of [50051, 8081, 50052, 8082]) expect(resolved).to.match(new RegExp(`published: ['"]?${port}`));
    });
  });
});
