import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import { AUDIENCES, DEFAULT_ISSUER, SCOPES } from "@shop/platform/auth";
import { startServers, type RunningServers } from "@shop/platform/servers";
import { DeliveryService, ShipmentStatus, type CreateShipmentRequest } from "@shop/sdk/delivery";
import { testSigningKey } from "@shop/testkit/auth";

/** One CreateShipment call as the receiver saw it. */
export interface ReceivedShipmentCall {
  orderId: string;
  customerId: string;
  totalCents: bigint;
  currency: string;
  carrier: string;
  traceparent: string;
  /** What the receiver answered: true the first time it created the order's shipment; undefined when it failed the call. */
  created?: boolean;
  failedWith?: Code;
}

type Failure = { code: Code; times: number; after: "apply" | "refuse"; orders?: Set<string> };

/**
 * The delivery service's CreateShipment as a real gRPC server (the
 * platform's startServers with its token checks: audience delivery-service,
 * scope shipments:create), one shipment per order like the real one: a
 * replay is answered with the same shipment, created=false; the same order
 * with another customer, total or currency is ALREADY_EXISTS. It records
 * every call and can be told to fail calls with a code, before creating
 * (a refusal) or after (a lost reply).
 */
export class DeliveryReceiver {
  readonly calls: ReceivedShipmentCall[] = [];
  readonly shipments = new Map<string, { id: string; req: CreateShipmentRequest }>();
  private failures: Failure[] = [];
  private servers?: RunningServers;
  private next = 0;

  static async start(): Promise<DeliveryReceiver> {
    const r = new DeliveryReceiver();
    r.servers = await startServers({
      host: "127.0.0.1",
      grpcPort: 0,
      httpPort: 0,
      services: [
        {
          service: DeliveryService,
          impl: { createShipment: (req: CreateShipmentRequest) => r.create(req) },
          access: {
            createShipment: { scopes: [SCOPES.shipmentsCreate] },
            getShipment: { scopes: [SCOPES.shipmentsRead] },
            batchGetShipments: { scopes: [SCOPES.shipmentsRead] },
            listShipments: { scopes: [SCOPES.shipmentsRead] },
            resumeShipment: { scopes: [SCOPES.shipmentsAdmin] },
          },
        },
      ],
      auth: { keys: [testSigningKey.publicJwk], audience: AUDIENCES.deliveries, issuer: DEFAULT_ISSUER },
      logger: pino({ level: "silent" }),
      isReady: async () => true,
      reflection: false,
    });
    return r;
  }

  /** Its gRPC URL: what DELIVERY_SERVICE_URL is set to. */
  get url(): string {
    return `http://127.0.0.1:${this.servers!.grpcPort}`;
  }

  /** Fails the next `times` calls (for `orders` only, if given) with `code`: after "refuse" without creating, after "apply" once created. */
  fail(code: Code, opts: { times?: number; after?: "apply" | "refuse"; orders?: string[] } = {}): void {
    this.failures.push({ code, times: opts.times ?? Infinity, after: opts.after ?? "refuse", orders: opts.orders && new Set(opts.orders) });
  }

  heal(): void {
    this.failures = [];
  }

  callsFor(orderId: string): ReceivedShipmentCall[] {
    return this.calls.filter((c) => c.orderId === orderId);
  }

  async stop(): Promise<void> {
    await this.servers?.close(1_000);
  }

  private create(req: CreateShipmentRequest) {
    const call: ReceivedShipmentCall = {
      orderId: req.orderId,
      customerId: req.customerId,
      totalCents: req.totalCents,
      currency: req.currency,
      carrier: req.carrier,
      traceparent: req.traceparent,
    };
    this.calls.push(call);
    const failure = this.failures.find((f) => f.times > 0 && (!f.orders || f.orders.has(req.orderId)));
    if (failure) failure.times--;
    if (failure?.after === "refuse") {
      call.failedWith = failure.code;
      throw new ConnectError(`told to fail with ${Code[failure.code]}`, failure.code);
    }
    const existing = this.shipments.get(req.orderId);
    if (existing && (existing.req.customerId !== req.customerId || existing.req.totalCents !== req.totalCents || existing.req.currency !== req.currency)) {
      call.failedWith = Code.AlreadyExists;
      throw new ConnectError(`order ${req.orderId} has a shipment for another customer, total or currency`, Code.AlreadyExists);
    }
    const shipment = existing ?? { id: `SHP${String(++this.next).padStart(6, "0")}`, req };
    this.shipments.set(req.orderId, shipment);
    if (failure) {
      call.failedWith = failure.code;
      throw new ConnectError(`created, then told to fail with ${Code[failure.code]}`, failure.code);
    }
    call.created = !existing;
    return {
      shipment: { id: shipment.id, orderId: req.orderId, customerId: req.customerId, totalCents: req.totalCents, currency: req.currency, carrier: req.carrier || "delayed", status: ShipmentStatus.CREATED },
      created: call.created,
    };
  }
}
