/**
 * The fault helper: a small process a daemon started with `--faults` spawns (in a session of its
 * own, so it outlives the daemon) to do to that daemon what a daemon cannot do to itself:
 *
 * - `stop PID MS START`: SIGSTOP the daemon, SIGCONT it MS later (also at once if the helper is
 *   asked to end: SIGTERM, SIGINT, SIGHUP), then exit;
 * - `kill PID START [RESTART_MS LOGFILE CWD COMMAND ARGS...]`: SIGKILL the daemon (as `kill -9`)
 *   and, with RESTART_MS, start COMMAND ARGS again RESTART_MS after the kill (detached, its output
 *   appended to LOGFILE, in CWD): the daemon's own command line, so it comes back as it was.
 *
 * START is the daemon's start time (field 22 of /proc/PID/stat): a pid recycled meanwhile is never
 * signalled. Every argument is checked; nothing runs through a shell. Each event is one JSON line
 * on stdout (the spawner appends it to a log file).
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { startTimeOf } from './proc-stat.js';

const MAX_MS = 600_000;

function say(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ at: new Date().toISOString(), pid: process.pid, helper: 'fault', ...event })}\n`);
}

function fail(why: string): never {
  say({ event: 'refused', why });
  process.exit(2);
}

function int(text: string | undefined, what: string, min: number, max: number): number {
  if (text === undefined || !/^\d{1,10}$/.test(text)) fail(`${what} must be a whole number, not ${JSON.stringify(text ?? '')}`);
  const value = Number(text);
  if (value < min || value > max) fail(`${what} must be from ${min} to ${max}, not ${value}`);
  return value;
}

/** Signals `pid` only while it is still the process that started at `start`. */
function signal(pid: number, start: string, name: NodeJS.Signals): boolean {
  if (startTimeOf(pid) !== start) return false;
  try {
    process.kill(pid, name);
    return true;
  } catch {
    return false;
  }
}

/** Gone, or a zombie nobody reaps (a detached daemon's parent has exited). */
function gone(pid: number, start: string): boolean {
  if (startTimeOf(pid) !== start) return true;
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  return false;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function stop(pid: number, ms: number, start: string): Promise<void> {
  const resume = (why: string) => {
    const done = signal(pid, start, 'SIGCONT');
    say({ event: 'continued', target: pid, why, done });
    process.exit(0);
  };
  for (const name of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(name, () => resume(`helper got ${name}`));
  if (!signal(pid, start, 'SIGSTOP')) fail(`process ${pid} is gone`);
  say({ event: 'stopped', target: pid, ms });
  await sleep(ms);
  resume('time up');
}

async function kill(pid: number, start: string, restart: { ms: number; logFile: string; cwd: string; command: string; args: string[] } | undefined): Promise<void> {
  if (!signal(pid, start, 'SIGKILL')) fail(`process ${pid} is gone`);
  const killedAt = Date.now();
  say({ event: 'killed', target: pid });
  const deadline = killedAt + 10_000;
  while (!gone(pid, start) && Date.now() < deadline) await sleep(20);
  if (!restart) return;
  await sleep(Math.max(0, killedAt + restart.ms - Date.now()));
  const log = openSync(restart.logFile, 'a', 0o600);
  try {
    const child = spawn(restart.command, restart.args, { cwd: restart.cwd, detached: true, stdio: ['ignore', log, log], env: process.env });
    child.on('error', (error) => say({ event: 'restart-failed', why: error.message }));
    child.unref();
    say({ event: 'restarted', command: restart.command, child: child.pid ?? null, afterMs: Date.now() - killedAt });
  } finally {
    closeSync(log);
  }
}

async function main(): Promise<void> {
  const [mode, ...args] = process.argv.slice(2);
  if (mode === 'stop') {
    const pid = int(args[0], 'the pid', 2, 4_194_304);
    const ms = int(args[1], 'the duration in ms', 1, MAX_MS);
    const start = args[2];
    if (start === undefined || !/^\d{1,20}$/.test(start)) fail('the start time must be digits');
    await stop(pid, ms, start);
    return;
  }
  if (mode === 'kill') {
    const pid = int(args[0], 'the pid', 2, 4_194_304);
    const start = args[1];
    if (start === undefined || !/^\d{1,20}$/.test(start)) fail('the start time must be digits');
    if (args.length === 2) {
      await kill(pid, start, undefined);
      return;
    }
    const ms = int(args[2], 'the restart delay in ms', 0, MAX_MS);
    const [logFile, cwd, command, ...rest] = args.slice(3);
    if (!logFile?.startsWith('/') || !cwd?.startsWith('/') || !command?.startsWith('/')) fail('the log file, the directory and the command must be absolute paths');
    await kill(pid, start, { ms, logFile, cwd, command, args: rest });
    return;
  }
  fail(`unknown mode ${JSON.stringify(mode ?? '')}: use stop or kill`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => fail(error instanceof Error ? error.message : String(error)),
);
