import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startGateway, type RunningGateway } from "@shop/gateway/nginx";
import { DEFAULT_LIMITS, type Endpoint, type GatewayLimits } from "@shop/gateway/render";
import { UPSTREAMS, type UpstreamName } from "@shop/gateway/routes";
import { roleClaims, roleAudience, ROLES, type Role } from "@shop/platform/auth";
import type { ClientOptions } from "@shop/sdk/clients";
import { roleToken, testToken } from "@shop/testkit/auth";
import { makeTestCerts, type TestCerts } from "@shop/testkit/certs";
import { freePort } from "@shop/testkit/ports";
import { ServiceProcess } from "@shop/testkit/service-process";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";

const root = path.resolve(import.meta.dirname, "../..");
const DAY = 86_400;

/** One line of the gateway's JSON access log (gateway/src/render.ts, log_format gateway_json). */
export interface AccessLine {
  protocol: "grpc" | "connect";
  caller: string;
  path: string;
  status: number;
  grpcStatus: string;
  refusal: string;
  /** "127.0.0.1:1234", or "a, b" when nginx tried a second replica. */
  upstream: string;
  upstreamStatus: string;
  traceId: string;
  requestId: string;
}

/** One replica of a service: its process and its two endpoints. */
export interface Replica {
  proc: ServiceProcess;
  grpc: Endpoint;
  http: Endpoint;
}

/** A running gateway with its access log as parsed lines, for assertions and for failure messages. */
export class GatewayRun {
  readonly lines: AccessLine[] = [];
  readonly errors: string[] = [];

  constructor(
    readonly name: string,
    readonly running: RunningGateway,
  ) {}

  get grpcUrl(): string {
    return `https://127.0.0.1:${this.running.grpcPort}`;
  }

  get httpUrl(): string {
    return `https://127.0.0.1:${this.running.httpPort}`;
  }

  /** The base URL of a protocol's port. */
  url(protocol: "grpc" | "connect"): string {
    return protocol === "grpc" ? this.grpcUrl : this.httpUrl;
  }

  /** The access log lines of a caller (token subject), as logged so far. */
  of(caller: string): AccessLine[] {
    return this.lines.filter((l) => l.caller === caller);
  }

