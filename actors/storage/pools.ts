/**
 * What a node makes of each pool and share, decided from the wanted objects and what was
 * observed (pure: the Storage service does the observing and the doing).
 */
import { join } from 'node:path';
import type { HomePaths } from '../../runtime/config.js';
import type { StoragePool, StorageShare } from '../model.js';

export type PoolState = 'active' | 'inactive' | 'error';

/** `meta/storage/pool/<id>@<node>`. */
export interface PoolReport {
  state: PoolState;
  reason?: string;
  type: StoragePool['type'];
  path: string | null;
  shared: boolean;
  content: string[];
}

export type ShareState = 'mounted' | 'unmounted' | 'error';

/** `meta/storage/share/<id>@<node>`. */
export interface ShareReport {
  state: ShareState;
  reason?: string;
  type: StorageShare['type'];
  mountpoint: string;
}

/** `stats/storage/pool/<id>@<node>`: bytes (the monitor's storage alarm reads these names). */
export interface PoolStats {
  total: number;
  used: number;
  available: number;
  /** Volumes of the pool that live here, and the bytes their files take. */
  volumes: number;
  volumeBytes: number;
  at: string;
}

export function carriedBy(object: { nodes?: string[] | undefined }, node: string): boolean {
  return object.nodes === undefined || object.nodes.includes(node);
}

/** What of a node's home the Storage service must never mount over or put a pool in. */
export interface HomeLayout {
  readonly home: string;
  /** The daemon's own files (keys, socket, logs, store, config) and the import directory: nothing goes in them. */
  readonly own: readonly string[];
  /** Below it, shares' default mount points: it is no mount point itself. */
  readonly sharesRoot: string;
}

export function homeLayout(paths: HomePaths, importDir: string): HomeLayout {
  return { home: paths.home, own: [paths.secrets, paths.run, paths.log, paths.data, paths.config, importDir], sharesRoot: join(paths.home, 'shares') };
}

/**
 * Why `path` may not be a pool's directory or a share's mount point on a node with this home, or
 * undefined: it is the home or holds it (a mount would hide the daemon's keys and store), it is
 * or lies inside one of the home's own directories, or it is the directory of the default mount
 * points. Elsewhere in the home is fine (a share's default mount point is `<home>/shares/<name>`).
 * Paths are compared as written: a home reached through a symbolic link is not resolved here.
 */
export function homePathProblem(path: string, layout: HomeLayout): string | undefined {
  const { home, own, sharesRoot } = layout;
  if (path === home || home.startsWith(`${path}/`)) return `${path} ${path === home ? 'is' : 'holds'} this node's home (${home}); use a directory of its own outside it`;
  if (path === sharesRoot) return `${path} holds the default mount points of this node's shares; use a directory of its own`;
  const inside = own.find((dir) => path === dir || path.startsWith(`${dir}/`));
  return inside === undefined ? undefined : `${path} is ${path === inside ? '' : 'inside '}${inside}, where the node keeps its own files; use a directory of its own`;
}

/** Where a share is mounted on a node: its mountpoint, or `<home>/shares/<name>`. */
export function shareMountpoint(share: StorageShare, layout: HomeLayout): string {
  return share.mountpoint ?? join(layout.sharesRoot, share.name);
}

/** The shares this node mounts: those a pool carried here uses, and those that name this node. */
export function sharesWanted(pools: Iterable<StoragePool>, shares: ReadonlyMap<string, StorageShare>, node: string): Set<string> {
  const wanted = new Set<string>();
  for (const pool of pools) if (pool.share !== undefined && carriedBy(pool, node) && shares.has(pool.share)) wanted.add(pool.share);
  for (const share of shares.values()) if (share.nodes?.includes(node)) wanted.add(share.name);
  return wanted;
}

/** The root of a pool here: its path, or its share's mount point (undefined while the share is not mounted). */
export function poolRoot(pool: StoragePool, shares: ReadonlyMap<string, StorageShare>, shareReports: ReadonlyMap<string, ShareReport>, layout: HomeLayout): { root: string } | { why: string } {
  if (pool.path !== undefined) {
    // Checked at create against the home of the node that took it; here against this node's own.
    const misplaced = homePathProblem(pool.path, layout);
    return misplaced === undefined ? { root: pool.path } : { why: `not used on this node: ${misplaced}` };
  }
  const share = shares.get(pool.share!);
  if (!share) return { why: `its share '${pool.share}' does not exist (acp storage share ls)` };
  const report = shareReports.get(share.name);
  if (report?.state !== 'mounted') return { why: `its share '${share.name}' is not mounted here${report?.reason ? `: ${report.reason}` : ''}` };
  return { root: shareMountpoint(share, layout) };
}
