import { execFile } from "node:child_process";
import { createHmac, sign } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import {
  AUDIENCES,
  Authenticator,
  createTokenVerifier,
  jwksJson,
  newSigningKey,
  parseJwks,
  parsePublicKeys,
  readAuthSettings,
  readCallerToken,
  roleAudience,
  signingKeyToJwk,
  signToken,
  tokenForRole,
  TokenError,
  type AuthSettings,
  type SigningKey,
  type TokenClaims,
} from "../src/auth.js";
import { envReader } from "../src/config.js";

const key = newSigningKey("k1");
const ORDERS = AUDIENCES.orders;
const VOUCHERS = AUDIENCES.vouchers;
/** The order service's settings. */
const settings: AuthSettings = { keys: [key.publicJwk], audience: ORDERS };
const now = Math.floor(Date.now() / 1000);
const claims = (more: Partial<TokenClaims> = {}): TokenClaims => ({ subject: "s", scopes: ["orders:read"], audience: ORDERS, ttlSeconds: 600, ...more });

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
/** A token with any header and payload, signed with Ed25519 by `by`: what a caller holding a key, or forging one, can send. */
function craft(header: object, payload: object, by: SigningKey = key): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${sign(null, Buffer.from(input), by.privateKey).toString("base64url")}`;
}
const good = { alg: "EdDSA", kid: "k1" };
const base = () => ({ iss: "shop-auth", aud: ORDERS, sub: "s", scope: "orders:read", exp: now + 600 });

async function refusal(token: string, s: AuthSettings = settings, atMs = now * 1000): Promise<string> {
  try {
    await createTokenVerifier(s)(token, atMs);
  } catch (err) {
    expect(err).to.be.instanceOf(TokenError);
    return (err as Error).message;
  }
  throw new Error("expected the token to be refused");
}
const verify = (token: string, s: AuthSettings = settings, atMs = now * 1000) => createTokenVerifier(s)(token, atMs);

describe("bearer tokens", () => {
  it("carry subject, scopes and customer, and verify with the key of the set their kid names", async () => {
    const p = await verify(await signToken(key, claims({ subject: "customer:c-9", scopes: ["orders:read:own", "made-up"], customerId: "c-9" })));
    expect(p).to.include({ subject: "customer:c-9", customerId: "c-9", keyId: "k1" });
    expect([...p.scopes]).to.deep.equal(["orders:read:own"]); // unknown scopes are dropped, not trusted
  });

  it("are refused past expiry (30 s leeway), before nbf (same leeway), without exp, or with a customer scope but no customer", async () => {
    const t = await signToken(key, claims({ ttlSeconds: 60, issuedAt: now }));
    await verify(t, settings, (now + 60 + 29) * 1000);
    expect(await refusal(t, settings, (now + 60 + 31) * 1000)).to.equal(`token of s expired at ${new Date((now + 60) * 1000).toISOString()}`);
    const early = await signToken(key, claims({ notBefore: now + 300 }));
    expect(await refusal(early)).to.equal(`token of s not valid before ${new Date((now + 300) * 1000).toISOString()}`);
    await verify(early, settings, (now + 300 - 29) * 1000);
    const { exp: _exp, ...noExp } = base();
    expect(await refusal(craft(good, noExp))).to.equal("token of s has no expiry (exp)");
    expect(await refusal(craft(good, { ...base(), scope: "orders:read:own" }))).to.match(/names no customer/);
    const { sub: _sub, ...noSub } = base();
    expect(await refusal(craft(good, noSub))).to.equal("the token has no subject (sub)");
    expect(await refusal(craft(good, { ...base(), exp: "soon" }))).to.match(/^token of s: "exp" claim must be a number/);
  });

  it("are accepted only by the services they are addressed to (aud), the reason naming the audience", async () => {
    const forVouchers = await signToken(key, claims({ audience: VOUCHERS }));
    expect(await refusal(forVouchers)).to.equal('token of s is for audience "voucher-service", not this service (order-service)');
    await verify(forVouchers, { ...settings, audience: VOUCHERS });
    const forBoth = await signToken(key, claims({ audience: [ORDERS, VOUCHERS] }));
    await verify(forBoth);
    await verify(forBoth, { ...settings, audience: VOUCHERS });
    const { aud: _aud, ...noAud } = base();
    expect(await refusal(craft(good, noAud))).to.equal("token of s has no audience (aud)");
    // A settings' own audience can be changed (AUTH_AUDIENCE): then the default names no longer reach it.
    expect(await refusal(forBoth, { ...settings, audience: "orders.shop.example" })).to.match(/for audience \["order-service","voucher-service"\], not this service \(orders.shop.example\)/);
  });

  it("are accepted only from their issuer (iss)", async () => {
    expect(await refusal(await signToken(key, claims({ issuer: "someone-else" })))).to.equal('token of s was issued by "someone-else", not by shop-auth');
    await verify(await signToken(key, claims({ issuer: "corp-idp" })), { ...settings, issuer: "corp-idp" });
    const { iss: _iss, ...noIss } = base();
    expect(await refusal(craft(good, noIss))).to.equal("token of s has no issuer (iss)");
  });

  it("are refused when signed by a key the set does not hold, or by another key under a known kid", async () => {
    expect(await refusal(await signToken(newSigningKey("k2"), claims()))).to.equal('signed with unknown key id "k2"');
    expect(await refusal(await signToken(newSigningKey("k1"), claims()))).to.equal("bad signature for key id k1");
    expect(await refusal(craft({ alg: "EdDSA" }, base()))).to.equal("the token header names no key id (kid)");
    const valid = await signToken(key, claims());
    const [h, , s] = valid.split(".");
    expect(await refusal(`${h}.${b64({ ...base(), scope: "admin orders:write" })}.${s}`)).to.equal("bad signature for key id k1");
  });

  it("are accepted from every key of the set, so keys rotate: add the new key, re-issue tokens, drop the old key", async () => {
    const next = newSigningKey("k2");
    const [oldToken, newToken] = await Promise.all([signToken(key, claims()), signToken(next, claims())]);
    const both = { ...settings, keys: [key.publicJwk, next.publicJwk] };
    expect((await verify(oldToken, both)).keyId).to.equal("k1");
    expect((await verify(newToken, both)).keyId).to.equal("k2");
    const onlyNext = { ...settings, keys: [next.publicJwk] };
    await verify(newToken, onlyNext);
    expect(await refusal(oldToken, onlyNext)).to.equal('signed with unknown key id "k1"');
  });

  it("are refused unsigned (alg none) or MAC'd with the public key as the secret (HS256)", async () => {
    expect(await refusal(`${b64({ alg: "none", kid: "k1" })}.${b64(base())}.`)).to.equal('unsupported signature algorithm "none" (EdDSA only)');
    const input = `${b64({ alg: "HS256", kid: "k1" })}.${b64(base())}`;
    const mac = createHmac("sha256", Buffer.from(key.publicJwk.x!, "base64url")).update(input).digest("base64url");
    expect(await refusal(`${input}.${mac}`)).to.equal('unsupported signature algorithm "HS256" (EdDSA only)');
    expect(await refusal("not-a-token")).to.match(/^malformed token/);
    const notJson = `${b64(good)}.${Buffer.from("not json").toString("base64url")}`;
    const signedNotJson = `${notJson}.${sign(null, Buffer.from(notJson), key.privateKey).toString("base64url")}`;
    expect(await refusal(signedNotJson)).to.equal("malformed token: JWT Claims Set must be a top-level JSON object");
  });

  it("quote what the caller put in the header clipped, however large (a 6 KiB alg)", async () => {
    const alg = "A".repeat(6 * 1024);
    const message = await refusal(`${b64({ alg, kid: "k1" })}.${b64({})}.c2ln`);
    expect(message).to.equal(`unsupported signature algorithm "${"A".repeat(127)}…(6018 more) (EdDSA only)`);
    expect(await refusal(`${b64({ alg: "EdDSA", kid: "k".repeat(5000) })}.${b64({})}.c2ln`)).to.have.length.below(250);
    expect(await refusal(`${b64({ alg: { nested: "x".repeat(9000) }, kid: "k1" })}.e30.c2ln`)).to.have.length.below(250);
    expect(await refusal(craft(good, { ...base(), aud: "a".repeat(9000) }))).to.have.length.below(250);
  });

  it("of each role are addressed to the services its scopes are used at", () => {
    const roles = ["shop", "relay", "payment-relay", "delivery-relay", "carrier", "reconciler", "admin", "customer"] as const;
    expect(Object.fromEntries(roles.map((r) => [r, roleAudience(r)]))).to.deep.equal({
      shop: [ORDERS, VOUCHERS, AUDIENCES.payments, AUDIENCES.deliveries],
      relay: [VOUCHERS, AUDIENCES.payments, AUDIENCES.deliveries],
      "payment-relay": [ORDERS],
      "delivery-relay": [ORDERS],
      carrier: [AUDIENCES.deliveries],
      reconciler: [ORDERS, VOUCHERS, AUDIENCES.payments, AUDIENCES.deliveries],
      admin: [ORDERS, VOUCHERS, AUDIENCES.deliveries],
      customer: [ORDERS, VOUCHERS, AUDIENCES.payments, AUDIENCES.deliveries],
    });
  });
});

