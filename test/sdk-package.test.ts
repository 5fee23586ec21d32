import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";
import { pino } from "pino";
import { startOrderService, type RunningOrderService } from "@shop/order-service/service";
import { createOrderClient } from "@shop/sdk/clients";
import { roleToken, testAuth } from "@shop/testkit/auth";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

/**
 * The SDK as its users get it: built, packed with npm pack, installed from
 * the tarball into a folder outside the workspace, and used from there by
 * plain node (no tsx, no workspace links) against a real order service, over
 * gRPC and over Connect JSON. Its declarations are typechecked by a consumer
 * in that folder, and its internal files are out of reach.
 */

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "..");
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");

/**
 * The environment of the processes that play the SDK's user: none of this
 * test run's own settings, above all not NODE_OPTIONS's
 * --conditions=shop-source (which resolves the workspace's packages to their
 * TypeScript sources) nor the npm_* variables of `npm run`, which would point
 * npm at the workspace.
 */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === "NODE_OPTIONS" || k.startsWith("npm_") || k.startsWith("NPM_")) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/** What the user's program does; it prints one JSON line of what it saw. */
const userProgram = `
import { Code, ConnectError, createOrderClient, OrderStatus, OrderVoucherStatus } from "@shop/sdk";

const seen = {};
const targets = { grpc: process.env.ORDER_GRPC_URL, connect: process.env.ORDER_HTTP_URL };
for (const [protocol, baseUrl] of Object.entries(targets)) {
  const { client, close } = createOrderClient({ baseUrl, protocol, token: process.env.SHOP_TOKEN });
  const anonymous = createOrderClient({ baseUrl, protocol });
  try {
    const request = { customerId: "alice", totalCents: 12000n, currency: "EUR", requestId: "sdk-package-" + protocol };
    const first = await client.createOrder(request);
    const again = await client.createOrder(request);
    const codeOf = (call) => call.then(() => "OK", (err) => (err instanceof ConnectError ? Code[err.code] : "not a ConnectError: " + err));
    seen[protocol] = {
      id: first.order.id,
      created: first.created,
      againId: again.order.id,
      againCreated: again.created,
      customerId: first.order.customerId,
      totalCents: String(first.order.totalCents),
      status: OrderStatus[first.order.status],
      voucher: OrderVoucherStatus[first.order.voucher?.status ?? 0],
      missing: await codeOf(client.getOrder({ orderId: "no-such-order" })),
      withoutToken: await codeOf(anonymous.client.getOrder({ orderId: first.order.id })),
    };
  } finally {
    close();
    anonymous.close();
  }
}
console.log(JSON.stringify(seen));
`;

/** Reaches for the package's internal files; prints what each import gave. */
const internalImports = `
const seen = {};
for (const internal of ["@shop/sdk/gen/shop/order/v1/order_pb.js", "@shop/sdk/dist/clients.js", "@shop/sdk/src/clients.ts"]) {
  seen[internal] = await import(internal).then(() => "imported", (err) => err.code);
}
console.log(JSON.stringify(seen));
`;

/** A TypeScript user: compiles only if the declarations give the calls real types. */
const userTypes = `
import { create, createOrderClient, CreateOrderRequestSchema, OrderStatus, VoucherStatus, type ClientOptions, type Order } from "@shop/sdk";
import { OrderService } from "@shop/sdk/order";
import { VoucherService } from "@shop/sdk/voucher";
import { createVoucherClient } from "@shop/sdk/clients";
import { Health } from "@shop/sdk/grpc-health";
// @ts-expect-error internal files are not part of the package's API
import { OrderSchema } from "@shop/sdk/gen/shop/order/v1/order_pb.js";

const options: ClientOptions = { baseUrl: "http://127.0.0.1:1", protocol: "connect", token: () => "t" };
// @ts-expect-error only "grpc" and "connect" are protocols
const wrong: ClientOptions = { baseUrl: "http://127.0.0.1:1", protocol: "http" };
const { client, close } = createOrderClient(options);
export async function use(): Promise<string> {
  const res = await client.createOrder(create(CreateOrderRequestSchema, { customerId: "c", totalCents: 1n, currency: "EUR", requestId: "r" }));
  const order: Order | undefined = res.order;
  const sent: boolean = order?.status === OrderStatus.SENT;
  // @ts-expect-error totalCents is an int64: a bigint, not a string
  await client.createOrder({ customerId: "c", totalCents: "1", currency: "EUR", requestId: "r" });
  const voucherStatus: VoucherStatus = VoucherStatus.VOIDED;
  close();
  createVoucherClient({ baseUrl: "http://127.0.0.1:2" }).close();
  return [OrderService.typeName, VoucherService.typeName, Health.typeName, String(sent), voucherStatus, wrong, OrderSchema].join();
}
`;

