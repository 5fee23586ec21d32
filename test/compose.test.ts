import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";

const root = path.resolve(import.meta.dirname, "..");
const composeFile = path.join(root, "docker-compose.yml");
/** The settings the file requires from its user. */
const composeEnv = {
  AUTH_PUBLIC_KEYS: "k=x",
  RELAY_TOKEN: "relay-token",
  PAYMENT_RELAY_TOKEN: "payment-relay-token",
  DELIVERY_RELAY_TOKEN: "delivery-relay-token",
  RECONCILE_TOKEN: "reconcile-token",
};

/** The Compose client to validate with: v1 `docker-compose`, else the v2 plugin; undefined when neither is installed. */
function composeCommand(): string[] | undefined {
  if (spawnSync("docker-compose", ["version"], { stdio: "ignore" }).status === 0) return ["docker-compose"];
  if (spawnSync("docker", ["compose", "version"], { stdio: "ignore" }).status === 0) return ["docker", "compose"];
  return undefined;
}

/** One service's part of a resolved file (`config` prints each service as a two-space-indented key). */
function serviceBlock(resolved: string, name: string): string {
  const start = resolved.search(new RegExp(`^  ${name}:\n`, "m"));
  if (start < 0) throw new Error(`no service ${name} in the resolved file`);
  const rest = resolved.slice(start + name.length + 4);
  const end = rest.search(/^ {0,2}\S/m);
  return end < 0 ? rest : rest.slice(0, end);
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
      "payment-service/dist/main.js",
      "order-service/dist/main.js",
      "order-service/dist/relay-main.js",
      "payment-service/dist/relay-main.js",
      "delivery-service/dist/main.js",
      "delivery-service/dist/relay-main.js",
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
    expect(text).to.match(/PAYMENT_DATABASE_URL: mysql:\/\/payments_app:[^@]+@payment-db:3306\/payments/);
    expect(text).to.match(/PAYMENT_MIGRATION_DATABASE_URL: mysql:\/\/payments_migrate:[^@]+@payment-db:3306\/payments/);
    expect(text).to.match(/DELIVERY_DATABASE_URL: mysql:\/\/deliveries_app:[^@]+@delivery-db:3306\/deliveries/);
    expect(text).to.match(/DELIVERY_MIGRATION_DATABASE_URL: mysql:\/\/deliveries_migrate:[^@]+@delivery-db:3306\/deliveries/);
    expect(text.match(/image: mariadb:10\.11/g)).to.have.length(4);
    expect(text.match(/\.\/ops\/mariadb\/least-privilege\.sh:\/docker-entrypoint-initdb\.d\/least-privilege\.sh:ro/g)).to.have.length(4);
    expect(text).not.to.match(/MARIADB_USER/);
  });

  it("puts the gateway in front of the four services: the official nginx image with the rendered config, TLS from ./tls, its two ports", () => {
    const gateway = serviceBlock(text, "gateway");
    expect(gateway).to.match(/image: nginx:1\.28\n/);
    // The files npm run gateway:render writes (gateway/test checks they are current).
    expect(gateway).to.include("./gateway/container/nginx.conf:/etc/nginx/nginx.conf:ro");
    expect(gateway).to.include("./gateway/container/caller.js:/etc/nginx/njs/caller.js:ro");
    expect(existsSync(path.join(root, "gateway/container/nginx.conf"))).to.equal(true);
    const conf = readFileSync(path.join(root, "gateway/container/nginx.conf"), "utf8");
    // What the config reads is what compose mounts.
    expect(conf).to.include("ssl_certificate /etc/nginx/tls/tls.crt;");
    expect(conf).to.include("js_path /etc/nginx/njs;");
    expect(gateway).to.include("./tls/server.crt:/etc/nginx/tls/tls.crt:ro");
    expect(gateway).to.include("./tls/server.key:/etc/nginx/tls/tls.key:ro");
    expect(gateway).to.include('"50443:50443"');
    expect(gateway).to.include('"8443:8443"');
    for (const [service, grpc, http] of [
      ["order-service", 50051, 8081],
      ["voucher-service", 50052, 8082],
      ["payment-service", 50053, 8083],
      ["delivery-service", 50054, 8084],
    ] as const) {
      expect(gateway, service).to.match(new RegExp(`${service}:\\n\\s+condition: service_healthy`));
      expect(conf, service).to.include(`server ${service}:${grpc} `);
      expect(conf, service).to.include(`server ${service}:${http} `);
    }
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
      const env = { ...process.env, AUTH_PUBLIC_KEYS: "", RELAY_TOKEN: "", PAYMENT_RELAY_TOKEN: "", DELIVERY_RELAY_TOKEN: "", RECONCILE_TOKEN: "" };
      const r = spawnSync(cmd!, [...pre, "-f", composeFile, "config", "-q"], { cwd: root, encoding: "utf8", env });
      expect(r.status).not.to.equal(0);
      expect(r.stderr).to.match(/AUTH_PUBLIC_KEYS|RELAY_TOKEN|RECONCILE_TOKEN/);
    });

    it("refuses to start without the payment service's relay token alone, naming it", () => {
      const [cmd, ...pre] = composeCommand()!;
      const env = { ...process.env, ...composeEnv, PAYMENT_RELAY_TOKEN: "" };
      const r = spawnSync(cmd!, [...pre, "-f", composeFile, "config", "-q"], { cwd: root, encoding: "utf8", env });
      expect(r.status).not.to.equal(0);
      expect(r.stderr).to.contain("PAYMENT_RELAY_TOKEN");
    });

    it("refuses to start without the delivery service's relay token alone, naming it", () => {
      const [cmd, ...pre] = composeCommand()!;
      const env = { ...process.env, ...composeEnv, DELIVERY_RELAY_TOKEN: "" };
      const r = spawnSync(cmd!, [...pre, "-f", composeFile, "config", "-q"], { cwd: root, encoding: "utf8", env });
      expect(r.status).not.to.equal(0);
      expect(r.stderr).to.contain("DELIVERY_RELAY_TOKEN");
    });

    it("defines the four databases and the four services, the standalone relays behind a profile", () => {
      // v1 lists services behind a profile too, so check the profile in the resolved file.
      const services = compose("--profile", "relay", "config", "--services").trim().split("\n");
      expect(services).to.include.members([
        "order-db",
        "order-service",
        "voucher-db",
        "voucher-service",
        "payment-db",
        "payment-service",
        "delivery-db",
        "delivery-service",
        "relay",
        "payment-relay",
        "delivery-relay",
      ]);
      const resolved = compose("--profile", "relay", "config");
      for (const name of ["relay", "payment-relay", "delivery-relay"]) expect(serviceBlock(resolved, name), name).to.match(/profiles:\s*\n\s*- relay/);
    });

    it("resolves each service's command to its compiled entry", () => {
      const resolved = compose("--profile", "relay", "config");
      for (const entry of [
        "voucher-service/dist/main.js",
        "payment-service/dist/main.js",
        "order-service/dist/main.js",
        "order-service/dist/relay-main.js",
        "payment-service/dist/relay-main.js",
        "delivery-service/dist/main.js",
        "delivery-service/dist/relay-main.js",
        "reconciler/dist/main.js",
      ]) {
        expect(resolved).to.include(entry);
      }
      expect(resolved).not.to.match(/\/src\/[\w-]+\.ts/);
    });

    it("publishes the gRPC and HTTP ports of the four services", () => {
      const resolved = compose("config");
      for (const port of [50051, 8081, 50052, 8082, 50053, 8083, 50054, 8084]) expect(resolved).to.match(new RegExp(`published: ['"]?${port}`));
    });

    it("wires the payments: the order service's relays charge and refund at the payment service, whose relay reports back with its own token", () => {
      const resolved = compose("--profile", "relay", "config");
      const payment = serviceBlock(resolved, "payment-service");
      expect(payment).to.match(/PAYMENT_DATABASE_URL: mysql:\/\/payments_app:[^@]+@payment-db:3306\/payments/);
      expect(payment).to.match(/ORDER_SERVICE_URL: http:\/\/order-service:50051\n/);
      expect(payment).to.match(/PAYMENT_RELAY_ENABLED: ['"]?true/);
      expect(payment).to.contain(`PAYMENT_RELAY_TOKEN: ${composeEnv.PAYMENT_RELAY_TOKEN}\n`);
      expect(payment).to.contain(`AUTH_PUBLIC_KEYS: ${composeEnv.AUTH_PUBLIC_KEYS}\n`);
      expect(payment).to.match(/PAYMENT_HOST: 0\.0\.0\.0/);
      expect(payment).to.match(/payment-db:\s*\n\s*condition: service_healthy/);
      expect(payment).to.contain("http://127.0.0.1:8083/readyz");
      // The payment relay's token is for the payment service's relays alone: no other process gets it.
      expect(resolved.split(composeEnv.PAYMENT_RELAY_TOKEN).length - 1).to.equal(2);
      const standalone = serviceBlock(resolved, "payment-relay");
      expect(standalone).to.match(/PAYMENT_DATABASE_URL: mysql:\/\/payments_app:[^@]+@payment-db:3306\/payments/);
      expect(standalone).to.match(/ORDER_SERVICE_URL: http:\/\/order-service:50051\n/);
      expect(standalone).to.contain(`PAYMENT_RELAY_TOKEN: ${composeEnv.PAYMENT_RELAY_TOKEN}\n`);
      expect(serviceBlock(resolved, "reconciler")).to.match(/PAYMENT_SERVICE_URL: http:\/\/payment-service:50053\n/);
      for (const name of ["order-service", "relay"]) {
        const block = serviceBlock(resolved, name);
        expect(block, name).to.match(/PAYMENT_SERVICE_URL: http:\/\/payment-service:50053\n/);
        expect(block, name).to.contain(`RELAY_TOKEN: ${composeEnv.RELAY_TOKEN}\n`);
      }
    });

    it("wires the shipping: paid orders are shipped, the order service's relays request shipments, the delivery service's relay reports back with its own token, the reconciler compares shipments", () => {
      const resolved = compose("--profile", "relay", "config");
      const delivery = serviceBlock(resolved, "delivery-service");
      expect(delivery).to.match(/DELIVERY_DATABASE_URL: mysql:\/\/deliveries_app:[^@]+@delivery-db:3306\/deliveries/);
      expect(delivery).to.match(/ORDER_SERVICE_URL: http:\/\/order-service:50051\n/);
      expect(delivery).to.match(/DELIVERY_RELAY_ENABLED: ['"]?true/);
      expect(delivery).to.match(/DEFAULT_CARRIER: delayed\n/);
      expect(delivery).to.contain(`DELIVERY_RELAY_TOKEN: ${composeEnv.DELIVERY_RELAY_TOKEN}\n`);
      expect(delivery).to.contain(`AUTH_PUBLIC_KEYS: ${composeEnv.AUTH_PUBLIC_KEYS}\n`);
      expect(delivery).to.match(/DELIVERY_HOST: 0\.0\.0\.0/);
      expect(delivery).to.match(/delivery-db:\s*\n\s*condition: service_healthy/);
      expect(delivery).to.contain("http://127.0.0.1:8084/readyz");
      // The delivery relay's token is for the delivery service's relays alone: no other process gets it.
      expect(resolved.split(composeEnv.DELIVERY_RELAY_TOKEN).length - 1).to.equal(2);
      const standalone = serviceBlock(resolved, "delivery-relay");
      expect(standalone).to.match(/DELIVERY_DATABASE_URL: mysql:\/\/deliveries_app:[^@]+@delivery-db:3306\/deliveries/);
      expect(standalone).to.match(/ORDER_SERVICE_URL: http:\/\/order-service:50051\n/);
      expect(standalone).to.contain(`DELIVERY_RELAY_TOKEN: ${composeEnv.DELIVERY_RELAY_TOKEN}\n`);
      expect(serviceBlock(resolved, "order-service")).to.match(/SHIP_PAID_ORDERS: ['"]?true/);
      for (const name of ["order-service", "relay", "reconciler"]) {
        expect(serviceBlock(resolved, name), name).to.match(/DELIVERY_SERVICE_URL: http:\/\/delivery-service:50054\n/);
      }
      const reconciler = serviceBlock(resolved, "reconciler");
      expect(reconciler).to.match(/RECONCILE_SHIPPING: ['"]?true/);
      expect(reconciler).to.match(/delivery-service:\s*\n\s*condition: service_healthy/);
    });
  });
});
