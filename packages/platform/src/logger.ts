import { pino, type Logger } from "pino";

export type { Logger };

/**
 * JSON lines on stdout by default; LOG_FORMAT=pretty for people reading a
 * terminal. LOG_LEVEL sets the level (default info).
 */
export function createLogger(service: string): Logger {
  const pretty = process.env.LOG_FORMAT === "pretty";
  return pino({
    level: process.env.LOG_LEVEL ?? "info",
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    transport: pretty
      ? { target: "pino-pretty", options: { translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname", sync: true } }
      : undefined,
  });
}
