import { existsSync, readFileSync, statSync } from "node:fs";
import { createPrivateKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { Code, ConnectError, createContextKey, type HandlerContext } from "@connectrpc/connect";
import { createLocalJWKSet, decodeProtectedHeader, errors, jwtVerify, SignJWT, type JWK, type JWTPayload } from "jose";
import { LRUCache } from "lru-cache";
import type { envReader } from "./config.js";
import { clip, quote } from "./clip.js";
import { permissionDenied } from "./errors.js";

/**
 * Bearer tokens: JWTs signed with Ed25519 ("EdDSA"), signed and verified by
 * jose. Services hold only public keys (a JWK set), so a service that is
 * broken into cannot mint tokens; whoever holds a private key (the operator's
 * token tool, `npm start`) can. A token names the services it is for (aud)
 * and who issued it (iss); each service accepts only tokens addressed to it,
 * so a token that leaks from one service cannot be replayed at the other.
 * Rotation: a service accepts every key of its set, each named by its key id
 * (the token header's "kid"); add the new key, re-issue tokens, then drop the
 * old key.
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
  /** Record a payment decision on an order (the payment service's relay, the reconciler). */
  ordersPaymentOutcome: "orders:payment-outcome",
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
  /** Open accounts and top them up (the shop backend). */
  paymentsWrite: "payments:write",
  /** Read any customer's account and statement (the shop backend, the reconciler). */
  paymentsRead: "payments:read",
  /** Read the account of the customer named in the token only. */
  paymentsReadOwn: "payments:read:own",
  /** Charge and refund orders (the order service's relay only). */
  paymentsCharge: "payments:charge",
  /** Record a shipment's event on an order (the delivery service's relay, the reconciler). */
  ordersShipmentEvent: "orders:shipment-event",
  /** Create shipments (the order service's relay only). */
  shipmentsCreate: "shipments:create",
  /** Read any order's shipment (the shop backend, the reconciler, operators). */
  shipmentsRead: "shipments:read",
  /** Read the shipments of the customer named in the token only. */
  shipmentsReadOwn: "shipments:read:own",
  /** The delivery service's admin calls: resume a shipment its carrier failed on. */
  shipmentsAdmin: "shipments:admin",
  /** Report for carriers driven over RPC: confirm, decline, ship, deliver (a business or an operator). */
  carrierReport: "carrier:report",
} as const;
export type Scope = (typeof SCOPES)[keyof typeof SCOPES];
const ALL_SCOPES = new Set<string>(Object.values(SCOPES));

/** The services' default audiences (AUTH_AUDIENCE): the value of aud that addresses a token to each. */
export const AUDIENCES = {
  orders: "order-service",
  vouchers: "voucher-service",
  payments: "payment-service",
  deliveries: "delivery-service",
} as const;

/** The default issuer (AUTH_ISSUER): the iss that tokens carry and services expect. */
export const DEFAULT_ISSUER = "shop-auth";

/**
 * The service a scope is used at: a role's token is addressed to the services
 * its scopes are good for, and to no other.
 */
const SCOPE_AUDIENCE: Record<Scope, string> = {
  [SCOPES.ordersWrite]: AUDIENCES.orders,
  [SCOPES.ordersRead]: AUDIENCES.orders,
  [SCOPES.ordersReadOwn]: AUDIENCES.orders,
  [SCOPES.ordersRequeue]: AUDIENCES.orders,
  [SCOPES.ordersPaymentOutcome]: AUDIENCES.orders,
  [SCOPES.admin]: AUDIENCES.orders,
  [SCOPES.vouchersIssue]: AUDIENCES.vouchers,
  [SCOPES.vouchersVoid]: AUDIENCES.vouchers,
  [SCOPES.vouchersRead]: AUDIENCES.vouchers,
  [SCOPES.vouchersReadOwn]: AUDIENCES.vouchers,
  [SCOPES.paymentsWrite]: AUDIENCES.payments,
  [SCOPES.paymentsRead]: AUDIENCES.payments,
  [SCOPES.paymentsReadOwn]: AUDIENCES.payments,
  [SCOPES.paymentsCharge]: AUDIENCES.payments,
  [SCOPES.ordersShipmentEvent]: AUDIENCES.orders,
  [SCOPES.shipmentsCreate]: AUDIENCES.deliveries,
  [SCOPES.shipmentsRead]: AUDIENCES.deliveries,
  [SCOPES.shipmentsReadOwn]: AUDIENCES.deliveries,
  [SCOPES.shipmentsAdmin]: AUDIENCES.deliveries,
  [SCOPES.carrierReport]: AUDIENCES.deliveries,
};

