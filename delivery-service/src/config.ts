import { readOrderServiceRelaySettings, type OrderServiceRelaySettings } from "@shop/engine/standalone";
import { AUDIENCES, readAuthSettings, type AuthSettings } from "@shop/platform/auth";
import { envReader } from "@shop/platform/config";
import { readServerHardening, type ServerTls } from "@shop/platform/tls";
import { readCarrierSettings, type CarrierSettings } from "./carriers/registry.js";
import { deliveryOutboxCleanupConfigFromEnv, deliveryRelayConfigFromEnv, type OutboxCleanupConfig } from "./outbox/relay.js";

export type EnvReader = ReturnType<typeof envReader>;

/** How the delivery relay reaches the order service (ORDER_SERVICE_URL, DELIVERY_RELAY_TOKEN, TLS_*), and its engine settings (DELIVERY_RELAY_*, batch 50 by default). */
export type DeliveryRelaySettings = OrderServiceRelaySettings;

/**
 * Reads the delivery relay's settings into `r` without finishing: for the
 * delivery service when DELIVERY_RELAY_ENABLED, and for relay-main.ts.
 */
export function readDeliveryRelaySettings(r: EnvReader): DeliveryRelaySettings {
  return readOrderServiceRelaySettings(r, { prefix: "DELIVERY", config: deliveryRelayConfigFromEnv });
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

export interface DeliveryServiceConfig {
  /** DELIVERY_DATABASE_URL, required: mysql://user:password@host:port/database (its own database). */
  databaseUrl: string;
  /** DELIVERY_MIGRATION_DATABASE_URL, optional: a user that may change the schema, for migrations only. */
  migrationDatabaseUrl?: string;
  /**
   * DELIVERY_MIGRATE_ON_START, default true: apply pending migrations at start.
   * False: only check that every migration is applied and refuse to start
   * when one is not; the migration job (`node delivery-service/dist/migrate-main.js`)
   * applies them, and the service's user needs no schema rights. Optional so
   * configs built in code may leave it out (true then).
   */
  migrateOnStart?: boolean;
  /** DELIVERY_HOST, default 127.0.0.1: listen on loopback unless told otherwise. */
  host: string;
  /** DELIVERY_GRPC_PORT, default 50054. */
  grpcPort: number;
  /** DELIVERY_HTTP_PORT (Connect JSON, /healthz, /readyz, /metrics), default 8084. */
  httpPort: number;
  /** DELIVERY_DB_POOL_SIZE, default 10. */
  poolSize: number;
  /**
   * Bearer tokens accepted: AUTH_JWKS_FILE, AUTH_JWKS or AUTH_PUBLIC_KEYS
   * (required, as for the other services); AUTH_AUDIENCE, default
   * delivery-service; AUTH_ISSUER, default shop-auth.
   */
  auth: AuthSettings;
  /** LOG_LEVEL, default info. */
  logLevel: (typeof LOG_LEVELS)[number];
  /** DELIVERY_TLS_CERT_FILE + DELIVERY_TLS_KEY_FILE: TLS on both ports; DELIVERY_TLS_CLIENT_CA_FILE: mTLS. */
  tls?: ServerTls;
  /** DELIVERY_GRPC_REFLECTION, default true (switch it off in production). */
  reflection?: boolean;
  /** DELIVERY_MAX_REQUEST_BYTES, default 1 MiB (1 KiB to 16 MiB). */
  maxMessageBytes?: number;
  /**
   * DELIVERY_RELAY_ENABLED, default true: the relay that delivers shipment
   * events to the order service runs inside the delivery service, with these
   * settings; false when relays run as their own processes (relay-main.ts).
   */
  relay: DeliveryRelaySettings | false;
  /**
   * DELIVERY_OUTBOX_RETENTION_MS (default 7 days, 0 keeps rows forever),
   * DELIVERY_OUTBOX_CLEANUP_INTERVAL_MS (default 60000),
   * DELIVERY_OUTBOX_CLEANUP_BATCH (default 500): removal of delivered
   * shipment_event_outbox rows (shipments and transitions keep every event).
   */
  outboxCleanup: OutboxCleanupConfig;
  /**
   * CARRIERS (default "delayed,manual"), DEFAULT_CARRIER (default delayed),
   * CARRIER_CALL_TIMEOUT_MS, CARRIER_MAX_ATTEMPTS, CARRIER_RETRY_BASE_MS,
   * CARRIER_RETRY_MAX_MS, CARRIER_BATCH_SIZE, CARRIER_POLL_INTERVAL_MS,
   * CARRIER_LEASE_MS, DELAYED_CARRIER_*: which carrier plugins this service
   * knows and how its carrier worker calls them.
   */
  carriers: CarrierSettings;
  /**
   * CARRIER_ENABLED, default true: the carrier worker (handoff to the
   * carriers, their progress) runs in this process. Any number of processes
   * may run it; false leaves a replica serving the API only.
   */
  carrierWorker: boolean;
}

/** Reads and validates the settings once at start; throws a ConfigError naming every bad one. */
export function loadDeliveryServiceConfig(env: NodeJS.ProcessEnv = process.env): DeliveryServiceConfig {
  const r = envReader(env);
  const config: DeliveryServiceConfig = {
    databaseUrl: r.databaseUrl("DELIVERY_DATABASE_URL"),
    migrationDatabaseUrl: r.optionalDatabaseUrl("DELIVERY_MIGRATION_DATABASE_URL"),
    migrateOnStart: r.bool("DELIVERY_MIGRATE_ON_START", true),
    host: r.string("DELIVERY_HOST", "127.0.0.1"),
    grpcPort: r.port("DELIVERY_GRPC_PORT", 50054),
    httpPort: r.port("DELIVERY_HTTP_PORT", 8084),
    poolSize: r.int("DELIVERY_DB_POOL_SIZE", 10, { min: 1, max: 200 }),
    auth: readAuthSettings(r, AUDIENCES.deliveries),
    logLevel: r.oneOf("LOG_LEVEL", "info", LOG_LEVELS),
    ...readServerHardening(r, "DELIVERY"),
    relay: r.bool("DELIVERY_RELAY_ENABLED", true) ? readDeliveryRelaySettings(r) : false,
    outboxCleanup: deliveryOutboxCleanupConfigFromEnv(r),
    carriers: readCarrierSettings(r),
    carrierWorker: r.bool("CARRIER_ENABLED", true),
  };
  r.finish();
  return config;
}
