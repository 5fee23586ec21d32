import { readOrderServiceRelaySettings, type OrderServiceRelaySettings } from "@shop/engine/standalone";
import { AUDIENCES, readAuthSettings, type AuthSettings } from "@shop/platform/auth";
import { envReader } from "@shop/platform/config";
import { readServerHardening, type ServerTls } from "@shop/platform/tls";
import { paymentOutboxCleanupConfigFromEnv, paymentRelayConfigFromEnv, type OutboxCleanupConfig } from "./outbox/relay.js";

export type EnvReader = ReturnType<typeof envReader>;

/** How the payment relay reaches the order service (ORDER_SERVICE_URL, PAYMENT_RELAY_TOKEN, TLS_*), and its engine settings (PAYMENT_RELAY_*, batch 50 by default). */
export type PaymentRelaySettings = OrderServiceRelaySettings;

/**
 * Reads the payment relay's settings into `r` without finishing: for the
 * payment service when PAYMENT_RELAY_ENABLED, and for relay-main.ts.
 */
export function readPaymentRelaySettings(r: EnvReader): PaymentRelaySettings {
  return readOrderServiceRelaySettings(r, { prefix: "PAYMENT", config: paymentRelayConfigFromEnv });
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

export interface PaymentServiceConfig {
  /** PAYMENT_DATABASE_URL, required: mysql://user:password@host:port/database (its own database). */
  databaseUrl: string;
  /** PAYMENT_MIGRATION_DATABASE_URL, optional: a user that may change the schema, for migrations only. */
  migrationDatabaseUrl?: string;
  /**
   * PAYMENT_MIGRATE_ON_START, default true: apply pending migrations at start.
   * False: only check that every migration is applied and refuse to start
   * when one is not; the migration job (`node payment-service/dist/migrate-main.js`)
   * applies them, and the service's user needs no schema rights. Optional so
   * configs built in code may leave it out (true then).
   */
  migrateOnStart?: boolean;
  /** PAYMENT_HOST, default 127.0.0.1: listen on loopback unless told otherwise. */
  host: string;
  /** PAYMENT_GRPC_PORT, default 50053. */
  grpcPort: number;
  /** PAYMENT_HTTP_PORT (Connect JSON, /healthz, /readyz, /metrics), default 8083. */
  httpPort: number;
  /** PAYMENT_DB_POOL_SIZE, default 10. */
  poolSize: number;
  /**
   * Bearer tokens accepted: AUTH_JWKS_FILE, AUTH_JWKS or AUTH_PUBLIC_KEYS
   * (required, as for the other services); AUTH_AUDIENCE, default
   * payment-service; AUTH_ISSUER, default shop-auth.
   */
  auth: AuthSettings;
  /** LOG_LEVEL, default info. */
  logLevel: (typeof LOG_LEVELS)[number];
  /** PAYMENT_TLS_CERT_FILE + PAYMENT_TLS_KEY_FILE: TLS on both ports; PAYMENT_TLS_CLIENT_CA_FILE: mTLS. */
  tls?: ServerTls;
  /** PAYMENT_GRPC_REFLECTION, default true (switch it off in production). */
  reflection?: boolean;
  /** PAYMENT_MAX_REQUEST_BYTES, default 1 MiB (1 KiB to 16 MiB). */
  maxMessageBytes?: number;
  /**
   * PAYMENT_RELAY_ENABLED, default true: the relay that delivers payment
   * outcomes to the order service runs inside the payment service, with these
   * settings; false when relays run as their own processes (relay-main.ts).
   */
  relay: PaymentRelaySettings | false;
  /**
   * PAYMENT_OUTBOX_RETENTION_MS (default 7 days, 0 keeps rows forever),
   * PAYMENT_OUTBOX_CLEANUP_INTERVAL_MS (default 60000),
   * PAYMENT_OUTBOX_CLEANUP_BATCH (default 500): removal of delivered
   * payment_outbox rows (the inbox keeps every outcome).
   */
  outboxCleanup: OutboxCleanupConfig;
}

/** Reads and validates the settings once at start; throws a ConfigError naming every bad one. */
export function loadPaymentServiceConfig(env: NodeJS.ProcessEnv = process.env): PaymentServiceConfig {
  const r = envReader(env);
  const config: PaymentServiceConfig = {
    databaseUrl: r.databaseUrl("PAYMENT_DATABASE_URL"),
    migrationDatabaseUrl: r.optionalDatabaseUrl("PAYMENT_MIGRATION_DATABASE_URL"),
    migrateOnStart: r.bool("PAYMENT_MIGRATE_ON_START", true),
    host: r.string("PAYMENT_HOST", "127.0.0.1"),
    grpcPort: r.port("PAYMENT_GRPC_PORT", 50053),
    httpPort: r.port("PAYMENT_HTTP_PORT", 8083),
    poolSize: r.int("PAYMENT_DB_POOL_SIZE", 10, { min: 1, max: 200 }),
    auth: readAuthSettings(r, AUDIENCES.payments),
    logLevel: r.oneOf("LOG_LEVEL", "info", LOG_LEVELS),
    ...readServerHardening(r, "PAYMENT"),
    relay: r.bool("PAYMENT_RELAY_ENABLED", true) ? readPaymentRelaySettings(r) : false,
    outboxCleanup: paymentOutboxCleanupConfigFromEnv(r),
  };
  r.finish();
  return config;
}
