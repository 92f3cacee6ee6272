import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { checkHomeFree, ensureHome, readPidfile } from '../adapters/home.js';
import { isDaemonProcess, isProcessAlive } from '../adapters/process.js';
import { connect } from '../node/client.js';
import { homePaths } from '../runtime/config.js';
import type { Daemon } from '../node/daemon.js';
import { AcpError } from '../runtime/errors.js';
import type { LogFormat, LogLevel } from '../runtime/logger.js';
import type { NodeStatus } from '../runtime/services.js';
import type { Message } from '../runtime/messages.js';
import { shutdownPolicyOf, SHUTDOWN_POLICY_MEANING, type NodeObject, type ShutdownPolicy } from '../actors/model.js';

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

/** How to run `acp` from another terminal: after `npm start` it is on no PATH yet. */
const ACP_HINT = `node ${fileURLToPath(new URL('acp.js', import.meta.url))} (or npm link; see README)`;

export function formatUpSummary(summary: UpSummary): string {
  const lines = [
    `acpd is running: node ${summary.node} of cluster ${summary.cluster} (pid ${summary.pid})`,
    `  socket  ${summary.socket}`,
    `  web     ${summary.web ?? 'not running (see the log below)'}`,
    ...(summary.failed.length > 0 ? [`  failed  ${summary.failed.join(', ')}: acp status says why; the daemon retries them`] : []),
    '  next    in another terminal: acp status, acp system create dev1 --driver sim && acp system start dev1',
    `  acp     ${ACP_HINT}`,
    "  logs    here, below (acp logs reads the log of a daemon started with acp up --detach)",
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
  // Loaded here, not at the top: the other commands need none of the daemon's modules.
  const { Daemon } = await import('../node/daemon.js');
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

/** How long `acp down` waits for the process: a clean stop first drains HA systems (up to 2 min for migrations). */
const STOP_WAIT_MS = 180_000;

/** Asks the daemon to stop and waits until its process is gone; false when none was running. */
export async function stopDaemon(home: string, timeoutMs = STOP_WAIT_MS): Promise<{ wasRunning: boolean; pid?: number }> {
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

/** What `acp down` leaves behind: this node's guests, and its shutdown policy for HA systems. */
export interface GuestsAtDown {
  /** QEMU guests that keep running (or were stopped, with --stop-systems). */
  guests: string[];
  /** Simulated systems: they stop with the daemon. */
  simulated: string[];
  /** Of the live systems (guests and simulated), those marked HA: the shutdown policy is about them. */
  ha: string[];
  stopped: string[];
  failed: { id: string; error: string }[];
  shutdownPolicy: ShutdownPolicy;
}

/**
 * Before `acp down`: which guests run here (and, with `stopSystems`, stops them first, each as
 * `acp system stop` would). Undefined when no daemon answers (nothing to say about its guests).
 */
export async function guestsBeforeDown(home: string, stopSystems: boolean, stopTimeoutMs = 30_000, token?: string): Promise<GuestsAtDown | undefined> {
  const paths = homePaths(home);
  const pid = readPidfile(paths.pidfile);
  if (pid === undefined || !isDaemonProcess(pid)) return undefined;
  let client: Awaited<ReturnType<typeof connect>>;
  try {
    // With --token the guests are stopped as that token's role (an auditor's is refused, and nothing stops).
    client = await connect(token === undefined ? { home } : { home, token });
  } catch (error) {
    if (token !== undefined) throw error;
    return undefined;
  }
  try {
    const status = await client.ask<Message & { systems: { id: string; driver: string; state: string }[] }>('hypervisor', { type: 'system.status' }, { timeoutMs: 5000 });
    const live = status.systems.filter((system) => system.state === 'running' || system.state === 'paused' || system.state === 'starting');
    const node = (await client.ask<NodeStatus>('framework', { type: 'status' }, { timeoutMs: 5000 })).node;
    const nodeObject = await client.ask<Message & { record: { value: NodeObject } }>('cdb', { type: 'cdb.get', key: `object/node/${node}` }, { timeoutMs: 5000 }).then((reply) => reply.record.value, () => undefined);
    const specs = await client.ask<Message & { records: { key: string; value: { ha?: boolean } }[] }>('cdb', { type: 'cdb.list', prefix: 'object/system/', limit: 10_000 }, { timeoutMs: 10_000 });
    const haIds = new Set(specs.records.filter((record) => record.value?.ha === true).map((record) => record.key.slice('object/system/'.length)));
    const guests = live.filter((system) => system.driver === 'qemu').map((system) => system.id);
    const result: GuestsAtDown = { guests, simulated: live.filter((system) => system.driver !== 'qemu').map((system) => system.id), ha: live.map((system) => system.id).filter((id) => haIds.has(id)), stopped: [], failed: [], shutdownPolicy: shutdownPolicyOf(nodeObject) };
    if (stopSystems && live.length > 0) {
      const reply = await client.ask<Message & { stopped: string[]; failed: { id: string; error: string }[] }>('hypervisor', { type: 'system.stop-all', timeoutMs: stopTimeoutMs }, { timeoutMs: stopTimeoutMs + 30_000 });
      result.stopped = reply.stopped;
      result.failed = reply.failed;
    }
    return result;
  } catch (error) {
    if (stopSystems) throw error;
    return undefined;
  } finally {
    await client.close().catch(() => undefined);
  }
}

/** The lines `acp down` prints about the guests. */
export function formatGuestsAtDown(at: GuestsAtDown, stopSystems: boolean): string {
  const lines: string[] = [];
  const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
  if (stopSystems) {
    if (at.stopped.length > 0) lines.push(`${count(at.stopped.length, 'system')} stopped first: ${at.stopped.join(', ')}`);
    for (const failure of at.failed) lines.push(`system ${failure.id} did not stop: ${failure.error}`);
  } else {
    if (at.guests.length > 0) lines.push(`${count(at.guests.length, 'guest')} keep${at.guests.length === 1 ? 's' : ''} running (${at.guests.join(', ')}); \`acp down --stop-systems\` stops them`);
    if (at.simulated.length > 0) lines.push(`${count(at.simulated.length, 'simulated system')} stopped with the daemon (${at.simulated.join(', ')}): simulated guests do not outlive it`);
  }
  if (at.ha.length > 0) lines.push(`shutdown policy ${at.shutdownPolicy} for ${count(at.ha.length, 'HA system')} (${at.ha.join(', ')}): ${SHUTDOWN_POLICY_MEANING[at.shutdownPolicy]}; \`acp logs\` says what was done`);
  return lines.map((line) => `${line}\n`).join('');
}
