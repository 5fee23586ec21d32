import { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import type { RowDataPacket } from "mysql2";
import { AUDIENCES, DEFAULT_ISSUER, SCOPES, type AuthSettings } from "@shop/platform/auth";
import { createPool, type Pool } from "@shop/platform/db";
import { createCarrierClient, createDeliveryClient, type CarrierClient, type DeliveryClient } from "@shop/sdk/clients";
import { testSigningKey, testToken } from "@shop/testkit/auth";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { CARRIER_DEFAULTS, type CarrierSettings } from "../src/carriers/registry.js";
import { startDeliveryService, type DeliveryServiceOptions, type RunningDeliveryService } from "../src/service.js";

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** A pino logger at debug whose lines are kept for assertions instead of printed. */
export function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split("\n")) if (l) lines.push(JSON.parse(l));
      done();
    },
  });
  return { logger: pino({ level: "debug" }, sink), lines };
}

/** The delivery service's own audience, as it runs in production. */
export const deliveryAuth: AuthSettings = { keys: [testSigningKey.publicJwk], audience: AUDIENCES.deliveries, issuer: DEFAULT_ISSUER };

/** Every delivery scope but the customer-limited one: tests that play the order relay, the shop, an operator and a carrier at once. */
export const harnessToken = testToken({
  subject: "test-harness",
  scopes: [SCOPES.shipmentsCreate, SCOPES.shipmentsRead, SCOPES.shipmentsAdmin, SCOPES.carrierReport],
  audience: AUDIENCES.deliveries,
  ttlSeconds: 86_400,
});

/** The built-in carriers' defaults, as CARRIERS and DEFAULT_CARRIER leave them: delayed (the default) and manual. */
export const testCarriers: CarrierSettings = { ...CARRIER_DEFAULTS, delayed: { ...CARRIER_DEFAULTS.delayed }, enabled: [...CARRIER_DEFAULTS.enabled] };

export type Transport = "grpc" | "connect";

export interface TestService {
  db: TestDatabase;
  service: RunningDeliveryService;
  /** A pool of its own on the service's database, for reading it directly. */
  pool: Pool;
  lines: LogLine[];
  httpUrl: string;
  grpcUrl: string;
  /** A DeliveryService client on either transport with a token (default: the harness's). */
  client(transport?: Transport, token?: string): DeliveryClient;
  /** A CarrierService client on either transport with a token (default: the harness's). */
  carrier(transport?: Transport, token?: string): CarrierClient;
  count(table: string, where?: string, args?: unknown[]): Promise<number>;
  /** The shipment_event_outbox rows of an order, oldest first. */
  events(orderId: string): Promise<Array<{ messageKey: string; event: string; status: string; reason: string | null; carrier: string }>>;
  stop(): Promise<void>;
}

/**
 * The delivery service in this process on a fresh database, ports picked by
 * the OS; no event relay and no carrier worker unless asked for, so a test
 * sees shipments and their outbox rows stay where its own calls put them.
 */
export async function startTestService(
  opts: { poolSize?: number } & Partial<
    Pick<DeliveryServiceOptions, "relay" | "outboxCleanup" | "outboxMetricsCacheMs" | "carriers" | "carrierWorker" | "extraCarriers">
  > = {},
): Promise<TestService> {
  const db = await freshDatabase("voucher");
  const { logger, lines } = captureLogger();
  let service: RunningDeliveryService;
  try {
    service = await startDeliveryService({
      auth: deliveryAuth,
      databaseUrl: db.url,
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      logger,
      poolSize: opts.poolSize ?? 10,
      graceMs: 1_000,
      relay: opts.relay,
      outboxCleanup: opts.outboxCleanup,
      outboxMetricsCacheMs: opts.outboxMetricsCacheMs,
      carriers: opts.carriers ?? testCarriers,
      carrierWorker: opts.carrierWorker ?? false,
      extraCarriers: opts.extraCarriers,
    });
  } catch (err) {
    await db.drop();
    throw err;
  }
  const pool = createPool({ url: db.url, connectionLimit: 2 });
  const closers: Array<() => void> = [];
  const grpcUrl = `http://127.0.0.1:${service.grpcPort}`;
  const httpUrl = `http://127.0.0.1:${service.httpPort}`;
  const options = (transport: Transport, token: string) => ({
    token,
    protocol: transport,
    baseUrl: transport === "grpc" ? grpcUrl : httpUrl,
    defaultTimeoutMs: 30_000,
  });
  return {
    db,
    service,
    pool,
    lines,
    httpUrl,
    grpcUrl,
    client(transport = "grpc", token = harnessToken) {
      const { client, close } = createDeliveryClient(options(transport, token));
      closers.push(close);
      return client;
    },
    carrier(transport = "grpc", token = harnessToken) {
      const { client, close } = createCarrierClient(options(transport, token));
      closers.push(close);
      return client;
    },
    async count(table, where = "1 = 1", args = []) {
      const [rows] = await pool.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM ${table} WHERE ${where}`, args);
      return Number(rows[0]!.n);
    },
    async events(orderId) {
      const [rows] = await pool.query<RowDataPacket[]>(
        "SELECT message_key, event, status, reason, carrier FROM shipment_event_outbox WHERE order_id = ? ORDER BY id",
        [orderId],
      );
      return rows.map((r) => ({ messageKey: r.message_key, event: r.event, status: r.status, reason: r.reason, carrier: r.carrier }));
    },
    async stop() {
      for (const close of closers) close();
      await pool.end();
      await service.stop();
      await db.drop();
    },
  };
}

/** Awaits a call that must fail with `code`; returns the error for further checks. */
export async function expectCode(call: Promise<unknown>, code: Code): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    const ce = ConnectError.from(err);
    expect(Code[ce.code], ce.rawMessage).to.equal(Code[code]);
    return ce;
  }
  expect.fail(`expected ${Code[code]}, but the call succeeded`);
}

let seq = 0;
/** An id no other test uses. */
export function uniqueId(prefix: string): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${seq++}`;
}

/** A counter's value from a /metrics page; NaN when the series is absent. */
export function metricValue(text: string, series: string): number {
  return Number(new RegExp(`^${series.replace(/[{}"()|.+*?[\]\\^$]/g, "\\$&")} (\\S+)$`, "m").exec(text)?.[1]);
}

/** Polls until check() is true; fails naming `what` after timeoutMs. Bounds a test, never measures it. */
export async function eventually(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
