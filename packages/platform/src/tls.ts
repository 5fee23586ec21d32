import { readFileSync } from "node:fs";
import { createPrivateKey, X509Certificate, type KeyObject } from "node:crypto";
import type { envReader } from "./config.js";

/**
 * TLS and mutual TLS as settings. Certificates and keys are PEM files read
 * once at start (a renewed certificate takes a restart); every problem with
 * them is reported at start as a config problem naming the setting, so a
 * service never comes up half-secured or fails on its first connection.
 */

type EnvReader = ReturnType<typeof envReader>;

/** What a server needs to serve TLS on both its ports. */
export interface ServerTls {
  /** PEM certificate chain, the server's own certificate first. */
  cert: Buffer;
  /** PEM private key of that certificate. */
  key: Buffer;
  /** PEM CA certificate(s): when set, every client must present a certificate signed by one of them (mTLS). */
  clientCa?: Buffer;
}

/** What a client needs for calls to https:// URLs; plain Buffers, so it fits the SDK's ClientOptions.tls as is. */
export interface ClientTls {
  /** PEM CA certificate(s) trusted for the servers' certificates; default the system's roots. */
  ca?: Buffer;
  /** PEM certificate this process presents (for servers that require mTLS). */
  cert?: Buffer;
  /** PEM private key of `cert`. */
  key?: Buffer;
}

