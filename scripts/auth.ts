/**
 * `npm run auth -- <command>`: keys and tokens for the services' bearer-token
 * authentication.
 *
 *   keygen --kid <id> --out <file>      a new Ed25519 signing key (private JWK, mode 0600);
 *                                       prints the AUTH_PUBLIC_KEYS entry for it
 *   public-key --key <file>             the AUTH_PUBLIC_KEYS entry of an existing key
 *   token --key <file> --role <role> [--customer <id>] [--ttl 24h]
 *                                       a signed token; roles: shop, relay, reconciler, admin, customer
 *   --help                              the usage, on stdout
 */
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { newSigningKey, ROLE_NAMES, ROLES, signingKeyFromJwk, signingKeyToJwk, tokenForRole, type Role } from "@shop/platform/auth";

const USAGE = `usage:
  npm run auth -- keygen --kid <id> --out <file>
  npm run auth -- public-key --key <file>
  npm run auth -- token --key <file> --role <${ROLE_NAMES.join("|")}> [--customer <id>] [--ttl <n>(s|m|h|d)]
  npm run auth -- --help

--ttl defaults to 24h. npm prints the script's name and command before its output; to
get only the key entry or the token (to pipe or capture it), run npm run --silent auth -- ...`;

/** "90s", "15m", "24h", "30d" → seconds. */
export function parseTtl(text: string): number {
  const m = /^(\d+)([smhd])$/.exec(text);
  if (!m) throw new Error(`--ttl ${JSON.stringify(text)} must look like 90s, 15m, 24h or 30d`);
  const seconds = Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as "s" | "m" | "h" | "d"];
  if (seconds < 1 || seconds > 366 * 86_400) throw new Error(`--ttl ${text} must be between 1s and 366d`);
  return seconds;
}

function main(argv: string[]): void {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      kid: { type: "string" },
      out: { type: "string" },
      key: { type: "string" },
      role: { type: "string" },
      customer: { type: "string" },
      ttl: { type: "string", default: "24h" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || positionals[0] === "help") {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const need = (name: keyof typeof values): string => {
    const v = values[name];
    if (typeof v !== "string" || v === "") throw new Error(`--${name} is required\n${USAGE}`);
    return v;
  };
  switch (positionals[0]) {
    case "keygen": {
      const key = newSigningKey(need("kid"));
      writeFileSync(need("out"), signingKeyToJwk(key), { mode: 0o600, flag: "wx" });
      process.stdout.write(`${key.kid}=${key.x}\n`);
      return;
    }
    case "public-key": {
      const key = signingKeyFromJwk(readFileSync(need("key"), "utf8"));
      process.stdout.write(`${key.kid}=${key.x}\n`);
      return;
    }
    case "token": {
      const role = need("role");
      if (!(role in ROLES)) throw new Error(`--role ${role} is not one of ${ROLE_NAMES.join(", ")}`);
      const key = signingKeyFromJwk(readFileSync(need("key"), "utf8"));
      process.stdout.write(`${tokenForRole(key, role as Role, { ttlSeconds: parseTtl(values.ttl!), customerId: values.customer })}\n`);
      return;
    }
    default:
      throw new Error(USAGE);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    main(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`auth: ${(err as Error).message}\n`);
    process.exit(2);
  }
}
