import { expect } from "chai";
import { ConfigError } from "@shop/platform/config";
import { testAuthEnv } from "@shop/testkit/auth";
import { loadOrderServiceConfig } from "../src/config.js";

const URL_OK = "mysql://u:p@127.0.0.1:3306/orders";
const AUTH = { AUTH_PUBLIC_KEYS: testAuthEnv.AUTH_PUBLIC_KEYS, RELAY_TOKEN: "relay-token" };

function problems(env: NodeJS.ProcessEnv): string {
  try {
    loadOrderServiceConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("order service settings", () => {
  it("have defaults for everything but the database URL, the public keys and the relay's token", () => {
    const { auth, ...rest } = loadOrderServiceConfig({ ORDER_DATABASE_URL: URL_OK, ...AUTH });
    expect(auth.keys.map((k) => k.kid)).to.deep.equal(["test-key"]);
    expect(rest).to.deep.equal({
      databaseUrl: URL_OK,
      migrationDatabaseUrl: undefined,
      migrateOnStart: true,
      host: "127.0.0.1",
      grpcPort: 50051,
      httpPort: 8081,
      poolSize: 10,
      voucherServiceUrl: "http://127.0.0.1:50052",
      paymentServiceUrl: "http://127.0.0.1:50053",
      deliveryServiceUrl: undefined,
      shipPaidOrders: false,
      relayEnabled: true,
      relayToken: "relay-token",
      outboxCleanup: { retentionMs: 7 * 24 * 3_600_000, intervalMs: 60_000, batchSize: 500, batchPauseMs: 20 },
      tls: undefined,
      reflection: true,
      maxMessageBytes: 1024 * 1024,
      voucherTls: undefined,
    });
  });

  it("read DELIVERY_SERVICE_URL (no default: no shipment relay) and SHIP_PAID_ORDERS, and name a bad URL", () => {
    const c = loadOrderServiceConfig({ ...AUTH, ORDER_DATABASE_URL: URL_OK, DELIVERY_SERVICE_URL: "http://delivery:50054", SHIP_PAID_ORDERS: "true" });
    expect([c.deliveryServiceUrl, c.shipPaidOrders]).to.deep.equal(["http://delivery:50054", true]);
    expect(loadOrderServiceConfig({ ...AUTH, ORDER_DATABASE_URL: URL_OK, DELIVERY_SERVICE_URL: " " }).deliveryServiceUrl).to.equal(undefined);
    const message = problems({ ...AUTH, ORDER_DATABASE_URL: URL_OK, DELIVERY_SERVICE_URL: "delivery:50054", SHIP_PAID_ORDERS: "maybe" });
    expect(message).to.contain("DELIVERY_SERVICE_URL").and.to.contain("SHIP_PAID_ORDERS");
  });

  it("read the outbox retention settings, where 0 keeps delivered rows forever", () => {
    const c = loadOrderServiceConfig({
      ...AUTH,
      ORDER_DATABASE_URL: URL_OK,
      OUTBOX_RETENTION_MS: "0",
      OUTBOX_CLEANUP_INTERVAL_MS: "5000",
      OUTBOX_CLEANUP_BATCH: "200",
    });
    expect(c.outboxCleanup).to.include({ retentionMs: 0, intervalMs: 5000, batchSize: 200 });
  });

  it("name bad outbox retention settings", () => {
    const message = problems({
      ORDER_DATABASE_URL: URL_OK,
      OUTBOX_RETENTION_MS: "-1",
      OUTBOX_CLEANUP_INTERVAL_MS: "soon",
      OUTBOX_CLEANUP_BATCH: "0",
    });
    for (const name of ["OUTBOX_RETENTION_MS", "OUTBOX_CLEANUP_INTERVAL_MS", "OUTBOX_CLEANUP_BATCH"]) expect(message).to.contain(name);
  });

  it("read every variable", () => {
    const c = loadOrderServiceConfig({
      ...AUTH,
      ORDER_DATABASE_URL: URL_OK,
      ORDER_HOST: "0.0.0.0",
      ORDER_GRPC_PORT: "6000",
      ORDER_HTTP_PORT: "6001",
      ORDER_DB_POOL_SIZE: "3",
      VOUCHER_SERVICE_URL: "http://vouchers:50052",
      RELAY_ENABLED: "false",
    });
    expect(c).to.include({ host: "0.0.0.0", grpcPort: 6000, httpPort: 6001, poolSize: 3, voucherServiceUrl: "http://vouchers:50052", relayEnabled: false });
  });

  it("name each bad variable, all at once", () => {
    const message = problems({
      ORDER_GRPC_PORT: "70000",
      ORDER_HTTP_PORT: "http",
      ORDER_DB_POOL_SIZE: "0",
      VOUCHER_SERVICE_URL: "vouchers:50052",
      RELAY_ENABLED: "maybe",
    });
    for (const name of ["ORDER_DATABASE_URL", "ORDER_GRPC_PORT", "ORDER_HTTP_PORT", "ORDER_DB_POOL_SIZE", "VOUCHER_SERVICE_URL", "RELAY_ENABLED", "AUTH_PUBLIC_KEYS"]) {
      expect(message).to.contain(name);
    }
  });

  it("refuse a database URL that is not mysql://", () => {
    expect(problems({ ...AUTH, ORDER_DATABASE_URL: "postgres://u@h/db" })).to.contain("ORDER_DATABASE_URL");
    expect(problems({ ...AUTH, ORDER_DATABASE_URL: URL_OK, ORDER_MIGRATION_DATABASE_URL: "orders" })).to.contain("ORDER_MIGRATION_DATABASE_URL must look like");
  });

  it("take a separate user for migrations", () => {
    const migrate = "mysql://orders_migrate:p@127.0.0.1:3306/orders";
    expect(loadOrderServiceConfig({ ...AUTH, ORDER_DATABASE_URL: URL_OK, ORDER_MIGRATION_DATABASE_URL: migrate }).migrationDatabaseUrl).to.equal(migrate);
  });

  it("need the relay's token only when the relay runs here", () => {
    expect(problems({ ORDER_DATABASE_URL: URL_OK, AUTH_PUBLIC_KEYS: AUTH.AUTH_PUBLIC_KEYS })).to.contain("RELAY_TOKEN (or RELAY_TOKEN_FILE) is required");
    expect(loadOrderServiceConfig({ ORDER_DATABASE_URL: URL_OK, AUTH_PUBLIC_KEYS: AUTH.AUTH_PUBLIC_KEYS, RELAY_ENABLED: "false" }).relayToken).to.equal(undefined);
  });
});
