import {
  newSigningKey,
  publicKeyFromX,
  SCOPES,
  signToken,
  tokenForRole,
  type AuthSettings,
  type Role,
} from "@shop/platform/auth";

/**
 * One signing key per test process, made fresh at load: services started by
 * tests accept it, and tests mint whatever tokens they need with it.
 */
export const testSigningKey = newSigningKey("test-key");

/** What a service started in-process by a test is given. */
export const testAuth: AuthSettings = { keys: [{ kid: testSigningKey.kid, key: publicKeyFromX(testSigningKey.x) }] };

const DAY = 86_400;

/** A token of one of the roles, valid for a day (customer tokens name their customer). */
export function roleToken(role: Role, customerId?: string): string {
  return tokenForRole(testSigningKey, role, { ttlSeconds: DAY, customerId });
}

/**
 * A token with every scope but the customer-limited ones: for tests whose
 * subject is not access control and that play several callers at once
 * (shop backend, relay, reconciler, operator).
 */
export const allScopesToken = signToken(testSigningKey, {
  subject: "test-harness",
  scopes: Object.values(SCOPES).filter((s) => s !== SCOPES.ordersReadOwn && s !== SCOPES.vouchersReadOwn),
  ttlSeconds: DAY,
});

/** Settings for service processes: the test key, and the relay's and reconciler's tokens. */
export const testAuthEnv: Record<string, string> = {
  AUTH_PUBLIC_KEYS: `${testSigningKey.kid}=${testSigningKey.x}`,
  RELAY_TOKEN: roleToken("relay"),
  RECONCILE_TOKEN: roleToken("reconciler"),
};
