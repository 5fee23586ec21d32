import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { makeTestCerts, type TestCerts } from "@shop/testkit/certs";
import { containerConfig } from "../src/main.js";
import { findNginx, findNjsModule, gatewayUnavailable } from "../src/nginx.js";
import { renderNginxConf } from "../src/render.js";
import { UPSTREAMS } from "../src/routes.js";

const root = path.resolve(import.meta.dirname, "../..");
const require = createRequire(import.meta.url);

/** The environment without any GATEWAY_* setting: the committed files are rendered with the defaults. */
function envWithoutGatewaySettings(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("GATEWAY_")));
}

/** Replaces every occurrence of `from`, failing when there is none: a substitution that stops matching must not pass silently. */
function replaceAll(text: string, from: string, to: string): string {
  expect(text, `the container's nginx.conf should contain ${from}`).to.include(from);
  return text.split(from).join(to);
}

describe("the gateway's container configuration", function () {
  this.timeout(60_000);

  it("is up to date in the repository (npm run gateway:render -- --check)", () => {
    const run = spawnSync(process.execPath, ["--conditions=shop-source", "--import", require.resolve("tsx"), "gateway/src/main.ts", "--check"], {
      cwd: root,
      env: envWithoutGatewaySettings(),
      encoding: "utf8",
    });
    expect(run.status, `gateway:render --check: ${run.stdout}${run.stderr}`).to.equal(0);
    expect(run.stdout).to.include("gateway configuration is up to date");
  });

  describe("accepted by nginx -t", function () {
    let certs: TestCerts | undefined;
    let dir: string | undefined;

    before(function () {
      const missing = gatewayUnavailable();
      if (missing) {
        // CI installs nginx: there a missing nginx is a failure, not a reason to skip.
        if (process.env.CI === "true") throw new Error(`CI=true but ${missing}`);
        this.skip();
      }
      certs = makeTestCerts();
      dir = mkdtempSync(path.join(tmpdir(), "shop-gateway-check-"));
    });

    after(() => {
      certs?.cleanup();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it("with the container-only parts (service names, TLS files, njs folder, /tmp, stdout) pointed at this machine", () => {
      const config = containerConfig(envWithoutGatewaySettings());
      let text = renderNginxConf(config);
      // What Docker's and Kubernetes' DNS would resolve; nginx -t resolves upstream hosts.
      for (const u of UPSTREAMS) text = replaceAll(text, `server ${u}-service:`, "server 127.0.0.1:");
      text = replaceAll(text, config.tls!.certFile, certs!.server.certFile);
      text = replaceAll(text, config.tls!.keyFile, certs!.server.keyFile);
      text = replaceAll(text, `js_path ${config.paths.njsDir};`, `js_path ${path.join(root, "gateway/njs")};`);
      text = replaceAll(text, `load_module ${config.paths.njsModule};`, `load_module ${findNjsModule()};`);
      text = replaceAll(text, `pid ${config.paths.pidFile};`, `pid ${path.join(dir!, "nginx.pid")};`);
      text = replaceAll(text, `_temp_path ${config.paths.tempDir}/`, `_temp_path ${dir}/`);
      // Node's pipes are sockets, which nginx cannot open as /dev/stdout.
      text = replaceAll(text, `access_log ${config.paths.accessLog} `, `access_log ${path.join(dir!, "access.log")} `);
      const file = path.join(dir!, "nginx.conf");
      writeFileSync(file, text);
      const check = spawnSync(findNginx()!, ["-t", "-p", dir!, "-e", "stderr", "-c", file], { encoding: "utf8" });
      expect(check.status, `nginx -t on ${file}:\n${check.stderr}`).to.equal(0);
      expect(check.stderr).to.include("test is successful");
    });
  });
});
