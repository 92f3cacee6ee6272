import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import pino from 'pino';
import pretty from 'pino-pretty';

export type Logger = pino.Logger;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface LoggerOptions {
  level: LogLevel;
  /** A file to append to (detached daemons, always JSON lines); otherwise standard error. */
  file?: string;
  /** On standard error: JSON lines (default) or one readable line per entry (a terminal). */
  format?: LogFormat;
  base?: Record<string, unknown>;
}

export function createLogger(options: LoggerOptions): Logger {
  const destination = options.file
    ? (mkdirSync(dirname(options.file), { recursive: true }), pino.destination({ dest: options.file, sync: true }))
    : options.format === 'pretty'
      ? pretty({ ...PRETTY_OPTIONS, destination: 2, sync: true, colorize: process.stderr.isTTY === true })
      : pino.destination({ fd: 2, sync: true });
  return pino(
    {
      level: options.level,
      base: options.base ?? { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      // An API key must never reach a log line, whatever object it hides in.
      redact: { paths: ['apiKey', '*.apiKey', 'body.apiKey', 'hello.apiKey'], censor: '[redacted]' },
    },
    destination,
  );
}

/** One line per entry: time, level, the actor (its path after the node), the message, then the rest. */
export const PRETTY_OPTIONS = {
  translateTime: 'SYS:HH:MM:ss.l',
  ignore: 'pid,hostname,node,path',
  singleLine: true,
  messageFormat: (log: Record<string, unknown>, messageKey: string): string => {
    const path = typeof log.path === 'string' ? log.path.replace(/^acp:\/\/[^/]+\/[^/]+\//, '') : '';
    return `${path ? `${path}: ` : ''}${String(log[messageKey] ?? '')}`;
  },
};

/** Turns one JSON log line into the readable form (`acp logs`); a line that is not JSON is kept as it is. */
export function prettyLine(colorize: boolean): (line: string) => string {
  const format = pretty.prettyFactory({ ...PRETTY_OPTIONS, colorize });
  return (line) => {
    try {
      return format(JSON.parse(line) as Record<string, unknown>).trimEnd();
    } catch {
      return line;
    }
  };
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
