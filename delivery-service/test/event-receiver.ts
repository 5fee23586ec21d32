import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { pino } from "pino";
import { AUDIENCES, DEFAULT_ISSUER, SCOPES } from "@shop/platform/auth";
import { startServers, type RunningServers } from "@shop/platform/servers";
import { ShipmentEvent, ShipmentEventService, type RecordShipmentEventRequest } from "@shop/sdk/order";
import { testSigningKey } from "@shop/testkit/auth";

/** One RecordShipmentEvent call as the receiver saw it. */
export interface ReceivedEvent {
  messageKey: string;
  orderId: string;
  event: ShipmentEvent;
  shipmentId: string;
  carrier: string;
  declineReason: string;
  occurredAt?: Date;
  traceparent: string;
  /** What the receiver answered: true the first time it recorded the key, false for a replay; undefined when it failed the call. */
  changed?: boolean;
  /** The code it failed the call with, if it did. */
  failedWith?: Code;
}

type Failure = { code: Code; times: number; after: "apply" | "refuse"; keys?: Set<string> };

/**
 * The order service's ShipmentEventService as a real gRPC server (the
 * platform's startServers, with its token checks: audience order-service,
 * scope orders:shipment-event, and the proto's request rules), recording
 * every call and keeping an inbox of its own keyed on message_key, so a
 * redelivery is answered changed=false as the order service answers it. It
 * can be told to fail calls with a code, before recording them (a refusal)
 * or after (a lost reply).
 */
export class EventReceiver {
  readonly calls: ReceivedEvent[] = [];
  private readonly inbox = new Set<string>();
  private failures: Failure[] = [];
  private servers?: RunningServers;

  static async start(): Promise<EventReceiver> {
    const r = new EventReceiver();
    r.servers = await startServers({
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      services: [
        {
          service: ShipmentEventService,
          impl: { recordShipmentEvent: (req: RecordShipmentEventRequest) => r.record(req) },
          access: { recordShipmentEvent: { scopes: [SCOPES.ordersShipmentEvent] } },
        },
      ],
      auth: { keys: [testSigningKey.publicJwk], audience: AUDIENCES.orders, issuer: DEFAULT_ISSUER },
      logger: pino({ level: "silent" }),
      isReady: async () => true,
      reflection: false,
    });
    return r;
  }

  /** Its gRPC URL: what ORDER_SERVICE_URL is set to. */
  get url(): string {
    return `http://127.0.0.1:${this.servers!.grpcPort}`;
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

  callsFor(key: string): ReceivedEvent[] {
    return this.calls.filter((c) => c.messageKey === key);
  }

  /** Keys recorded, each once. */
  get recorded(): string[] {
    return [...this.inbox];
  }

  async stop(): Promise<void> {
    await this.servers?.close(1_000);
  }

  private record(req: RecordShipmentEventRequest): { changed: boolean } {
    const call: ReceivedEvent = {
      messageKey: req.messageKey,
      orderId: req.orderId,
      event: req.event,
      shipmentId: req.shipmentId,
      carrier: req.carrier,
      declineReason: req.declineReason,
      occurredAt: req.occurredAt ? timestampDate(req.occurredAt) : undefined,
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