  /**
   * Waits until at least `count` lines match (nginx writes a line when the
   * request ends; startGateway's tail reads the file every 100 ms), and
   * returns them; throws with the caller's lines when they do not come.
   */
  async waitForLines(what: string, match: (l: AccessLine) => boolean, count = 1, timeoutMs = 10_000): Promise<AccessLine[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.lines.filter(match);
      if (found.length >= count) return found;
      if (Date.now() > deadline) {
        throw new Error(`${this.name}: ${found.length} of ${count} access log lines for ${what} within ${timeoutMs} ms; last lines:\n${show(this.lines.slice(-20))}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Access log lines for a failure message, one a line. */
export function show(lines: AccessLine[]): string {
  return lines.map((l) => `  ${JSON.stringify(l)}`).join("\n") || "  (none)";
}

/**
 * A token of a role under a subject of the test's own: the gateway's rate
 * limit and its access log key on the subject, so each part of a test can be
 * told apart (and limited apart) in the log.
 */
export function tokenAs(role: Role, subject: string, customerId?: string): string {
  return testToken({ ...roleClaims(role, { ttlSeconds: DAY, customerId }), subject });
}

/** Every scope there is, for every service: a caller that may call anything, internal RPCs included. */
export function everythingToken(subject: string): string {
  const scopes = [...new Set(Object.values(ROLES).flatMap((r) => r.scopes as readonly string[]))].filter((s) => !s.endsWith(":own"));
  const audience = [...new Set((Object.keys(ROLES) as Role[]).flatMap((r) => roleAudience(r)))];
  return testToken({ subject, scopes, audience, ttlSeconds: DAY });
}

/**
 * Two replicas of each service (order, voucher, payment, delivery), each
 * service's replicas on one database of its own, with every relay running in
 * its replicas; and gateways (nginx, TLS at the edge with a throwaway CA) in
 * front of them. The relays call internal RPCs, which the gateway does not
 * route, so they are pointed at replica 1 of the service they call; tests
 * kill replica 0.
 */
export class GatewayStack {
  certs!: TestCerts;
  readonly dbs = {} as Record<UpstreamName, TestDatabase>;
  readonly replicas = {} as Record<UpstreamName, Replica[]>;
  readonly gateways: GatewayRun[] = [];
  private readonly dirs: string[] = [];
  private closers: Array<() => void> = [];

  constructor(
    private readonly name: string,
    private readonly replicaCount = 2,
  ) {}

  async start(): Promise<void> {
    this.certs = makeTestCerts();
    const [order, voucher, payment, delivery] = await Promise.all([
      freshDatabase("order"),
      freshDatabase("voucher"),
      freshDatabase("voucher"),
      freshDatabase("voucher"),
    ]);
    Object.assign(this.dbs, { order, voucher, payment, delivery });
    const ports: Record<UpstreamName, Array<{ grpc: number; http: number }>> = {} as never;
    for (const u of UPSTREAMS) {
      ports[u] = [];
      for (let i = 0; i < this.replicaCount; i++) ports[u].push({ grpc: await freePort(), http: await freePort() });
    }
    // What the relays call: the last replica of each service, which no test kills.
    const internalUrl = (u: UpstreamName) => `http://127.0.0.1:${ports[u][this.replicaCount - 1]!.grpc}`;
    const env = (u: UpstreamName, p: { grpc: number; http: number }): Record<string, string> => {
      switch (u) {
        case "order":
          return {
            ORDER_DATABASE_URL: this.dbs.order.url,
            ORDER_GRPC_PORT: String(p.grpc),
            ORDER_HTTP_PORT: String(p.http),
            VOUCHER_SERVICE_URL: internalUrl("voucher"),
            PAYMENT_SERVICE_URL: internalUrl("payment"),
            DELIVERY_SERVICE_URL: internalUrl("delivery"),
            SHIP_PAID_ORDERS: "true",
            RELAY_RETRY_BASE_MS: "100",
            RELAY_RETRY_MAX_MS: "1000",
          };
        case "voucher":
          return { VOUCHER_DATABASE_URL: this.dbs.voucher.url, VOUCHER_GRPC_PORT: String(p.grpc), VOUCHER_HTTP_PORT: String(p.http) };
        case "payment":
          return {
            PAYMENT_DATABASE_URL: this.dbs.payment.url,
            PAYMENT_GRPC_PORT: String(p.grpc),
            PAYMENT_HTTP_PORT: String(p.http),
            ORDER_SERVICE_URL: internalUrl("order"),
            PAYMENT_RELAY_TOKEN: roleToken("payment-relay"),
            PAYMENT_RELAY_RETRY_BASE_MS: "100",
            PAYMENT_RELAY_RETRY_MAX_MS: "1000",
          };
        case "delivery":
          return {
            DELIVERY_DATABASE_URL: this.dbs.delivery.url,
            DELIVERY_GRPC_PORT: String(p.grpc),
            DELIVERY_HTTP_PORT: String(p.http),
            ORDER_SERVICE_URL: internalUrl("order"),
            DELIVERY_RELAY_TOKEN: roleToken("delivery-relay"),
            DELIVERY_RELAY_RETRY_BASE_MS: "100",
            DELIVERY_RELAY_RETRY_MAX_MS: "1000",
            DELAYED_CARRIER_CONFIRM_MS: "100",
            DELAYED_CARRIER_SHIP_MS: "200",
            DELAYED_CARRIER_DELIVER_MS: "400",
          };
      }
    };
    for (const u of UPSTREAMS) {
      this.replicas[u] = ports[u].map((p, i) => ({
        proc: new ServiceProcess({
          name: `${this.name}-${u}-${i}`,
          entry: path.join(root, `${u}-service/src/main.ts`),
          env: env(u, p),
          readyUrl: `http://127.0.0.1:${p.http}/readyz`,
          readyTimeoutMs: 60_000,
        }),
        grpc: { host: "127.0.0.1", port: p.grpc },
        http: { host: "127.0.0.1", port: p.http },
      }));
    }
    // Replicas of one service migrate their database under a lock, so all may start at once.
    await Promise.all(UPSTREAMS.flatMap((u) => this.replicas[u].map((r) => r.proc.start())));
  }

  /**
   * A gateway in front of every replica, TLS on at the edge. Every test
   * caller comes from 127.0.0.1, so the per-address limit is set out of the
   * way unless `limits` says otherwise.
   */
  async startGateway(name: string, limits: Partial<GatewayLimits> = {}): Promise<GatewayRun> {
    const dir = mkdtempSync(path.join(tmpdir(), `shop-${name}-`));
    this.dirs.push(dir);
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    let run: GatewayRun | undefined;
    const early: Array<[string, "access" | "error"]> = [];
    const onLine = (line: string, stream: "access" | "error") => {
      if (!run) {
        early.push([line, stream]);
        return;
      }
      if (stream === "error") {
        run.errors.push(line);
        return;
      }
      try {
        run.lines.push(JSON.parse(line) as AccessLine);
      } catch {
        run.errors.push(`unreadable access log line: ${line}`);
      }
    };
    const running = await startGateway({
      dir,
      config: {
        host: "127.0.0.1",
        grpcPort,
        httpPort,
        workers: 1,
        tls: { certFile: this.certs.server.certFile, keyFile: this.certs.server.keyFile },
        limits: { ...DEFAULT_LIMITS, ratePerAddress: 100_000, burstPerAddress: 100_000, ...limits },
        upstreams: Object.fromEntries(
          UPSTREAMS.map((u) => [u, { grpc: this.replicas[u].map((r) => r.grpc), http: this.replicas[u].map((r) => r.http) }]),
        ) as Record<UpstreamName, { grpc: Endpoint[]; http: Endpoint[] }>,
      },
      onLine,
    });
    run = new GatewayRun(name, running);
    for (const [line, stream] of early) onLine(line, stream);
    this.gateways.push(run);
    return run;
  }

  /** SDK options for a call through a gateway over TLS; the client is closed in stop(). */
  clientOptions(gw: GatewayRun, protocol: "grpc" | "connect", token: string | undefined, extra: Partial<ClientOptions> = {}): ClientOptions {
    return { baseUrl: gw.url(protocol), protocol, token, tls: { ca: this.certs.ca.cert }, defaultTimeoutMs: 10_000, ...extra };
  }

  /** Keeps a client's close for stop(); returns its client. */
  keep<C>(c: { client: C; close(): void }): C {
    this.closers.push(c.close);
    return c.client;
  }

  /** The address of a replica as nginx logs it ($upstream_addr). */
  address(u: UpstreamName, i: number, protocol: "grpc" | "http"): string {
    const e = this.replicas[u][i]![protocol];
    return `${e.host}:${e.port}`;
  }

  async stop(): Promise<void> {
    this.closers.forEach((c) => c());
    await Promise.all(this.gateways.map((g) => g.running.stop()));
    await Promise.all(UPSTREAMS.flatMap((u) => (this.replicas[u] ?? []).map((r) => r.proc.stop())));
    await Promise.all(UPSTREAMS.map((u) => this.dbs[u]?.drop()));
    for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
    this.certs?.cleanup();
  }
}
