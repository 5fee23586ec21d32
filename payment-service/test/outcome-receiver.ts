import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import { AUDIENCES, DEFAULT_ISSUER, SCOPES } from "@shop/platform/auth";
import { startServers, type RunningServers } from "@shop/platform/servers";
import type { ServerTls } from "@shop/platform/tls";
import { PaymentEvent, PaymentOutcomeService, type RecordPaymentOutcomeRequest } from "@shop/sdk/order";
import { testSigningKey } from "@shop/testkit/auth";

/** One RecordPaymentOutcome call as the receiver saw it. */
export interface ReceivedCall {
  messageKey: string;
  orderId: string;
  event: PaymentEvent;
  refusalReason: string;
  amountCents: bigint;
  currency: string;
  traceparent: string;
  /** What the receiver answered: true the first time it recorded the key, false for a replay; undefined when it failed the call. */
  changed?: boolean;
  /** The code it failed the call with, if it did. */
  failedWith?: Code;
}

type Failure = { code: Code; times: number; after: "apply" | "refuse"; keys?: Set<string> };

/**
 * The order service's PaymentOutcomeService as a real gRPC server (the
 * platform's startServers, with its token checks: audience order-service,
 * scope orders:payment-outcome), recording every call and keeping an inbox
 * of its own keyed on message_key, so a redelivery is answered changed=false
 * as the order service answers it. It can be told to fail calls with a code,
 * before recording them (a refusal) or after (a lost reply).
 */
export class OutcomeReceiver {
  readonly calls: ReceivedCall[] = [];
  private readonly inbox = new Set<string>();
  private failures: Failure[] = [];
  private servers?: RunningServers;
  private tls = false;

  /** With `tls`, it serves TLS (mTLS when tls.clientCa is set), as an order service with ORDER_TLS_* does. */
  static async start(opts: { tls?: ServerTls } = {}): Promise<OutcomeReceiver> {
    const r = new OutcomeReceiver();
    r.tls = opts.tls !== undefined;
    r.servers = await startServers({
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      services: [
        {
          service: PaymentOutcomeService,
          impl: { recordPaymentOutcome: (req: RecordPaymentOutcomeRequest) => r.record(req) },
          access: { recordPaymentOutcome: { scopes: [SCOPES.ordersPaymentOutcome] } },
        },
      ],
      auth: { keys: [testSigningKey.publicJwk], audience: AUDIENCES.orders, issuer: DEFAULT_ISSUER },
      logger: pino({ level: "silent" }),
      isReady: async () => true,
      reflection: false,
      tls: opts.tls,
    });
    return r;
  }

  /** Its gRPC URL: what ORDER_SERVICE_URL is set to. */
  get url(): string {
    return `${this.tls ? "https" : "http"}://127.0.0.1:${this.servers!.grpcPort}`;
  }

  /**
   * Fails the next `times` calls (for `keys` only, if given) with `code`:
   * after "refuse", without recording; after "apply", once recorded (the
   * caller never hears that it was).
   */
  fail(code: Code, opts: { times?: number; after?: "apply" | "refuse"; keys?: string[] } = {}): void {
    this.failures.push({ code, times: opts.times ?? Infinity, after: opts.after ?? "refuse", keys: opts.keys && new Set(opts.keys) });
  }

  heal(): void {
    this.failures = [];
  }

  callsFor(key: string): ReceivedCall[] {
    return this.calls.filter((c) => c.messageKey === key);
  }

  /** Keys recorded, each once. */
  get recorded(): string[] {
    return [...this.inbox];
  }

  async stop(): Promise<void> {
    await this.servers?.close(1_000);
  }

  private record(req: RecordPaymentOutcomeRequest): { changed: boolean } {
    const call: ReceivedCall = {
      messageKey: req.messageKey,
      orderId: req.orderId,
      event: req.event,
      refusalReason: req.refusalReason,
      amountCents: req.amountCents,
      currency: req.currency,
      traceparent: req.traceparent,
    };
    this.calls.push(call);
    const failure = this.failures.find((f) => f.times > 0 && (!f.keys || f.keys.has(req.messageKey)));
    if (failure) failure.times--;
    if (failure?.after === "refuse") {
      call.failedWith = failure.code;
      throw new ConnectError(`told to fail with ${Code[failure.code]}`, failure.code);
    }
    const changed = !this.inbox.has(req.messageKey);
    this.inbox.add(req.messageKey);
    if (failure) {
      call.failedWith = failure.code;
      throw new ConnectError(`recorded, then told to fail with ${Code[failure.code]}`, failure.code);
    }
    call.changed = changed;
    return { changed };
  }
}

/** Polls until check() is true; fails naming `what` after timeoutMs. Bounds a test, never measures it. */
export async function eventually(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
