import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { open, type RootDatabase } from 'lmdb';
import { AcpError, errorMessage } from '../runtime/errors.js';

/** A CDB record as stored: tombstones (deleted) stay until they are collected. */
export interface StoredRecord {
  readonly key: string;
  readonly value: unknown;
  readonly version: { readonly wall: number; readonly logical: number; readonly node: string };
  readonly origin: string;
  readonly deleted?: boolean;
}

/**
 * The CDB's persistent objects in LMDB (lmdb-js): a copy-on-write B-tree that survives a killed
 * process or a lost machine without repair. `overlappingSync` is off, so a write's promise resolves
 * only after its transaction is committed and flushed to disk: an acknowledged write is durable.
 */
export class ObjectStore {
  private constructor(
    private readonly db: RootDatabase<StoredRecord, string>,
    readonly path: string,
  ) {}

  static open(path: string): ObjectStore {
    try {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      const db = open<StoredRecord, string>({ path, overlappingSync: false, compression: false, maxReaders: 126 });
      return new ObjectStore(db, path);
    } catch (error) {
      throw new AcpError('ACP_ERR_CDB_STORE', `cannot open the store at ${path}: ${errorMessage(error)}; check the disk and the directory's permissions`);
    }
  }

  get(key: string): StoredRecord | undefined {
    return this.db.get(key);
  }

  /** Resolves once the records are durable; all of them in one transaction. */
  async write(records: readonly StoredRecord[]): Promise<void> {
    try {
      await this.db.batch(() => {
        for (const record of records) void this.db.put(record.key, record);
      });
    } catch (error) {
      throw new AcpError('ACP_ERR_CDB_STORE', `write to ${this.path} failed: ${errorMessage(error)}`);
    }
  }

  /** Records whose key starts with `prefix`, in key order, after `afterKey` (exclusive). Tombstones included. */
  range(prefix: string, afterKey: string | undefined, limit: number): StoredRecord[] {
    const start = afterKey !== undefined && afterKey >= prefix ? afterKey : prefix;
    const records: StoredRecord[] = [];
    for (const { key, value } of this.db.getRange({ start, end: `${prefix}\uffff`, exclusiveStart: afterKey !== undefined && afterKey >= prefix })) {
      if (!key.startsWith(prefix)) break;
      records.push(value);
      if (records.length >= limit) break;
    }
    return records;
  }

  /** Every record (tombstones included); for replaying versions into the clock at start. */
  *all(): Generator<StoredRecord> {
    for (const { value } of this.db.getRange({})) yield value;
  }

  remove(keys: readonly string[]): Promise<void> {
    return this.db.batch(() => {
      for (const key of keys) void this.db.remove(key);
    }).then(() => undefined);
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
