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
    if (!this.records.has(record.key)) this.reserve(1);
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
    for (const record of tombstones.slice(0, needed)) this.records.delete(record.key);
  }

  delete(key: string): boolean {
    this.histories.delete(key);
    return this.records.delete(key);
  }

  range(prefix: string, afterKey: string | undefined, limit: number): StoredRecord[] {
    const keys = [...this.records.keys()].filter((key) => key.startsWith(prefix) && (afterKey === undefined || key > afterKey)).sort();
    return keys.slice(0, limit).map((key) => this.records.get(key)!);
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