/** The callers this system has, and the scopes each one's token carries. */
export const ROLES = {
  shop: {
    subject: "shop-backend",
    scopes: [
      SCOPES.ordersWrite,
      SCOPES.ordersRead,
      SCOPES.vouchersRead,
      SCOPES.paymentsWrite,
      SCOPES.paymentsRead,
      SCOPES.shipmentsRead,
    ],
  },
  relay: { subject: "relay", scopes: [SCOPES.vouchersIssue, SCOPES.paymentsCharge, SCOPES.shipmentsCreate] },
  /** The payment service's relay: delivers charge and refund outcomes to the order service, nothing else. */
  "payment-relay": { subject: "payment-relay", scopes: [SCOPES.ordersPaymentOutcome] },
  /** The delivery service's relay: delivers shipment events to the order service, nothing else. */
  "delivery-relay": { subject: "delivery-relay", scopes: [SCOPES.ordersShipmentEvent] },
  /** A business or an operator driving the shipments of the carriers that report over RPC. */
  carrier: { subject: "carrier", scopes: [SCOPES.carrierReport] },
  reconciler: {
    subject: "reconciler",
    scopes: [
      SCOPES.ordersRead,
      SCOPES.ordersRequeue,
      SCOPES.ordersPaymentOutcome,
      SCOPES.ordersShipmentEvent,
      SCOPES.vouchersRead,
      SCOPES.vouchersIssue,
      SCOPES.vouchersVoid,
      SCOPES.paymentsRead,
      SCOPES.shipmentsRead,
    ],
  },
  admin: {
    subject: "operator",
    scopes: [SCOPES.admin, SCOPES.ordersRead, SCOPES.vouchersRead, SCOPES.shipmentsRead, SCOPES.shipmentsAdmin],
  },
  customer: {
    subject: "customer",
    scopes: [SCOPES.ordersReadOwn, SCOPES.vouchersReadOwn, SCOPES.paymentsReadOwn, SCOPES.shipmentsReadOwn],
  },
} satisfies Record<string, { subject: string; scopes: Scope[] }>;
export type Role = keyof typeof ROLES;
export const ROLE_NAMES = Object.keys(ROLES) as Role[];

/** The services a role's token is addressed to: those of its scopes (the relay's: the voucher and payment services only). */
export function roleAudience(role: Role): string[] {
  return [...new Set(ROLES[role].scopes.map((s: Scope) => SCOPE_AUDIENCE[s]))];
}

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

/**
 * Verified tokens remembered per service: enough for every live token of the
 * services' own callers and thousands of customers; an entry is about 1 KB
 * (the token and its principal), so the cache stays near 4 MB however many
 * tokens are presented. Past it the least recently used are verified again.
 */
export const TOKEN_CACHE_SIZE = 4096;

