import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/** A certificate and its key: the files (for TLS_* settings) and their PEM content (for clients in the test). */
export interface CertFiles {
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
}

export interface TestCerts {
  dir: string;
  /** The CA that signed server and client. */
  ca: CertFiles;
  /** For 127.0.0.1 and localhost (subject alternative names IP:127.0.0.1, DNS:localhost). */
  server: CertFiles;
  /** A client certificate signed by ca, for servers that require mTLS. */
  client: CertFiles;
  /** A CA no service trusts, and a client certificate it signed: must be refused. */
  untrustedCa: CertFiles;
  untrustedClient: CertFiles;
  /** Deletes the directory (also done when the process exits). */
  cleanup(): void;
}

/**
 * Everything openssl is told, in a config of our own: the machine's
 * openssl.cnf (which differs between distributions) plays no part.
 */
const OPENSSL_CNF = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = shop test
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
`;

const KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

function openssl(dir: string, args: string[]): void {
  try {
    execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === "ENOENT") throw new Error("the openssl command is needed to make test certificates (apt-get install openssl)");
    throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString().trim() ?? e.message}`);
  }
}

function files(dir: string, name: string): CertFiles {
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
}

function makeCa(dir: string, name: string, cn: string): CertFiles {
  openssl(dir, ["req", "-x509", "-new", ...KEY_ARGS, "-keyout", `${name}.key`, "-out", `${name}.crt`, "-days", "2", "-subj", `/CN=${cn}`, "-config", "openssl.cnf", "-extensions", "ca_ext"]);
  return files(dir, name);
}

function makeLeaf(dir: string, name: string, cn: string, ca: string, ext: "server_ext" | "client_ext"): CertFiles {
  openssl(dir, ["req", "-new", ...KEY_ARGS, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`, "-config", "openssl.cnf"]);
  openssl(dir, [
    "x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.crt`, "-CAkey", `${ca}.key`,
    "-set_serial", `0x${randomBytes(8).toString("hex")}`, "-days", "2", "-out", `${name}.crt`,
    "-extfile", "openssl.cnf", "-extensions", ext,
  ]);
  return files(dir, name);
}

/**
 * A throwaway PKI in a temp dir, made with the openssl CLI: a CA, a server
 * certificate for 127.0.0.1/localhost and a client certificate it signed,
 * plus an untrusted CA with a client certificate of its own. Valid two days.
 */
export function makeTestCerts(): TestCerts {
  const dir = mkdtempSync(path.join(tmpdir(), "shop-certs-"));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  process.once("exit", cleanup);
  try {
    writeFileSync(path.join(dir, "openssl.cnf"), OPENSSL_CNF);
    const ca = makeCa(dir, "ca", "shop test CA");
    const server = makeLeaf(dir, "server", "localhost", "ca", "server_ext");
    const client = makeLeaf(dir, "client", "relay", "ca", "client_ext");
    const untrustedCa = makeCa(dir, "untrusted-ca", "untrusted test CA");
    const untrustedClient = makeLeaf(dir, "untrusted-client", "intruder", "untrusted-ca", "client_ext");
    return { dir, ca, server, client, untrustedCa, untrustedClient, cleanup };
  } catch (err) {
    cleanup();
    throw err;
  }
}
