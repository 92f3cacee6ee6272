import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import pino from 'pino';

export type Logger = pino.Logger;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  level: LogLevel;
  /** A file to append to (detached daemons); otherwise standard error. */
  file?: string;
  base?: Record<string, unknown>;
}

export function createLogger(options: LoggerOptions): Logger {
  const destination = options.file
    ? (mkdirSync(dirname(options.file), { recursive: true }), pino.destination({ dest: options.file, sync: true }))
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

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
