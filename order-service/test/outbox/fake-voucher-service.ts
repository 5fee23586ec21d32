import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import { newId } from "@shop/platform/ids";
import { startServers, type RunningServers } from "@shop/platform/servers";
import { createVoucherClient, type ClosableClient, type VoucherClient } from "@shop/sdk/clients";
import { VoucherService, VoucherStatus, type IssueVoucherRequest } from "@shop/sdk/voucher";
import { allScopesToken, testAuth } from "@shop/testkit/auth";
import { VOUCHER_SERVICE_ACCESS } from "@shop/voucher-service/grpc/access";

export const quietLogger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

interface Issued {
  id: string;
  customerId: string;
}

/**
 * A voucher service that behaves like the real one where the relay relies on
 * it (idempotent per order: a replay returns the same voucher, created=false)
 * and lets a test inject failures and delays. It records every request per
 * order id, replays included.
 */
export class FakeVoucherService {
  readonly vouchers = new Map<string, Issued>();
  /** Issue requests seen per order id (batch items and single calls alike). */
  readonly requests = new Map<string, number>();
  readonly batchCalls: string[][] = [];
  readonly singleCalls: string[] = [];
  /** Whole-call failures for the next batch calls, used up one per call. */
  failBatches: Code[] = [];
  /** Per-item refusals: this order id gets this code in the batch and in IssueVoucher. */
  refuse = new Map<string, Code>();
  /**
   * Poison rows: any call carrying this order id fails as a whole with this
   * code, the way one bad item can fail a real batch (INTERNAL, a timeout).
   */
  poison = new Map<string, Code>();
  /** Every call fails as a whole with this code while set (a relay the service refuses: wrong token or scope). */
  failAll: Code | undefined;
  /** Delay before answering anything. */
  delayMs = 0;
  /** Resolved by the next call that arrives. */
  private arrivals: Array<() => void> = [];

  nextCall(): Promise<void> {
    return new Promise((resolve) => this.arrivals.push(resolve));
  }

  private async arrive(): Promise<void> {
    const waiting = this.arrivals;
    this.arrivals = [];
    waiting.forEach((r) => r());
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
  }

  private issue(req: IssueVoucherRequest) {
    this.requests.set(req.orderId, (this.requests.get(req.orderId) ?? 0) + 1);
    const code = this.refuse.get(req.orderId);
    if (code !== undefined) throw new ConnectError(`order ${req.orderId} refused by the test`, code);
    const existing = this.vouchers.get(req.orderId);
    const issued = existing ?? { id: newId(), customerId: req.customerId };
    if (!existing) this.vouchers.set(req.orderId, issued);
    return {
      voucher: {
        id: issued.id,
        code: issued.id,
        orderId: req.orderId,
        customerId: issued.customerId,
        amountCents: 500n,
        currency: "EUR",
        status: VoucherStatus.ISSUED,
        orderTotalCents: req.orderTotalCents,
      },
      created: !existing,
    };
  }

  private failWhole(orderIds: string[]): void {
    if (this.failAll !== undefined) throw new ConnectError("call refused by the test", this.failAll);
    const poisoned = orderIds.find((id) => this.poison.has(id));
    if (poisoned !== undefined) throw new ConnectError(`call failed by the test's poison order ${poisoned}`, this.poison.get(poisoned)!);
  }

  readonly impl = {
    issueVoucher: async (req: IssueVoucherRequest) => {
      this.singleCalls.push(req.orderId);
      await this.arrive();
      this.failWhole([req.orderId]);
      return this.issue(req);
    },
    batchIssueVouchers: async (req: { items: IssueVoucherRequest[] }) => {
      this.batchCalls.push(req.items.map((i) => i.orderId));
      await this.arrive();
      const fail = this.failBatches.shift();
      if (fail !== undefined) throw new ConnectError("batch refused by the test", fail);
      this.failWhole(req.items.map((i) => i.orderId));
      return {
        results: req.items.map((item) => {
          try {
            return { orderId: item.orderId, ...this.issue(item) };
          } catch (err) {
            const ce = ConnectError.from(err);
            return { orderId: item.orderId, errorCode: ce.code, errorMessage: ce.rawMessage };
          }
        }),
      };
    },
  };
}

/** The fake served over real gRPC, plus a client for it. */
export interface FakeVoucherServer {
  fake: FakeVoucherService;
  port: number;
  client: VoucherClient;
  /** Stops the server (the client stays, as a relay's would). */
  down(): Promise<void>;
  /** Serves again on the same port. */
  up(): Promise<void>;
  close(): Promise<void>;
}

export async function startFakeVoucherServer(
  fake = new FakeVoucherService(),
  port = 0,
  opts: { maxMessageBytes?: number } = {},
): Promise<FakeVoucherServer> {
  const serve = (p: number) =>
    startServers({
      maxMessageBytes: opts.maxMessageBytes,
      host: "127.0.0.1",
      grpcPort: p,
      httpPort: 0,
      services: [{ service: VoucherService, impl: fake.impl as any, access: VOUCHER_SERVICE_ACCESS }],
      auth: testAuth,
      logger: quietLogger,
      isReady: async () => true,
      reflection: false,
    });
  let servers: RunningServers | undefined = await serve(port);
  const boundPort = servers.grpcPort;
  const client: ClosableClient<VoucherClient> = createVoucherClient({ token: allScopesToken, baseUrl: `http://127.0.0.1:${boundPort}` });
  return {
    fake,
    port: boundPort,
    client: client.client,
    async down() {
      await servers?.close(100);
      servers = undefined;
    },
    async up() {
      servers ??= await serve(boundPort);
    },
    async close() {
      client.close();
      await servers?.close(100);
      servers = undefined;
    },
  };
}