/** The server settings an operator hardens: TLS, reflection, request size. */
export interface ServerHardening {
  tls?: ServerTls;
  /** ${prefix}_GRPC_REFLECTION, default true. */
  reflection: boolean;
  /** ${prefix}_MAX_REQUEST_BYTES, default 1 MiB. */
  maxMessageBytes: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;

/** Reads a file named by a setting; on failure records a problem naming the setting and returns undefined. */
function readPem(r: EnvReader, name: string, file: string): Buffer | undefined {
  try {
    const pem = readFileSync(file);
    if (pem.length === 0) throw new Error("the file is empty");
    return pem;
  } catch (err) {
    r.problem(`${name}=${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    return undefined;
  }
}

/** Every PEM certificate in the file, parsed; a problem naming the setting when there is none or one is broken. */
function certificates(r: EnvReader, name: string, file: string, pem: Buffer): X509Certificate[] | undefined {
  const blocks = pem.toString("latin1").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) {
    r.problem(`${name}=${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
    return undefined;
  }
  try {
    return blocks.map((b) => new X509Certificate(b));
  } catch (err) {
    r.problem(`${name}=${file} holds a certificate that cannot be parsed: ${(err as Error).message}`);
    return undefined;
  }
}

function privateKey(r: EnvReader, name: string, file: string, pem: Buffer): KeyObject | undefined {
  try {
    return createPrivateKey(pem);
  } catch (err) {
    r.problem(`${name}=${file} is not an unencrypted PEM private key: ${(err as Error).message}`);
    return undefined;
  }
}

/**
 * A certificate file and its key file, both or neither; checks that the key
 * is the certificate's, which a TLS library would otherwise report only as an
 * opaque handshake failure on the first connection.
 */
function certAndKey(r: EnvReader, certName: string, keyName: string): { cert: Buffer; key: Buffer } | undefined {
  const certFile = r.optionalString(certName);
  const keyFile = r.optionalString(keyName);
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined) {
    r.problem(`set both ${certName} and ${keyName} or neither (${certFile === undefined ? certName : keyName} is missing)`);
    return undefined;
  }
  const cert = readPem(r, certName, certFile);
  const key = readPem(r, keyName, keyFile);
  if (!cert || !key) return undefined;
  const leaf = certificates(r, certName, certFile, cert)?.[0];
  const keyObject = privateKey(r, keyName, keyFile, key);
  if (!leaf || !keyObject) return undefined;
  if (!leaf.checkPrivateKey(keyObject)) {
    r.problem(`${keyName}=${keyFile} is not the private key of the certificate in ${certName}=${certFile}`);
    return undefined;
  }
  return { cert, key };
}

/** A file of CA certificates named by a setting, or undefined when unset. */
function caFile(r: EnvReader, name: string): Buffer | undefined {
  const file = r.optionalString(name);
  if (file === undefined) return undefined;
  const pem = readPem(r, name, file);
  if (!pem) return undefined;
  return certificates(r, name, file, pem) ? pem : undefined;
}

/**
 * ${prefix}_TLS_CERT_FILE + ${prefix}_TLS_KEY_FILE (both or neither) turn TLS
 * on for both the gRPC and the Connect/HTTP port; ${prefix}_TLS_CLIENT_CA_FILE
 * additionally requires client certificates signed by that CA on both (mTLS).
 * Undefined when TLS is off (or its settings are bad: then r has the problems).
 */
export function readServerTls(r: EnvReader, prefix: string): ServerTls | undefined {
  const certName = `${prefix}_TLS_CERT_FILE`;
  const keyName = `${prefix}_TLS_KEY_FILE`;
  const clientCaName = `${prefix}_TLS_CLIENT_CA_FILE`;
  const pair = certAndKey(r, certName, keyName);
  const clientCa = caFile(r, clientCaName);
  const tlsAsked = r.optionalString(certName) !== undefined || r.optionalString(keyName) !== undefined;
  if (r.optionalString(clientCaName) !== undefined && !tlsAsked) {
    // Client certificates are only asked for inside a TLS handshake: without a server certificate there is none.
    r.problem(`${clientCaName} needs TLS on: set ${certName} and ${keyName} too`);
  }
  if (!pair) return undefined;
  return clientCa ? { ...pair, clientCa } : pair;
}

/**
 * ${prefix}_TLS_* (see readServerTls), ${prefix}_GRPC_REFLECTION (default
 * true; reflection lists every method to anyone who can connect, so switch it
 * off in production) and ${prefix}_MAX_REQUEST_BYTES (default 1 MiB, 1 KiB to
 * 16 MiB: the largest request either transport accepts).
 */
export function readServerHardening(r: EnvReader, prefix: string): ServerHardening {
  return {
    tls: readServerTls(r, prefix),
    reflection: r.bool(`${prefix}_GRPC_REFLECTION`, true),
    maxMessageBytes: r.int(`${prefix}_MAX_REQUEST_BYTES`, MiB, { min: KiB, max: 16 * MiB }),
  };
}

/**
 * TLS_CA_FILE (roots trusted for outgoing calls to https:// URLs; default the
 * system's), TLS_CLIENT_CERT_FILE + TLS_CLIENT_KEY_FILE (both or neither: the
 * certificate this process presents to servers that require mTLS).
 * Undefined when none is set. Whether a call uses TLS at all is the URL's
 * scheme: https:// does, http:// does not (see checkClientTlsUrls).
 */
export function readClientTls(r: EnvReader): ClientTls | undefined {
  const ca = caFile(r, "TLS_CA_FILE");
  const pair = certAndKey(r, "TLS_CLIENT_CERT_FILE", "TLS_CLIENT_KEY_FILE");
  if (!ca && !pair) return undefined;
  return { ...(ca ? { ca } : {}), ...(pair ?? {}) };
}

const CLIENT_TLS_SETTINGS = ["TLS_CA_FILE", "TLS_CLIENT_CERT_FILE", "TLS_CLIENT_KEY_FILE"];

/**
 * Refuses TLS_* settings that no URL would use: with only http:// URLs the
 * calls go in plaintext, and an operator who set a client certificate
 * believes they do not. Mixed schemes are allowed (TLS only to some services).
 */
export function checkClientTlsUrls(r: EnvReader, urls: Record<string, string>): void {
  const set = CLIENT_TLS_SETTINGS.filter((n) => r.optionalString(n) !== undefined);
  if (set.length === 0) return;
  const entries = Object.entries(urls);
  if (entries.some(([, url]) => url.startsWith("https://"))) return;
  const named = entries.map(([name, url]) => `${name}=${url}`).join(", ");
  r.problem(`${set.join(", ")} ${set.length === 1 ? "is" : "are"} set but no call uses TLS (${named}): use https:// URLs or drop the TLS_* settings`);
}

/** For the start-up log line: "off", "TLS" or "mTLS". */
export function serverTlsMode(tls: ServerTls | undefined): "off" | "TLS" | "mTLS" {
  return !tls ? "off" : tls.clientCa ? "mTLS" : "TLS";
}
