import { AUDIENCES, readAuthSettings, readCallerToken, type AuthSettings, type TokenSource } from "@shop/platform/auth";
import { envReader } from "@shop/platform/config";
import { checkClientTlsUrls, readClientTls, readServerHardening, type ClientTls, type ServerTls } from "@shop/platform/tls";
import { outboxCleanupConfigFromEnv, type OutboxCleanupConfig } from "./outbox/cleanup.js";

export type EnvReader = ReturnType<typeof envReader>;

export interface OrderServiceConfig {
  /** ORDER_DATABASE_URL, required: mysql://user:password@host:port/database. */
  databaseUrl: string;
  /**
   * ORDER_MIGRATION_DATABASE_URL, optional: a user that may change the schema,
   * used only to apply migrations at start, so the service's own user
   * (ORDER_DATABASE_URL) needs no more than SELECT, INSERT, UPDATE, DELETE.
   * Default: ORDER_DATABASE_URL does both.
   */
  migrationDatabaseUrl?: string;
  /**
   * ORDER_MIGRATE_ON_START, default true: apply pending migrations at start.
   * False: only check that every migration is applied and refuse to start
   * when one is not; the migration job (`node order-service/dist/migrate-main.js`)
   * applies them, and the service's user needs no schema rights. Optional so
   * configs built in code may leave it out (true then).
   */
  migrateOnStart?: boolean;
  /** ORDER_HOST, default 127.0.0.1: listen on loopback unless told otherwise. */
  host: string;
  /** ORDER_GRPC_PORT, default 50051. */
  grpcPort: number;
  /** ORDER_HTTP_PORT (Connect JSON, /healthz, /readyz), default 8081. */
  httpPort: number;
  /** ORDER_DB_POOL_SIZE, default 10: the API and the in-process relay share it. */
  poolSize: number;
  /** VOUCHER_SERVICE_URL, default http://127.0.0.1:50052 (the voucher service's default gRPC port); the relay calls it. */
  voucherServiceUrl: string;
  /**
   * PAYMENT_SERVICE_URL, default http://127.0.0.1:50053 (the payment service's
   * default gRPC port); the charge and refund relays call it. Configs built by
   * hand may leave it out: the default applies.
   */
  paymentServiceUrl?: string;
  /**
   * DELIVERY_SERVICE_URL, no default: the delivery service's gRPC URL (its
   * default port is 50054), which the shipment relay calls. Unset, no
   * shipment relay runs in this process (the order service logs so at start)
   * and shipment requests wait in shipment_outbox for a relay that has it:
   * the behaviour of a deployment without the delivery service.
   */
  deliveryServiceUrl?: string;
  /**
   * SHIP_PAID_ORDERS, default false: the CHARGED outcome that makes an order
   * PAID also releases it for shipping, in the same transaction. Off, PAID
   * orders wait for ReleaseOrderForShipping or MarkOrderSent as before.
   */
  shipPaidOrders?: boolean;
  /**
   * RELAY_ENABLED, default true: the relay runs inside the order service, so
   * one process is the whole order side. False when relays run as their own
   * processes (then they scale independently of the API).
   */
  relayEnabled: boolean;
  /**
   * Bearer tokens accepted: the public keys, from one of AUTH_JWKS_FILE (a JWK
   * set's file, read at start), AUTH_JWKS (the set as JSON) or
   * AUTH_PUBLIC_KEYS (kid=key, comma-separated), required; AUTH_AUDIENCE, the
   * aud a token must name, default order-service; AUTH_ISSUER, the iss it must
   * carry, default shop-auth.
   */
  auth: AuthSettings;
  /**
   * RELAY_TOKEN or RELAY_TOKEN_FILE, required when the relay runs here: the
   * token (scope vouchers:issue) the relay presents to the voucher service.
   */
  relayToken?: TokenSource;
  /**
   * OUTBOX_RETENTION_MS (default 7 days, 0 keeps rows forever),
   * OUTBOX_CLEANUP_INTERVAL_MS (default 60000), OUTBOX_CLEANUP_BATCH (default
   * 500): removal of delivered outbox rows, see OutboxCleanup. Optional so
   * configs built in code may leave it out; the defaults apply then.
   */
  outboxCleanup?: OutboxCleanupConfig;
  /**
   * ORDER_TLS_CERT_FILE + ORDER_TLS_KEY_FILE: TLS on both ports;
   * ORDER_TLS_CLIENT_CA_FILE: and client certificates required (mTLS).
   * Optional here and below so configs built in code may leave them out: plaintext then.
   */
  tls?: ServerTls;
  /** ORDER_GRPC_REFLECTION, default true (switch it off in production). */
  reflection?: boolean;
  /** ORDER_MAX_REQUEST_BYTES, default 1 MiB (1 KiB to 16 MiB). */
  maxMessageBytes?: number;
  /**
   * TLS_CA_FILE, TLS_CLIENT_CERT_FILE + TLS_CLIENT_KEY_FILE, read when the
   * relay runs here: how the relays call an https:// VOUCHER_SERVICE_URL or PAYMENT_SERVICE_URL.
   */
  voucherTls?: ClientTls;
}

