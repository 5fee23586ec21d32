import { expect } from "chai";
import { ConfigError } from "@shop/platform/config";
import { testAuthEnv } from "@shop/testkit/auth";
import { loadPaymentServiceConfig } from "../src/config.js";
import { OUTBOX_CLEANUP_DEFAULTS, PAYMENT_RELAY_DEFAULTS } from "../src/outbox/relay.js";

const url = "mysql://u:p@127.0.0.1:3306/payments";
const keys = { AUTH_PUBLIC_KEYS: testAuthEnv.AUTH_PUBLIC_KEYS! };

function problems(env: Record<string, string>): string[] {
  try {
    loadPaymentServiceConfig(env);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}

describe("payment service configuration", () => {
  it("needs only the database URL, the public keys and the relay's token, defaults the rest, and expects tokens addressed to payment-service", () => {
    const { auth, relay, ...rest } = loadPaymentServiceConfig({ PAYMENT_DATABASE_URL: url, PAYMENT_RELAY_TOKEN: "t0ken", ...keys });
    expect(relay).to.deep.equal({
      orderServiceUrl: "http://127.0.0.1:50051",
      token: "t0ken",
      tls: undefined,
      config: { ...PAYMENT_RELAY_DEFAULTS },
      relayId: undefined,
    });
    expect(auth.keys.map((k) => k.kid)).to.deep.equal(["test-key"]);
    expect(auth.audience).to.equal("payment-service");
    expect(rest).to.deep.equal({
      databaseUrl: url,
      migrationDatabaseUrl: undefined,
      migrateOnStart: true,
      host: "127.0.0.1",
      grpcPort: 50053,
      httpPort: 8083,
      poolSize: 10,
      logLevel: "info",
      tls: undefined,
      reflection: true,
      maxMessageBytes: 1024 * 1024,
      outboxCleanup: { ...OUTBOX_CLEANUP_DEFAULTS },
    });
  });

  it("refuses to run the relay without its token, naming PAYMENT_RELAY_TOKEN; needs none with PAYMENT_RELAY_ENABLED=false", () => {
    expect(problems({ PAYMENT_DATABASE_URL: url, ...keys }).join("\n")).to.include("PAYMENT_RELAY_TOKEN (or PAYMENT_RELAY_TOKEN_FILE) is required");
    const config = loadPaymentServiceConfig({ PAYMENT_DATABASE_URL: url, PAYMENT_RELAY_ENABLED: "false", ...keys });
    expect(config.relay).to.equal(false);
  });

  it("reads the relay's and the cleanup's settings under PAYMENT_RELAY_* and PAYMENT_OUTBOX_*", () => {
    const config = loadPaymentServiceConfig({
      PAYMENT_DATABASE_URL: url,
      ...keys,
      PAYMENT_RELAY_TOKEN: "t",
      ORDER_SERVICE_URL: "http://orders.internal:6000",
      PAYMENT_RELAY_BATCH_SIZE: "20",
      PAYMENT_RELAY_POLL_INTERVAL_MS: "250",
      PAYMENT_RELAY_ID: "pr-1",
      PAYMENT_OUTBOX_RETENTION_MS: "0",
      PAYMENT_OUTBOX_CLEANUP_BATCH: "100",
    });
    if (!config.relay) throw new Error("relay expected");
    expect(config.relay.orderServiceUrl).to.equal("http://orders.internal:6000");
    expect(config.relay.config.batchSize).to.equal(20);
    expect(config.relay.config.pollIntervalMs).to.equal(250);
    expect(config.relay.relayId).to.equal("pr-1");
    expect(config.outboxCleanup.retentionMs).to.equal(0);
    expect(config.outboxCleanup.batchSize).to.equal(100);
  });

  it("names the payment relay's bad settings: URL, lease against call timeout, TLS for http://", () => {
    const found = problems({
      PAYMENT_DATABASE_URL: url,
      ...keys,
      PAYMENT_RELAY_TOKEN: "t",
      ORDER_SERVICE_URL: "ftp://x",
      PAYMENT_RELAY_LEASE_MS: "1000",
      PAYMENT_RELAY_CALL_TIMEOUT_MS: "1000",
      PAYMENT_RELAY_BATCH_SIZE: "0",
    }).join("\n");
    expect(found).to.include("ORDER_SERVICE_URL");
    expect(found).to.include("PAYMENT_RELAY_LEASE_MS=1000 must exceed twice PAYMENT_RELAY_CALL_TIMEOUT_MS=1000");
    expect(found).to.include("PAYMENT_RELAY_BATCH_SIZE");
    const waves = problems({ PAYMENT_DATABASE_URL: url, ...keys, PAYMENT_RELAY_TOKEN: "t", PAYMENT_RELAY_BATCH_SIZE: "250" }).join("\n");
    expect(waves).to.include("PAYMENT_RELAY_BATCH_SIZE=250 is 16 waves of 16 RecordPaymentOutcome calls").and.include("PAYMENT_RELAY_LEASE_MS=30000");
    const tls = problems({ PAYMENT_DATABASE_URL: url, ...keys, PAYMENT_RELAY_TOKEN: "t", TLS_CA_FILE: "/nonexistent/ca.pem" }).join("\n");
    expect(tls).to.match(/TLS_CA_FILE/);
  });

  it("names every bad setting at once", () => {
    const found = problems({ PAYMENT_DATABASE_URL: "postgres://x", PAYMENT_GRPC_PORT: "x", PAYMENT_DB_POOL_SIZE: "0", ...keys });
    expect(found.join("\n")).to.include("PAYMENT_DATABASE_URL");
    expect(found.join("\n")).to.include("PAYMENT_GRPC_PORT");
    expect(found.join("\n")).to.include("PAYMENT_DB_POOL_SIZE");
  });

  it("requires the database URL", () => {
    expect(problems({ ...keys }).join("\n")).to.include("PAYMENT_DATABASE_URL");
  });
});
