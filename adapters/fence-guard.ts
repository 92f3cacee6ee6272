/**
 * The daemon's side of the fence guard (fence-guard-main.ts): starts it in a process group of its
 * own, its output appended to a log file, and feeds it over a pipe. `feed` is called every second
 * by the local HA manager while the node holds its lease, with the node's HA guests' pids. Given
 * the node's run dir, the guard also starts the node's HA QEMU guests as its children (asked over
 * its socket there by the QEMU driver: fence-guard-client.ts), so that they die with it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AcpError } from '../runtime/errors.js';
import { startTimeOf } from './proc-stat.js';

const MAIN = fileURLToPath(new URL('./fence-guard-main.js', import.meta.url));

export interface FenceGuardOptions {
  /** Where the guard's events go (one JSON line each). */
  readonly logFile: string;
  /** A hardware watchdog device to keep alive while fed (e.g. /dev/watchdog); off unless given. */
  readonly watchdog?: string | undefined;
  /** The node's run dir: the guard listens on `<run>/fence-guard.sock` for HA QEMU starts (none without it). */
  readonly runDir?: string | undefined;
}

export class FenceGuard {
  private child: ChildProcess | null = null;
  /** The last feed (its deadline on the monotonic clock): a guard started anew gets it at once, armed as the one it replaces. */
  private last: { until: number; guests: { pid: number; start: string }[] } | null = null;

  constructor(private readonly options: FenceGuardOptions) {}

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  /**
   * Starts the guard (a no-op while one runs): also before an HA start, so a guard that died is
   * replaced before it is needed. Never throws: a guard that cannot start now (its log unwritable,
   * no process to be had) is tried again at the next call, and a feed meanwhile says it failed.
   */
  start(): void {
    if (this.child !== null && this.child.exitCode === null && this.child.signalCode === null) return;
    let log: number;
    try {
      log = openSync(this.options.logFile, 'a');
    } catch {
      return;
    }
    try {
      const args = [MAIN, ...(this.options.watchdog !== undefined ? ['--watchdog', this.options.watchdog] : []), ...(this.options.runDir !== undefined ? ['--run', this.options.runDir] : [])];
      // detached: a session and process group of its own, so it survives the daemon and signals to the daemon's group.
      const child = spawn(process.execPath, args, { detached: true, stdio: ['pipe', log, log] });
      child.unref();
      child.on('error', () => {
        this.child = null;
      });
      // A dead guard must not crash the daemon on write; the next feed restarts it.
      child.stdin?.on('error', () => undefined);
      this.child = child;
    } catch {
      this.child = null;
      return;
    } finally {
      closeSync(log);
    }
    const remaining = this.last === null ? 0 : Math.round(this.last.until - performance.now());
    const stdin = this.child?.stdin;
    if (this.last !== null && remaining >= 100 && stdin && !stdin.destroyed) stdin.write(`${JSON.stringify({ type: 'feed', timeoutMs: remaining, guests: this.last.guests })}\n`);
  }

  /** Feeds the guard: unless fed again within `timeoutMs`, it kills `pids` (those still the same processes). */
  feed(timeoutMs: number, pids: readonly number[]): void {
    const guests = pids.flatMap((pid) => {
      const start = startTimeOf(pid);
      return start === null ? [] : [{ pid, start }];
    });
    this.last = { until: performance.now() + timeoutMs, guests };
    this.start();
    this.write({ type: 'feed', timeoutMs, guests });
  }

  /** Stands the guard down: no HA guest to guard. */
  disarm(): void {
    this.last = null;
    if (this.child !== null) this.write({ type: 'disarm' });
  }

  /**
   * Lets go of the guard without disarming it (the daemon stops): it fires when its time is up, as
   * after a crash, since a stopped daemon renews no lease; then it exits.
   */
  release(): void {
    const child = this.child;
    this.child = null;
    child?.stdin?.end();
  }

  /**
   * Disarms and lets the guard exit (a clean daemon stop). An HA QEMU it started still running then
   * is killed: it would outlive every guard (stop the HA guests first).
   */
  async stop(): Promise<void> {
    const child = this.child;
    if (child === null) return;
    if (child.stdin !== null && !child.stdin.destroyed && child.stdin.writable) this.disarm();
    const exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    child.stdin?.end();
    await exited;
    this.child = null;
  }

  private write(line: object): void {
    const stdin = this.child?.stdin;
    if (!stdin || stdin.destroyed) throw new AcpError('ACP_ERR_HA_GUARD', `the fence guard (pid ${this.pid ?? 'none'}) cannot be fed: its pipe is closed; it restarts at the next feed`);
    stdin.write(`${JSON.stringify(line)}\n`);
  }
}
