/**
 * The daemon's side of the fault helper (fault-helper-main.ts): `acp chaos` faults that a daemon
 * cannot do to itself (be killed as by `kill -9` and maybe come back; be frozen as by SIGSTOP for a
 * while) are done by a helper process it spawns in a session of its own. Only for a daemon started
 * with `--faults` (the caller checks). Durations are checked here; the command line a restarted
 * daemon runs is this process's own, never anything from a message.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AcpError } from '../runtime/errors.js';
import { startTimeOf } from './proc-stat.js';

const MAIN = fileURLToPath(new URL('./fault-helper-main.js', import.meta.url));
export const MAX_FAULT_MS = 600_000;

export interface FaultHelperOptions {
  /** The helper's events (one JSON line each) are appended here. */
  readonly helperLog: string;
  /** Where a restarted daemon's output goes (its stdout and stderr). */
  readonly daemonLog: string;
}

function checkMs(ms: number, what: string, min: number): void {
  if (!Number.isInteger(ms) || ms < min || ms > MAX_FAULT_MS) throw new AcpError('ACP_ERR_SCHEMA_REJECTED', `${what} must be a whole number of ms from ${min} to ${MAX_FAULT_MS}, not ${ms}`);
}

export class FaultHelper {
  constructor(private readonly options: FaultHelperOptions) {}

  /** SIGSTOPs this process now and SIGCONTs it `ms` later; returns the helper's pid. */
  stopSelf(ms: number): number {
    checkMs(ms, 'a stop', 1);
    return this.run(['stop', String(process.pid), String(ms), this.start()]);
  }

  /**
   * SIGKILLs this process; with `restartAfterMs`, starts it again that long after the kill, with
   * this process's command line (node, its flags, its script and arguments), working directory
   * and environment. Returns the helper's pid.
   */
  killSelf(restartAfterMs?: number): number {
    const args = ['kill', String(process.pid), this.start()];
    if (restartAfterMs !== undefined) {
      checkMs(restartAfterMs, 'a restart delay', 0);
      args.push(String(restartAfterMs), this.options.daemonLog, process.cwd(), process.execPath, ...process.execArgv, ...process.argv.slice(1));
    }
    return this.run(args);
  }

  private start(): string {
    const start = startTimeOf(process.pid);
    if (start === null) throw new AcpError('ACP_ERR_INTERNAL', 'cannot read this process\'s start time from /proc');
    return start;
  }

  private run(args: string[]): number {
    const log = openSync(this.options.helperLog, 'a', 0o600);
    try {
      // detached: a session of its own, so it outlives this process and a signal to its group.
      const child = spawn(process.execPath, [MAIN, ...args], { detached: true, stdio: ['ignore', log, log] });
      child.on('error', () => undefined);
      child.unref();
      if (child.pid === undefined) throw new AcpError('ACP_ERR_INTERNAL', 'the fault helper did not start');
      return child.pid;
    } finally {
      closeSync(log);
    }
  }
}
