import type { envReader } from "@shop/platform/config";
import { delayedCarrier, type DelayedCarrierTimes } from "./delayed.js";
import { manualCarrier } from "./manual.js";
import { pluginProblem, type CarrierPlugin } from "./plugin.js";

export type EnvReader = ReturnType<typeof envReader>;

/** A carrier this service is built with: its name (what CARRIERS lists) and how to make its plugin. */
export interface BuiltInCarrier {
  readonly name: string;
  create(settings: CarrierSettings): CarrierPlugin;
}

/**
 * Every carrier plugin this service is built with, one line each. A new
 * carrier is a file exporting a BuiltInCarrier and a line here; CARRIERS
 * then chooses which of them a deployment runs.
 */
export const BUILT_IN_CARRIERS: readonly BuiltInCarrier[] = [
  delayedCarrier,
  manualCarrier,
];

/** How the carrier worker calls the plugins, and which ones run. */
export interface CarrierSettings {
  /** CARRIER_CALL_TIMEOUT_MS, default 5000: the longest one accept() or poll() is waited for. */
  callTimeoutMs: number;
  /** CARRIER_MAX_ATTEMPTS, default 10: failures in a row after which a shipment is parked (until ResumeShipment). */
  maxAttempts: number;
  /** CARRIER_RETRY_BASE_MS, default 500: ceiling of the first retry's delay (full jitter, doubling per failure). */
  retryBaseMs: number;
  /** CARRIER_RETRY_MAX_MS, default 60000: the longest delay between two attempts. */
  retryMaxMs: number;
  /** CARRIER_BATCH_SIZE, default 50: shipments per claim, and the most calls in flight per carrier before claims leave it out. */
  batchSize: number;
  /** CARRIER_POLL_INTERVAL_MS, default 250: the pause between polls of a shipment (unless its plugin sets its own), and of the worker's claims. */
  pollIntervalMs: number;
  /** CARRIER_LEASE_MS, default 30000: how long a claim owns its shipments; more than twice the call timeout. */
  leaseMs: number;
  /** DELAYED_CARRIER_CONFIRM_MS / _SHIP_MS / _DELIVER_MS (1000, 2000, 4000), each from the shipment's creation. */
  delayed: DelayedCarrierTimes;
  /** CARRIERS, default "delayed,manual": the built-in carriers this service runs; shipments for any other are declined. */
  enabled: string[];
  /** DEFAULT_CARRIER, default "delayed": the carrier of an order that names none; one of CARRIERS. */
  defaultCarrier: string;
}

export const CARRIER_DEFAULTS: Readonly<CarrierSettings> = Object.freeze({
  callTimeoutMs: 5_000,
  maxAttempts: 10,
  retryBaseMs: 500,
  retryMaxMs: 60_000,
  batchSize: 50,
  pollIntervalMs: 250,
  leaseMs: 30_000,
  delayed: Object.freeze({ confirmMs: 1_000, shipMs: 2_000, deliverMs: 4_000 }),
  enabled: ["delayed", "manual"],
  defaultCarrier: "delayed",
});

/** The rules between settings that single ranges cannot express; empty when the settings are usable. */
export function carrierSettingsProblems(s: CarrierSettings): string[] {
  return [...timingProblems(s), ...choiceProblems(s)];
}

function timingProblems(s: CarrierSettings): string[] {
  const problems: string[] = [];
  if (s.leaseMs <= 2 * s.callTimeoutMs) {
    problems.push(
      `CARRIER_LEASE_MS=${s.leaseMs} must exceed twice CARRIER_CALL_TIMEOUT_MS=${s.callTimeoutMs} ` +
        "(a call, recording its reports and settling must all end within the lease, or another worker may call the carrier for the same shipment at once)",
    );
  }
  if (s.retryMaxMs < s.retryBaseMs) {
    problems.push(`CARRIER_RETRY_MAX_MS=${s.retryMaxMs} must not be below CARRIER_RETRY_BASE_MS=${s.retryBaseMs}`);
  }
  const { confirmMs, shipMs, deliverMs } = s.delayed;
  if (!(confirmMs <= shipMs && shipMs <= deliverMs)) {
    problems.push(
      `DELAYED_CARRIER_CONFIRM_MS=${confirmMs}, DELAYED_CARRIER_SHIP_MS=${shipMs} and DELAYED_CARRIER_DELIVER_MS=${deliverMs} ` +
        "must not decrease (a shipment is confirmed, then shipped, then delivered)",
    );
  }
  return problems;
}

function choiceProblems(s: CarrierSettings): string[] {
  if (s.enabled.length === 0) return ["CARRIERS must name at least one carrier"];
  if (!s.enabled.includes(s.defaultCarrier)) {
    return [`DEFAULT_CARRIER=${s.defaultCarrier} is not among CARRIERS=${s.enabled.join(",")}: set DEFAULT_CARRIER to one of them`];
  }
  return [];
}

/**
 * Reads CARRIERS, DEFAULT_CARRIER, CARRIER_* and DELAYED_CARRIER_* into `r`
 * without finishing it: every problem (an unknown name in CARRIERS, a
 * DEFAULT_CARRIER not among them, a bad number) is recorded on the reader,
 * so the caller's r.finish() names them all at once.
 */