describe("the cache of verified tokens", () => {
  const headers = (t: string) => new Headers({ authorization: `Bearer ${t}` });

  it("answers a token seen before without verifying it again, and keeps at most cacheSize tokens, least recently used out", async () => {
    const auth = new Authenticator({ ...settings, cacheSize: 2 });
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((subject) => signToken(key, claims({ subject }))));
    const first = await auth.authenticate(headers(a));
    expect(await auth.authenticate(headers(a))).to.equal(first); // the same object: remembered, not verified again
    await auth.authenticate(headers(b));
    await auth.authenticate(headers(a)); // a is now the most recently used
    await auth.authenticate(headers(c)); // so b goes
    expect(auth.cachedTokens).to.equal(2);
    expect(await auth.authenticate(headers(a))).to.equal(first);
    const bAgain = await auth.authenticate(headers(b));
    expect(bAgain.subject).to.equal("b");
    expect(await auth.authenticate(headers(b))).to.equal(bAgain);
  });

  it("forgets a token at its exp, by the clock it is given, and refuses it after the leeway", async () => {
    let clockMs = now * 1000;
    const auth = new Authenticator({ ...settings, now: () => clockMs });
    const t = await signToken(key, claims({ subject: "brief", ttlSeconds: 60, issuedAt: now }));
    const first = await auth.authenticate(headers(t));
    clockMs = (now + 60) * 1000 - 1; // just before exp: remembered
    expect(await auth.authenticate(headers(t))).to.equal(first);
    clockMs += 1; // at exp: verified again, and accepted within the leeway, but no longer remembered
    const again = await auth.authenticate(headers(t));
    expect(again).not.to.equal(first);
    expect(auth.cachedTokens).to.equal(0);
    clockMs = (now + 60 + 31) * 1000;
    const err = await auth.authenticate(headers(t)).catch((e: ConnectError) => e);
    expect(err).to.be.instanceOf(ConnectError);
    expect((err as ConnectError).code).to.equal(Code.Unauthenticated);
    expect((err as ConnectError).rawMessage).to.equal(`unauthenticated: token of brief expired at ${new Date((now + 60) * 1000).toISOString()}`);
    clockMs = now * 1000; // a clock set back finds it valid again: nothing was remembered from the refusal
    expect((await auth.authenticate(headers(t))).subject).to.equal("brief");
  });

  it("keeps nothing of a refused token", async () => {
    const auth = new Authenticator(settings);
    const t = await signToken(key, claims({ audience: VOUCHERS }));
    for (let i = 0; i < 2; i++) {
      const err = await auth.authenticate(headers(t)).catch((e: ConnectError) => e);
      expect((err as ConnectError).rawMessage).to.match(/for audience "voucher-service"/);
    }
    expect(auth.cachedTokens).to.equal(0);
  });
});