/**
 * Reads the order service's own settings into `r` without finishing, so the
 * composition root can add the relay's settings and report every bad one at once.
 */
export const DEFAULT_PAYMENT_SERVICE_URL = "http://127.0.0.1:50053";

export function readOrderServiceConfig(r: EnvReader): OrderServiceConfig {
  const voucherServiceUrl = r.string("VOUCHER_SERVICE_URL", "http://127.0.0.1:50052");
  try {
    const u = new URL(voucherServiceUrl);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme");
  } catch {
    r.problem(`VOUCHER_SERVICE_URL=${JSON.stringify(voucherServiceUrl)} must be an http:// or https:// URL, like http://127.0.0.1:50052`);
  }
  const paymentServiceUrl = r.string("PAYMENT_SERVICE_URL", DEFAULT_PAYMENT_SERVICE_URL);
  try {
    const u = new URL(paymentServiceUrl);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme");
  } catch {
    r.problem(`PAYMENT_SERVICE_URL=${JSON.stringify(paymentServiceUrl)} must be an http:// or https:// URL, like http://127.0.0.1:50053`);
  }
  const deliveryServiceUrl = readDeliveryServiceUrl(r);
  const relayEnabled = r.bool("RELAY_ENABLED", true);
  return {
    databaseUrl: r.databaseUrl("ORDER_DATABASE_URL"),
    migrationDatabaseUrl: r.optionalDatabaseUrl("ORDER_MIGRATION_DATABASE_URL"),
    migrateOnStart: r.bool("ORDER_MIGRATE_ON_START", true),
    host: r.string("ORDER_HOST", "127.0.0.1"),
    grpcPort: r.port("ORDER_GRPC_PORT", 50051),
    httpPort: r.port("ORDER_HTTP_PORT", 8081),
    poolSize: r.int("ORDER_DB_POOL_SIZE", 10, { min: 1, max: 500 }),
    voucherServiceUrl,
    paymentServiceUrl,
    deliveryServiceUrl,
    shipPaidOrders: r.bool("SHIP_PAID_ORDERS", false),
    relayEnabled,
    auth: readAuthSettings(r, AUDIENCES.orders),
    relayToken: relayEnabled ? readCallerToken(r, "RELAY_TOKEN") : undefined,
    outboxCleanup: outboxCleanupConfigFromEnv(r),
    ...readServerHardening(r, "ORDER"),
    voucherTls: relayEnabled ? relayClientTls(r, voucherServiceUrl, paymentServiceUrl, deliveryServiceUrl) : undefined,
  };
}

/**
 * DELIVERY_SERVICE_URL, optional: unset (or empty) means no shipment relay
 * here. Set, it must be an http:// or https:// URL.
 */
export function readDeliveryServiceUrl(r: EnvReader): string | undefined {
  const url = r.optionalString("DELIVERY_SERVICE_URL") || undefined;
  if (url === undefined) return undefined;
  try {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("scheme");
  } catch {
    r.problem(`DELIVERY_SERVICE_URL=${JSON.stringify(url)} must be an http:// or https:// URL, like http://127.0.0.1:50054 (or unset: no shipment relay)`);
  }
  return url;
}

/** The relays' TLS_* settings, refused when none of the URLs they call is https:// (they would do nothing). */
function relayClientTls(r: EnvReader, voucherServiceUrl: string, paymentServiceUrl: string, deliveryServiceUrl: string | undefined): ClientTls | undefined {
  checkClientTlsUrls(r, {
    VOUCHER_SERVICE_URL: voucherServiceUrl,
    PAYMENT_SERVICE_URL: paymentServiceUrl,
    ...(deliveryServiceUrl ? { DELIVERY_SERVICE_URL: deliveryServiceUrl } : {}),
  });
  return readClientTls(r);
}

/** Reads and validates the order service's settings; throws a ConfigError naming every bad one. */
export function loadOrderServiceConfig(env: NodeJS.ProcessEnv = process.env): OrderServiceConfig {
  const r = envReader(env);
  const config = readOrderServiceConfig(r);
  r.finish();
  return config;
}
