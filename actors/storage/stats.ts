/** A pool's stats on this node: its filesystem's capacity, and what the volumes living here take. */
import { allocatedBytes, type Capacity } from '../../adapters/storage/fs.js';
import type { StoragePool, StorageVolume } from '../model.js';
import { volumeLayout } from './layout.js';
import type { PoolStats } from './pools.js';

/** Each volume's image file, worked out (and checked) once: stats are collected every few seconds. */
const files = new Map<string, string>();
const MAX_CACHED = 100_000;

function fileOf(pool: StoragePool, root: string, volume: StorageVolume): string {
  const key = `${pool.type}\0${root}\0${volume.name}\0${volume.format}`;
  let file = files.get(key);
  if (file === undefined) {
    if (files.size >= MAX_CACHED) files.clear();
    file = volumeLayout(pool, root, volume).file;
    files.set(key, file);
  }
  return file;
}

export async function poolStats(pool: StoragePool, capacity: Capacity, root: string, volumes: readonly StorageVolume[]): Promise<PoolStats> {
  let volumeBytes = 0;
  for (const volume of volumes) volumeBytes += (await allocatedBytes(fileOf(pool, root, volume))) ?? 0;
  return { total: capacity.total, used: capacity.used, available: capacity.available, volumes: volumes.length, volumeBytes, at: new Date().toISOString() };
}
