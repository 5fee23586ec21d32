import { pino } from "pino";
import { createLogger, type Logger } from "@shop/platform/logger";
import { startMetricsServer, type RunningMetricsServer } from "@shop/platform/metrics";
import { dieOnStartupError, exitOnSignals } from "@shop/platform/shutdown";
import { parseCli, UsageError, USAGE, type CliOptions } from "./cli.js";
import { loadConfig } from "./config.js";
import { Reconciler } from "./job.js";
import { ReconcilerMetrics, runRecorded } from "./metrics.js";
import { formatSummary } from "./report.js";
import { ReconcileScheduler } from "./scheduler.js";

/** A one-shot run keeps stdout for its summary or JSON report, so its logs go to stderr. */
function stderrLogger(): Logger {
  const pretty = process.env.LOG_FORMAT === "pretty";
  return pino(
    {
      level: process.env.LOG_LEVEL ?? "info",
      base: { service: "reconciler" },
      timestamp: pino.stdTimeFunctions.isoTime,
      transport: pretty
        ? { target: "pino-pretty", options: { destination: 2, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname", sync: true } }
        : undefined,
    },
    pretty ? undefined : pino.destination({ dest: 2, sync: true }),
  );
}

function exitAfterWrite(text: string, code: number): void {
  process.stdout.write(text, () => process.exit(code));
}

async function runOnce(cli: CliOptions): Promise<void> {
  const logger = stderrLogger();
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    process.stderr.write(`reconcile: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const reconciler = new Reconciler(config, logger);
  try {
    const { report, reportFile } = await reconciler.run({
      dryRun: cli.dryRun,
      since: cli.since,
      until: cli.until,
      full: cli.full,
      maxVoids: cli.maxVoids,
      maxPaymentRepairs: cli.maxPaymentRepairs,
      maxShippingRepairs: cli.maxShippingRepairs,
    });
    exitAfterWrite(cli.json ? JSON.stringify(report, null, 2) + "\n" : formatSummary(report, reportFile), report.exitCode);
  } catch (err) {
    logger.error({ err }, "reconcile run crashed");
    process.stderr.write(`reconcile: run failed: ${(err as Error).message}\n`);
    process.exit(2);
  } finally {
    reconciler.close();
  }
}

async function runScheduler(cli: CliOptions): Promise<void> {
  const logger = createLogger("reconciler");
  let config;
  let metricsServer: RunningMetricsServer | undefined;
  const metrics = new ReconcilerMetrics();
  try {
    config = loadConfig();
    await metrics.seedFromStateFile(config.stateFile);
    if (config.metricsPort !== 0) {
      metricsServer = await startMetricsServer({ host: config.metricsHost, port: config.metricsPort, registry: metrics.registry, logger });
    }
  } catch (err) {
    dieOnStartupError(logger, err);
  }
  const reconciler = new Reconciler(config, logger);
  const scheduler = new ReconcileScheduler({
    cron: config.cron,
    timezone: config.timezone,
    logger,
    run: () => runRecorded(metrics, () => reconciler.run({ dryRun: cli.dryRun })),
  });
  scheduler.start();
  exitOnSignals(logger, async () => {
    await scheduler.stop();
    reconciler.close();
    await metricsServer?.close();
  });
}

let cli: CliOptions;
try {
  cli = parseCli(process.argv.slice(2));
} catch (err) {
  if (!(err instanceof UsageError)) throw err;
  process.stderr.write(`reconcile: ${err.message}\n\n${USAGE}\n`);
  process.exit(2);
}
if (cli.help) {
  process.stdout.write(USAGE + "\n");
} else if (cli.once) {
  await runOnce(cli);
} else {
  await runScheduler(cli);
}
