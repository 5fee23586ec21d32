import { existsSync, readFileSync, statSync } from "node:fs";
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { Code, ConnectError, createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { envReader } from "./config.js";
import { clip, quote } from "./clip.js";
import { permissionDenied } from "./errors.js";

/**
 * Bearer tokens: compact JWS (JWT) signed with Ed25519 ("EdDSA"). Services
 * hold only public keys, so a service that is broken into cannot mint tokens;
 * whoever holds a private key (the operator's token tool, `npm start`) can.
 * Rotation: a service accepts every key listed in AUTH_PUBLIC_KEYS, each
 * named by its key id (the token header's "kid"); add the new key, re-issue
 * tokens, then drop the old key.
 */

/** What a caller may do. A method names the scopes that let a caller in. */
export const SCOPES = {
  /** Create orders and change their status (the shop backend). */
  ordersWrite: "orders:write",
  /** Read any customer's orders (the shop backend, the reconciler). */
  ordersRead: "orders:read",
  /** Read the orders of the customer named in the token only. */
  ordersReadOwn: "orders:read:own",
  /** Put an order's voucher request back on the relay's queue (the reconciler). */
  ordersRequeue: "orders:requeue",
  /** Issue vouchers (the relay, the reconciler). */
  vouchersIssue: "vouchers:issue",
  /** Void vouchers (the reconciler). */
  vouchersVoid: "vouchers:void",
  /** Read any customer's vouchers (the shop backend, the reconciler). */
  vouchersRead: "vouchers:read",
  /** Read the vouchers of the customer named in the token only. */
  vouchersReadOwn: "vouchers:read:own",
  /** The order service's admin API: dead voucher deliveries. */
  admin: "admin",
} as const;
export type Scope = (typeof SCOPES)[keyof typeof SCOPES];
const ALL_SCOPES = new Set<string>(Object.values(SCOPES));

/** The callers this system has, and the scopes each one's token carries. */
export const ROLES = {
  shop: { subject: "shop-backend", scopes: [SCOPES.ordersWrite, SCOPES.ordersRead, SCOPES.vouchersRead] },
  relay: { subject: "relay", scopes: [SCOPES.vouchersIssue] },
  reconciler: {
    subject: "reconciler",
    scopes: [SCOPES.ordersRead, SCOPES.ordersRequeue, SCOPES.vouchersRead, SCOPES.vouchersIssue, SCOPES.vouchersVoid],
  },
  admin: { subject: "operator", scopes: [SCOPES.admin, SCOPES.ordersRead, SCOPES.vouchersRead] },
  customer: { subject: "customer", scopes: [SCOPES.ordersReadOwn, SCOPES.vouchersReadOwn] },
} satisfies Record<string, { subject: string; scopes: Scope[] }>;
export type Role = keyof typeof ROLES;
export const ROLE_NAMES = Object.keys(ROLES) as Role[];

/** Who is calling, as a verified token says. */
export interface Principal {
  subject: string;
  scopes: ReadonlySet<string>;
  /** Set on customer tokens: the only customer whose data the caller may read. */
  customerId?: string;
  keyId: string;
  /** Seconds since the epoch. */
  expiresAt: number;
}

export interface VerificationKey {
  kid: string;
  key: KeyObject;
}

export interface AuthSettings {
  /** Public keys whose signatures are accepted; more than one during a rotation. */
  keys: VerificationKey[];
  /** Clock skew tolerated on exp and nbf, in seconds. Default 30. */
  leewaySeconds?: number;
  /** The clock exp and nbf are checked against, in milliseconds since the epoch. Default Date.now; tests pass their own. */
  now?: () => number;
}

/** Which callers a method lets in. */
export interface AccessRule {
  /** Any one of these scopes gives access to every customer's data. */
  scopes: Scope[];
  /**
   * This scope gives access too, but only to the data of the customer named
   * in the token; the handler enforces it with requireCustomer().
   */
  customerScope?: Scope;
}

/** A rule for every method a service serves, by the method's local name (e.g. "getOrder"). */
export type AccessPolicy = Record<string, AccessRule>;

/** Why a token was refused; the message is safe to log and to return (it never holds the token). */
export class TokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenError";
  }
}

const KID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const B64URL = /^[A-Za-z0-9_-]+$/;

