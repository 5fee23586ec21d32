import { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import { createVoucherClient, type VoucherClient } from "@shop/sdk/clients";
import { freshDatabase, type TestDatabase } from "@shop/testkit/shared-servers";
import { startVoucherService, type RunningVoucherService } from "../src/service.js";
import { testAuth, allScopesToken } from "@shop/testkit/auth";

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

export const LEVEL = { debug: 20, info: 30, warn: 40, error: 50 } as const;

export interface TestService {
  db: TestDatabase;
  service: RunningVoucherService;
  client: VoucherClient;
  lines: LogLine[];
  httpUrl: string;
  /** Rows in vouchers, optionally only for one order. */
  count(orderId?: string): Promise<number>;
  stop(): Promise<void>;
}

/** The voucher service in this process on a fresh database, ports picked by the OS, and an SDK client for it. */
export async function startTestService(opts: { maxBatch?: number; poolSize?: number } = {}): Promise<TestService> {
  const db = await freshDatabase("voucher");
  const { logger, lines } = captureLogger();
  const service = await startVoucherService({ auth: testAuth,
    databaseUrl: db.url,
    host: "127.0.0.1",
    grpcPort: 0,
    httpPort: 0,
    logger,
    poolSize: opts.poolSize ?? 10,
    maxBatch: opts.maxBatch,
    graceMs: 1_000,
  });
  const { client, close } = createVoucherClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${service.grpcPort}`, defaultTimeoutMs: 10_000 });
  return {
    db,
    service,
    client,
    lines,
    httpUrl: `http://127.0.0.1:${service.httpPort}`,
    async count(orderId) {
      const where = orderId === undefined ? "" : ` WHERE order_id = '${orderId.replace(/'/g, "''")}'`;
      return Number((await db.sql(`SELECT COUNT(*) FROM vouchers${where}`)).trim());
    },
    async stop() {
      close();
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
/** An order id no other test uses. */
export function orderId(prefix = "ord"): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${seq++}`;
}

export function issueRequest(overrides: Partial<{ orderId: string; customerId: string; orderTotalCents: bigint; currency: string }> = {}) {
  return { orderId: orderId(), customerId: "cust-1", orderTotalCents: 15_000n, currency: "EUR", ...overrides };
}