export function readCarrierSettings(r: EnvReader): CarrierSettings {
  const d = CARRIER_DEFAULTS;
  const builtIn = BUILT_IN_CARRIERS.map((c) => c.name);
  const listed = r
    .string("CARRIERS", d.enabled.join(","))
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name !== "");
  const enabled: string[] = [];
  for (const name of listed) {
    if (!builtIn.includes(name)) {
      r.problem(`CARRIERS names ${JSON.stringify(name)}, which is not a carrier this service has (it has: ${builtIn.join(", ")})`);
    } else if (!enabled.includes(name)) {
      enabled.push(name);
    }
  }
  const dayMs = 86_400_000;
  const settings: CarrierSettings = {
    callTimeoutMs: r.int("CARRIER_CALL_TIMEOUT_MS", d.callTimeoutMs, { min: 10, max: 600_000 }),
    maxAttempts: r.int("CARRIER_MAX_ATTEMPTS", d.maxAttempts, { min: 1, max: 1_000_000 }),
    retryBaseMs: r.int("CARRIER_RETRY_BASE_MS", d.retryBaseMs, { min: 1, max: 3_600_000 }),
    retryMaxMs: r.int("CARRIER_RETRY_MAX_MS", d.retryMaxMs, { min: 1, max: dayMs }),
    batchSize: r.int("CARRIER_BATCH_SIZE", d.batchSize, { min: 1, max: 1_000 }),
    pollIntervalMs: r.int("CARRIER_POLL_INTERVAL_MS", d.pollIntervalMs, { min: 1, max: 3_600_000 }),
    leaseMs: r.int("CARRIER_LEASE_MS", d.leaseMs, { min: 100, max: 3_600_000 }),
    delayed: {
      confirmMs: r.int("DELAYED_CARRIER_CONFIRM_MS", d.delayed.confirmMs, { min: 0, max: 30 * dayMs }),
      shipMs: r.int("DELAYED_CARRIER_SHIP_MS", d.delayed.shipMs, { min: 0, max: 30 * dayMs }),
      deliverMs: r.int("DELAYED_CARRIER_DELIVER_MS", d.delayed.deliverMs, { min: 0, max: 30 * dayMs }),
    },
    enabled,
    defaultCarrier: r.string("DEFAULT_CARRIER", d.defaultCarrier),
  };
  // An unknown name in CARRIERS is reported above; the choice is judged on the names that are known.
  const choice = listed.length === 0 || enabled.length > 0 ? choiceProblems(settings) : [];
  for (const problem of [...choice, ...timingProblems(settings)]) r.problem(problem);
  return settings;
}

/** The carrier plugins this process runs, by name. */
export class CarrierRegistry {
  private readonly plugins: ReadonlyMap<string, CarrierPlugin>;

  constructor(
    plugins: CarrierPlugin[],
    readonly defaultCarrier: string,
  ) {
    const byName = new Map<string, CarrierPlugin>();
    for (const plugin of plugins) {
      const problem = pluginProblem(plugin);
      if (problem) throw new Error(problem);
      if (byName.has(plugin.name)) throw new Error(`two carrier plugins are named ${plugin.name}`);
      byName.set(plugin.name, plugin);
    }
    if (!byName.has(defaultCarrier)) {
      throw new Error(`the default carrier ${JSON.stringify(defaultCarrier)} is not among the carriers run here (${[...byName.keys()].join(", ")})`);
    }
    this.plugins = byName;
  }

  /** A carrier shipments may be created for: one this process runs. Others are declined (UNKNOWN_CARRIER). */
  isKnown(name: string): boolean {
    return this.plugins.has(name);
  }

  get(name: string): CarrierPlugin | undefined {
    return this.plugins.get(name);
  }

  /** The names of the carriers run here, in registration order. */
  names(): string[] {
    return [...this.plugins.keys()];
  }

  /** Whether CarrierService may report for shipments of this carrier (false for a carrier not run here). */
  takesRpcReports(name: string): boolean {
    return this.plugins.get(name)?.takesRpcReports === true;
  }
}

/**
 * The registry of the built-in carriers named in settings.enabled, plus
 * `extra` plugins (tests inject theirs; they run whatever CARRIERS says).
 * Throws on a plugin with a bad or repeated name, or a default carrier that
 * is not among them: settings from readCarrierSettings never cause either.
 */
export function createCarrierRegistry(settings: CarrierSettings, extra: CarrierPlugin[] = []): CarrierRegistry {
  const plugins: CarrierPlugin[] = [];
  for (const name of settings.enabled) {
    const builtIn = BUILT_IN_CARRIERS.find((c) => c.name === name);
    if (!builtIn) throw new Error(`no built-in carrier is named ${JSON.stringify(name)} (CARRIERS)`);
    const plugin = builtIn.create(settings);
    if (plugin.name !== builtIn.name) throw new Error(`the built-in carrier ${builtIn.name} made a plugin named ${plugin.name}`);
    plugins.push(plugin);
  }
  return new CarrierRegistry([...plugins, ...extra], settings.defaultCarrier);
}
