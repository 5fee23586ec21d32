/** Thrown at start-up when settings are missing or malformed; names every bad setting at once. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

interface IntRange {
  min?: number;
  max?: number;
}

/**
 * Reads settings from the environment, collecting every problem instead of
 * stopping at the first; call finish() to throw them all as one ConfigError.
 */
export function envReader(env: NodeJS.ProcessEnv = process.env) {
  const problems: string[] = [];
  const raw = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === "" ? undefined : v.trim();
  };
  const int = (name: string, def: number, { min = -Infinity, max = Infinity }: IntRange = {}): number => {
    const v = raw(name);
    if (v === undefined) return def;
    if (!/^-?\d+$/.test(v)) {
      problems.push(`${name}=${JSON.stringify(v)} is not a whole number`);
      return def;
    }
    const n = Number(v);
    if (n < min || n > max) {
      problems.push(`${name}=${v} is out of range [${min}, ${max}]`);
      return def;
    }
    return n;
  };
  return {
    string(name: string, def: string): string {
      return raw(name) ?? def;
    },
    optionalString(name: string): string | undefined {
      return raw(name);
    },
    required(name: string): string {
      const v = raw(name);
      if (v === undefined) problems.push(`${name} is required`);
      return v ?? "";
    },
    int,
    port(name: string, def: number): number {
      return int(name, def, { min: 0, max: 65535 });
    },
    bool(name: string, def: boolean): boolean {
      const v = raw(name)?.toLowerCase();
      if (v === undefined) return def;
      if (["1", "true", "yes", "on"].includes(v)) return true;
      if (["0", "false", "no", "off"].includes(v)) return false;
      problems.push(`${name}=${JSON.stringify(v)} is not a boolean (true/false)`);
      return def;
    },
    oneOf<T extends string>(name: string, def: T, values: readonly T[]): T {
      const v = raw(name);
      if (v === undefined) return def;
      if (!(values as readonly string[]).includes(v)) {
        problems.push(`${name}=${JSON.stringify(v)} must be one of ${values.join(", ")}`);
        return def;
      }
      return v as T;
    },
    /** A mysql:// or mariadb:// URL; required. */
    databaseUrl(name: string): string {
      const v = raw(name);
      if (v === undefined) {
        problems.push(`${name} is required (mysql://user:password@host:port/database)`);
        return "";
      }
      checkDatabaseUrl(name, v);
      return v;
    },
    /** A mysql:// or mariadb:// URL, or undefined when unset. */
    optionalDatabaseUrl(name: string): string | undefined {
      const v = raw(name);
      if (v !== undefined) checkDatabaseUrl(name, v);
      return v;
    },
    problem(message: string): void {
      problems.push(message);
    },
    finish(): void {
      if (problems.length > 0) throw new ConfigError(problems);
    },
  };

  function checkDatabaseUrl(name: string, v: string): void {
    try {
      const u = new URL(v);
      if (!["mysql:", "mariadb:"].includes(u.protocol)) throw new Error("scheme");
      if (u.pathname.length <= 1) throw new Error("database");
    } catch {
      problems.push(`${name} must look like mysql://user:password@host:port/database`);
    }
  }
}
