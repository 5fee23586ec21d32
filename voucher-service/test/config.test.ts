import { expect } from "chai";
import { ConfigError } from "@shop/platform/config";
import { testAuthEnv } from "@shop/testkit/auth";
import { loadVoucherServiceConfig } from "../src/config.js";

const url = "mysql://u:p@127.0.0.1:3306/vouchers";
const keys = { AUTH_PUBLIC_KEYS: testAuthEnv.AUTH_PUBLIC_KEYS };

function problems(env: Record<string, string>): string[] {
  try {
    loadVoucherServiceConfig(env);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}

describe("voucher service configuration", () => {
  it("needs only the database URL and the public keys and defaults the rest", () => {
    const { auth, ...rest } = loadVoucherServiceConfig({ VOUCHER_DATABASE_URL: url, ...keys });
    expect(auth.keys.map((k) => k.kid)).to.deep.equal(["test-key"]);
    expect(rest).to.deep.equal({
      databaseUrl: url,
      migrationDatabaseUrl: undefined,
      migrateOnStart: true,
      host: "127.0.0.1",
      grpcPort: 50052,
      httpPort: 8082,
      poolSize: 10,
      maxBatch: 1000,
      logLevel: "info",
      tls: undefined,
      reflection: true,
      maxMessageBytes: 1024 * 1024,
    });
  });

  it("reads every setting", () => {
    const config = loadVoucherServiceConfig({
      VOUCHER_DATABASE_URL: url,
      VOUCHER_HOST: "0.0.0.0",
      VOUCHER_GRPC_PORT: "6000",
      VOUCHER_HTTP_PORT: "0",
      VOUCHER_DB_POOL_SIZE: "32",
      VOUCHER_MAX_BATCH: "200",
      LOG_LEVEL: "debug",
      ...keys,
    });
    expect(config).to.include({ host: "0.0.0.0", grpcPort: 6000, httpPort: 0, poolSize: 32, maxBatch: 200, logLevel: "debug" });
  });

  it("names a bad port value", () => {
    expect(problems({ ...keys, VOUCHER_DATABASE_URL: url, VOUCHER_GRPC_PORT: "50o52" })).to.deep.equal(['VOUCHER_GRPC_PORT="50o52" is not a whole number']);
    expect(problems({ ...keys, VOUCHER_DATABASE_URL: url, VOUCHER_HTTP_PORT: "70000" })).to.deep.equal(["VOUCHER_HTTP_PORT=70000 is out of range [0, 65535]"]);
  });

  it("names every bad setting at once", () => {
    const found = problems({ VOUCHER_DB_POOL_SIZE: "0", VOUCHER_MAX_BATCH: "1001", LOG_LEVEL: "loud" });
    expect(found).to.have.length(5);
    expect(found.join("\n")).to.match(/AUTH_PUBLIC_KEYS is required/);
    expect(found.join("\n")).to.match(/VOUCHER_DATABASE_URL is required/).and.match(/VOUCHER_DB_POOL_SIZE=0/).and.match(/VOUCHER_MAX_BATCH=1001/).and.match(/LOG_LEVEL="loud"/);
  });

  it("names a malformed or duplicated public key", () => {
    const found = problems({ VOUCHER_DATABASE_URL: url, AUTH_PUBLIC_KEYS: "a=short,no-equals,test-key=" + testAuthEnv.AUTH_PUBLIC_KEYS.split("=")[1] + ",test-key=x" });
    expect(found.join("\n")).to.match(/key a: an Ed25519 public key is 32 bytes/).and.match(/entry 2 must look like kid=/).and.match(/key id test-key is listed twice/);
  });
});
