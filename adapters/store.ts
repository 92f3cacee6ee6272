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
      // useRecords off: msgpackr's records, without shared structures, write each value's field
      // names again as a record definition, which costs more to write and read than a plain map
      // (a third more in a test of 100,000 CDB records). Stores written with them still read.
      const db = open<StoredRecord, string>({ path, overlappingSync: false, compression: false, maxReaders: 126, encoder: { useRecords: false } });
      return new ObjectStore(db, path);
    } catch (error) {
      throw new AcpError('ACP_ERR_CDB_STORE', `cannot open the store at ${path}: ${errorMessage(error)}; check the disk and the directory's permissions`);
    }
  }

  /** Throws ACP_ERR_CDB_STORE naming the key if the record cannot be read (a damaged store). */
  get(key: string): StoredRecord | undefined {
    try {
      return this.db.get(key);
    } catch (error) {
      throw this.unreadable(key, error);
    }
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
    const options = { start, end: `${prefix}\uffff`, exclusiveStart: afterKey !== undefined && afterKey >= prefix };
    const records: StoredRecord[] = [];
    try {
      for (const { key, value } of this.db.getRange(options)) {
        if (!key.startsWith(prefix)) break;
        records.push(value);
        if (records.length >= limit) break;
      }
    } catch (error) {
      // Slow path, only on failure: read the range key by key to name the record that fails.
      for (const key of this.db.getKeys(options)) this.get(key);
      throw this.unreadable(`${prefix}…`, error);
    }
    return records;
  }

  /**
   * Every readable record (tombstones included); for replaying versions into the clock at start.
   * A record that cannot be read is passed to `unreadable` and skipped, so a damaged record does
   * not keep the CDB from starting (reading it later is an error naming it).
   */
  *all(unreadable: (key: string, error: AcpError) => void = () => undefined): Generator<StoredRecord> {
    for (const key of this.db.getKeys({})) {
      let record: StoredRecord | undefined;
      try {
        record = this.get(key);
      } catch (error) {
        unreadable(key, AcpError.from(error, 'ACP_ERR_CDB_STORE'));
        continue;
      }
      if (record) yield record;
    }
  }

  private unreadable(key: string, error: unknown): AcpError {
    return new AcpError(
      'ACP_ERR_CDB_STORE',
      `the record at ${key} in ${this.path} cannot be read (${errorMessage(error)}): the store is damaged there; delete the key (acp cdb rm) or restore the store`,
    );
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
