import type { StoredRecord } from '../../adapters/store.js';
import type { ActorRef } from '../../runtime/actor.js';
import { adminOnly, view, type CdbEvents, type CdbSnapshot, type RecordView } from './schema.js';

/** Records per cdb.snapshot or cdb.events message: a large merge reaches a watcher in a few messages, none of them huge. */
const WATCH_CHUNK = 500;

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
 * commit order, numbered 1, 2, 3, ... without gaps, one message per commit (in chunks): a merge
 * of 5,000 replicated records is ten messages to a watcher, not 5,000. Used only from the CDB's
 * `receive` and its commit pipeline.
 */
export class WatchTable {
  private readonly watchers = new Map<number, Watcher>();
  /** Watchers whose prefix names a collection ('object/system/...'), by that collection: a record is checked against its own collection's only. */
  private readonly byCollection = new Map<string, Set<Watcher>>();
  /** Watchers of a wider prefix ('', 'meta/', 'object/sys'): checked against every record. */
  private readonly wide = new Set<Watcher>();
  private nextId = 1;

  get size(): number {
    return this.watchers.size;
  }

  /** Registers a watcher and sends it the snapshot (already left without what it may not read); `unwatch` cancels the death watch on its subscriber. */
  add(prefix: string, admin: boolean, subscriber: ActorRef, unwatch: () => void, snapshot: readonly RecordView[]): number {
    const id = this.nextId++;
    const watcher: Watcher = { id, prefix, admin, subscriber, unwatch, seq: 0 };
    this.watchers.set(id, watcher);
    const collection = collectionOf(prefix);
    if (collection === null) this.wide.add(watcher);
    else this.byCollection.set(collection, (this.byCollection.get(collection) ?? new Set()).add(watcher));
    for (let start = 0; start === 0 || start < snapshot.length; start += WATCH_CHUNK) {
      const chunk: CdbSnapshot = { type: 'cdb.snapshot', watch: id, records: snapshot.slice(start, start + WATCH_CHUNK), done: start + WATCH_CHUNK >= snapshot.length };
      subscriber.tell(chunk);
    }
    return id;
  }

  /** One commit's changes, in commit order: each watcher gets those under its prefix. */
  publish(records: readonly StoredRecord[]): void {
    if (records.length === 0 || this.watchers.size === 0) return;
    const pending = new Map<Watcher, RecordView[]>();
    const send = (watcher: Watcher, chunk: RecordView[]) => {
      const event: CdbEvents = { type: 'cdb.events', watch: watcher.id, seq: watcher.seq - chunk.length + 1, records: chunk };
      watcher.subscriber.tell(event);
    };
    for (const record of records) {
      // One view per record, shared by every watcher that gets it.
      let shown: RecordView | undefined;
      const take = (watcher: Watcher) => {
        if (!record.key.startsWith(watcher.prefix) || (!watcher.admin && adminOnly(record.key))) return;
        shown ??= view(record);
        watcher.seq += 1;
        let chunk = pending.get(watcher);
        if (!chunk) pending.set(watcher, (chunk = []));
        chunk.push(shown);
        if (chunk.length === WATCH_CHUNK) {
          send(watcher, chunk);
          pending.delete(watcher);
        }
      };
      const collection = collectionOf(record.key);
      for (const watcher of (collection === null ? undefined : this.byCollection.get(collection)) ?? []) take(watcher);
      for (const watcher of this.wide) take(watcher);
    }
    for (const [watcher, chunk] of pending) send(watcher, chunk);
  }

  drop(id: number): void {
    const watcher = this.watchers.get(id);
    if (!watcher) return;
    this.watchers.delete(id);
    this.unindex(watcher);
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
    this.byCollection.clear();
    this.wide.clear();
  }

  private unindex(watcher: Watcher): void {
    this.wide.delete(watcher);
    const collection = collectionOf(watcher.prefix);
    const set = collection === null ? undefined : this.byCollection.get(collection);
    set?.delete(watcher);
    if (set?.size === 0) this.byCollection.delete(collection!);
  }
}

/** A key's or prefix's text up to its second '/' ('object/system/'), or null when it has none. */
function collectionOf(text: string): string | null {
  const first = text.indexOf('/');
  const second = first < 0 ? -1 : text.indexOf('/', first + 1);
  return second < 0 ? null : text.slice(0, second + 1);
}