describe("a service's token settings", () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(path.join(tmpdir(), "jwks-"))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const other = newSigningKey("k2");

  const read = (env: Record<string, string>) => {
    const r = envReader(env);
    const s = readAuthSettings(r, ORDERS);
    let problems: string[] = [];
    try {
      r.finish();
    } catch (err) {
      problems = (err as { problems: string[] }).problems;
    }
    return { s, problems };
  };

  it("take the keys from AUTH_JWKS_FILE, AUTH_JWKS or AUTH_PUBLIC_KEYS, exactly one of them", () => {
    const file = path.join(dir, "jwks.json");
    writeFileSync(file, jwksJson([key.publicJwk, other.publicJwk]));
    const kids = (env: Record<string, string>) => read(env).s.keys.map((k) => k.kid);
    expect(kids({ AUTH_JWKS_FILE: file })).to.deep.equal(["k1", "k2"]);
    expect(kids({ AUTH_JWKS: readFileSync(file, "utf8") })).to.deep.equal(["k1", "k2"]);
    expect(kids({ AUTH_PUBLIC_KEYS: `k1=${key.publicJwk.x}` })).to.deep.equal(["k1"]);
    expect(read({}).problems[0]).to.match(/^AUTH_JWKS_FILE, AUTH_JWKS or AUTH_PUBLIC_KEYS is required/);
    expect(read({ AUTH_JWKS_FILE: file, AUTH_PUBLIC_KEYS: `k1=${key.publicJwk.x}` }).problems).to.deep.equal(["set one of AUTH_JWKS_FILE, AUTH_PUBLIC_KEYS, not several"]);
    expect(read({ AUTH_JWKS_FILE: path.join(dir, "missing.json") }).problems[0]).to.match(/^AUTH_JWKS_FILE: cannot be read from .*missing.json/);
  });

  it("default the audience to the service's name and the issuer to shop-auth; AUTH_AUDIENCE and AUTH_ISSUER change them", () => {
    const keys = { AUTH_PUBLIC_KEYS: `k1=${key.publicJwk.x}` };
    expect(read(keys).s).to.include({ audience: ORDERS, issuer: "shop-auth" });
    expect(read({ ...keys, AUTH_AUDIENCE: "orders.example", AUTH_ISSUER: "https://idp.example" }).s).to.include({ audience: "orders.example", issuer: "https://idp.example" });
  });

  it("name each bad key of a set or list, and refuse a private key", () => {
    expect(parsePublicKeys("").problems).to.deep.equal(["no key given"]);
    expect(parsePublicKeys(`bad kid!=${key.publicJwk.x}`).problems[0]).to.match(/must look like kid=/);
    expect(parseJwks("{").problems).to.deep.equal(['is not JSON (expected {"keys": [...]}, as npm run auth -- jwks prints)']);
    expect(parseJwks('{"keys": []}').problems).to.deep.equal(["holds no key"]);
    const { problems } = parseJwks(
      JSON.stringify({
        keys: [
          JSON.parse(signingKeyToJwk(key)),
          { kty: "RSA", kid: "r", n: "x", e: "AQAB" },
          { ...other.publicJwk, alg: "Ed25519" },
          { ...other.publicJwk, x: "short" },
          { ...key.publicJwk, kid: undefined },
          other.publicJwk,
          other.publicJwk,
          "text",
        ],
      }),
    );
    expect(problems).to.deep.equal([
      'key "k1" holds a private key (d): give services the public keys only (npm run auth -- jwks)',
      'key "r" is not an Ed25519 key (kty OKP, crv Ed25519)',
      'key "k2" is for alg "Ed25519", not EdDSA',
      'key "k2": an Ed25519 public key is 32 bytes in base64url (43 characters)',
      "key 5 has no kid",
      'key "k2" is listed twice',
      "key 8 is not a JSON object",
    ]);
    expect(parseJwks(jwksJson([key.publicJwk])).keys).to.deep.equal([key.publicJwk]);
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
  const auth = (...args: string[]) => run(process.execPath, ["--import", tsx, cli, ...args]);

  it("makes keys, prints their JWK set, and signs role tokens addressed to the role's services", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "auth-cli-"));
    try {
      const keyFile = path.join(dir, "key.json");
      const nextFile = path.join(dir, "next.json");
      const { stdout: entry } = await auth("keygen", "--kid", "2026-11", "--out", keyFile);
      expect(entry.trim()).to.match(/^2026-11=[A-Za-z0-9_-]{43}$/);
      expect(readFileSync(keyFile, "utf8")).to.contain('"kid": "2026-11"');
      await auth("keygen", "--kid", "2027-02", "--out", nextFile);
      const { stdout: jwks } = await auth("jwks", "--key", keyFile, "--key", nextFile);
      const { keys, problems } = parseJwks(jwks);
      expect(problems).to.deep.equal([]);
      expect(keys.map((k) => k.kid)).to.deep.equal(["2026-11", "2027-02"]);
      expect(keys[0].x).to.equal(entry.trim().split("=")[1]);
      const at = (audience: string) => createTokenVerifier({ keys, audience });

      const { stdout: customer } = await auth("token", "--key", keyFile, "--role", "customer", "--customer", "c-7", "--ttl", "1h");
      for (const service of [ORDERS, VOUCHERS]) {
        const p = await at(service)(customer.trim());
        expect(p).to.include({ subject: "customer:c-7", customerId: "c-7", keyId: "2026-11" });
        expect(p.expiresAt - Math.floor(Date.now() / 1000)).to.be.within(3590, 3600);
      }
      const { stdout: relay } = await auth("token", "--key", nextFile, "--role", "relay");
      expect((await at(VOUCHERS)(relay.trim())).subject).to.equal("relay");
      expect(await at(ORDERS)(relay.trim()).catch((e: Error) => e.message)).to.match(/for audience \["voucher-service","payment-service","delivery-service"\], not this service \(order-service\)/);
      const { stdout: narrowed } = await auth("token", "--key", keyFile, "--role", "shop", "--aud", ORDERS);
      await at(ORDERS)(narrowed.trim());
      expect(await at(VOUCHERS)(narrowed.trim()).catch((e: Error) => e.message)).to.match(/for audience "order-service"/);

      const refused = await auth("token", "--key", keyFile, "--role", "god").catch((e) => e);
      expect(refused.code).to.equal(2);
      expect(refused.stderr).to.contain("--role god is not one of shop, relay, payment-relay, delivery-relay, carrier, reconciler, admin, customer");
      const twice = await auth("jwks", "--key", keyFile, "--key", keyFile).catch((e) => e);
      expect(twice.stderr).to.contain("two keys have the key id 2026-11");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("signs the same tokens as the platform, which the services accept", async () => {
    // tokenForRole is what npm start uses; the CLI above goes through it too.
    const t = await tokenForRole(key, "admin", { ttlSeconds: 60 });
    expect((await verify(t)).subject).to.equal("operator");
    expect((await verify(t, { ...settings, audience: VOUCHERS })).subject).to.equal("operator");
  });
});
