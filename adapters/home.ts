import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync, openSync, closeSync, writeSync, fsyncSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { defaultConfig, parseConfig, type HomePaths, type NodeConfig } from '../runtime/config.js';
import { AcpError } from '../runtime/errors.js';
import type { Logger } from '../runtime/logger.js';
import { assertName } from '../runtime/path.js';
import { isDaemonProcess } from './process.js';

/** Creates the home's directories with private modes (run/ and secrets/ are 0700). */
export function ensureHome(paths: HomePaths): void {
  mkdirSync(paths.home, { recursive: true, mode: 0o700 });
  for (const dir of [paths.secrets, paths.run]) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
  }
  mkdirSync(paths.log, { recursive: true, mode: 0o700 });
  mkdirSync(paths.data, { recursive: true, mode: 0o700 });
}

export function readConfig(paths: HomePaths): NodeConfig | undefined {
  if (!existsSync(paths.config)) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(paths.config, 'utf8'));
  } catch (error) {
    throw new AcpError('ACP_ERR_CONFIG_INVALID', `${paths.config} is not valid JSON (${(error as Error).message}); fix or remove it`);
  }
  return parseConfig(raw, paths.config);
}

/**
 * Loads the node's config, writing the defaults on first run. Flags may name the cluster and node
 * on first run; afterwards they must match what the home already is.
 */
export function loadOrCreateConfig(paths: HomePaths, flags: { cluster?: string; node?: string }): { config: NodeConfig; created: boolean } {
  if (flags.cluster !== undefined) assertName(flags.cluster, 'cluster');
  if (flags.node !== undefined) assertName(flags.node, 'node');
  const existing = readConfig(paths);
  if (existing) {
    for (const key of ['cluster', 'node'] as const) {
      const wanted = flags[key];
      if (wanted !== undefined && wanted !== existing[key]) {
        throw new AcpError(
          'ACP_ERR_CONFIG_MISMATCH',
          `this home (${paths.home}) belongs to ${key} '${existing[key]}', not '${wanted}'; drop --${key} or use another --home`,
        );
      }
    }
    return { config: existing, created: false };
  }
  const config = defaultConfig(flags.cluster, flags.node);
  writeFileAtomic(paths.config, `${JSON.stringify(config, null, 2)}\n`, 0o644);
  return { config, created: true };
}

/** Writes the config (validated), for `acp init` and `acp join`. */
export function writeConfig(paths: HomePaths, config: NodeConfig): void {
  writeFileAtomic(paths.config, `${JSON.stringify(config, null, 2)}\n`, 0o644);
}

/** Replaces the API key (a joining node takes the cluster's). */
export function writeApiKey(paths: HomePaths, key: string): void {
  writeFileAtomic(paths.apiKey, `${key.trim()}\n`, 0o600);
}

/** Rotated keys (acp cluster rotate-keys): each file replaced atomically, the cluster key first. */
export function installClusterKeys(paths: HomePaths, keys: { apiKey: string; clusterKey: string }): void {
  writeFileAtomic(paths.clusterKey, `${keys.clusterKey.trim()}\n`, 0o600, true);
  writeFileAtomic(paths.apiKey, `${keys.apiKey.trim()}\n`, 0o600, true);
}

/** The API key, created (32 random bytes, hex, mode 0600) if missing. */
export function loadOrCreateApiKey(paths: HomePaths): string {
  if (existsSync(paths.apiKey)) {
    chmodSync(paths.apiKey, 0o600);
    return readFileSync(paths.apiKey, 'utf8').trim();
  }
  const key = randomBytes(32).toString('hex');
  writeFileAtomic(paths.apiKey, `${key}\n`, 0o600);
  return key;
}

export function readApiKey(paths: HomePaths): string {
  try {
    return readFileSync(paths.apiKey, 'utf8').trim();
  } catch {
    throw new AcpError('ACP_ERR_DAEMON_NOT_RUNNING', `no API key at ${paths.apiKey}: this home was never started; run 'acp up' first`);
  }
}

/**
 * The daemon's incarnation: a counter kept in `<home>/data/incarnation`, one more at every start,
 * written durably before the daemon uses it. Never the wall clock, so a node whose clock stepped
 * back is not taken for an older one. A home without the file (new, wiped, or from before the
 * counter) seeds it once from the clock, so it starts above any incarnation the cluster may still
 * remember for a node of that name.
 */
export function nextIncarnation(paths: HomePaths, now: () => number = Date.now): number {
  const file = join(paths.data, 'incarnation');
  let previous = 0;
  let floor = 0;
  if (existsSync(file)) {
    const text = readFileSync(file, 'utf8').trim();
    if (!/^\d{1,15}$/.test(text)) throw new AcpError('ACP_ERR_CONFIG_INVALID', `${file} holds ${JSON.stringify(text.slice(0, 40))}, not a counter; remove it only if no other node still talks to this one's old incarnation`);
    previous = Number(text);
  } else {
    floor = now();
  }
  const next = Math.max(previous, floor) + 1;
  writeFileAtomic(file, `${next}\n`, 0o600, true);
  return next;
}

function writeFileAtomic(file: string, content: string, mode: number, durable = false): void {
  mkdirSync(dirname(file), { recursive: true });
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, content, { mode });
  chmodSync(temp, mode);
  if (durable) {
    const fd = openSync(temp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
  renameSync(temp, file);
}

/** Creates the pidfile exclusively, so two daemons racing for one home cannot both win. */
export function claimPidfile(file: string, pid: number): boolean {
  try {
    const fd = openSync(file, 'wx', 0o600);
    writeSync(fd, `${pid}\n`);
    closeSync(fd);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
}

export function readPidfile(file: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function removeFile(file: string): void {
  rmSync(file, { force: true });
}

export function secretExists(file: string): boolean {
  return existsSync(file);
}

export function readSecretFile(file: string): string {
  return readFileSync(file, 'utf8');
}

/** Refuses a second daemon on a live home; cleans what a killed one left behind. */
export function checkHomeFree(paths: HomePaths, log?: Logger): void {
  const pid = readPidfile(paths.pidfile);
  if (pid !== undefined && pid !== process.pid && isDaemonProcess(pid)) {
    throw new AcpError('ACP_ERR_DAEMON_RUNNING', `acpd already runs on ${paths.home} (pid ${pid}); stop it with 'acp down --home ${paths.home}'`);
  }
  if (pid !== undefined || existsSync(paths.pidfile)) {
    log?.info({ stalePid: pid }, 'removed the pidfile of a daemon that is gone');
    removeFile(paths.pidfile);
  }
  if (existsSync(paths.socket)) {
    log?.info({ socket: paths.socket }, 'removed a stale socket');
    removeFile(paths.socket);
  }
}
