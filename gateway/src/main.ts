/**
 * `npm run gateway:render`: writes the gateway's configuration for the
 * containers (the official nginx image, in docker-compose.yml and in
 * deploy/kubernetes), rendered with the GATEWAY_* settings of the
 * environment, to gateway/container/ and deploy/kubernetes/base/gateway/.
 * `-- --check` writes nothing and exits 1 when a committed file differs from
 * what the settings render (the tests run it with the defaults).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ConfigError } from "@shop/platform/config";
import { loadGatewaySettings } from "./config.js";
import { CALLER_JS } from "./nginx.js";
import { renderNginxConf, type GatewayConfig } from "./render.js";
import { UPSTREAMS, type UpstreamName } from "./routes.js";

const root = path.resolve(import.meta.dirname, "../..");

/** Where the rendered files go: compose mounts the first, kustomize's configMapGenerator reads the second. */
export const CONTAINER_CONFIG_DIRS = [path.join(root, "gateway/container"), path.join(root, "deploy/kubernetes/base/gateway")];

/** Each service's container ports; compose services and Kubernetes Services have the same names. */
const SERVICE_PORTS: Record<UpstreamName, { grpc: number; http: number }> = {
  order: { grpc: 50051, http: 8081 },
  voucher: { grpc: 50052, http: 8082 },
  payment: { grpc: 50053, http: 8083 },
  delivery: { grpc: 50054, http: 8084 },
};

/** The configuration the containers run: the official image's paths, TLS from /etc/nginx/tls, a read-only root. */
export function containerConfig(env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const settings = loadGatewaySettings(env, {
    host: "0.0.0.0",
    // Compose mounts ./tls/server.crt and server.key there; Kubernetes the Secret gateway-tls (tls.crt, tls.key).
    tls: { certFile: "/etc/nginx/tls/tls.crt", keyFile: "/etc/nginx/tls/tls.key" },
  });
  const upstreams = Object.fromEntries(
    UPSTREAMS.map((u) => [
      u,
      { grpc: [{ host: `${u}-service`, port: SERVICE_PORTS[u].grpc }], http: [{ host: `${u}-service`, port: SERVICE_PORTS[u].http }] },
    ]),
  ) as GatewayConfig["upstreams"];
  return {
    ...settings,
    upstreams,
    paths: {
      njsModule: "/usr/lib/nginx/modules/ngx_http_js_module.so",
      njsDir: "/etc/nginx/njs",
      // Writable places only under /tmp: the root filesystem is read-only in Kubernetes.
      pidFile: "/tmp/nginx.pid",
      tempDir: "/tmp",
      accessLog: "/dev/stdout",
      errorLog: "stderr",
    },
  };
}

function main(): void {
  const check = process.argv.includes("--check");
  let config: GatewayConfig;
  try {
    config = containerConfig();
  } catch (err) {
    process.stderr.write(`${err instanceof ConfigError ? err.message : String(err)}\n`);
    process.exit(2);
  }
  // What the containers read, rendered once: written, or compared with the committed files.
  const files = { "nginx.conf": renderNginxConf(config), "caller.js": readFileSync(CALLER_JS, "utf8") };
  if (!check) {
    for (const dir of CONTAINER_CONFIG_DIRS) {
      mkdirSync(dir, { recursive: true });
      for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
      process.stdout.write(`wrote ${path.relative(root, dir)}/nginx.conf and caller.js\n`);
    }
    return;
  }
  const stale: string[] = [];
  for (const dir of CONTAINER_CONFIG_DIRS) {
    for (const [name, text] of Object.entries(files)) {
      let have = "";
      try {
        have = readFileSync(path.join(dir, name), "utf8");
      } catch {
        // missing counts as stale
      }
      if (have !== text) stale.push(path.relative(root, path.join(dir, name)));
    }
  }
  if (stale.length > 0) {
    process.stderr.write(`stale gateway configuration: ${stale.join(", ")}; run npm run gateway:render\n`);
    process.exit(1);
  }
  process.stdout.write("gateway configuration is up to date\n");
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(import.meta.filename)) main();