export interface AuthSettings {
  /** Public Ed25519 JWKs, each with its kid, whose signatures are accepted; more than one during a rotation. */
  keys: JWK[];
  /** The aud a token must name (any of these, when several): this service's name. */
  audience: string | string[];
  /** The iss a token must carry. Default DEFAULT_ISSUER. */
  issuer?: string;
  /** Clock skew tolerated on exp and nbf, in seconds. Default 30. */
  leewaySeconds?: number;
  /** The clock exp and nbf are checked against, in milliseconds since the epoch. Default Date.now; tests pass their own. */
  now?: () => number;
  /** Verified tokens remembered. Default TOKEN_CACHE_SIZE. */
  cacheSize?: number;
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
const ALG = "EdDSA";

/** The public JWK of an Ed25519 key, from its kid and the base64url form of its 32 raw bytes (x). */
export function publicJwk(kid: string, x: string): JWK {
  if (!KID_PATTERN.test(kid)) throw new TokenError(`key id ${quote(kid)} may only hold letters, digits, . _ - (1 to 64)`);
  if (!B64URL.test(x) || Buffer.from(x, "base64url").length !== 32) {
    throw new TokenError("an Ed25519 public key is 32 bytes in base64url (43 characters)");
  }
  return { kty: "OKP", crv: "Ed25519", x, kid, alg: ALG, use: "sig" };
}

/**
 * Parses AUTH_PUBLIC_KEYS, the short form of a JWK set: comma-separated
 * `kid=x` pairs, x being the base64url raw Ed25519 public key, e.g.
 * "2026-11=Vb3…,2027-02=q9X…". Returns the keys and the problems found, so
 * config can report them all.
 */
export function parsePublicKeys(spec: string): { keys: JWK[]; problems: string[] } {
  const keys: JWK[] = [];
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
      keys.push(publicJwk(kid, part.slice(eq + 1)));
    } catch (err) {
      problems.push(`key ${kid}: ${(err as Error).message}`);
    }
  }
  if (keys.length === 0 && problems.length === 0) problems.push("no key given");
  return { keys, problems };
}

/**
 * Parses a JWK set (AUTH_JWKS, AUTH_JWKS_FILE) as `npm run auth -- jwks`
 * prints it: Ed25519 public keys, each with a unique kid. Only the public
 * members are kept; a private key (d) is refused, as a service must not hold one.
 */
export function parseJwks(json: string): { keys: JWK[]; problems: string[] } {
  let set: unknown;
  try {
    set = JSON.parse(json);
  } catch {
    return { keys: [], problems: ['is not JSON (expected {"keys": [...]}, as npm run auth -- jwks prints)'] };
  }
  const list = (set as { keys?: unknown })?.keys;
  if (!Array.isArray(list)) return { keys: [], problems: ['must be a JWK set: {"keys": [...]}'] };
  const keys: JWK[] = [];
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const [i, entry] of list.entries()) {
    const problem = jwkProblem(entry, seen);
    const name = typeof entry?.kid === "string" ? `key ${quote(entry.kid)}` : `key ${i + 1}`;
    if (problem) {
      problems.push(`${name} ${problem}`);
      continue;
    }
    try {
      keys.push(publicJwk(entry.kid, String(entry.x)));
      seen.add(entry.kid);
    } catch (err) {
      problems.push(`${name}: ${(err as Error).message}`);
    }
  }
  if (keys.length === 0 && problems.length === 0) problems.push("holds no key");
  return { keys, problems };
}

/** What makes one member of a JWK set unfit for a service, or undefined. */
function jwkProblem(entry: any, seen: Set<string>): string | undefined {
  if (entry === null || typeof entry !== "object" || Array.isArray(entry)) return "is not a JSON object";
  if (entry.d !== undefined) return "holds a private key (d): give services the public keys only (npm run auth -- jwks)";
  if (entry.kty !== "OKP" || entry.crv !== "Ed25519") return "is not an Ed25519 key (kty OKP, crv Ed25519)";
  if (entry.alg !== undefined && entry.alg !== ALG) return `is for alg ${quote(entry.alg)}, not ${ALG}`;
  if (entry.use !== undefined && entry.use !== "sig") return `is for use ${quote(entry.use)}, not sig`;
  if (typeof entry.kid !== "string") return "has no kid";
  if (seen.has(entry.kid)) return "is listed twice";
  return undefined;
}

/** A JWK set's JSON text, as services read it from AUTH_JWKS or AUTH_JWKS_FILE. */
export function jwksJson(keys: JWK[]): string {
  return JSON.stringify({ keys }, null, 2) + "\n";
}

