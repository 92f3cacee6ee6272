/** btrfs subvolumes and snapshots (btrfs-progs), and making a btrfs filesystem (mkfs.btrfs). */
import { runTool } from './run.js';

const TIMEOUT_MS = 60_000;

export async function createSubvolume(path: string): Promise<void> {
  await runTool('btrfs', ['subvolume', 'create', path], { timeoutMs: TIMEOUT_MS });
}

/** Deletes a subvolume (and nothing else: btrfs refuses a plain directory). */
export async function deleteSubvolume(path: string): Promise<void> {
  await runTool('btrfs', ['subvolume', 'delete', path], { timeoutMs: TIMEOUT_MS });
}

/** A snapshot of `source` at `target`, read-only unless `writable`. */
export async function snapshotSubvolume(source: string, target: string, writable: boolean): Promise<void> {
  await runTool('btrfs', ['subvolume', 'snapshot', ...(writable ? [] : ['-r']), source, target], { timeoutMs: TIMEOUT_MS });
}

/** Whether `path` is the top of a subvolume (btrfs subvolume show succeeds). */
export async function isSubvolume(path: string): Promise<boolean> {
  return runTool('btrfs', ['subvolume', 'show', path], { timeoutMs: TIMEOUT_MS }).then(
    () => true,
    () => false,
  );
}

/** A new btrfs filesystem on `device` (a file or block device): for tests and first setup. */
export async function makeFilesystem(device: string): Promise<void> {
  await runTool('mkfs.btrfs', ['-q', '-f', device], { timeoutMs: TIMEOUT_MS });
}
