import { expect } from "chai";
import { envReader } from "@shop/platform/config";
import { RELAY_DEFAULTS, relayConfigFromEnv } from "../../src/outbox/relay.js";

describe("relay settings", () => {
  it("uses the documented defaults when nothing is set", () => {
    const env = envReader({});
    expect(relayConfigFromEnv(env)).to.deep.equal({
      batchSize: 250,
      concurrency: 4,
      leaseMs: 30_000,
      pollIntervalMs: 1_000,
      callTimeoutMs: 5_000,
      retryBaseMs: 500,
      retryMaxMs: 300_000,
    });
    expect(() => env.finish()).not.to.throw();
    expect(RELAY_DEFAULTS.batchSize).to.equal(250);
  });

  it("reads every RELAY_* setting", () => {
    const env = envReader({
      RELAY_BATCH_SIZE: "10",
      RELAY_CONCURRENCY: "2",
      RELAY_LEASE_MS: "9000",
      RELAY_POLL_INTERVAL_MS: "250",
      RELAY_CALL_TIMEOUT_MS: "2000",
      RELAY_RETRY_BASE_MS: "100",
      RELAY_RETRY_MAX_MS: "60000",
    });
    expect(relayConfigFromEnv(env)).to.deep.equal({
      batchSize: 10,
      concurrency: 2,
      leaseMs: 9000,
      pollIntervalMs: 250,
      callTimeoutMs: 2000,
      retryBaseMs: 100,
      retryMaxMs: 60000,
    });
    env.finish();
  });

  it("refuses a lease that does not outlast the call timeout, naming both settings", () => {
    const env = envReader({ RELAY_LEASE_MS: "5000", RELAY_CALL_TIMEOUT_MS: "5000" });
    relayConfigFromEnv(env);
    expect(() => env.finish()).to.throw(/RELAY_LEASE_MS=5000 must exceed twice RELAY_CALL_TIMEOUT_MS=5000/);
  });

  it("lists every bad setting at once", () => {
    const env = envReader({ RELAY_BATCH_SIZE: "5000", RELAY_CONCURRENCY: "four", RELAY_RETRY_BASE_MS: "1000", RELAY_RETRY_MAX_MS: "10" });
    relayConfigFromEnv(env);
    let message = "";
    try {
      env.finish();
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).to.include("RELAY_BATCH_SIZE=5000 is out of range");
    expect(message).to.include("RELAY_CONCURRENCY");
    expect(message).to.include("RELAY_RETRY_MAX_MS=10 must not be below RELAY_RETRY_BASE_MS=1000");
  });
});
