import { expect } from "chai";
import { ConfigError } from "@shop/platform/config";
import { loadVoucherServiceConfig } from "../src/config.js";

const url = "mysql://u:p@127.0.0.1:3306/vouchers";

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
  it("needs only the database URL and defaults the rest", () => {
    expect(loadVoucherServiceConfig({ VOUCHER_DATABASE_URL: url })).to.deep.equal({
      databaseUrl: url,
      host: "127.0.0.1",
      grpcPort: 50052,
      httpPort: 8082,
      poolSize: 10,
      maxBatch: 1000,
      logLevel: "info",
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
    });
    expect(config).to.include({ host: "0.0.0.0", grpcPort: 6000, httpPort: 0, poolSize: 32, maxBatch: 200, logLevel: "debug" });
  });

  it("names a bad port value", () => {
    expect(problems({ VOUCHER_DATABASE_URL: url, VOUCHER_GRPC_PORT: "50o52" })).to.deep.equal(['VOUCHER_GRPC_PORT="50o52" is not a whole number']);
    expect(problems({ VOUCHER_DATABASE_URL: url, VOUCHER_HTTP_PORT: "70000" })).to.deep.equal(["VOUCHER_HTTP_PORT=70000 is out of range [0, 65535]"]);
  });

  it("names every bad setting at once", () => {
    const found = problems({ VOUCHER_DB_POOL_SIZE: "0", VOUCHER_MAX_BATCH: "1001", LOG_LEVEL: "loud" });
    expect(found).to.have.length(4);
    expect(found.join("\n")).to.match(/VOUCHER_DATABASE_URL is required/).and.match(/VOUCHER_DB_POOL_SIZE=0/).and.match(/VOUCHER_MAX_BATCH=1001/).and.match(/LOG_LEVEL="loud"/);
  });
});
