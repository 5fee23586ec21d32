import { execFile } from "node:child_process";
import { sign } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import {
  Authenticator,
  newSigningKey,
  parsePublicKeys,
  publicKeyFromX,
  readCallerToken,
  signToken,
  TokenError,
  verifyToken,
  type AuthSettings,
} from "../src/auth.js";
import { envReader } from "../src/config.js";

const key = newSigningKey("k1");
const settings: AuthSettings = { keys: [{ kid: "k1", key: publicKeyFromX(key.x) }] };
const now = Math.floor(Date.now() / 1000);

function refusal(token: string, at = now): string {
  try {
    verifyToken(token, settings, at);
  } catch (err) {
    expect(err).to.be.instanceOf(TokenError);
    return (err as Error).message;
  }
  throw new Error("expected the token to be refused");
}

describe("bearer tokens", () => {
  it("carry subject, scopes and customer, and verify with the listed key", () => {
    const p = verifyToken(signToken(key, { subject: "customer:c-9", scopes: ["orders:read:own", "made-up"], customerId: "c-9", ttlSeconds: 60 }), settings);
    expect(p).to.include({ subject: "customer:c-9", customerId: "c-9", keyId: "k1" });
    expect([...p.scopes]).to.deep.equal(["orders:read:own"]); // unknown scopes are dropped, not trusted
  });

  it("are refused past expiry (30 s leeway), before nbf, without exp, or with a customer scope but no customer", () => {
    const t = signToken(key, { subject: "s", scopes: ["orders:read"], ttlSeconds: 60, issuedAt: now });
    expect(() => verifyToken(t, settings, now + 60 + 29)).not.to.throw();
    expect(refusal(t, now + 60 + 31)).to.match(/token of s expired at/);
    const craft = (payload: object) => {
      const h = Buffer.from(JSON.stringify({ alg: "EdDSA", kid: "k1" })).toString("base64url");
      const p = Buffer.from(JSON.stringify(payload)).toString("base64url");
      return `${h}.${p}.${sign(null, Buffer.from(`${h}.${p}`), key.privateKey).toString("base64url")}`;
    };
    expect(refusal(craft({ sub: "s", scope: "orders:read" }))).to.match(/no expiry/);
    expect(refusal(craft({ sub: "s", scope: "orders:read", exp: now + 600, nbf: now + 300 }))).to.match(/not valid before/);
    expect(refusal(craft({ sub: "s", scope: "orders:read:own", exp: now + 600 }))).to.match(/names no customer/);
    expect(refusal(craft({ scope: "orders:read", exp: now + 600 }))).to.match(/no subject/);
  });

  it("are remembered once verified, but not past their expiry, by the clock they are given", () => {
    let clockMs = now * 1000;
    const auth = new Authenticator({ ...settings, leewaySeconds: 0, now: () => clockMs });
    const t = signToken(key, { subject: "brief", scopes: ["orders:read"], ttlSeconds: 1, issuedAt: now });
    const headers = new Headers({ authorization: `Bearer ${t}` });
    const refused = () => {
      try {
        auth.authenticate(headers);
      } catch (e) {
        return e as ConnectError;
      }
    };
    expect(auth.authenticate(headers).subject).to.equal("brief");
    clockMs += 1_000; // exactly at exp: still valid
    expect(auth.authenticate(headers).subject).to.equal("brief");
    clockMs += 1; // one millisecond past: the remembered token is refused too
    const err = refused();
    expect(err?.code).to.equal(Code.Unauthenticated);
    expect(err?.rawMessage).to.equal(`unauthenticated: token of brief expired at ${new Date((now + 1) * 1000).toISOString()}`);
    clockMs -= 1; // a clock set back finds it valid again: nothing was cached from the refusal
    expect(auth.authenticate(headers).subject).to.equal("brief");
  });

  it("are checked against the settings' clock for exp and nbf, with the leeway on both sides", () => {
    const craft = (payload: object) => {
      const h = Buffer.from(JSON.stringify({ alg: "EdDSA", kid: "k1" })).toString("base64url");
      const p = Buffer.from(JSON.stringify(payload)).toString("base64url");
      return `${h}.${p}.${sign(null, Buffer.from(`${h}.${p}`), key.privateKey).toString("base64url")}`;
    };
    const t = craft({ sub: "s", scope: "orders:read", nbf: 1_000_000, exp: 1_000_600 });
    const at = (seconds: number) => () => verifyToken(t, { ...settings, now: () => seconds * 1000 });
    expect(at(1_000_000 - 31)).to.throw(TokenError, /not valid before 1970-01-12T13:46:40.000Z/);
    expect(at(1_000_000 - 30)).not.to.throw();
    expect(at(1_000_600 + 30)).not.to.throw();
    expect(at(1_000_600 + 31)).to.throw(TokenError, /token of s expired at 1970-01-12T13:56:40.000Z/);
    // An exp beyond the dates JavaScript can show is named as a number, not an INTERNAL error.
    const farPast = craft({ sub: "s", scope: "orders:read", exp: -1e300 });
    expect(() => verifyToken(farPast, settings)).to.throw(TokenError, /expired at -1e\+300 s after the epoch/);
  });

  it("quote what the caller put in the header clipped, however large (a 6 KiB alg)", () => {
    const alg = "A".repeat(6 * 1024);
    const h = Buffer.from(JSON.stringify({ alg, kid: "k1" })).toString("base64url");
    const message = refusal(`${h}.${Buffer.from("{}").toString("base64url")}.c2ln`);
    expect(message).to.have.length.below(250);
    expect(message).to.equal(`unsupported signature algorithm "${"A".repeat(127)}…(6018 more) (EdDSA only)`);
    const kid = "k".repeat(5000);
    const h2 = Buffer.from(JSON.stringify({ alg: "EdDSA", kid })).toString("base64url");
    expect(refusal(`${h2}.${Buffer.from("{}").toString("base64url")}.c2ln`)).to.have.length.below(250);
    const objectAlg = Buffer.from(JSON.stringify({ alg: { nested: "x".repeat(9000) }, kid: "k1" })).toString("base64url");
    expect(refusal(`${objectAlg}.e30.c2ln`)).to.have.length.below(250);
  });

  it("key lists name each bad entry", () => {
    expect(parsePublicKeys(`a=${key.x}, b=${newSigningKey("b").x}`).keys.map((k) => k.kid)).to.deep.equal(["a", "b"]);
    expect(parsePublicKeys("").problems).to.deep.equal(["no key given"]);
    expect(parsePublicKeys(`bad kid!=${key.x}`).problems[0]).to.match(/must look like kid=/);
  });
});

