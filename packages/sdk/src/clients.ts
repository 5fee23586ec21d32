import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { OrderAdminService } from "./gen/shop/order/v1/order_admin_pb.js";
import { OrderService } from "./gen/shop/order/v1/order_pb.js";
import { VoucherService } from "./gen/shop/voucher/v1/voucher_pb.js";

export type OrderClient = Client<typeof OrderService>;
export type OrderAdminClient = Client<typeof OrderAdminService>;
export type VoucherClient = Client<typeof VoucherService>;

export interface ClientOptions {
  /** Base URL of the gRPC server, e.g. "http://127.0.0.1:50052". */
  baseUrl: string;
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

/** A typed client plus the HTTP/2 session it owns; close() it or the process will not exit. */
export interface ClosableClient<C> {
  client: C;
  close(): void;
}

function transportFor(opts: ClientOptions) {
  const https = opts.baseUrl.startsWith("https:");
  const sessionManager = new Http2SessionManager(
    opts.baseUrl,
    { pingIntervalMs: 10_000, pingTimeoutMs: 5_000, idleConnectionTimeoutMs: 60_000 },
    https && opts.tls ? { ca: opts.tls.ca, cert: opts.tls.cert, key: opts.tls.key } : undefined,
  );
  const transport = createGrpcTransport({
    baseUrl: opts.baseUrl,
    sessionManager,
    defaultTimeoutMs: opts.defaultTimeoutMs ?? 5_000,
    interceptors: [...(opts.token ? [bearerToken(opts.token)] : []), ...(opts.interceptors ?? [])],
  });
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

/** The order service's admin API (dead voucher deliveries), on the order service's gRPC port. */
export function createOrderAdminClient(opts: ClientOptions): ClosableClient<OrderAdminClient> {
  const { transport, close } = transportFor(opts);
  return { client: createClient(OrderAdminService, transport), close };
}
