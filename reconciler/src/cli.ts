import { parseArgs } from "node:util";

export const USAGE = `usage: npm run reconcile -- [--once] [--dry-run] [--since <ISO time> | --full] [--until <ISO time>]
                            [--max-voids <n>] [--max-payment-repairs <n>] [--max-shipping-repairs <n>] [--json]

  (no flags)        run the scheduler (RECONCILE_CRON, default "30 2 * * *" in RECONCILE_TIMEZONE, default UTC) until SIGTERM
  --once            run one reconciliation now and exit with its code
  --dry-run         report drift, change nothing (no vouchers issued or voided, no state saved)
  --since <time>    start of the window on sent_at / issued_at, inclusive (default: end of the last
                    completed run minus RECONCILE_OVERLAP_MS; with no state file, RECONCILE_INITIAL_LOOKBACK_MS
                    before the window's end)
  --full            start the window at the beginning of time (all of history)
  --until <time>    end of the window, exclusive (default: now minus RECONCILE_GRACE_MS)
  --max-voids <n>   void at most n vouchers in this run (default RECONCILE_MAX_VOIDS, 10); vouchers are only
                    ever voided inside the window
  --max-payment-repairs <n>
                    repair the payment of at most n orders in this run (default RECONCILE_MAX_PAYMENT_REPAIRS,
                    10); with RECONCILE_PAYMENTS on
  --max-shipping-repairs <n>
                    repair the shipping of at most n orders in this run (default RECONCILE_MAX_SHIPPING_REPAIRS,
                    10); with RECONCILE_SHIPPING on
  --json            print the JSON report on stdout instead of the summary (logs go to stderr)

exit codes (--once): 0 no drift, 1 drift found and all repaired, 2 drift left unrepaired (the void cap,
the payment repair cap or the shipping repair cap reached included) or the run failed`;

export interface CliOptions {
  once: boolean;
  dryRun: boolean;
  json: boolean;
  since?: Date;
  until?: Date;
  /** The window starts at the beginning of time. */
  full: boolean;
  /** Overrides RECONCILE_MAX_VOIDS for this run. */
  maxVoids?: number;
  /** Overrides RECONCILE_MAX_PAYMENT_REPAIRS for this run. */
  maxPaymentRepairs?: number;
  /** Overrides RECONCILE_MAX_SHIPPING_REPAIRS for this run. */
  maxShippingRepairs?: number;
  help: boolean;
}

/** A command line that cannot be run; main prints it with the usage and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

function isoTime(flag: string, value: string | undefined): Date | undefined {
  if (value === undefined) return undefined;
  // Date.parse accepts far more than ISO 8601 ("1", "May 5"); insist on a date first.
  const d = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(d.getTime())) {
    throw new UsageError(`${flag} ${JSON.stringify(value)} is not an ISO 8601 time (for example 2024-05-01T00:00:00Z)`);
  }
  return d;
}

function count(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,7}$/.test(value)) throw new UsageError(`${flag} ${JSON.stringify(value.slice(0, 40))} is not a whole number from 0 to 9999999`);
  return Number(value);
}

export function parseCli(argv: string[]): CliOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        once: { type: "boolean", default: false },
        "dry-run": { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        since: { type: "string" },
        until: { type: "string" },
        full: { type: "boolean", default: false },
        "max-voids": { type: "string" },
        "max-payment-repairs": { type: "string" },
        "max-shipping-repairs": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const opts: CliOptions = {
    once: values.once === true,
    dryRun: values["dry-run"] === true,
    json: values.json === true,
    since: isoTime("--since", values.since as string | undefined),
    until: isoTime("--until", values.until as string | undefined),
    full: values.full === true,
    maxVoids: count("--max-voids", values["max-voids"] as string | undefined),
    maxPaymentRepairs: count("--max-payment-repairs", values["max-payment-repairs"] as string | undefined),
    maxShippingRepairs: count("--max-shipping-repairs", values["max-shipping-repairs"] as string | undefined),
    help: values.help === true,
  };
  const overrides = opts.maxVoids !== undefined || opts.maxPaymentRepairs !== undefined || opts.maxShippingRepairs !== undefined;
  if (!opts.once && (opts.since || opts.until || opts.json || opts.full || overrides)) {
    throw new UsageError("--since, --until, --full, --max-voids, --max-payment-repairs, --max-shipping-repairs and --json only apply to a single run: add --once");
  }
  if (opts.full && opts.since) throw new UsageError("--full and --since both set where the window starts: give one");
  if (opts.since && opts.until && opts.since >= opts.until) {
    throw new UsageError("--since must be before --until");
  }
  return opts;
}