/** An Ed25519 public key from the 43-character base64url form of its 32 raw bytes (a JWK's "x"). */
export function publicKeyFromX(x: string): KeyObject {
  if (!B64URL.test(x) || Buffer.from(x, "base64url").length !== 32) {
    throw new TokenError("an Ed25519 public key is 32 bytes in base64url (43 characters)");
  }
  return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
}

/**
 * Parses AUTH_PUBLIC_KEYS: comma-separated `kid=x` pairs, x being the
 * base64url raw Ed25519 public key, e.g. "2026-11=Vb3…,2027-02=q9X…".
 * Returns the keys and the problems found, so config can report them all.
 */
export function parsePublicKeys(spec: string): { keys: VerificationKey[]; problems: string[] } {
  const keys: VerificationKey[] = [];
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const part of spec.split(",").map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf("=");
    const kid = eq > 0 ? part.slice(0, eq) : "";
    if (!KID_PATTERN.test(kid)) {
      problems.push(`entry ${keys.length + problems.length + 1} must look like kid=base64url-public-key (kid: letters, digits, . _ -)`);
      continue;
    }
    if (seen.has(kid)) {
      problems.push(`key id ${kid} is listed twice`);
      continue;
    }
    seen.add(kid);
    try {
      keys.push({ kid, key: publicKeyFromX(part.slice(eq + 1)) });
    } catch (err) {
      problems.push(`key ${kid}: ${(err as Error).message}`);
    }
  }
  if (keys.length === 0 && problems.length === 0) problems.push("no key given");
  return { keys, problems };
}

/** A private signing key with its key id, as kept in a key file (JWK JSON). */
export interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  /** base64url raw public key, for AUTH_PUBLIC_KEYS. */
  x: string;
}

export function newSigningKey(kid: string): SigningKey {
  if (!KID_PATTERN.test(kid)) throw new TokenError(`key id ${JSON.stringify(kid)} may only hold letters, digits, . _ - (1 to 64)`);
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { kid, privateKey, x: publicKey.export({ format: "jwk" }).x! };
}

/** The key file's content: a private JWK with its kid. Keep it secret. */
export function signingKeyToJwk(k: SigningKey): string {
  return JSON.stringify({ ...k.privateKey.export({ format: "jwk" }), kid: k.kid }, null, 2) + "\n";
}

export function signingKeyFromJwk(json: string): SigningKey {
  let jwk: { kty?: string; crv?: string; d?: string; x?: string; kid?: string };
  try {
    jwk = JSON.parse(json);
  } catch {
    throw new TokenError("the key file is not JSON (expected a private Ed25519 JWK with a kid)");
  }
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || !jwk.d || !jwk.x || !jwk.kid || !KID_PATTERN.test(jwk.kid)) {
    throw new TokenError("the key file must be a private Ed25519 JWK (kty OKP, crv Ed25519, d, x) with a kid");
  }
  return { kid: jwk.kid, x: jwk.x, privateKey: createPrivateKey({ key: jwk as any, format: "jwk" }) };
}

export interface TokenClaims {
  subject: string;
  scopes: readonly string[];
  customerId?: string;
  /** Lifetime in seconds. */
  ttlSeconds: number;
  /** Seconds since the epoch; default now. */
  issuedAt?: number;
}

const b64json = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

export function signToken(key: SigningKey, claims: TokenClaims): string {
  const iat = claims.issuedAt ?? Math.floor(Date.now() / 1000);
  const header = b64json({ alg: "EdDSA", typ: "JWT", kid: key.kid });
  const payload = b64json({
    sub: claims.subject,
    scope: claims.scopes.join(" "),
    ...(claims.customerId ? { customer_id: claims.customerId } : {}),
    iat,
    exp: iat + claims.ttlSeconds,
  });
  const signature = sign(null, Buffer.from(`${header}.${payload}`), key.privateKey).toString("base64url");
  return `${header}.${payload}.${signature}`;
}

/** A token for one of the roles; customer tokens name their customer. */
export function tokenForRole(key: SigningKey, role: Role, opts: { ttlSeconds: number; customerId?: string }): string {
  const r = ROLES[role];
  if (role === "customer" && !opts.customerId) throw new TokenError("a customer token needs the customer id");
  if (role !== "customer" && opts.customerId) throw new TokenError("only customer tokens name a customer");
  const subject = role === "customer" ? `customer:${opts.customerId}` : r.subject;
  return signToken(key, { subject, scopes: r.scopes, customerId: opts.customerId, ttlSeconds: opts.ttlSeconds });
}

