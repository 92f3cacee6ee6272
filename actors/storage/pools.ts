/**
 * What a node makes of each pool and share, decided from the wanted objects and what was
 * observed (pure: the Storage service does the observing and the doing).
 */
import { join } from 'node:path';
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

/** Where a share is mounted on a node: its mountpoint, or `<home>/shares/<name>`. */
export function shareMountpoint(share: StorageShare, home: string): string {
  return share.mountpoint ?? join(home, 'shares', share.name);
}

/** The shares this node mounts: those a pool carried here uses, and those that name this node. */
export function sharesWanted(pools: Iterable<StoragePool>, shares: ReadonlyMap<string, StorageShare>, node: string): Set<string> {
  const wanted = new Set<string>();
  for (const pool of pools) if (pool.share !== undefined && carriedBy(pool, node) && shares.has(pool.share)) wanted.add(pool.share);
  for (const share of shares.values()) if (share.nodes?.includes(node)) wanted.add(share.name);
  return wanted;
}

/** The root of a pool here: its path, or its share's mount point (undefined while the share is not mounted). */
export function poolRoot(pool: StoragePool, shares: ReadonlyMap<string, StorageShare>, shareReports: ReadonlyMap<string, ShareReport>, home: string): { root: string } | { why: string } {
  if (pool.path !== undefined) return { root: pool.path };
  const share = shares.get(pool.share!);
  if (!share) return { why: `its share '${pool.share}' does not exist (acp storage share ls)` };
  const report = shareReports.get(share.name);
  if (report?.state !== 'mounted') return { why: `its share '${share.name}' is not mounted here${report?.reason ? `: ${report.reason}` : ''}` };
  return { root: shareMountpoint(share, home) };
}
