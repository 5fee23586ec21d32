import { expect } from "chai";
import { ConfigError } from "@shop/platform/config";
import { testAuthEnv } from "@shop/testkit/auth";
import { loadPaymentServiceConfig } from "../src/config.js";

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
  it("needs only the database URL and the public keys, defaults the rest, and expects tokens addressed to payment-service", () => {
    const { auth, ...rest } = loadPaymentServiceConfig({ PAYMENT_DATABASE_URL: url, ...keys });
    expect(auth.keys.map((k) => k.kid)).to.deep.equal(["test-key"]);
    expect(auth.audience).to.equal("payment-service");
    expect(rest).to.deep.equal({
      databaseUrl: url,
      migrationDatabaseUrl: undefined,
      host: "127.0.0.1",
      grpcPort: 50053,
      httpPort: 8083,
      poolSize: 10,
      logLevel: "info",
      tls: undefined,
      reflection: true,
      maxMessageBytes: 1024 * 1024,
    });
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
