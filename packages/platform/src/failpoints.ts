/**
 * Named places where a fault test can make a process crash for real.
 * Inert unless FAILPOINTS is set, e.g.
 *   FAILPOINTS="order.mark-sent.after-commit=kill"        kill -9 itself the first time it passes there
 *   FAILPOINTS="relay.after-claim=throw@3"                throw on the 3rd pass
 *   FAILPOINTS="voucher.issue.before-commit=kill@2,relay.before-ack=throw"
 * "kill" is SIGKILL (no cleanup, no flushing: what a power cut or OOM kill does);
 * "throw" raises an error the surrounding code must survive.
 */
type Action = "kill" | "throw";

interface Armed {
  action: Action;
  /** Fire on this pass (1-based). */
  onPass: number;
  passes: number;
}

export class FailpointError extends Error {
  constructor(readonly failpoint: string) {
    super(`failpoint ${failpoint} fired`);
    this.name = "FailpointError";
  }
}

function parse(spec: string | undefined): Map<string, Armed> {
  const armed = new Map<string, Armed>();
  for (const part of (spec ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^([a-z0-9.-]+)=(kill|throw)(?:@(\d+))?$/.exec(part);
    if (!m) throw new Error(`FAILPOINTS: cannot parse ${JSON.stringify(part)} (want name=kill|throw[@pass])`);
    armed.set(m[1]!, { action: m[2] as Action, onPass: Number(m[3] ?? 1), passes: 0 });
  }
  return armed;
}

const armed = parse(process.env.FAILPOINTS);

/** Crashes or throws here when FAILPOINTS arms `name`; otherwise does nothing. */
export function failpoint(name: string): void {
  if (armed.size === 0) return;
  const fp = armed.get(name);
  if (!fp) return;
  fp.passes++;
  if (fp.passes !== fp.onPass) return;
  process.stderr.write(`failpoint ${name}: ${fp.action}\n`);
  if (fp.action === "kill") process.kill(process.pid, "SIGKILL");
  throw new FailpointError(name);
}

/** The failpoints armed in this process (for the start-up log). */
export function armedFailpoints(): string[] {
  return [...armed.keys()];
}