describe("a caller's token from settings", () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(path.join(tmpdir(), "token-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("is required, as NAME or NAME_FILE but not both", () => {
    const r = envReader({ X_TOKEN: "a", X_TOKEN_FILE: "/nope" });
    readCallerToken(r, "X_TOKEN");
    expect(() => r.finish()).to.throw(/set X_TOKEN or X_TOKEN_FILE, not both/);
    const r2 = envReader({});
    readCallerToken(r2, "X_TOKEN");
    expect(() => r2.finish()).to.throw(/X_TOKEN \(or X_TOKEN_FILE\) is required/);
    const r3 = envReader({ X_TOKEN_FILE: path.join(dir, "missing") });
    readCallerToken(r3, "X_TOKEN");
    expect(() => r3.finish()).to.throw(/X_TOKEN_FILE=.*missing/);
  });

  it("is read again from its file when the file changes, so a renewed token needs no restart", () => {
    const file = path.join(dir, "t");
    writeFileSync(file, "first\n");
    let clockMs = 1_000_000;
    const source = readCallerToken(envReader({ X_TOKEN_FILE: file }), "X_TOKEN", undefined, () => clockMs) as () => string;
    expect(source()).to.equal("first");
    writeFileSync(file, "second\n");
    utimesSync(file, new Date(), new Date(Date.now() + 10_000));
    clockMs += 4_999;
    expect(source()).to.equal("first"); // checked at most every 5 s
    clockMs += 1;
    expect(source()).to.equal("second");
  });
});

describe("npm run auth", function () {
  this.timeout(30_000);
  const run = promisify(execFile);
  const tsx = createRequire(import.meta.url).resolve("tsx");
  const cli = path.resolve(import.meta.dirname, "../../../scripts/auth.ts");

  it("makes a key, prints its public half, and signs role tokens the services accept", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "auth-cli-"));
    try {
      const keyFile = path.join(dir, "key.json");
      const { stdout: entry } = await run(process.execPath, ["--import", tsx, cli, "keygen", "--kid", "2026-11", "--out", keyFile]);
      expect(entry.trim()).to.match(/^2026-11=[A-Za-z0-9_-]{43}$/);
      expect(readFileSync(keyFile, "utf8")).to.contain('"kid": "2026-11"');
      const { stdout: token } = await run(process.execPath, ["--import", tsx, cli, "token", "--key", keyFile, "--role", "customer", "--customer", "c-7", "--ttl", "1h"]);
      const p = verifyToken(token.trim(), { keys: parsePublicKeys(entry.trim()).keys });
      expect(p).to.include({ subject: "customer:c-7", customerId: "c-7" });
      expect(p.expiresAt - Math.floor(Date.now() / 1000)).to.be.within(3590, 3600);
      const refused = await run(process.execPath, ["--import", tsx, cli, "token", "--key", keyFile, "--role", "god"]).catch((e) => e);
      expect(refused.code).to.equal(2);
      expect(refused.stderr).to.contain("--role god is not one of shop, relay, reconciler, admin, customer");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
