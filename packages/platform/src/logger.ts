import { pino, type Logger } from "pino";

export type { Logger };

const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/**
 * JSON lines on stdout by default; LOG_FORMAT=pretty for people reading a
 * terminal. LOG_LEVEL sets the level (default info); an unknown level falls
 * back to info and says so, rather than crashing before any log is written.
 */
export function createLogger(service: string): Logger {
  const pretty = process.env.LOG_FORMAT === "pretty";
  const wanted = process.env.LOG_LEVEL?.trim().toLowerCase() || "info";
  const level = LEVELS.includes(wanted) ? wanted : "info";
  const logger = pino({
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    transport: pretty
      ? { target: "pino-pretty", options: { translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname", singleLine: true, sync: true } }
      : undefined,
  });
  if (level !== wanted) logger.warn(`LOG_LEVEL=${JSON.stringify(process.env.LOG_LEVEL)} is not one of ${LEVELS.join(", ")}; using info`);
  return logger;
}
