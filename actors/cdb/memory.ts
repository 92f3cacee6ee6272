import { AcpError } from '../../runtime/errors.js';
import type { StoredRecord } from '../../adapters/store.js';

export interface HistoryPoint {
  readonly at: number;
  readonly value: unknown;
}

/**
 * Meta and stats: in memory, bounded in keys, with a short history per stats key (a ring of the
 * last `historyLength` values: 10 minutes at the default 1 s collection interval).
 */
export class MemoryTable {
  private readonly records = new Map<string, StoredRecord>();
  private readonly histories = new Map<string, { points: HistoryPoint[]; next: number }>();
  /**
   * The keys in order, for `range`: a sorted array, with keys added since it was last brought up
   * to date kept aside (`added`) and keys removed since then noted (`removed`); the next `range`
   * merges them in one pass instead of sorting every key for every page.
   */
  private sorted: string[] = [];
  private added: string[] = [];
  private readonly removed = new Set<string>();

  constructor(
    private readonly maxKeys: number,
    private readonly historyLength: number,
  ) {}

  get size(): number {
    return this.records.size;
  }

  get(key: string): StoredRecord | undefined {
    return this.records.get(key);
  }

  /** Throws ACP_ERR_CDB_FULL, changing nothing, unless `newKeys` more keys fit. */
  reserve(newKeys: number): void {
    if (newKeys > 0 && this.records.size + newKeys > this.maxKeys) this.evictTombstones(this.records.size + newKeys - this.maxKeys);
    if (newKeys > 0 && this.records.size + newKeys > this.maxKeys) {
      throw new AcpError('ACP_ERR_CDB_FULL', `the meta/stats table holds its limit of ${this.maxKeys} keys; delete unused keys or raise cdb.maxMemoryKeys`);
    }
  }

  put(record: StoredRecord): void {
    if (!this.records.has(record.key)) {
      this.reserve(1);
      // Removed and back before the index caught up: it is still there.
      if (!this.removed.delete(record.key)) this.added.push(record.key);
    }
    this.records.set(record.key, record);
    if (record.deleted) this.histories.delete(record.key);
    else if (record.key.startsWith('stats/')) this.remember(record.key, record.version.wall, record.value);
  }

  /**
   * Tombstones keep a deleted key from coming back through a late replicated write; when the table
   * is full they are the first to go, oldest first.
   */
  private evictTombstones(needed: number): void {
    const tombstones = [...this.records.values()].filter((record) => record.deleted).sort((a, b) => a.version.wall - b.version.wall);
    for (const record of tombstones.slice(0, needed)) this.unindex(record.key);
  }

  delete(key: string): boolean {
    this.histories.delete(key);
    return this.unindex(key);
  }

  private unindex(key: string): boolean {
    if (!this.records.delete(key)) return false;
    this.removed.add(key);
    return true;
  }

  /** Records whose key starts with `prefix`, in key order, after `afterKey` (exclusive). */
  range(prefix: string, afterKey: string | undefined, limit: number): StoredRecord[] {
    const keys = this.index();
    const from = afterKey !== undefined && afterKey >= prefix ? afterKey : prefix;
    const records: StoredRecord[] = [];
    for (let i = lowerBound(keys, from); i < keys.length && records.length < limit; i += 1) {
      const key = keys[i]!;
      if (!key.startsWith(prefix)) break;
      if (afterKey !== undefined && key <= afterKey) continue;
      records.push(this.records.get(key)!);
    }
    return records;
  }

  /** The sorted keys, brought up to date: one sort of what was added, one merge pass. */
  private index(): readonly string[] {
    if (this.added.length === 0 && this.removed.size === 0) return this.sorted;
    const added = this.added.sort();
    const removed = this.removed;
    const old = this.sorted;
    const merged: string[] = [];
    let i = 0;
    let j = 0;
    while (i < old.length || j < added.length) {
      const key = j >= added.length || (i < old.length && old[i]! < added[j]!) ? old[i++]! : added[j++]!;
      if (!removed.has(key)) merged.push(key);
    }
    this.sorted = merged;
    this.added = [];
    removed.clear();
    return merged;
  }

  /** Oldest first. */
  history(key: string): HistoryPoint[] {
    const ring = this.histories.get(key);
    if (!ring) return [];
    if (ring.points.length < this.historyLength) return [...ring.points];
    return [...ring.points.slice(ring.next), ...ring.points.slice(0, ring.next)];
  }

  private remember(key: string, at: number, value: unknown): void {
    let ring = this.histories.get(key);
    if (!ring) {
      ring = { points: [], next: 0 };
      this.histories.set(key, ring);
    }
    const point = { at, value };
    if (ring.points.length < this.historyLength) {
      ring.points.push(point);
    } else {
      ring.points[ring.next] = point;
      ring.next = (ring.next + 1) % this.historyLength;
    }
  }
}

/** The first index in `keys` (sorted) whose key is not below `key`. */
function lowerBound(keys: readonly string[], key: string): number {
  let low = 0;
  let high = keys.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (keys[middle]! < key) low = middle + 1;
    else high = middle;
  }
  return low;
}