/** A private signing key with its key id, as kept in a key file (JWK JSON). */
export interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  /** Its public half, for the services' JWK set. */
  publicJwk: JWK;
}

export function newSigningKey(kid: string): SigningKey {
  if (!KID_PATTERN.test(kid)) throw new TokenError(`key id ${JSON.stringify(kid)} may only hold letters, digits, . _ - (1 to 64)`);
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { kid, privateKey, publicJwk: publicJwk(kid, publicKey.export({ format: "jwk" }).x!) };
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
  return { kid: jwk.kid, publicJwk: publicJwk(jwk.kid, jwk.x), privateKey: createPrivateKey({ key: jwk as any, format: "jwk" }) };
}

export interface TokenClaims {
  subject: string;
  scopes: readonly string[];
  /** The services the token is for (aud). */
  audience: string | readonly string[];
  /** iss; default DEFAULT_ISSUER. */
  issuer?: string;
  customerId?: string;
  /** Lifetime in seconds. */
  ttlSeconds: number;
  /** Seconds since the epoch; default now. */
  issuedAt?: number;
  /** Seconds since the epoch before which the token is not to be accepted (nbf); default none. */
  notBefore?: number;
}

/** The JWT claims set of a token: the registered claims, the scopes as one space-separated "scope", and customer_id. */
export function tokenPayload(claims: TokenClaims): JWTPayload {
  const iat = claims.issuedAt ?? Math.floor(Date.now() / 1000);
  const aud = typeof claims.audience === "string" ? claims.audience : [...claims.audience];
  return {
    iss: claims.issuer ?? DEFAULT_ISSUER,
    sub: claims.subject,
    aud: Array.isArray(aud) && aud.length === 1 ? aud[0] : aud,
    scope: claims.scopes.join(" "),
    ...(claims.customerId ? { customer_id: claims.customerId } : {}),
    iat,
    ...(claims.notBefore !== undefined ? { nbf: claims.notBefore } : {}),
    exp: iat + claims.ttlSeconds,
  };
}

/** The protected header every token carries. */
export function tokenHeader(key: Pick<SigningKey, "kid">) {
  return { alg: ALG, typ: "JWT", kid: key.kid };
}

export function signToken(key: SigningKey, claims: TokenClaims): Promise<string> {
  return new SignJWT(tokenPayload(claims)).setProtectedHeader(tokenHeader(key)).sign(key.privateKey);
}

export interface RoleTokenOptions {
  ttlSeconds: number;
  /** Customer tokens only: the customer whose data the token may read. */
  customerId?: string;
  /** aud; default the role's services (roleAudience). */
  audience?: string | readonly string[];
  /** iss; default DEFAULT_ISSUER. */
  issuer?: string;
}

/** What a token of one of the roles says; customer tokens name their customer. */
export function roleClaims(role: Role, opts: RoleTokenOptions): TokenClaims {
  const r = ROLES[role];
  if (role === "customer" && !opts.customerId) throw new TokenError("a customer token needs the customer id");
  if (role !== "customer" && opts.customerId) throw new TokenError("only customer tokens name a customer");
  const audience = opts.audience ?? roleAudience(role);
  if (audience.length === 0) throw new TokenError("a token needs at least one audience");
  return {
    subject: role === "customer" ? `customer:${opts.customerId}` : r.subject,
    scopes: r.scopes,
    customerId: opts.customerId,
    audience,
    issuer: opts.issuer,
    ttlSeconds: opts.ttlSeconds,
  };
}

/** A signed token for one of the roles. */
export function tokenForRole(key: SigningKey, role: Role, opts: RoleTokenOptions): Promise<string> {
  return signToken(key, roleClaims(role, opts));
}

/**
 * Checks a token with jose (signature by a key of the set, alg EdDSA only,
 * aud, iss, exp required, nbf, with the leeway on both) and then this
 * project's claims (sub, scope, customer_id). Throws a TokenError saying what
 * is wrong, quoting clipped whatever of the caller's it repeats.
 */
