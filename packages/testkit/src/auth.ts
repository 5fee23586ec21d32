import { sign } from "node:crypto";
import {
  AUDIENCES,
  DEFAULT_ISSUER,
  newSigningKey,
  roleClaims,
  SCOPES,
  tokenHeader,
  tokenPayload,
  type AuthSettings,
  type Role,
  type SigningKey,
  type TokenClaims,
} from "@shop/platform/auth";

/**
 * One signing key per test process, made fresh at load: services started by
 * tests accept it, and tests mint whatever tokens they need with it.
 */
export const testSigningKey = newSigningKey("test-key");

/**
 * What a service started in-process by a test is given: the test key, and
 * tokens addressed to either service, so that one settings object serves the
 * order and the voucher service alike. test/security/access.test.ts starts
 * them each with its own audience, as they run in production, to test that
 * a token for one is refused at the other.
 */
export const testAuth: AuthSettings = { keys: [testSigningKey.publicJwk], audience: [AUDIENCES.orders, AUDIENCES.vouchers], issuer: DEFAULT_ISSUER };

const DAY = 86_400;

/**
 * A signed token, minted synchronously. jose signs asynchronously only, and
 * tests mint tokens in hundreds of places where a value is needed at once
 * (module constants, argument lists); the claims and header are the
 * platform's own (tokenPayload, tokenHeader), and every token made here is
 * verified by jose in the service that receives it, so a fault here fails
 * tests rather than letting anything in.
 */
export function testToken(claims: TokenClaims, key: SigningKey = testSigningKey): string {
  const part = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const input = `${part(tokenHeader(key))}.${part(tokenPayload(claims))}`;
  return `${input}.${sign(null, Buffer.from(input), key.privateKey).toString("base64url")}`;
}

/** A token of one of the roles, valid for a day and addressed as the role's are (customer tokens name their customer). */
export function roleToken(role: Role, customerId?: string): string {
  return testToken(roleClaims(role, { ttlSeconds: DAY, customerId }));
}

/**
 * A token with every scope but the customer-limited ones, for both services:
 * for tests whose subject is not access control and that play several
 * callers at once (shop backend, relay, reconciler, operator).
 */
export const allScopesToken = testToken({
  subject: "test-harness",
  scopes: Object.values(SCOPES).filter((s) => s !== SCOPES.ordersReadOwn && s !== SCOPES.vouchersReadOwn && s !== SCOPES.paymentsReadOwn),
  audience: [AUDIENCES.orders, AUDIENCES.vouchers],
  ttlSeconds: DAY,
});

/**
 * Settings for service processes: the test key (in AUTH_PUBLIC_KEYS's short
 * form; each service then expects its own default audience), and the relay's
 * and reconciler's tokens.
 */
export const testAuthEnv: Record<string, string> = {
  AUTH_PUBLIC_KEYS: `${testSigningKey.kid}=${testSigningKey.publicJwk.x}`,
  RELAY_TOKEN: roleToken("relay"),
  RECONCILE_TOKEN: roleToken("reconciler"),
};
