import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ensureHome, readPidfile } from '../adapters/home.js';
import { isDaemonProcess, isProcessAlive } from '../adapters/process.js';
import { connect } from '../node/client.js';
import { homePaths } from '../runtime/config.js';
import { checkHomeFree, Daemon } from '../node/daemon.js';
import { AcpError } from '../runtime/errors.js';
import type { LogFormat, LogLevel } from '../runtime/logger.js';
import type { NodeStatus } from '../runtime/services.js';

export interface UpOptions {
  home: string;
  cluster?: string;
  node?: string;
  faults: boolean;
  logLevel?: LogLevel;
  logFile?: string;
  logFormat?: LogFormat;
  webPort?: number;
  webBind?: string;
}

/** What a person sees when the node is up in the foreground. */
export interface UpSummary {
  cluster: string;
  node: string;
  pid: number;
  socket: string;
  /** The web UI, once the webapi service runs (undefined if it did not come up). */
  web: string | undefined;
  failed: readonly string[];
}

export function formatUpSummary(summary: UpSummary): string {
  const lines = [
    `acpd is running: node ${summary.node} of cluster ${summary.cluster} (pid ${summary.pid})`,
    `  socket  ${summary.socket}`,
    `  web     ${summary.web ?? 'not running (see the log below)'}`,
    ...(summary.failed.length > 0 ? [`  failed  ${summary.failed.join(', ')}: acp status says why; the daemon retries them`] : []),
    '  next    in another terminal: acp status, acp system create dev1 --driver sim && acp system start dev1, acp logs --follow',
    'Ctrl-C stops it.',
  ];
  return `${lines.join('\n')}\n`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Once the node has booted (or after 30 s): what to tell the person who started it. */
async function summaryOf(daemon: Daemon): Promise<UpSummary> {
  const deadline = Date.now() + 30_000;
  while (daemon.status().booting && Date.now() < deadline) await sleep(50);
  const status = daemon.status();
  const web = await daemon.system
    .ask(daemon.system.localPath('webapi'), { type: 'webapi.address' }, { timeoutMs: 2000 })
    .then((reply) => (typeof reply['url'] === 'string' ? reply['url'] : undefined), () => undefined);
  return {
    cluster: status.cluster,
    node: status.node,
    pid: status.pid,
    socket: status.socket,
    web,
    failed: status.services.filter((service) => service.state === 'failed').map((service) => service.name),
  };
}

/** Runs the daemon in this process until SIGINT/SIGTERM (or `acp down`); returns the exit code. */
export async function runForeground(options: UpOptions, announce: (summary: UpSummary) => void): Promise<number> {
  const daemon = await Daemon.start(options);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) process.exit(130);
    daemon.log.info({ signal }, 'signal received');
    void daemon.stop(`signal ${signal}`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A bug in one actor's async code must not take the node down: log it with its code and go on.
  process.on('unhandledRejection', (reason) => daemon.log.error({ code: 'ACP_ERR_INTERNAL', err: String(reason) }, 'unhandled rejection'));
  void summaryOf(daemon).then(announce);
  const { code } = await daemon.stopped;
  // Everything is stopped and flushed: a library's handle left open (a keep-alive socket, a pool
  // thread winding down) must not keep the process, and so acp down, waiting.
  setTimeout(() => process.exit(code), 300).unref();
  return code;
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Starts a detached daemon and returns once every service reports running (or one fails). */
export async function startDetached(options: UpOptions, cliArgs: readonly string[], timeoutMs = 60_000): Promise<NodeStatus> {
  const paths = homePaths(options.home);
  ensureHome(paths);
  checkHomeFree(paths);
  const logFd = openSync(paths.logFile, 'a', 0o600);
  const cli = fileURLToPath(new URL('./acp.js', import.meta.url));
  const child = spawn(process.execPath, [cli, 'up', '--home', options.home, '--log-file', paths.logFile, ...cliArgs], {
    detached: true,
    stdio: ['ignore', logFd, logFd],
    env: process.env,
  });
  closeSync(logFd);
  let exited: number | null | undefined;
  child.on('exit', (code) => {
    exited = code;
  });
  child.unref();
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited !== undefined) {
      throw new AcpError('ACP_ERR_DAEMON_START_FAILED', `acpd exited with code ${exited} while starting; last log lines:\n${tail(paths.logFile, 5)}`);
    }
    const status = await tryStatus(options.home);
    if (status) {
      const failed = status.services.find((service) => service.state === 'failed');
      if (failed) {
        // Up, or not at all: never a non-zero exit with a daemon left running.
        await stopDaemon(options.home).catch(() => undefined);
        throw new AcpError('ACP_ERR_DAEMON_START_FAILED', `service '${failed.name}' failed to start: ${failed.lastError ?? `see ${paths.logFile}`}; the daemon was stopped`);
      }
      if (!status.booting && status.services.every((service) => service.state === 'running')) return status;
    }
    await sleep(100);
  }
  await stopDaemon(options.home).catch(() => undefined);
  throw new AcpError('ACP_ERR_DAEMON_START_FAILED', `acpd did not report every service running within ${timeoutMs} ms, so it was stopped; see ${paths.logFile}`);
}

async function tryStatus(home: string): Promise<NodeStatus | undefined> {
  try {
    const client = await connect({ home });
    try {
      return await client.ask<NodeStatus>('framework', { type: 'status' }, { timeoutMs: 2000 });
    } finally {
      await client.close();
    }
  } catch {
    return undefined;
  }
}

/** Asks the daemon to stop and waits until its process is gone; false when none was running. */
export async function stopDaemon(home: string, timeoutMs = 30_000): Promise<{ wasRunning: boolean; pid?: number }> {
  const paths = homePaths(home);
  const pid = readPidfile(paths.pidfile);
  if (pid === undefined || !isDaemonProcess(pid)) {
    checkHomeFree(paths);
    return { wasRunning: false };
  }
  try {
    const client = await connect({ home });
    try {
      await client.ask('framework', { type: 'shutdown', reason: 'acp down' }, { timeoutMs: 5000 });
    } finally {
      await client.close().catch(() => undefined);
    }
  } catch {
    // The API is not answering: fall back to the signal the daemon also handles.
    process.kill(pid, 'SIGTERM');
  }
  const deadline = Date.now() + timeoutMs;
  while (isProcessAlive(pid)) {
    if (Date.now() > deadline) {
      throw new AcpError('ACP_ERR_DAEMON_RUNNING', `acpd (pid ${pid}) did not stop within ${timeoutMs} ms; kill it with 'kill -9 ${pid}'`);
    }
    await sleep(50);
  }
  return { wasRunning: true, pid };
}
