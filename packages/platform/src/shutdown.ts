import type { Logger } from "./logger.js";

/**
 * The first SIGTERM or SIGINT runs `stop` (stop taking work, finish what is in
 * flight) and exits 0; a second signal, or stop taking longer than forceAfterMs,
 * exits 1 at once.
 */
export function exitOnSignals(logger: Logger, stop: () => Promise<void>, forceAfterMs = 20_000): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, "shutting down: finishing work in flight");
    setTimeout(() => {
      logger.error({ forceAfterMs }, "shutdown took too long: exiting");
      process.exit(1);
    }, forceAfterMs).unref();
    stop().then(
      () => {
        logger.info("stopped");
        process.exit(0);
      },
      (err) => {
        logger.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}

/** Logs a fatal start-up error plainly (a ConfigError lists every bad setting) and exits 1. */
export function dieOnStartupError(logger: Logger, err: unknown): never {
  logger.fatal({ err }, (err as Error)?.message ?? String(err));
  process.exit(1);
}
