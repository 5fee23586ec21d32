import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { OrderAdminService } from "./gen/shop/order/v1/order_admin_pb.js";
import { OrderService } from "./gen/shop/order/v1/order_pb.js";
import { PaymentOutcomeService } from "./gen/shop/order/v1/payment_outcome_pb.js";
import { CarrierService, DeliveryService } from "./gen/shop/delivery/v1/delivery_pb.js";
import { ShipmentEventService } from "./gen/shop/order/v1/shipment_event_pb.js";
import { PaymentService } from "./gen/shop/payment/v1/payment_pb.js";
import { VoucherService } from "./gen/shop/voucher/v1/voucher_pb.js";

export type OrderClient = Client<typeof OrderService>;
export type OrderAdminClient = Client<typeof OrderAdminService>;
export type VoucherClient = Client<typeof VoucherService>;
export type PaymentClient = Client<typeof PaymentService>;
export type PaymentOutcomeClient = Client<typeof PaymentOutcomeService>;
export type DeliveryClient = Client<typeof DeliveryService>;
export type CarrierClient = Client<typeof CarrierService>;
export type ShipmentEventClient = Client<typeof ShipmentEventService>;

export interface ClientOptions {
  /**
   * Base URL of the service: its gRPC port for protocol "grpc" (e.g.
   * "http://127.0.0.1:50051"), its HTTP port for "connect" (e.g.
   * "http://127.0.0.1:8081"). https:// for a service that serves TLS.
   */
  baseUrl: string;
  /**
   * "grpc" (default): gRPC over HTTP/2, on the service's gRPC port.
   * "connect": the Connect protocol with JSON over HTTP/1.1, on the service's
   * HTTP port, for networks whose proxies pass only HTTP/1.1. Both carry the
   * same calls, answers and error codes.
   */
  protocol?: "grpc" | "connect";
  /** Deadline applied to every call that does not set its own. Default 5000 ms: grpc-js has none. */
  defaultTimeoutMs?: number;
  /**
   * Bearer token sent with every call (the services refuse calls without
   * one), or a function giving the current token, for callers that renew it.
   */
  token?: string | (() => string);
  interceptors?: Interceptor[];
  /**
   * For https:// base URLs: ca replaces the system's roots as the CAs trusted
   * for the server's certificate; cert and key (PEM) are the certificate this
   * client presents, for servers that require mutual TLS. Ignored for http://.
   */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
}

/** Adds authorization: Bearer <token> to every call that does not carry its own. */
export function bearerToken(token: string | (() => string)): Interceptor {
  return (next) => (req) => {
    if (!req.header.has("authorization")) req.header.set("authorization", `Bearer ${typeof token === "function" ? token() : token}`);
    return next(req);
  };
}

/**
 * A typed client plus the connections it owns. close() it when done: idle
 * connections otherwise stay open until an idle timeout (60 s for gRPC, the
 * server's keep-alive timeout for Connect) or the server ends them, and a
 * server shutting down waits for them.
 */
export interface ClosableClient<C> {
  client: C;
  close(): void;
}

function transportFor(opts: ClientOptions): { transport: Transport; close: () => void } {
  const protocol = opts.protocol ?? "grpc";
  // Checked at run time too: the SDK is called from plain JavaScript.
  if (protocol !== "grpc" && protocol !== "connect") throw new TypeError(`protocol must be "grpc" or "connect", not ${String(protocol)}`);
  const https = opts.baseUrl.startsWith("https:");
  const tls = https && opts.tls ? { ca: opts.tls.ca, cert: opts.tls.cert, key: opts.tls.key } : undefined;
  const defaultTimeoutMs = opts.defaultTimeoutMs ?? 5_000;
  const interceptors = [...(opts.token ? [bearerToken(opts.token)] : []), ...(opts.interceptors ?? [])];
  if (protocol === "connect") {
    // An agent of the client's own, so that close() ends its kept-alive
    // sockets and no one else's (the global agent is shared by the process).
    const agent = https ? new HttpsAgent({ keepAlive: true, ...tls }) : new HttpAgent({ keepAlive: true });
    const transport = createConnectTransport({
      baseUrl: opts.baseUrl,
      httpVersion: "1.1",
      useBinaryFormat: false,
      nodeOptions: { agent },
      defaultTimeoutMs,
      interceptors,
    });
    return { transport, close: () => agent.destroy() };
  }
  const sessionManager = new Http2SessionManager(
    opts.baseUrl,
    { pingIntervalMs: 10_000, pingTimeoutMs: 5_000, idleConnectionTimeoutMs: 60_000 },
    tls,
  );
  const transport = createGrpcTransport({ baseUrl: opts.baseUrl, sessionManager, defaultTimeoutMs, interceptors });
  return { transport, close: () => sessionManager.abort() };
}

export function createOrderClient(opts: ClientOptions): ClosableClient<OrderClient> {
  const { transport, close } = transportFor(opts);
  return { client: createClient(OrderService, transport), close };
}

export function createVoucherClient(opts: ClientOptions): ClosableClient<VoucherClient> {
  const { transport, close } = transportFor(opts);
  return { client: createClient(VoucherService, transport), close };
}

/** The payment service: accounts, top-ups, statements; ChargeOrder and RefundOrder for the order service's relay. */
export function createPaymentClient(opts: ClientOptions): ClosableClient<PaymentClient> {
  const { transport, close } = transportFor(opts);
  return { client: createClient(PaymentService, transport), close };
}

/** The order service's admin API (dead voucher deliveries), on the order service's gRPC port. */
export function createOrderAdminClient(opts: ClientOptions): ClosableClient<OrderAdminClient> {
  const { transport, close } = transportFor(opts);
  return { client: createClient(OrderAdminService, transport), close };
}

/** The order service's PaymentOutcomeService, for the payment service's relay and the reconciler, on the order service's port. */
export function createPaymentOutcomeClient(opts: ClientOptions): ClosableClient<PaymentOutcomeClient> {
  const { transport, close } = transportFor(opts);
  return { client: createClient(PaymentOutcomeService, transport), close };
}

/** The delivery service: shipments (CreateShipment for the order service's relay), on the delivery service's port. */
export function createDeliveryClient(opts: ClientOptions): ClosableClient<DeliveryClient> {
  const { transport, close } = transportFor(opts);
  return { client: createClient(DeliveryService, transport), close };
}

/** The delivery service's CarrierService: reports of carriers driven over RPC (the "manual" carrier), on the delivery service's port. */
export function createCarrierClient(opts: ClientOptions): ClosableClient<CarrierClient> {
  const { transport, close } = transportFor(opts);
  return { client: createClient(CarrierService, transport), close };
}

/** The order service's ShipmentEventService, for the delivery service's relay and the reconciler, on the order service's port. */
export function createShipmentEventClient(opts: ClientOptions): ClosableClient<ShipmentEventClient> {
  const { transport, close } = transportFor(opts);
  return { client: createClient(ShipmentEventService, transport), close };
}
