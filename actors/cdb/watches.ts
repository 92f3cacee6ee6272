import type { StoredRecord } from '../../adapters/store.js';
import type { ActorRef } from '../../runtime/actor.js';
import { adminOnly, view, type CdbEvent, type CdbSnapshot, type RecordView } from './schema.js';

const SNAPSHOT_CHUNK = 500;

interface Watcher {
  readonly id: number;
  readonly prefix: string;
  /** The subscriber may read the admin-only records (ADMIN_ONLY_PREFIXES); others never get them. */
  readonly admin: boolean;
  readonly subscriber: ActorRef;
  readonly unwatch: () => void;
  seq: number;
}

/**
 * The CDB's watchers: each gets its prefix's snapshot in chunks, then every change under it, in
 * commit order, numbered 1, 2, 3, ... without gaps. Used only from the CDB's `receive` and its
 * commit pipeline.
 */
export class WatchTable {
  private readonly watchers = new Map<number, Watcher>();
  private nextId = 1;

  get size(): number {
    return this.watchers.size;
  }

  /** Registers a watcher and sends it the snapshot (already left without what it may not read); `unwatch` cancels the death watch on its subscriber. */
  add(prefix: string, admin: boolean, subscriber: ActorRef, unwatch: () => void, snapshot: readonly RecordView[]): number {
    const id = this.nextId++;
    this.watchers.set(id, { id, prefix, admin, subscriber, unwatch, seq: 0 });
    for (let start = 0; start === 0 || start < snapshot.length; start += SNAPSHOT_CHUNK) {
      const chunk: CdbSnapshot = { type: 'cdb.snapshot', watch: id, records: snapshot.slice(start, start + SNAPSHOT_CHUNK), done: start + SNAPSHOT_CHUNK >= snapshot.length };
      subscriber.tell(chunk);
    }
    return id;
  }

  publish(record: StoredRecord): void {
    for (const watcher of this.watchers.values()) {
      if (!record.key.startsWith(watcher.prefix) || (!watcher.admin && adminOnly(record.key))) continue;
      watcher.seq += 1;
      const event: CdbEvent = { type: 'cdb.event', watch: watcher.id, seq: watcher.seq, record: view(record) };
      watcher.subscriber.tell(event);
    }
  }

  drop(id: number): void {
    const watcher = this.watchers.get(id);
    if (!watcher) return;
    this.watchers.delete(id);
    watcher.unwatch();
  }

  /** The subscriber at `path` is gone: its watches go with it. */
  dropSubscriber(path: string): void {
    for (const watcher of [...this.watchers.values()]) if (watcher.subscriber.path === path) this.drop(watcher.id);
  }

  /** The CDB stops: every watcher is told its stream ended, and may subscribe again. */
  endAll(cdbPath: string, reason: string): void {
    for (const watcher of this.watchers.values()) {
      watcher.subscriber.tell({ type: 'watch.ended', path: cdbPath, watch: watcher.id, reason: `cdb stopped: ${reason}`, resubscribe: true });
      watcher.unwatch();
    }
    this.watchers.clear();
  }
}
