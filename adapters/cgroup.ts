import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { errorMessage } from '../runtime/errors.js';

const ROOT = '/sys/fs/cgroup';
const PERIOD_US = 100_000;
/** QEMU's own memory beyond the guest's. */
const OVERHEAD_BYTES = 256 * 1024 * 1024;

export interface CgroupLimits {
  readonly vcpus: number;
  readonly memoryMiB: number;
}

/** Whether cgroup v2 with the cpu and memory controllers is here, and if not, why. */
export function cgroupSupport(root = ROOT): { ok: true } | { ok: false; why: string } {
  const controllers = join(root, 'cgroup.controllers');
  if (!existsSync(controllers)) return { ok: false, why: `${root} is not a cgroup v2 hierarchy` };
  const available = readFileSync(controllers, 'utf8').trim().split(/\s+/);
  const missing = ['cpu', 'memory'].filter((name) => !available.includes(name));
  if (missing.length > 0) return { ok: false, why: `cgroup v2 has no ${missing.join(' or ')} controller here` };
  return { ok: true };
}

/**
 * Puts a VMM container (and what it starts later) in `acp/<node>/<id>` with CPU and memory limits
 * from the system's size. Returns why not, when the host does not allow it.
 */
export function limitProcess(pid: number, node: string, id: string, limits: CgroupLimits, root = ROOT): { ok: true; path: string } | { ok: false; why: string } {
  const support = cgroupSupport(root);
  if (!support.ok) return support;
  try {
    let path = root;
    for (const part of ['acp', node, id]) {
      // Controllers are handed down level by level.
      writeFileSync(join(path, 'cgroup.subtree_control'), '+cpu +memory');
      path = join(path, part);
      mkdirSync(path, { recursive: true });
    }
    writeFileSync(join(path, 'cpu.max'), `${limits.vcpus * PERIOD_US} ${PERIOD_US}`);
    writeFileSync(join(path, 'memory.max'), String(limits.memoryMiB * 1024 * 1024 + OVERHEAD_BYTES));
    writeFileSync(join(path, 'cgroup.procs'), String(pid));
    return { ok: true, path };
  } catch (error) {
    return { ok: false, why: `cannot set up a cgroup under ${root}: ${errorMessage(error)}` };
  }
}

/** Removes a system's cgroup once its processes are gone (best effort). */
export function releaseCgroup(node: string, id: string, root = ROOT): void {
  try {
    rmdirSync(join(root, 'acp', node, id));
  } catch {
    // Still busy or never made.
  }
}
