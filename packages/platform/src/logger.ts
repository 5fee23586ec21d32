import { pino, type DestinationStream, type Logger } from "pino";
import { mergeTraceLogFields, traceLogFields } from "./tracing.js";

export type { Logger };

const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/**
 * JSON lines on stdout by default; LOG_FORMAT=pretty for people reading a
 * terminal. LOG_LEVEL sets the level (default info); an unknown level falls
 * back to info and says so, rather than crashing before any log is written.
 * Every line written while a span is active carries its traceId and spanId
 * (see traceLogFields in tracing.ts); lines outside a span are unchanged.
 * `destination` replaces stdout (tests that read the lines).
 */
export function createLogger(service: string, destination?: DestinationStream): Logger {
  const pretty = process.env.LOG_FORMAT === "pretty";
  const wanted = process.env.LOG_LEVEL?.trim().toLowerCase() || "info";
  const level = LEVELS.includes(wanted) ? wanted : "info";
  const options: pino.LoggerOptions = {
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin: traceLogFields,
    mixinMergeStrategy: mergeTraceLogFields,
    transport:
      pretty && !destination
        ? { target: "pino-pretty", options: { translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname", singleLine: true, sync: true } }
        : undefined,
  };
  const logger = destination ? pino(options, destination) : pino(options);
  if (level !== wanted) logger.warn(`LOG_LEVEL=${JSON.stringify(process.env.LOG_LEVEL)} is not one of ${LEVELS.join(", ")}; using info`);
  return logger;
}
