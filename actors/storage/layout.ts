/**
 * Where a pool keeps a volume, from names only (no file system here): names are checked with
 * NAME_PATTERN (no '/', never '.' or '..'), and every path is checked to stay inside its pool.
 * - `dir`: `<root>/<volume>.<format>`;
 * - `btrfs`: a subvolume `<root>/<volume>` holding `disk.<format>`, its snapshots read-only
 *   subvolume snapshots in `<root>/.snapshots/<volume>/<snapshot>`.
 */
import { join, relative, isAbsolute } from 'node:path';
import { AcpError } from '../../runtime/errors.js';
import { assertName } from '../../runtime/path.js';
import type { VolumeLayout } from '../../adapters/storage/volumes.js';
import type { StoragePool, StorageVolume } from '../model.js';

export type { VolumeLayout } from '../../adapters/storage/volumes.js';

/** Whether `path` is strictly inside `root`. */
export function inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel.length > 0 && !rel.startsWith('..') && !isAbsolute(rel);
}

function checked(root: string, path: string, what: string): string {
  if (!inside(root, path)) throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `${what} ${path} would leave its pool's directory ${root}`);
  return path;
}

export function volumeLayout(pool: Pick<StoragePool, 'name' | 'type'>, root: string, volume: Pick<StorageVolume, 'name' | 'format'>): VolumeLayout {
  assertName(volume.name, 'volume');
  const extension = volume.format;
  if (pool.type === 'btrfs') {
    const subvolume = checked(root, join(root, volume.name), `volume '${pool.name}/${volume.name}'`);
    return { subvolume, file: join(subvolume, `disk.${extension}`), snapshots: checked(root, join(root, '.snapshots', volume.name), `the snapshots of '${pool.name}/${volume.name}'`) };
  }
  return { file: checked(root, join(root, `${volume.name}.${extension}`), `volume '${pool.name}/${volume.name}'`) };
}

export function snapshotPath(layout: VolumeLayout, snapshot: string): string {
  assertName(snapshot, 'snapshot');
  if (!layout.snapshots) throw new AcpError('ACP_ERR_STORAGE_WRONG_FORMAT', 'this volume keeps its snapshots inside its image');
  return checked(layout.snapshots, join(layout.snapshots, snapshot), `snapshot '${snapshot}'`);
}

/** The id of a volume: `<pool>/<name>`. */
export function volumeId(pool: string, name: string): string {
  return `${pool}/${name}`;
}
