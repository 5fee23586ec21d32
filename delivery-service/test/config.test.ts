import { expect } from "chai";
import { ConfigError } from "@shop/platform/config";
import { testAuthEnv } from "@shop/testkit/auth";
import { CARRIER_DEFAULTS } from "../src/carriers/registry.js";
import { loadDeliveryServiceConfig } from "../src/config.js";
import { DELIVERY_RELAY_DEFAULTS, OUTBOX_CLEANUP_DEFAULTS } from "../src/outbox/relay.js";

const url = "mysql://u:p@127.0.0.1:3306/deliveries";
const keys = { AUTH_PUBLIC_KEYS: testAuthEnv.AUTH_PUBLIC_KEYS! };
const base = { DELIVERY_DATABASE_URL: url, DELIVERY_RELAY_TOKEN: "t0ken", ...keys };

function problems(env: Record<string, string>): string {
  try {
    loadDeliveryServiceConfig(env);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems.join("\n");
  }
  throw new Error("expected a ConfigError");
}

describe("delivery service configuration", () => {
  it("needs only the database URL, the public keys and the relay's token, defaults the rest, and expects tokens addressed to delivery-service", () => {
    const { auth, relay, carriers, ...rest } = loadDeliveryServiceConfig(base);
    expect(relay).to.deep.equal({
      orderServiceUrl: "http://127.0.0.1:50051",
      token: "t0ken",
      tls: undefined,
      config: { ...DELIVERY_RELAY_DEFAULTS },
      relayId: undefined,
    });
    expect(DELIVERY_RELAY_DEFAULTS.batchSize).to.equal(50);
    expect(auth.keys.map((k) => k.kid)).to.deep.equal(["test-key"]);
    expect(auth.audience).to.equal("delivery-service");
    expect(carriers).to.deep.equal({ ...CARRIER_DEFAULTS });
    expect(carriers.enabled).to.deep.equal(["delayed", "manual"]);
    expect(carriers.defaultCarrier).to.equal("delayed");
    expect(rest).to.deep.equal({
      databaseUrl: url,
      migrationDatabaseUrl: undefined,
      migrateOnStart: true,
      host: "127.0.0.1",
      grpcPort: 50054,
      httpPort: 8084,
      poolSize: 10,
      logLevel: "info",
      tls: undefined,
      reflection: true,
      maxMessageBytes: 1024 * 1024,
      outboxCleanup: { ...OUTBOX_CLEANUP_DEFAULTS },
      carrierWorker: true,
    });
  });

  it("refuses to run the relay without its token, naming DELIVERY_RELAY_TOKEN; needs none with DELIVERY_RELAY_ENABLED=false", () => {
    expect(problems({ DELIVERY_DATABASE_URL: url, ...keys })).to.include("DELIVERY_RELAY_TOKEN (or DELIVERY_RELAY_TOKEN_FILE) is required");
    const config = loadDeliveryServiceConfig({ DELIVERY_DATABASE_URL: url, DELIVERY_RELAY_ENABLED: "false", ...keys });
    expect(config.relay).to.equal(false);
  });

  it("reads the relay's, the cleanup's and the carriers' settings under DELIVERY_RELAY_*, DELIVERY_OUTBOX_*, CARRIER*", () => {
    const config = loadDeliveryServiceConfig({
      ...base,
      ORDER_SERVICE_URL: "http://orders.internal:6000",
      DELIVERY_RELAY_BATCH_SIZE: "20",
      DELIVERY_RELAY_POLL_INTERVAL_MS: "250",
      DELIVERY_RELAY_ID: "dr-1",
      DELIVERY_OUTBOX_RETENTION_MS: "0",
      DELIVERY_OUTBOX_CLEANUP_BATCH: "100",
      DELIVERY_GRPC_PORT: "6054",
      DELIVERY_HTTP_PORT: "7084",
      CARRIERS: "manual",
      DEFAULT_CARRIER: "manual",
      CARRIER_ENABLED: "false",
      CARRIER_MAX_ATTEMPTS: "3",
    });
    if (!config.relay) throw new Error("relay expected");
    expect(config.relay.orderServiceUrl).to.equal("http://orders.internal:6000");
    expect(config.relay.config.batchSize).to.equal(20);
    expect(config.relay.config.pollIntervalMs).to.equal(250);
    expect(config.relay.relayId).to.equal("dr-1");
    expect(config.outboxCleanup.retentionMs).to.equal(0);
    expect(config.outboxCleanup.batchSize).to.equal(100);
    expect([config.grpcPort, config.httpPort]).to.deep.equal([6054, 7084]);
    expect(config.carriers.enabled).to.deep.equal(["manual"]);
    expect(config.carriers.defaultCarrier).to.equal("manual");
    expect(config.carriers.maxAttempts).to.equal(3);
    expect(config.carrierWorker).to.equal(false);
  });

  it("names the delivery relay's bad settings: URL, lease against call timeout, waves of a claim against the lease, TLS for http://", () => {
    const found = problems({
      ...base,
      ORDER_SERVICE_URL: "ftp://x",
      DELIVERY_RELAY_LEASE_MS: "1000",
      DELIVERY_RELAY_CALL_TIMEOUT_MS: "1000",
      DELIVERY_RELAY_BATCH_SIZE: "0",
    });
    expect(found).to.include("ORDER_SERVICE_URL");
    expect(found).to.include("DELIVERY_RELAY_LEASE_MS=1000 must exceed twice DELIVERY_RELAY_CALL_TIMEOUT_MS=1000");
    expect(found).to.include("DELIVERY_RELAY_BATCH_SIZE");
    const waves = problems({ ...base, DELIVERY_RELAY_BATCH_SIZE: "250" });
    expect(waves).to.include("DELIVERY_RELAY_BATCH_SIZE=250 is 16 waves of 16 RecordShipmentEvent calls").and.include("DELIVERY_RELAY_LEASE_MS=30000");
    expect(problems({ ...base, TLS_CA_FILE: "/nonexistent/ca.pem" })).to.match(/TLS_CA_FILE/);
  });

  it("names the carriers' bad settings: a carrier it does not have, a default carrier not run, a lease too short, a bad CARRIER_ENABLED", () => {
    const found = problems({
      ...base,
      CARRIERS: "delayed,pigeon",
      DEFAULT_CARRIER: "manual",
      CARRIER_LEASE_MS: "1000",
      CARRIER_CALL_TIMEOUT_MS: "1000",
      CARRIER_ENABLED: "maybe",
    });
    expect(found).to.include('CARRIERS names "pigeon"');
    expect(found).to.include("DEFAULT_CARRIER=manual is not among CARRIERS=delayed");
    expect(found).to.include("CARRIER_LEASE_MS=1000 must exceed twice CARRIER_CALL_TIMEOUT_MS=1000");
    expect(found).to.include("CARRIER_ENABLED");
  });

  it("names every bad setting at once", () => {
    const found = problems({ DELIVERY_DATABASE_URL: "postgres://x", DELIVERY_GRPC_PORT: "x", DELIVERY_DB_POOL_SIZE: "0", DELIVERY_RELAY_ENABLED: "false", ...keys });
    expect(found).to.include("DELIVERY_DATABASE_URL");
    expect(found).to.include("DELIVERY_GRPC_PORT");
    expect(found).to.include("DELIVERY_DB_POOL_SIZE");
  });

  it("requires the database URL and the public keys", () => {
    const found = problems({ DELIVERY_RELAY_ENABLED: "false" });
    expect(found).to.include("DELIVERY_DATABASE_URL");
    expect(found).to.include("AUTH_JWKS_FILE, AUTH_JWKS or AUTH_PUBLIC_KEYS is required");
  });
});
