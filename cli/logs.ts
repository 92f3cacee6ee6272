import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import type { Argv } from 'yargs';
import { homePaths } from '../runtime/config.js';
import { AcpError } from '../runtime/errors.js';
import { LOG_LEVELS, prettyLine } from '../runtime/logger.js';
import { parseDuration } from './duration.js';
import { flagOnce, wholeNumber } from './flags.js';

interface Global {
  home: string;
  json: boolean;
}

/** pino's numbers for the level names. */
const LEVEL_NUMBERS: Readonly<Record<string, number>> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

export interface LogFilter {
  /** The lowest level shown. */
  minLevel: number;
  /** Only entries of this service (the first segment of the actor path after the node). */
  service: string | undefined;
  /** Only entries at or after this time (ms since the epoch). */
  sinceMs: number | undefined;
}

/** Whether one JSON log line passes the filter; a line that is not JSON passes only without filters. */
export function passes(line: string, filter: LogFilter): boolean {
  let entry: { level?: unknown; path?: unknown; time?: unknown };
  try {
    entry = JSON.parse(line) as typeof entry;
  } catch {
    return filter.minLevel <= LEVEL_NUMBERS.trace! && filter.service === undefined && filter.sinceMs === undefined;
  }
  if (typeof entry.level === 'number' && entry.level < filter.minLevel) return false;
  if (filter.service !== undefined) {
    const service = typeof entry.path === 'string' ? /^acp:\/\/[^/]+\/[^/]+\/([^/]+)/.exec(entry.path)?.[1] : undefined;
    if (service !== filter.service) return false;
  }
  if (filter.sinceMs !== undefined) {
    const at = typeof entry.time === 'string' ? Date.parse(entry.time) : typeof entry.time === 'number' ? entry.time : Number.NaN;
    if (!(at >= filter.sinceMs)) return false;
  }
  return true;
}

/** `10m` ago, or an ISO time. */
function parseSince(text: string, now: number): number {
  if (/^\d+(ms|s|m|h|d)?$/.test(text.trim())) return now - parseDuration(text);
  const at = Date.parse(text);
  if (Number.isNaN(at)) throw new AcpError('ACP_ERR_CLI_USAGE', `--since '${text}' is neither a duration (10m, 2h) nor a time (2026-11-30T12:00:00Z)`);
  return at;
}

/** Reads the file from `offset`; returns the complete lines and where the next read starts. */
function readLines(file: string, offset: number): { lines: string[]; next: number } {
  const size = statSync(file).size;
  // The file was replaced or truncated: start again from its beginning.
  const from = size < offset ? 0 : offset;
  if (size === from) return { lines: [], next: from };
  const fd = openSync(file, 'r');
  try {
    const buffer = Buffer.alloc(size - from);
    readSync(fd, buffer, 0, buffer.length, from);
    const text = buffer.toString('utf8');
    const end = text.lastIndexOf('\n');
    if (end < 0) return { lines: [], next: from };
    return { lines: text.slice(0, end).split('\n').filter((line) => line.length > 0), next: from + Buffer.byteLength(text.slice(0, end + 1)) };
  } finally {
    closeSync(fd);
  }
}

export const LOGS_DESCRIPTION = "the node's log (a detached daemon's <home>/log/acpd.log): readable, or JSON lines with --json";

export function logsOptions<T>(c: Argv<T>) {
  return c
    .option('follow', { alias: 'f', type: 'boolean', default: false, describe: 'keep printing new entries until Ctrl-C' })
    .option('service', { type: 'string', describe: 'only this service (cdb, agent, hypervisor, ...)' })
    .option('level', { choices: LOG_LEVELS.filter((level) => level !== 'silent'), default: 'info' as const, describe: 'the lowest level shown' })
    .option('since', { type: 'string', describe: 'only entries since a duration ago (10m, 2h) or a time' })
    .option('lines', { type: 'number', coerce: flagOnce('lines', wholeNumber({ min: 0 })), describe: 'at most this many entries from the end (before following)' });
}

interface LogsArgs extends Global {
  follow: boolean;
  service: string | undefined;
  level: string;
  since: string | undefined;
  lines: number | undefined;
}

/** `acp logs`: the detached daemon's log, filtered, readable on a terminal, JSON lines with --json. */
export async function showLogs(argv: LogsArgs): Promise<void> {
  const file = homePaths(argv.home).logFile;
  if (!existsSync(file)) {
    throw new AcpError('ACP_ERR_CLI_USAGE', `no log at ${file}: a detached daemon (acp up --detach) writes it; one in the foreground logs to its terminal`);
  }
  const filter: LogFilter = {
    minLevel: LEVEL_NUMBERS[argv.level] ?? 30,
    service: argv.service,
    sinceMs: argv.since === undefined ? undefined : parseSince(argv.since, Date.now()),
  };
  const show = argv.json ? (line: string) => line : prettyLine(process.stdout.isTTY === true);
  const print = (lines: readonly string[]) => {
    const chosen = lines.filter((line) => passes(line, filter)).map(show);
    if (chosen.length > 0) process.stdout.write(`${chosen.join('\n')}\n`);
  };
  let { lines, next } = readLines(file, 0);
  if (argv.lines !== undefined) lines = lines.filter((line) => passes(line, filter)).slice(-argv.lines);
  print(lines);
  if (!argv.follow) return;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      try {
        const read = readLines(file, next);
        next = read.next;
        print(read.lines);
      } catch {
        // The file is being replaced: the next tick reads it again.
      }
    }, 250);
    const stop = () => {
      clearInterval(timer);
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
