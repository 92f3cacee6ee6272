/**
 * Filesystem facts about pool paths: capacity (statfs), the filesystem type (statfs's f_type),
 * volumes' allocated bytes (stat), and a hung-mount-safe probe run in a worker thread with a
 * deadline: a share whose server is gone blocks the syscalls on it, which must never be the
 * daemon's own thread.
 */
import { mkdir, statfs, stat, readdir } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';

/** statfs f_type values ACP recognises. */
export const FS_MAGIC = { btrfs: 0x9123683e, fuse: 0x65735546, nfs: 0x6969, cifs: 0xff534d42, smb2: 0xfe534d42 } as const;

export interface Capacity {
  readonly total: number;
  readonly used: number;
  readonly available: number;
  readonly fsType: number;
}

/** statfs of `path`: total, used and available bytes (available to unprivileged users, like df). */
/** Makes a directory (and its parents) where a pool keeps volumes or a share is mounted. */
export async function makeDirectory(path: string, mode?: number): Promise<void> {
  await mkdir(path, { recursive: true, ...(mode === undefined ? {} : { mode }) });
}

export async function capacity(path: string): Promise<Capacity> {
  const fs = await statfs(path, { bigint: false });
  const total = fs.blocks * fs.bsize;
  const free = fs.bfree * fs.bsize;
  return { total, used: total - free, available: fs.bavail * fs.bsize, fsType: fs.type };
}

/** Bytes a file really takes on disk (allocated blocks), or null when it is not there. */
export async function allocatedBytes(path: string): Promise<number | null> {
  return stat(path).then(
    (info) => info.blocks * 512,
    () => null,
  );
}

/** The entries of a directory, or none when it is not there. */
export async function entries(path: string): Promise<string[]> {
  return readdir(path).catch(() => []);
}

const PROBE_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
try {
  const s = fs.statfsSync(workerData.path);
  fs.readdirSync(workerData.path);
  parentPort.postMessage({ ok: true, total: s.blocks * s.bsize, free: s.bfree * s.bsize, available: s.bavail * s.bsize, fsType: s.type });
} catch (error) {
  parentPort.postMessage({ ok: false, why: String(error && error.message || error) });
}
`;

/** Paths whose probe is still blocked, since when. */
const blocked = new Map<string, number>();

export type ProbeResult = { ok: true; capacity: Capacity } | { ok: false; why: string; hung: boolean };

/**
 * statfs and readdir of `path` in a worker thread, given `timeoutMs`. A worker blocked in a
 * syscall on a dead mount cannot be killed; it is left (unref'd) to end when the syscall does, and
 * the answer is `hung`. The daemon's event loop never waits on the mount.
 */
export function probePath(path: string, timeoutMs: number): Promise<ProbeResult> {
  // A probe still blocked on this path (a hung mount) is not joined by another thread each pass.
  if (blocked.has(path)) return Promise.resolve({ ok: false, hung: true, why: `${path} has not answered for ${Math.round((Date.now() - blocked.get(path)!) / 1000)} s (is the share's server gone?)` });
  return new Promise((resolve) => {
    const worker = new Worker(PROBE_SOURCE, { eval: true, workerData: { path } });
    worker.unref();
    let settled = false;
    const settle = (result: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const timer = setTimeout(() => {
      blocked.set(path, Date.now() - timeoutMs);
      worker.once('exit', () => blocked.delete(path));
      settle({ ok: false, hung: true, why: `${path} did not answer within ${timeoutMs} ms (is the share's server gone?)` });
      // terminate() waits for the blocked syscall; asked for anyway so the thread goes when it can.
      void worker.terminate();
    }, timeoutMs);
    timer.unref();
    worker.once('message', (message: { ok: boolean; total?: number; free?: number; available?: number; fsType?: number; why?: string }) => {
      if (message.ok) settle({ ok: true, capacity: { total: message.total!, used: message.total! - message.free!, available: message.available!, fsType: message.fsType! } });
      else settle({ ok: false, hung: false, why: message.why ?? 'unknown' });
      void worker.terminate();
    });
    worker.once('error', (error) => settle({ ok: false, hung: false, why: error.message }));
  });
}
