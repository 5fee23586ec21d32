import { expect } from "chai";
import { envReader } from "@shop/platform/config";
import { largestBatchBytes } from "../../src/outbox/deliver.js";
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
      maxAttempts: 20,
      maxRequestBytes: 1024 * 1024,
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
      RELAY_MAX_ATTEMPTS: "7",
      RELAY_MAX_REQUEST_BYTES: "65536",
    });
    expect(relayConfigFromEnv(env)).to.deep.equal({
      batchSize: 10,
      concurrency: 2,
      leaseMs: 9000,
      pollIntervalMs: 250,
      callTimeoutMs: 2000,
      retryBaseMs: 100,
      retryMaxMs: 60000,
      maxAttempts: 7,
      maxRequestBytes: 65536,
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

  it("refuses a batch size whose largest request the voucher service would refuse, saying how large a batch fits", () => {
    const perItem = largestBatchBytes(1);
    const fits = Math.floor(65_536 / perItem);
    const env = envReader({ RELAY_BATCH_SIZE: String(fits + 1), RELAY_MAX_REQUEST_BYTES: "65536" });
    relayConfigFromEnv(env);
    expect(() => env.finish()).to.throw(
      `RELAY_BATCH_SIZE=${fits + 1} makes BatchIssueVouchers requests of up to ${largestBatchBytes(fits + 1)} bytes, more than ` +
        `RELAY_MAX_REQUEST_BYTES=65536 (the voucher service's VOUCHER_MAX_REQUEST_BYTES) accepts: lower RELAY_BATCH_SIZE to at most ${fits}`,
    );
    const ok = envReader({ RELAY_BATCH_SIZE: String(fits), RELAY_MAX_REQUEST_BYTES: "65536" });
    relayConfigFromEnv(ok);
    expect(() => ok.finish()).not.to.throw();
  });

  it("fits the largest batch the voucher service takes (1000 items) in its default request limit", () => {
    expect(largestBatchBytes(1000)).to.be.below(RELAY_DEFAULTS.maxRequestBytes);
    const env = envReader({ RELAY_BATCH_SIZE: "1000" });
    relayConfigFromEnv(env);
    expect(() => env.finish()).not.to.throw();
  });

  it("refuses a max attempts or request limit out of range", () => {
    const env = envReader({ RELAY_MAX_ATTEMPTS: "0", RELAY_MAX_REQUEST_BYTES: "1000" });
    relayConfigFromEnv(env);
    expect(() => env.finish()).to.throw(/RELAY_MAX_ATTEMPTS=0 is out of range[\s\S]*RELAY_MAX_REQUEST_BYTES=1000 is out of range/);
  });
});
