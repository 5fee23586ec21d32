import { writeFileSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { envReader } from "../src/config.js";
import { checkClientTlsUrls, readClientTls, readServerHardening, readServerTls } from "../src/tls.js";
import { makeTestCerts, type TestCerts } from "@shop/testkit/certs";

/** Runs a reader over env; returns what it read and the problems it reported. */
function read<T>(env: Record<string, string>, fn: (r: ReturnType<typeof envReader>) => T): { value: T; problems: string[] } {
  const r = envReader(env);
  const value = fn(r);
  try {
    r.finish();
    return { value, problems: [] };
  } catch (err) {
    return { value, problems: (err as { problems: string[] }).problems };
  }
}

describe("TLS settings", () => {
  let certs: TestCerts;
  before(() => {
    certs = makeTestCerts();
  });
  after(() => certs.cleanup());

  describe("server (readServerTls, readServerHardening)", () => {
    it("are off by default, with reflection on and a 1 MiB request limit", () => {
      const { value, problems } = read({}, (r) => readServerHardening(r, "ORDER"));
      expect(problems).to.deep.equal([]);
      expect(value).to.deep.equal({ tls: undefined, reflection: true, maxMessageBytes: 1024 * 1024 });
    });

    it("read the certificate and key as PEM, and the client CA for mTLS", () => {
      const env = { ORDER_TLS_CERT_FILE: certs.server.certFile, ORDER_TLS_KEY_FILE: certs.server.keyFile };
      const tls = read(env, (r) => readServerTls(r, "ORDER"));
      expect(tls.problems).to.deep.equal([]);
      expect(tls.value).to.deep.equal({ cert: certs.server.cert, key: certs.server.key });
      const mtls = read({ ...env, ORDER_TLS_CLIENT_CA_FILE: certs.ca.certFile }, (r) => readServerTls(r, "ORDER"));
      expect(mtls.problems).to.deep.equal([]);
      expect(mtls.value!.clientCa).to.deep.equal(certs.ca.cert);
    });

    it("take both the certificate and the key or neither", () => {
      const onlyCert = read({ VOUCHER_TLS_CERT_FILE: certs.server.certFile }, (r) => readServerTls(r, "VOUCHER"));
      expect(onlyCert.value).to.equal(undefined);
      expect(onlyCert.problems).to.deep.equal(["set both VOUCHER_TLS_CERT_FILE and VOUCHER_TLS_KEY_FILE or neither (VOUCHER_TLS_KEY_FILE is missing)"]);
      const onlyKey = read({ VOUCHER_TLS_KEY_FILE: certs.server.keyFile }, (r) => readServerTls(r, "VOUCHER"));
      expect(onlyKey.problems).to.deep.equal(["set both VOUCHER_TLS_CERT_FILE and VOUCHER_TLS_KEY_FILE or neither (VOUCHER_TLS_CERT_FILE is missing)"]);
    });

    it("name the setting of a file that cannot be read", () => {
      const missing = path.join(certs.dir, "nope.pem");
      const { value, problems } = read(
        { ORDER_TLS_CERT_FILE: missing, ORDER_TLS_KEY_FILE: certs.server.keyFile, ORDER_TLS_CLIENT_CA_FILE: certs.dir },
        (r) => readServerTls(r, "ORDER"),
      );
      expect(value).to.equal(undefined);
      expect(problems).to.have.length(2);
      expect(problems[0]).to.equal(`ORDER_TLS_CERT_FILE=${missing} cannot be read: ENOENT`);
      expect(problems[1]).to.equal(`ORDER_TLS_CLIENT_CA_FILE=${certs.dir} cannot be read: EISDIR`);
    });

    it("refuse files that are not what the setting says, and a key that is not the certificate's", () => {
      const notPem = path.join(certs.dir, "garbage.pem");
      writeFileSync(notPem, "hello\n");
      const swapped = read({ ORDER_TLS_CERT_FILE: certs.server.keyFile, ORDER_TLS_KEY_FILE: certs.server.certFile }, (r) => readServerTls(r, "ORDER"));
      expect(swapped.problems.join("\n")).to.contain(`ORDER_TLS_CERT_FILE=${certs.server.keyFile} holds no PEM certificate`);
      expect(swapped.problems.join("\n")).to.contain(`ORDER_TLS_KEY_FILE=${certs.server.certFile} is not an unencrypted PEM private key`);
      const otherKey = read({ ORDER_TLS_CERT_FILE: certs.server.certFile, ORDER_TLS_KEY_FILE: certs.client.keyFile }, (r) => readServerTls(r, "ORDER"));
      expect(otherKey.problems).to.deep.equal([
        `ORDER_TLS_KEY_FILE=${certs.client.keyFile} is not the private key of the certificate in ORDER_TLS_CERT_FILE=${certs.server.certFile}`,
      ]);
      const badCa = read(
        { ORDER_TLS_CERT_FILE: certs.server.certFile, ORDER_TLS_KEY_FILE: certs.server.keyFile, ORDER_TLS_CLIENT_CA_FILE: notPem },
        (r) => readServerTls(r, "ORDER"),
      );
      expect(badCa.problems).to.deep.equal([`ORDER_TLS_CLIENT_CA_FILE=${notPem} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`]);
    });

    it("refuse a client CA without TLS on", () => {
      const { problems } = read({ ORDER_TLS_CLIENT_CA_FILE: certs.ca.certFile }, (r) => readServerTls(r, "ORDER"));
      expect(problems).to.deep.equal(["ORDER_TLS_CLIENT_CA_FILE needs TLS on: set ORDER_TLS_CERT_FILE and ORDER_TLS_KEY_FILE too"]);
    });

    it("read reflection and the request limit, within 1 KiB to 16 MiB", () => {
      const ok = read({ VOUCHER_GRPC_REFLECTION: "false", VOUCHER_MAX_REQUEST_BYTES: "1024" }, (r) => readServerHardening(r, "VOUCHER"));
      expect(ok.problems).to.deep.equal([]);
      expect(ok.value).to.include({ reflection: false, maxMessageBytes: 1024 });
      expect(read({ VOUCHER_MAX_REQUEST_BYTES: String(16 * 1024 * 1024) }, (r) => readServerHardening(r, "VOUCHER")).problems).to.deep.equal([]);
      const bad = read({ VOUCHER_GRPC_REFLECTION: "sometimes", VOUCHER_MAX_REQUEST_BYTES: "1023" }, (r) => readServerHardening(r, "VOUCHER"));
      expect(bad.problems).to.deep.equal([
        'VOUCHER_GRPC_REFLECTION="sometimes" is not a boolean (true/false)',
        "VOUCHER_MAX_REQUEST_BYTES=1023 is out of range [1024, 16777216]",
      ]);
      expect(read({ VOUCHER_MAX_REQUEST_BYTES: String(16 * 1024 * 1024 + 1) }, (r) => readServerHardening(r, "VOUCHER")).problems).to.have.length(1);
    });
  });

  describe("client (readClientTls, checkClientTlsUrls)", () => {
    it("are undefined when none is set (system roots, no client certificate)", () => {
      expect(read({}, readClientTls)).to.deep.equal({ value: undefined, problems: [] });
    });

    it("read the CA alone, or with a client certificate and key", () => {
      expect(read({ TLS_CA_FILE: certs.ca.certFile }, readClientTls)).to.deep.equal({ value: { ca: certs.ca.cert }, problems: [] });
      const all = read(
        { TLS_CA_FILE: certs.ca.certFile, TLS_CLIENT_CERT_FILE: certs.client.certFile, TLS_CLIENT_KEY_FILE: certs.client.keyFile },
        readClientTls,
      );
      expect(all).to.deep.equal({ value: { ca: certs.ca.cert, cert: certs.client.cert, key: certs.client.key }, problems: [] });
    });

    it("take both the client certificate and key or neither, and name an unreadable file", () => {
      expect(read({ TLS_CLIENT_KEY_FILE: certs.client.keyFile }, readClientTls).problems).to.deep.equal([
        "set both TLS_CLIENT_CERT_FILE and TLS_CLIENT_KEY_FILE or neither (TLS_CLIENT_CERT_FILE is missing)",
      ]);
      const missing = path.join(certs.dir, "missing-ca.pem");
      expect(read({ TLS_CA_FILE: missing }, readClientTls).problems).to.deep.equal([`TLS_CA_FILE=${missing} cannot be read: ENOENT`]);
    });

    it("are refused when no URL is https://, as they would do nothing", () => {
      const env = { TLS_CLIENT_CERT_FILE: certs.client.certFile, TLS_CLIENT_KEY_FILE: certs.client.keyFile };
      const plain = read(env, (r) => checkClientTlsUrls(r, { VOUCHER_SERVICE_URL: "http://127.0.0.1:50052" }));
      expect(plain.problems).to.deep.equal([
        "TLS_CLIENT_CERT_FILE, TLS_CLIENT_KEY_FILE are set but no call uses TLS (VOUCHER_SERVICE_URL=http://127.0.0.1:50052): use https:// URLs or drop the TLS_* settings",
      ]);
      const mixed = read(env, (r) => checkClientTlsUrls(r, { ORDER_SERVICE_URL: "http://o:1", VOUCHER_SERVICE_URL: "https://v:2" }));
      expect(mixed.problems).to.deep.equal([]);
      expect(read({}, (r) => checkClientTlsUrls(r, { VOUCHER_SERVICE_URL: "http://v:2" })).problems).to.deep.equal([]);
    });
  });
});
