import { AUDIENCES, readAuthSettings, type AuthSettings } from "@shop/platform/auth";
import { envReader } from "@shop/platform/config";
import { readServerHardening, type ServerTls } from "@shop/platform/tls";

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

export interface VoucherServiceConfig {
  /** VOUCHER_DATABASE_URL, required: mysql://user:password@host:port/database. */
  databaseUrl: string;
  /** VOUCHER_MIGRATION_DATABASE_URL, optional: a user that may change the schema, for migrations only (see the order service's). */
  migrationDatabaseUrl?: string;
  /**
   * VOUCHER_MIGRATE_ON_START, default true: apply pending migrations at start.
   * False: only check that every migration is applied and refuse to start
   * when one is not; the migration job (`node voucher-service/dist/migrate-main.js`)
   * applies them, and the service's user needs no schema rights. Optional so
   * configs built in code may leave it out (true then).
   */
  migrateOnStart?: boolean;
  /** VOUCHER_HOST, default 127.0.0.1: listen on loopback unless told otherwise. */
  host: string;
  /** VOUCHER_GRPC_PORT, default 50052. */
  grpcPort: number;
  /** VOUCHER_HTTP_PORT (Connect JSON, /healthz, /readyz), default 8082. */
  httpPort: number;
  /** VOUCHER_DB_POOL_SIZE, default 10: enough for the batch hot path on one database. */
  poolSize: number;
  /** VOUCHER_MAX_BATCH, default 1000 (the proto's documented maximum): items per BatchIssueVouchers call. */
  maxBatch: number;
  /**
   * Bearer tokens accepted: the public keys, from one of AUTH_JWKS_FILE (a JWK
   * set's file, read at start), AUTH_JWKS (the set as JSON) or
   * AUTH_PUBLIC_KEYS (kid=key, comma-separated), required; AUTH_AUDIENCE, the
   * aud a token must name, default voucher-service; AUTH_ISSUER, the iss it must
   * carry, default shop-auth.
   */
  auth: AuthSettings;
  /** LOG_LEVEL, default info. */
  logLevel: (typeof LOG_LEVELS)[number];
  /**
   * VOUCHER_TLS_CERT_FILE + VOUCHER_TLS_KEY_FILE: TLS on both ports;
   * VOUCHER_TLS_CLIENT_CA_FILE: and client certificates required (mTLS).
   */
  tls?: ServerTls;
  /** VOUCHER_GRPC_REFLECTION, default true (switch it off in production). */
  reflection?: boolean;
  /** VOUCHER_MAX_REQUEST_BYTES, default 1 MiB (1 KiB to 16 MiB). */
  maxMessageBytes?: number;
}

/** Reads and validates the settings once at start; throws a ConfigError naming every bad one. */
export function loadVoucherServiceConfig(env: NodeJS.ProcessEnv = process.env): VoucherServiceConfig {
  const r = envReader(env);
  const config: VoucherServiceConfig = {
    databaseUrl: r.databaseUrl("VOUCHER_DATABASE_URL"),
    migrationDatabaseUrl: r.optionalDatabaseUrl("VOUCHER_MIGRATION_DATABASE_URL"),
    migrateOnStart: r.bool("VOUCHER_MIGRATE_ON_START", true),
    host: r.string("VOUCHER_HOST", "127.0.0.1"),
    grpcPort: r.port("VOUCHER_GRPC_PORT", 50052),
    httpPort: r.port("VOUCHER_HTTP_PORT", 8082),
    poolSize: r.int("VOUCHER_DB_POOL_SIZE", 10, { min: 1, max: 200 }),
    maxBatch: r.int("VOUCHER_MAX_BATCH", 1000, { min: 1, max: 1000 }),
    auth: readAuthSettings(r, AUDIENCES.vouchers),
    logLevel: r.oneOf("LOG_LEVEL", "info", LOG_LEVELS),
    ...readServerHardening(r, "VOUCHER"),
  };
  r.finish();
  return config;
}
