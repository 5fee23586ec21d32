/**
 * Certificates for the gateway of the local stack (npm start): a CA of its
 * own, made once, and a server certificate for localhost and 127.0.0.1 signed
 * by it, renewed when it has less than a week left. Made with the openssl CLI,
 * as the README's TLS section shows. Clients trust ca.crt (buf curl --cacert,
 * curl --cacert, the SDK's tls.ca).
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface LocalCertificates {
  caFile: string;
  certFile: string;
  keyFile: string;
}

const EXTENSIONS = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = shop gateway
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
[server]
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
extendedKeyUsage = serverAuth
`;

function openssl(args: string[], cwd: string): void {
  const r = spawnSync("openssl", args, { cwd, encoding: "utf8" });
  if (r.error) throw new Error(`openssl could not run (${r.error.message}); install it (apt-get install -y openssl) or set GATEWAY_TLS=false`);
  if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr.trim()}`);
}

/** Whether the certificate exists and is valid for at least another week. */
function fresh(certFile: string, cwd: string): boolean {
  if (!existsSync(certFile)) return false;
  return spawnSync("openssl", ["x509", "-checkend", String(7 * 86_400), "-noout", "-in", certFile], { cwd }).status === 0;
}

/** Makes (or keeps) the local CA and the gateway's server certificate in dir. */
export function localCertificates(dir: string): LocalCertificates {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const files = { caFile: path.join(dir, "ca.crt"), certFile: path.join(dir, "server.crt"), keyFile: path.join(dir, "server.key") };
  writeFileSync(path.join(dir, "tls.cnf"), EXTENSIONS);
  const key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  if (!fresh(files.caFile, dir) || !existsSync(path.join(dir, "ca.key"))) {
    openssl(["req", "-x509", ...key, "-days", "825", "-subj", "/CN=shop local CA", "-keyout", "ca.key", "-out", "ca.crt", "-config", "tls.cnf", "-extensions", "ca"], dir);
  } else if (fresh(files.certFile, dir)) {
    return files;
  }
  openssl(["req", "-new", ...key, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr", "-config", "tls.cnf"], dir);
  openssl(
    ["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "90", "-out", "server.crt", "-extfile", "tls.cnf", "-extensions", "server"],
    dir,
  );
  return files;
}
