/**
 * `npm run auth -- <command>`: keys and tokens for the services' bearer-token
 * authentication.
 *
 *   keygen --kid <id> --out <file>      a new Ed25519 signing key (private JWK, mode 0600);
 *                                       prints the AUTH_PUBLIC_KEYS entry for it
 *   public-key --key <file>             the AUTH_PUBLIC_KEYS entry of an existing key
 *   jwks --key <file> [--key <file>…]   the services' JWK set (AUTH_JWKS, AUTH_JWKS_FILE) of
 *                                       these keys' public halves; several during a rotation
 *   token --key <file> --role <role> [--customer <id>] [--ttl 24h] [--aud <a,b>] [--iss <issuer>]
 *                                       a signed token; roles: shop, relay, payment-relay,
 *                                       reconciler, admin, customer; aud defaults to the
 *                                       services the role calls
 *   --help                              the usage, on stdout
 */
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import {
  DEFAULT_ISSUER,
  jwksJson,
  newSigningKey,
  ROLE_NAMES,
  roleAudience,
  ROLES,
  signingKeyFromJwk,
  signingKeyToJwk,
  tokenForRole,
  type Role,
} from "@shop/platform/auth";

/** The audience table's first column: the longest role name and a space. */
const ROLE_WIDTH = Math.max(...ROLE_NAMES.map((r) => r.length)) + 1;

const USAGE = `usage:
  npm run auth -- keygen --kid <id> --out <file>
  npm run auth -- public-key --key <file>
  npm run auth -- jwks --key <file> [--key <file>...]
  npm run auth -- token --key <file> --role <${ROLE_NAMES.join("|")}> [--customer <id>] [--ttl <n>(s|m|h|d)]
                        [--aud <service>[,<service>...]] [--iss <issuer>]
  npm run auth -- --help

--ttl defaults to 24h; --iss to ${DEFAULT_ISSUER}; --aud to the services the role calls:
${ROLE_NAMES.map((r) => `  ${r.padEnd(ROLE_WIDTH)}${roleAudience(r).join(", ")}`).join("\n")}
npm prints the script's name and command before its output; to get only the key entry,
the set or the token (to pipe or capture it), run npm run --silent auth -- ...`;

/** "90s", "15m", "24h", "30d" → seconds. */
export function parseTtl(text: string): number {
  const m = /^(\d+)([smhd])$/.exec(text);
  if (!m) throw new Error(`--ttl ${JSON.stringify(text)} must look like 90s, 15m, 24h or 30d`);
  const seconds = Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as "s" | "m" | "h" | "d"];
  if (seconds < 1 || seconds > 366 * 86_400) throw new Error(`--ttl ${text} must be between 1s and 366d`);
  return seconds;
}

async function main(argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      kid: { type: "string" },
      out: { type: "string" },
      key: { type: "string", multiple: true },
      role: { type: "string" },
      customer: { type: "string" },
      ttl: { type: "string", default: "24h" },
      aud: { type: "string" },
      iss: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || positionals[0] === "help") {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const need = (name: Exclude<keyof typeof values, "key">): string => {
    const v = values[name];
    if (typeof v !== "string" || v === "") throw new Error(`--${name} is required\n${USAGE}`);
    return v;
  };
  const keyFiles = values.key ?? [];
  /** The one signing key a command uses. */
  const oneKey = () => {
    if (keyFiles.length !== 1) throw new Error(`give one --key\n${USAGE}`);
    return signingKeyFromJwk(readFileSync(keyFiles[0], "utf8"));
  };
  switch (positionals[0]) {
    case "keygen": {
      const key = newSigningKey(need("kid"));
      writeFileSync(need("out"), signingKeyToJwk(key), { mode: 0o600, flag: "wx" });
      process.stdout.write(`${key.kid}=${key.publicJwk.x}\n`);
      return;
    }
    case "public-key": {
      const key = oneKey();
      process.stdout.write(`${key.kid}=${key.publicJwk.x}\n`);
      return;
    }
    case "jwks": {
      if (keyFiles.length === 0) throw new Error(`--key is required\n${USAGE}`);
      const keys = keyFiles.map((f) => signingKeyFromJwk(readFileSync(f, "utf8")));
      const kids = keys.map((k) => k.kid);
      const twice = kids.find((kid, i) => kids.indexOf(kid) !== i);
      if (twice) throw new Error(`two keys have the key id ${twice}: each key of a set needs its own`);
      process.stdout.write(jwksJson(keys.map((k) => k.publicJwk)));
      return;
    }
    case "token": {
      const role = need("role");
      if (!(role in ROLES)) throw new Error(`--role ${role} is not one of ${ROLE_NAMES.join(", ")}`);
      const key = oneKey();
      const audience = values.aud?.split(",").map((a) => a.trim()).filter(Boolean);
      if (audience !== undefined && audience.length === 0) throw new Error("--aud names no service");
      const token = await tokenForRole(key, role as Role, {
        ttlSeconds: parseTtl(values.ttl!),
        customerId: values.customer,
        audience,
        issuer: values.iss,
      });
      process.stdout.write(`${token}\n`);
      return;
    }
    default:
      throw new Error(USAGE);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).catch((err) => {
    process.stderr.write(`auth: ${(err as Error).message}\n`);
    process.exit(2);
  });
}