function decodePart(part: string, what: string): Record<string, unknown> {
  try {
    const v = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
    if (v && typeof v === "object" && !Array.isArray(v)) return v;
  } catch {
    // reported below
  }
  throw new TokenError(`malformed token: the ${what} is not a base64url JSON object`);
}

/** Checks signature, key, expiry and claims; throws a TokenError saying what is wrong. */
export function verifyToken(token: string, settings: AuthSettings, nowSeconds = (settings.now ?? Date.now)() / 1000): Principal {
  const parts = token.split(".");
  if (parts.length !== 3 || !parts.every((p) => B64URL.test(p))) throw new TokenError("malformed token: expected three base64url parts");
  const header = decodePart(parts[0], "header");
  // The header is the caller's, unverified: whatever it holds is quoted clipped.
  if (header.alg !== "EdDSA") throw new TokenError(`unsupported signature algorithm ${quote(header.alg)} (EdDSA only)`);
  const kid = typeof header.kid === "string" ? header.kid : undefined;
  if (!kid) throw new TokenError("the token header names no key id (kid)");
  const key = settings.keys.find((k) => k.kid === kid);
  if (!key) throw new TokenError(`signed with unknown key id ${quote(kid)}`);
  const ok = verify(null, Buffer.from(`${parts[0]}.${parts[1]}`), key.key, Buffer.from(parts[2], "base64url"));
  if (!ok) throw new TokenError(`bad signature for key id ${kid}`);
  const claims = decodePart(parts[1], "payload");
  const leeway = settings.leewaySeconds ?? 30;
  const { sub, scope, exp, nbf, customer_id: customerId } = claims;
  if (typeof sub !== "string" || sub === "") throw new TokenError("the token has no subject (sub)");
  if (typeof exp !== "number") throw new TokenError("the token has no expiry (exp)");
  // Signed, but by whoever holds a key: the subject is quoted clipped too.
  const who = clip(sub);
  if (exp + leeway < nowSeconds) throw new TokenError(`token of ${who} expired at ${isoTime(exp)}`);
  if (typeof nbf === "number" && nbf - leeway > nowSeconds) {
    throw new TokenError(`token of ${who} not valid before ${isoTime(nbf)}`);
  }
  if (typeof scope !== "string") throw new TokenError(`token of ${who} has no scope claim`);
  const scopes = new Set(scope.split(" ").filter((s) => ALL_SCOPES.has(s)));
  if (customerId !== undefined && (typeof customerId !== "string" || customerId === "")) {
    throw new TokenError(`token of ${who} has a malformed customer_id claim`);
  }
  if ((scopes.has(SCOPES.ordersReadOwn) || scopes.has(SCOPES.vouchersReadOwn)) && customerId === undefined) {
    throw new TokenError(`token of ${who} has a customer scope but names no customer (customer_id)`);
  }
  return { subject: sub, scopes, customerId: customerId as string | undefined, keyId: kid, expiresAt: exp };
}

/** exp and nbf as a date; a number beyond the dates JavaScript can show is shown as the number. */
function isoTime(seconds: number): string {
  const d = new Date(seconds * 1000);
  return Number.isNaN(d.getTime()) ? `${seconds} s after the epoch` : d.toISOString();
}

/**
 * Verifies bearer tokens from request headers. Verified tokens are remembered
 * (bounded, until they expire) so a caller's steady stream of calls costs one
 * signature check, not one per call.
 */
export class Authenticator {
  private readonly cache = new Map<string, Principal>();

  constructor(
    private readonly settings: AuthSettings,
    private readonly cacheSize = 1024,
  ) {
    if (settings.keys.length === 0) throw new Error("authentication needs at least one public key");
  }

  /** The caller, or a ConnectError UNAUTHENTICATED saying why. */
  authenticate(headers: Headers): Principal {
    const value = headers.get("authorization");
    if (value === null || value === "") throw unauthenticated("no bearer token: send the header authorization: Bearer <token>");
    const m = /^Bearer\s+(\S+)\s*$/i.exec(value);
    if (!m) throw unauthenticated("the authorization header is not a Bearer token");
    const token = m[1];
    const now = (this.settings.now ?? Date.now)() / 1000;
    const cached = this.cache.get(token);
    if (cached && cached.expiresAt + (this.settings.leewaySeconds ?? 30) >= now) return cached;
    try {
      const principal = verifyToken(token, this.settings, now);
      if (this.cache.size >= this.cacheSize) this.cache.clear();
      this.cache.set(token, principal);
      return principal;
    } catch (err) {
      this.cache.delete(token);
      if (err instanceof TokenError) throw unauthenticated(err.message);
      throw err;
    }
  }
}

