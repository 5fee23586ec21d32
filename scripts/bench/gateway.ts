/**
 * `npm run bench:gateway` (`-- --seconds 10`, `-- --concurrency 32`, `-- --quick`): what the API gateway costs.
 *
 * Starts a private MariaDB server, the voucher service and two replicas of the order service as real processes,
 * and the gateway (nginx, TLS at the edge with a throwaway CA, plaintext behind it, rate limits raised out of the
 * way) in front of them. Then, closed loop with --concurrency clients for --seconds each:
 *   - GetOrder straight to one replica and through the gateway (both replicas), over gRPC and over Connect JSON;
 *   - CreateOrder (new request ids, orders under 100 EUR: no voucher work) the same four ways.
 * Prints calls per second and latency p50 / p99 (ms) for each, and how the gateway spread the calls over the two
 * replicas (from its access log). Prints figures only; asserts nothing about them. Everything it started
 * (processes, the database server and its files, nginx) is stopped and removed at the end, on failure and on Ctrl-C.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { localCertificates } from "@shop/gateway/local-tls";
import { startGateway } from "@shop/gateway/nginx";
import { DEFAULT_LIMITS } from "@shop/gateway/render";
import { createOrderClient, type OrderClient } from "@shop/sdk/clients";
import { roleToken } from "@shop/testkit/auth";
import { MariaDbServer } from "@shop/testkit/mariadb";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { cleanupOnExit, closedLoop, type ClosedLoopResult } from "./load.js";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    concurrency: { type: "string", default: "32" },
    quick: { type: "boolean", default: false },
  },
});
const positive = (name: string, raw: string) => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a whole number ≥ 1, not ${raw}`);
  return n;
};
const SECONDS = args.quick ? 2 : positive("seconds", args.seconds);
const CONCURRENCY = positive("concurrency", args.concurrency);
const ROOT = path.resolve(import.meta.dirname, "../..");
const say = (m: string) => process.stdout.write(`bench:gateway │ ${m}\n`);

const { cleanups, cleanUp } = cleanupOnExit(say);

async function main(): Promise<void> {
  const db = new MariaDbServer({ args: ["--innodb-buffer-pool-size=256M", "--innodb-flush-log-at-trx-commit=1", "--max-connections=300"] });
  cleanups.push(() => db.stop());
  await db.start();
  const [orderUrl, voucherUrl] = await Promise.all([db.createDatabase("orders"), db.createDatabase("vouchers")]);
  const ports = await Promise.all(Array.from({ length: 8 }, () => freePort()));
  const [vg, vh, o1g, o1h, o2g, o2h, gg, gh] = ports as [number, number, number, number, number, number, number, number];
  const quiet = { LOG_LEVEL: "warn" };
  const voucher = new ServiceProcess({
    name: "bench-gateway-voucher",
    entry: path.join(ROOT, "voucher-service/src/main.ts"),
    env: { ...quiet, VOUCHER_DATABASE_URL: voucherUrl, VOUCHER_GRPC_PORT: String(vg), VOUCHER_HTTP_PORT: String(vh) },
    readyUrl: `http://127.0.0.1:${vh}/readyz`,
  });
  const order = (n: number, grpc: number, http: number) =>
    new ServiceProcess({
      name: `bench-gateway-order-${n}`,
      entry: path.join(ROOT, "order-service/src/main.ts"),
      env: { ...quiet, ORDER_DATABASE_URL: orderUrl, ORDER_GRPC_PORT: String(grpc), ORDER_HTTP_PORT: String(http), VOUCHER_SERVICE_URL: `http://127.0.0.1:${vg}` },
      readyUrl: `http://127.0.0.1:${http}/readyz`,
    });
  const services = [voucher, order(1, o1g, o1h), order(2, o2g, o2h)];
  cleanups.push(() => Promise.all(services.map((s) => s.stop())));
  await voucher.start();
  await Promise.all(services.slice(1).map((s) => s.start()));

  const dir = mkdtempSync(path.join(os.tmpdir(), "bench-gateway-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const certs = localCertificates(path.join(dir, "tls"));
  const replicas = (pairs: Array<[number, number]>) => ({
    grpc: pairs.map(([g]) => ({ host: "127.0.0.1", port: g })),
    http: pairs.map(([, h]) => ({ host: "127.0.0.1", port: h })),
  });
  const others = replicas([[vg, vh]]);
  const gateway = await startGateway({
    dir: path.join(dir, "gateway"),
    config: {
      host: "127.0.0.1",
      grpcPort: gg,
      httpPort: gh,
      tls: { certFile: certs.certFile, keyFile: certs.keyFile },
      workers: "auto",
      limits: { ...DEFAULT_LIMITS, ratePerCaller: 1_000_000, burstPerCaller: 1_000_000, ratePerAddress: 1_000_000, burstPerAddress: 1_000_000 },
      upstreams: { order: replicas([[o1g, o1h], [o2g, o2h]]), voucher: others, payment: others, delivery: others },
    },
  });
  cleanups.push(() => gateway.stop());
  say(`node ${process.version}, ${os.cpus().length} cores; ${CONCURRENCY} clients, ${SECONDS} s per run; gateway: nginx, ${gateway.dir}`);

  const token = roleToken("shop");
  const ca = readFileSync(certs.caFile);
  const routes: Array<[string, () => { client: OrderClient; close: () => void }]> = [
    ["gRPC, straight to one replica", () => createOrderClient({ token, baseUrl: `http://127.0.0.1:${o1g}` })],
    ["gRPC, through the gateway (TLS)", () => createOrderClient({ token, baseUrl: `https://127.0.0.1:${gg}`, tls: { ca } })],
    ["Connect, straight to one replica", () => createOrderClient({ token, baseUrl: `http://127.0.0.1:${o1h}`, protocol: "connect" })],
    ["Connect, through the gateway (TLS)", () => createOrderClient({ token, baseUrl: `https://127.0.0.1:${gh}`, protocol: "connect", tls: { ca } })],
  ];

  // Orders to read: some of them, made once.
  const setup = routes[0]![1]();
  const ids: string[] = [];
  for (let i = 0; i < 200; i++) {
    const r = await setup.client.createOrder({ requestId: `bench-gateway-seed-${i}`, customerId: `bench-${i % 20}`, totalCents: 5000n, currency: "EUR" });
    ids.push(r.order!.id);
  }
  setup.close();

  const rows: Array<[string, string, ClosedLoopResult]> = [];
  let run = 0;
  for (const [what, make] of routes) {
    const c = make();
    try {
      const reads = Array.from({ length: 1_000_000 }, (_, i) => ids[i % ids.length]!);
      rows.push(["GetOrder", what, await closedLoop(reads, CONCURRENCY, SECONDS * 1000, (id) => c.client.getOrder({ orderId: id }))]);
      const r = run++;
      const creates = Array.from({ length: 500_000 }, (_, i) => i);
      rows.push([
        "CreateOrder",
        what,
        await closedLoop(creates, CONCURRENCY, SECONDS * 1000, (i) =>
          c.client.createOrder({ requestId: `bench-gateway-${r}-${i}`, customerId: `bench-${i % 20}`, totalCents: 5000n, currency: "EUR" }),
        ),
      ]);
    } finally {
      c.close();
    }
  }
  say("");
  say("| call | route | calls/s | p50 ms | p99 ms | errors |");
  say("| --- | --- | ---: | ---: | ---: | ---: |");
  for (const [call, what, r] of rows) {
    say(`| ${call} | ${what} | ${r.perSecond} | ${r.latencyMs.p50} | ${r.latencyMs.p99} | ${r.errors}${r.firstError ? ` (${r.firstError})` : ""} |`);
  }
  // How nginx spread the calls: the access log names the replica that answered each.
  const byReplica = new Map<string, number>();
  for (const line of readFileSync(path.join(gateway.dir, "access.log"), "utf8").split("\n")) {
    if (!line) continue;
    const upstream = (JSON.parse(line) as { upstream: string }).upstream;
    byReplica.set(upstream, (byReplica.get(upstream) ?? 0) + 1);
  }
  say("");
  say(`calls through the gateway by replica: ${[...byReplica].map(([u, n]) => `${u || "(none)"} ${n}`).join(", ")}`);
}

main()
  .catch((err) => {
    say(`failed: ${(err as Error).stack ?? String(err)}`);
    process.exitCode = 1;
  })
  .finally(() => cleanUp());