export function createTokenVerifier(settings: AuthSettings): (token: string, nowMs?: number) => Promise<Principal> {
  if (settings.keys.length === 0) throw new Error("authentication needs at least one public key");
  const jwks = createLocalJWKSet({ keys: settings.keys });
  const kids = new Set(settings.keys.map((k) => k.kid));
  const issuer = settings.issuer ?? DEFAULT_ISSUER;
  const leeway = settings.leewaySeconds ?? 30;
  const clock = settings.now ?? Date.now;
  return async (token, nowMs = clock()) => {
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new TokenError("malformed token: expected a JWT (three base64url parts, the first a JSON header)");
    }
    // The header is the caller's, unverified: whatever it holds is quoted clipped.
    if (header.alg !== ALG) throw new TokenError(`unsupported signature algorithm ${quote(header.alg)} (${ALG} only)`);
    const kid = header.kid;
    if (typeof kid !== "string" || kid === "") throw new TokenError("the token header names no key id (kid)");
    if (!kids.has(kid)) throw new TokenError(`signed with unknown key id ${quote(kid)}`);
    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(token, jwks, {
        algorithms: [ALG],
        audience: settings.audience,
        issuer,
        requiredClaims: ["exp", "sub"],
        clockTolerance: leeway,
        currentDate: new Date(nowMs),
      }));
    } catch (err) {
      throw refusal(err, kid, settings.audience, issuer);
    }
    const { sub, scope, exp, customer_id: customerId } = claims;
    if (typeof sub !== "string" || sub === "") throw new TokenError("the token has no subject (sub)");
    // Signed, but by whoever holds a key: the subject is quoted clipped too.
    const who = clip(sub);
    if (typeof scope !== "string") throw new TokenError(`token of ${who} has no scope claim`);
    const scopes = new Set(scope.split(" ").filter((s) => ALL_SCOPES.has(s)));
    if (customerId !== undefined && (typeof customerId !== "string" || customerId === "")) {
      throw new TokenError(`token of ${who} has a malformed customer_id claim`);
    }
    if ((scopes.has(SCOPES.ordersReadOwn) || scopes.has(SCOPES.vouchersReadOwn) || scopes.has(SCOPES.paymentsReadOwn)) && customerId === undefined) {
      throw new TokenError(`token of ${who} has a customer scope but names no customer (customer_id)`);
    }
    return { subject: sub, scopes, customerId: customerId as string | undefined, keyId: kid, expiresAt: exp! };
  };
}

/** jose's refusal as a reason a person can act on. Its messages are fixed texts; claim values are quoted clipped. */
function refusal(err: unknown, kid: string, audience: string | string[], issuer: string): TokenError {
  if (err instanceof errors.JWSSignatureVerificationFailed) return new TokenError(`bad signature for key id ${kid}`);
  if (err instanceof errors.JWTExpired || err instanceof errors.JWTClaimValidationFailed) {
    const { payload, claim, reason } = err;
    const who = typeof payload.sub === "string" ? clip(payload.sub) : "(no subject)";
    const names: Record<string, string> = { exp: "expiry (exp)", sub: "subject (sub)", aud: "audience (aud)", iss: "issuer (iss)" };
    if (reason === "missing") return new TokenError(claim === "sub" ? "the token has no subject (sub)" : `token of ${who} has no ${names[claim] ?? claim}`);
    if (reason === "check_failed") {
      if (claim === "exp") return new TokenError(`token of ${who} expired at ${isoTime(payload.exp!)}`);
      if (claim === "nbf") return new TokenError(`token of ${who} not valid before ${isoTime(payload.nbf!)}`);
      if (claim === "aud") {
        return new TokenError(`token of ${who} is for audience ${quote(payload.aud)}, not this service (${[audience].flat().join(", ")})`);
      }
      if (claim === "iss") return new TokenError(`token of ${who} was issued by ${quote(payload.iss)}, not by ${issuer}`);
    }
    return new TokenError(`token of ${who}: ${err.message}`);
  }
  if (err instanceof errors.JOSEError) return new TokenError(`malformed token: ${err.message}`);
  return err as Error;
}