function unauthenticated(reason: string): ConnectError {
  return new ConnectError(`unauthenticated: ${reason}`, Code.Unauthenticated);
}

/** What the server knows about the caller of the call at hand. */
export interface CallerContext {
  principal: Principal;
  /** Set when the caller got in through a customer scope: the one customer it may see. */
  onlyCustomer?: string;
}

export const callerKey = createContextKey<CallerContext | undefined>(undefined, { description: "authenticated caller" });

/**
 * Lets the caller in if it holds one of the rule's scopes, or, failing that,
 * the rule's customer scope (then limited to its own customer); otherwise a
 * ConnectError PERMISSION_DENIED naming what was needed.
 */
export function authorize(principal: Principal, rule: AccessRule, methodName: string): CallerContext {
  if (rule.scopes.some((s) => principal.scopes.has(s))) return { principal };
  if (rule.customerScope && principal.scopes.has(rule.customerScope) && principal.customerId) {
    return { principal, onlyCustomer: principal.customerId };
  }
  const needed = [...rule.scopes, ...(rule.customerScope ? [rule.customerScope] : [])];
  throw permissionDenied(`permission denied: ${clip(principal.subject)} may not call ${methodName}: it needs one of the scopes ${needed.join(", ")}`);
}

/**
 * For methods open to customer tokens: refuses with PERMISSION_DENIED when
 * the caller is limited to one customer and the data belongs to another.
 */
export function requireCustomer(ctx: HandlerContext, customerId: string, what: string): void {
  const caller = ctx.values.get(callerKey);
  if (caller?.onlyCustomer !== undefined && caller.onlyCustomer !== customerId) {
    throw permissionDenied(`permission denied: ${clip(caller.principal.subject)} may only read its own customer's data, not ${what}`);
  }
}

type EnvReader = ReturnType<typeof envReader>;

/** AUTH_PUBLIC_KEYS, required: the keys whose tokens a service accepts. */
export function readAuthSettings(r: EnvReader): AuthSettings {
  const spec = r.optionalString("AUTH_PUBLIC_KEYS");
  if (spec === undefined) {
    r.problem("AUTH_PUBLIC_KEYS is required: kid=public-key pairs, comma-separated (npm run auth -- keygen makes one)");
    return { keys: [] };
  }
  const { keys, problems } = parsePublicKeys(spec);
  for (const p of problems) r.problem(`AUTH_PUBLIC_KEYS: ${p}`);
  return { keys };
}

/** A bearer token, or a function giving the current one. */
export type TokenSource = string | (() => string);

/**
 * The token a client presents, from NAME or NAME_FILE (required, one of the
 * two; defaultFile, when given and present, stands in for NAME_FILE). A file is read again when it changes (checked at most every 5 s
 * by `now`, milliseconds since the epoch, default Date.now), so a renewed token takes effect without a restart.
 */
export function readCallerToken(r: EnvReader, name: string, defaultFile?: string, now: () => number = Date.now): TokenSource {
  const inline = r.optionalString(name);
  const file = r.optionalString(`${name}_FILE`) ?? (inline === undefined && defaultFile && existsSync(defaultFile) ? defaultFile : undefined);
  if (inline !== undefined && file !== undefined) r.problem(`set ${name} or ${name}_FILE, not both`);
  if (inline !== undefined) return inline;
  if (file === undefined) {
    r.problem(`${name} (or ${name}_FILE) is required: the bearer token this process presents (npm run auth -- token makes one)`);
    return "";
  }
  try {
    return tokenFile(file, now);
  } catch (err) {
    r.problem(`${name}_FILE=${file}: ${(err as Error).message}`);
    return "";
  }
}

function tokenFile(file: string, now: () => number, recheckMs = 5_000): () => string {
  const read = () => {
    const token = readFileSync(file, "utf8").trim();
    if (token === "") throw new Error("the file is empty");
    return token;
  };
  let token = read();
  let mtime = statSync(file).mtimeMs;
  let checkedAt = now();
  return () => {
    if (now() - checkedAt < recheckMs) return token;
    checkedAt = now();
    try {
      const m = statSync(file).mtimeMs;
      if (m !== mtime) {
        token = read();
        mtime = m;
      }
    } catch {
      // Keep the last good token: a file being replaced may be missing for a moment.
    }
    return token;
  };
}