describe("the SDK as an installed package", function () {
  this.timeout(120_000);
  const logger = pino({ level: "silent" });
  let db: TestDatabase;
  let svc: RunningOrderService;
  let work: string;
  let tarballFiles: string[];
  let installed: Record<string, any>;

  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "sdk-package-"));
    const [database] = await Promise.all([
      freshDatabase("order"),
      (async () => {
        await run(process.execPath, [tsc, "-b", path.join(root, "packages/sdk/tsconfig.build.json")], { cwd: root });
        const { stdout } = await run("npm", ["pack", "-w", "@shop/sdk", "--pack-destination", work, "--json"], { cwd: root, env: userEnv() });
        const [pack] = JSON.parse(stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
        tarballFiles = pack!.files.map((f) => f.path);
        const app = path.join(work, "app");
        await run("mkdir", [app]);
        await run("npm", ["init", "-y"], { cwd: app, env: userEnv() });
        await run("npm", ["install", path.join(work, pack!.filename), "--prefer-offline", "--no-audit", "--no-fund"], { cwd: app, env: userEnv() });
        installed = JSON.parse(await readFile(path.join(app, "node_modules/@shop/sdk/package.json"), "utf8"));
      })(),
    ]);
    db = database;
    svc = await startOrderService({
      config: {
        databaseUrl: db.url,
        host: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        poolSize: 2,
        voucherServiceUrl: "http://127.0.0.1:1",
        relayEnabled: false,
        auth: testAuth,
      },
      logger,
      relay: false,
      shutdownGraceMs: 200,
    });
  });

  after(async () => {
    await svc?.stop();
    await db?.drop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("packs the compiled JavaScript and declarations only, and depends on published packages only", () => {
    expect(tarballFiles).to.include.members(["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "dist/clients.js", "dist/grpc-health.js"]);
    expect(tarballFiles.filter((f) => f.startsWith("src/") || (f.endsWith(".ts") && !f.endsWith(".d.ts")) || f.includes("tsbuildinfo"))).to.deep.equal([]);
    expect(Object.keys(installed.dependencies)).to.have.members([
      "@bufbuild/protobuf",
      "@bufbuild/protovalidate",
      "@connectrpc/connect",
      "@connectrpc/connect-node",
    ]);
    expect(Object.keys(installed.exports)).to.have.members([".", "./clients", "./order", "./order-admin", "./voucher", "./payment", "./delivery", "./grpc-health", "./package.json"]);
  });

  it("creates an order over gRPC and over Connect JSON from plain node, with a token, and the program ends by itself", async () => {
    const app = path.join(work, "app");
    await writeFile(path.join(app, "main.mjs"), userProgram);
    // The program must end by itself (a client holding it open would make the timeout fail the test).
    const { stdout } = await run(process.execPath, ["main.mjs"], {
      cwd: app,
      timeout: 30_000,
      env: userEnv({
        ORDER_GRPC_URL: `http://127.0.0.1:${svc.grpcPort}`,
        ORDER_HTTP_URL: `http://127.0.0.1:${svc.httpPort}`,
        SHOP_TOKEN: roleToken("shop"),
      }),
    });
    const seen = JSON.parse(stdout);
    for (const protocol of ["grpc", "connect"]) {
      expect(seen[protocol], protocol).to.include({
        created: true,
        againId: seen[protocol].id,
        againCreated: false,
        customerId: "alice",
        totalCents: "12000",
        status: "PENDING",
        voucher: "NOT_ELIGIBLE",
        missing: "NotFound",
        withoutToken: "Unauthenticated",
      });
    }
    expect(seen.grpc.id).not.to.equal(seen.connect.id);
    // The orders are the service's: read back with the workspace's own client.
    const { client, close } = createOrderClient({ baseUrl: `http://127.0.0.1:${svc.grpcPort}`, token: roleToken("shop") });
    try {
      for (const protocol of ["grpc", "connect"]) {
        const { order } = await client.getOrder({ orderId: seen[protocol].id });
        expect(order?.totalCents, protocol).to.equal(12_000n);
      }
    } finally {
      close();
    }
  });

  it("refuses imports of the package's internal files with ERR_PACKAGE_PATH_NOT_EXPORTED", async () => {
    const app = path.join(work, "app");
    await writeFile(path.join(app, "internal.mjs"), internalImports);
    const { stdout } = await run(process.execPath, ["internal.mjs"], { cwd: app, timeout: 30_000, env: userEnv() });
    expect(JSON.parse(stdout)).to.deep.equal({
      "@shop/sdk/gen/shop/order/v1/order_pb.js": "ERR_PACKAGE_PATH_NOT_EXPORTED",
      "@shop/sdk/dist/clients.js": "ERR_PACKAGE_PATH_NOT_EXPORTED",
      "@shop/sdk/src/clients.ts": "ERR_PACKAGE_PATH_NOT_EXPORTED",
    });
  });

  it("gives TypeScript users real types from its declarations", async () => {
    const app = path.join(work, "app");
    await writeFile(path.join(app, "use.ts"), userTypes);
    await writeFile(
      path.join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noEmit: true,
          // The user's own @types/node; the workspace's stands in for it.
          typeRoots: [path.join(root, "node_modules/@types")],
          types: ["node"],
        },
        files: ["use.ts"],
      }),
    );
    const result = await run(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: app, env: userEnv() }).catch((err) => err);
    expect(`${result.stdout ?? ""}${result.stderr ?? ""}`).to.equal("");
  });
});
