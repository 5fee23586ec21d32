import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";

const root = path.resolve(import.meta.dirname, "..");
const composeFile = path.join(root, "docker-compose.yml");

/** The Compose client to validate with: v1 `docker-compose`, else the v2 plugin; undefined when neither is installed. */
function composeCommand(): string[] | undefined {
  if (spawnSync("docker-compose", ["version"], { stdio: "ignore" }).status === 0) return ["docker-compose"];
  if (spawnSync("docker", ["compose", "version"], { stdio: "ignore" }).status === 0) return ["docker", "compose"];
  return undefined;
}

function compose(...args: string[]): string {
  const [cmd, ...pre] = composeCommand()!;
  return execFileSync(cmd!, [...pre, "-f", composeFile, ...args], { cwd: root, encoding: "utf8", stdio: "pipe" });
}

describe("docker-compose.yml", () => {
  const text = readFileSync(composeFile, "utf8");

  it("starts only entry files that exist, through the one image", () => {
    const entries = [...text.matchAll(/^\s+command: \["([^"]+\.ts)"\]/gm)].map((m) => m[1]!);
    expect(entries).to.include.members(["order-service/src/main.ts", "voucher-service/src/main.ts"]);
    for (const entry of entries) expect(existsSync(path.join(root, entry)), `${entry} is missing`).to.equal(true);
  });

  it("gives each service its own MariaDB 10.11 server", () => {
    expect(text).to.match(/mysql:\/\/orders:[^@]+@order-db:3306\/orders/);
    expect(text).to.match(/mysql:\/\/vouchers:[^@]+@voucher-db:3306\/vouchers/);
    expect(text.match(/image: mariadb:10\.11/g)).to.have.length(2);
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

    it("defines both databases and both services, the standalone relay behind a profile", () => {
      // v1 lists services behind a profile too, so check the profile in the resolved file.
      const services = compose("--profile", "relay", "config", "--services").trim().split("\n");
      expect(services).to.include.members(["order-db", "order-service", "voucher-db", "voucher-service", "relay"]);
      expect(compose("config")).to.match(/relay:[\s\S]*profiles:\s*\n\s*- relay/);
    });

    it("publishes the gRPC and HTTP ports of both services", () => {
      const resolved = compose("config");
      for (const port of [50051, 8081, 50052, 8082]) expect(resolved).to.match(new RegExp(`published: ['"]?${port}`));
    });
  });
});
