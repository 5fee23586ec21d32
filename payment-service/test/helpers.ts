import { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { AUDIENCES, DEFAULT_ISSUER, SCOPES, type AuthSettings } from "@shop/platform/auth";
import { createPool, type Pool } from "@shop/platform/db";
import { createPaymentClient, type PaymentClient } from "@shop/sdk/clients";
import { testSigningKey, testToken } from "@shop/testkit/auth";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { checkPaymentLedger } from "../src/ledger-check.js";
import { startPaymentService, type PaymentServiceOptions, type RunningPaymentService } from "../src/service.js";

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

/** The payment service's own audience, as it runs in production. */
export const paymentAuth: AuthSettings = { keys: [testSigningKey.publicJwk], audience: AUDIENCES.payments, issuer: DEFAULT_ISSUER };

/** Every payment scope but the customer-limited one: tests that play the shop and the relay at once. */
export const harnessToken = testToken({
  subject: "test-harness",
  scopes: [SCOPES.paymentsWrite, SCOPES.paymentsRead, SCOPES.paymentsCharge],
  audience: AUDIENCES.payments,
  ttlSeconds: 86_400,
});

export type Transport = "grpc" | "connect";

export interface TestService {
  db: TestDatabase;
  service: RunningPaymentService;
  /** A pool of its own on the service's database, for reading it directly. */
  pool: Pool;
  lines: LogLine[];
  httpUrl: string;
  grpcUrl: string;
  /** An SDK client on either transport with a token (default: the harness's). */
  client(transport?: Transport, token?: string): PaymentClient;
  /** The ledger invariants (checkPaymentLedger); fails the test naming each broken one. */
  expectLedgerSound(): Promise<void>;
  count(table: string, where?: string): Promise<number>;
  stop(): Promise<void>;
}

/** The payment service in this process on a fresh database, ports picked by the OS; no outcome relay unless given one. */
export async function startTestService(
  opts: { poolSize?: number } & Pick<PaymentServiceOptions, "relay" | "outboxCleanup" | "outboxMetricsCacheMs"> = {},
): Promise<TestService> {
  const db = await freshDatabase("voucher");
  const { logger, lines } = captureLogger();
  const service = await startPaymentService({
    auth: paymentAuth,
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
  });
  const pool = createPool({ url: db.url, connectionLimit: 2 });
  const closers: Array<() => void> = [];
  const grpcUrl = `http://127.0.0.1:${service.grpcPort}`;
  const httpUrl = `http://127.0.0.1:${service.httpPort}`;
  return {
    db,
    service,
    pool,
    lines,
    httpUrl,
    grpcUrl,
    client(transport = "grpc", token = harnessToken) {
      const { client, close } = createPaymentClient({
        token,
        protocol: transport,
        baseUrl: transport === "grpc" ? grpcUrl : httpUrl,
        defaultTimeoutMs: 30_000,
      });
      closers.push(close);
      return client;
    },
    async expectLedgerSound() {
      expect(await checkPaymentLedger(pool)).to.deep.equal([]);
    },
    async count(table, where = "1 = 1") {
      const [rows] = await pool.query<import("mysql2").RowDataPacket[]>(`SELECT COUNT(*) AS n FROM ${table} WHERE ${where}`);
      return Number(rows[0]!.n);
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