/** exp and nbf as a date; a number beyond the dates JavaScript can show is shown as the number. */
function isoTime(seconds: number): string {
  const d = new Date(seconds * 1000);
  return Number.isNaN(d.getTime()) ? `${seconds} s after the epoch` : d.toISOString();
}

/**
 * Verifies bearer tokens from request headers. Verified tokens are remembered
 * (least recently used first out, each until its exp) so a caller's steady
 * stream of calls costs one signature check, not one per call.
 */
export class Authenticator {
  private readonly cache: LRUCache<string, Principal>;
  private readonly verify: (token: string, nowMs: number) => Promise<Principal>;
  private readonly now: () => number;

  constructor(settings: AuthSettings) {
    this.verify = createTokenVerifier(settings);
    this.now = settings.now ?? Date.now;
    this.cache = new LRUCache({ max: settings.cacheSize ?? TOKEN_CACHE_SIZE });
  }

  /** The caller, or a ConnectError UNAUTHENTICATED saying why. */
  async authenticate(headers: Headers): Promise<Principal> {
    const value = headers.get("authorization");
    if (value === null || value === "") throw unauthenticated("no bearer token: send the header authorization: Bearer <token>");
    const m = /^Bearer\s+(\S+)\s*$/i.exec(value);
    if (!m) throw unauthenticated("the authorization header is not a Bearer token");
    const token = m[1];
    const nowMs = this.now();
    const cached = this.cache.get(token);
    if (cached) {
      if (nowMs < cached.expiresAt * 1000) return cached;
      this.cache.delete(token);
    }
    try {
      const principal = await this.verify(token, nowMs);
      // A token accepted only thanks to the leeway is checked again on every call rather than remembered.
      if (nowMs < principal.expiresAt * 1000) this.cache.set(token, principal);
      return principal;
    } catch (err) {
      if (err instanceof TokenError) throw unauthenticated(err.message);
      throw err;
    }
  }

  /** How many verified tokens are remembered (for tests of the bound). */
  get cachedTokens(): number {
    return this.cache.size;
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

const KEY_SETTINGS = ["AUTH_JWKS", "AUTH_JWKS_FILE", "AUTH_PUBLIC_KEYS"] as const;

/**
 * A service's token settings: the public keys, from exactly one of AUTH_JWKS
 * (a JWK set as JSON), AUTH_JWKS_FILE (a file holding one, read at start) or
 * AUTH_PUBLIC_KEYS (kid=x pairs, the short form); AUTH_AUDIENCE (default the
 * service's own name) and AUTH_ISSUER (default DEFAULT_ISSUER).
 */
export function readAuthSettings(r: EnvReader, defaultAudience: string): AuthSettings {
  const audience = r.string("AUTH_AUDIENCE", defaultAudience);
  const issuer = r.string("AUTH_ISSUER", DEFAULT_ISSUER);
  const given = KEY_SETTINGS.filter((name) => r.optionalString(name) !== undefined);
  if (given.length !== 1) {
    r.problem(
      given.length === 0
        ? "AUTH_JWKS_FILE, AUTH_JWKS or AUTH_PUBLIC_KEYS is required: the public keys whose tokens this service accepts (npm run auth -- jwks prints the set)"
        : `set one of ${given.join(", ")}, not several`,
    );
    return { keys: [], audience, issuer };
  }
  const name = given[0];
  let parsed: { keys: JWK[]; problems: string[] };
  if (name === "AUTH_PUBLIC_KEYS") {
    parsed = parsePublicKeys(r.optionalString(name)!);
  } else if (name === "AUTH_JWKS") {
    parsed = parseJwks(r.optionalString(name)!);
  } else {
    const file = r.optionalString(name)!;
    try {
      parsed = parseJwks(readFileSync(file, "utf8"));
    } catch (err) {
      parsed = { keys: [], problems: [`cannot be read from ${file}: ${(err as Error).message}`] };
    }
  }
  for (const p of parsed.problems) r.problem(`${name}: ${p}`);
  return { keys: parsed.keys, audience, issuer };
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
