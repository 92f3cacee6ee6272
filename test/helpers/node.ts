import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';
import { connect, type AcpClient } from '../../node/client.js';
import { Daemon } from '../../node/daemon.js';
import { killHomeGuests } from '../../adapters/drivers/qemu.js';
import type { LogLevel } from '../../runtime/logger.js';
import type { NodeStatus } from '../../runtime/services.js';

export const CLI = fileURLToPath(new URL('../../cli/acp.js', import.meta.url));

export interface HomeOptions {
  cluster?: string;
  node?: string;
  services?: Record<string, { isolation?: 'inline' | 'thread' | 'process'; maxRestarts?: number; withinMs?: number }>;
  api?: { maxFrameBytes?: number; helloTimeoutMs?: number; maxConnections?: number; maxWatches?: number; maxAsksInFlight?: number };
  failedRetryMs?: number;
  /** Stats collection; off (0) unless a test asks for it: dozens of test daemons need not all run it every second. */
  statsMs?: number;
}

/**
 * A fresh home directory with a config whose web UI takes an ephemeral port (tests run side by
 * side). Removed after the test, once any daemon on it is down.
 */
export function makeHome(t: ExecutionContext, options: HomeOptions = {}): string {
  const home = mkdtempSync(join(tmpdir(), 'acp-test-'));
  mkdirSync(home, { recursive: true });
  const config = {
    cluster: options.cluster ?? 'lab',
    node: options.node ?? 'n1',
    webapi: { host: '127.0.0.1', port: 0 },
    services: options.services ?? {},
    ...(options.api ? { api: options.api } : {}),
    ...(options.failedRetryMs ? { failedRetryMs: options.failedRetryMs } : {}),
    statsMs: options.statsMs ?? 0,
  };
  writeFileSync(join(home, 'config.json'), JSON.stringify(config));
  t.teardown(async () => {
    const pid = readPid(home);
    await runCli(['down'], home, 30_000).catch(() => undefined);
    // Whatever happened in the test, no daemon outlives it, and no guest (they outlive daemons).
    if (pid !== undefined && isAlive(pid)) process.kill(pid, 'SIGKILL');
    killHomeGuests(home);
    rmSync(home, { recursive: true, force: true });
  });
  return home;
}

function readPid(home: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(join(home, 'run', 'acpd.pid'), 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a process with this pid exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `acp` command against a home. */
export function runCli(args: readonly string[], home: string, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, '--home', home, ...args], { timeout: timeoutMs, env: { ...process.env, ACP_HOME: '' } }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Starts a daemon inside the test process (faster than a detached one); stopped after the test. */
export async function startDaemon(t: ExecutionContext, home: string, options: { faults?: boolean; logLevel?: LogLevel; watchdog?: string } = {}): Promise<Daemon> {
  const daemon = await Daemon.start({ home, faults: options.faults ?? false, logLevel: options.logLevel ?? 'silent', ...(options.watchdog === undefined ? {} : { watchdog: options.watchdog }) });
  t.teardown(() => daemon.stop('test over'));
  return daemon;
}

/** A client on the home's socket; closed after the test. */
export async function client(t: ExecutionContext, home: string): Promise<AcpClient> {
  const connection = await connect({ home });
  t.teardown(() => connection.close());
  return connection;
}

/** Polls `check` until it returns a value (not undefined), or fails after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

export function removeHome(home: string): void {
  rmSync(home, { recursive: true, force: true });
}

/** Daemon.start returns once the Framework runs; the services boot behind it. Resolves when all run. */
export function allRunning(daemon: Daemon, timeoutMs = 20_000): Promise<NodeStatus> {
  return eventually(
    () => {
      const status = daemon.status();
      return !status.booting && status.services.every((entry) => entry.state === 'running') ? status : undefined;
    },
    timeoutMs,
    'every service to run',
  );
}
