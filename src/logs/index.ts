/**
 * Logs: one JSON line per event, `{"ts","level","msg",...fields}`, written by the server (stderr)
 * and by replicas (stdout, collected into the replica's log file by the runtime). Lines below the
 * configured level (`logLevel`, default info) are dropped. Request-scoped lines carry `request_id`
 * and `trace_id` (see src/tracing). Never pass request or response bodies, or headers, as fields:
 * bodies hold users' data and the Authorization header a secret.
 */

/** Levels from the most to the least verbose. */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFields = Record<string, unknown>;
/** Where a component sends its log lines. */
export type LogFn = (level: LogLevel, msg: string, fields?: LogFields) => void;

const RANK: Readonly<Record<LogLevel, number>> = { debug: 0, info: 1, warn: 2, error: 3 };

/** `sink`, minus the lines below `minLevel`. */
export function atLevel(minLevel: LogLevel, sink: LogFn): LogFn {
  const min = RANK[minLevel];
  return (level, msg, fields) => {
    if (RANK[level] >= min) sink(level, msg, fields);
  };
}

/** The JSON line of one event, newline included (ts, level and msg first, for people reading it). */
function formatLogLine(level: LogLevel, msg: string, fields: LogFields = {}): string {
  return JSON.stringify({ ts: new Date().toISOString(), level, msg, ...fields }) + '\n';
}

/** A logger writing JSON lines at `minLevel` and above through `write` (e.g. process.stdout's). */
export function jsonLogger(minLevel: LogLevel, write: (line: string) => void): LogFn {
  return atLevel(minLevel, (level, msg, fields) => write(formatLogLine(level, msg, fields)));
}

/** Whether `v` names a level. */
export function isLogLevel(v: unknown): v is LogLevel {
  return (LOG_LEVELS as readonly unknown[]).includes(v);
}
