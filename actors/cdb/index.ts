/*
 * Over 400 lines on purpose, for now: one closure over the store, the memory table, the clock, the
 * writes pending commit and the watches, which the write pipeline (apply, merge) and the reads
 * share; the reads run outside the mailbox but over the same state.
 */
import { join } from 'node:path';
import { readSecretFile, secretExists } from '../../adapters/home.js';
import { ObjectStore, type StoredRecord } from '../../adapters/store.js';
import { replyLater, type ActorContext, type ServiceDefinition } from '../../runtime/actor.js';
import { hasRole, sentByInternal, type SenderRule } from '../../runtime/authority.js';
import { AcpError } from '../../runtime/errors.js';
import { encodedLength } from '../../runtime/codec.js';
import { formatPath } from '../../runtime/path.js';
import { formatPrincipal, type Principal } from '../../runtime/principal.js';
import type { Message, Terminated } from '../../runtime/messages.js';
import type { ServiceDeps } from '../../runtime/services.js';
import { ServiceCounters } from '../kit.js';
import { checkPrefix, hostFilesOf, parseKey, parseKeyUncached, SERVICE_TYPES, validateMeta, validateObject, type ParsedKey } from '../model.js';
import { compareVersions, formatVersion, HybridClock, parseVersion, type Version } from './hlc.js';
import { MemoryTable, type HistoryPoint } from './memory.js';
import { createHash } from 'node:crypto';
import { wins } from './replication.js';
import { adminOnly, CDB_READS, cdbAuthority, cdbSchema, parseCdbMessage, view, type CdbMessage } from './schema.js';
import { WatchTable } from './watches.js';
import type { SnapshotPage, SnapshotRequest } from './sync.js';
import { SyncNode, type SyncSetup } from './sync-node.js';
import { checkValue, DEFAULT_VALUE_LIMITS, type ValueLimits } from './value.js';

export { CDB_READS, cdbAuthority, cdbSchema, type CdbEvents, type CdbMessage, type CdbSnapshot, type RecordView } from './schema.js';

export const DEFAULT_MAX_CLOCK_AHEAD_MS = 10_000;
const DEFAULT_LIST_LIMIT = 1000;
const PAGE = 512;

export interface CdbOptions {
  storePath: string;
  maxMemoryKeys: number;
  statsHistory: number;
  /** Where the cluster key lives, read again when the agent rotates it. */
  clusterKeyFile?: string;
  /** A replicated record stamped further ahead of this node's clock than this is refused (default 10 s). */
  maxClockAheadMs?: number;
  now?: () => number;
  /** What a value may be (depth and size); checked at put, cas, batch and merge. */
  valueLimits?: ValueLimits;
  /** Cluster sync; absent on a node that belongs to no cluster (no cluster key). */
  sync?: Omit<SyncSetup, 'knownNodes' | 'merge'> & { seeds: readonly string[] };
}

const SNAPSHOT_PAGE_BYTES = 1024 * 1024;
/**
 * The most records one snapshot page looks at. A page of one origin's records, or of those since a
 * time, skips the others: without a bound, a page of an origin that wrote little read the whole
 * store (100,000 records, about half a second) while the CDB's mailbox waited. Bounded, such a pull
 * takes more pages, some of them empty, each of them short.
 */
const SNAPSHOT_PAGE_SCAN = 20_000;
/** Snapshot pages read ahead for pullers, at most, and how long one waits to be asked for. */
const READ_AHEAD_PAGES = 4;
const READ_AHEAD_MS = 30_000;

/** What identifies a snapshot page: the same request reads the same page. */
const snapshotKey = (request: SnapshotRequest): string => JSON.stringify([request.origin ?? null, request.since ?? null, request.cursor ?? null, request.limit]);
const KNOWN_NODES_TTL_MS = 1000;
/** Who writes `object/alarm/`: a monitor, whichever node's (the primary's, through its own node's CDB). */
const ALARM_WRITERS: readonly SenderRule[] = [{ service: 'monitor', nodes: 'any' }];

/**
 * The node's cluster database. Objects are durable in the embedded store: a put is answered only
 * once it is on disk, without holding the mailbox meanwhile (writes issued together commit
 * together). Meta and stats live in memory. Every change, in commit order, goes to the watchers
 * whose prefix matches, numbered without gaps.
 */
export function createCdb(ctx: ActorContext, options: CdbOptions): ReturnType<ServiceDefinition<unknown>['create']> {
  const node = ctx.node.node;
  const clock = new HybridClock(node, options.now ?? (() => Date.now()));
  const valueLimits = options.valueLimits ?? DEFAULT_VALUE_LIMITS;
  const memory = new MemoryTable(options.maxMemoryKeys, options.statsHistory);
  const info = new ServiceCounters();
  const wallNow = options.now ?? (() => Date.now());
  const maxClockAheadMs = options.maxClockAheadMs ?? DEFAULT_MAX_CLOCK_AHEAD_MS;
  /** Records refused because their clock was too far ahead of ours (a bad clock or a poisoning attempt). */
  let clockAheadRefused = 0;
  /** Object writes issued but not yet durable: read-your-writes for gets, lists and CAS. */
  const pending = new Map<string, StoredRecord>();
  const watches = new WatchTable();
  /** Snapshot pages read ahead (cdb.sync.snapshot-ahead), by request, oldest first. */
  const readAhead = new Map<string, { page: Promise<Message & SnapshotPage>; at: number }>();
  /** Pages nobody asked for within READ_AHEAD_MS (a puller gave up) are let go; run on every sync tick too. */
  const dropStaleReadAhead = () => {
    const now = Date.now();
    for (const [key, entry] of readAhead) if (now - entry.at > READ_AHEAD_MS) readAhead.delete(key);
  };
  let store: ObjectStore | undefined;
  /** Commit order: watch events go out in the order writes were issued. */
  let commits: Promise<void> = Promise.resolve();
  let sync: SyncNode | undefined;
  let knownNodes: { at: number; names: string[] } | undefined;

  const current = (parsed: ParsedKey): StoredRecord | undefined => {
    if (parsed.kind !== 'object') return memory.get(parsed.key);
    return pending.get(parsed.key) ?? store!.get(parsed.key);
  };

  const publish = (records: readonly StoredRecord[]) => watches.publish(records);

  const checkOwner = (parsed: ParsedKey) => {
    if (parsed.kind !== 'object' && parsed.node !== node) {
      throw new AcpError('ACP_ERR_CDB_NOT_OWNER', `${parsed.key} belongs to node '${parsed.node}'; only that node writes it (this is '${node}')`);
    }
  };

  /** Validates one write and makes its record; nothing is applied yet. */
  const prepare = (rawKey: string, value: unknown, deleted: boolean, field = 'value'): { parsed: ParsedKey; record: StoredRecord } => {
    const parsed = parseKey(rawKey);
    checkOwner(parsed);
    if (!deleted) checkPlain(parsed.key, value, field);
    let stored: unknown = null;
    if (!deleted) stored = parsed.kind === 'object' ? validateObject(parsed, value) : validateMeta(parsed, value);
    const record: StoredRecord = { key: parsed.key, value: stored, version: clock.tick(), origin: node, ...(deleted ? { deleted: true } : {}) };
    return { parsed, record };
  };

  /** Applies prepared writes: memory ones at once, object ones durably; resolves when all are. All or none. */
  const apply = (writes: readonly { parsed: ParsedKey; record: StoredRecord }[], local: boolean): Promise<void> => {
    const newMemoryKeys = new Set(
      writes.filter((write) => write.parsed.kind !== 'object' && memory.get(write.record.key) === undefined).map((write) => write.record.key),
    );
    memory.reserve(newMemoryKeys.size);
    const objects = writes.filter((write) => write.parsed.kind === 'object').map((write) => write.record);
    const applyMemory = () => {
      const applied: StoredRecord[] = [];
      for (const write of writes) {
        if (write.parsed.kind === 'object') continue;
        // Applied late (after a mixed batch's flush), an older write must not replace a newer one.
        if (!wins(write.record, memory.get(write.record.key))) continue;
        // A delete stays as a tombstone, so an older write replicated late cannot bring the key back.
        memory.put(write.record);
        applied.push(write.record);
      }
      publish(applied);
      return applied;
    };
    if (objects.length === 0) {
      const applied = applyMemory();
      // Sent behind the object writes still flushing, so changes are numbered in version order.
      if (local && applied.length > 0) void commits.then(() => sync?.committed(applied));
      return Promise.resolve();
    }
    for (const record of objects) pending.set(record.key, record);
    const written = store!.write(objects);
    const committed = commits.then(() => written).then(
      () => {
        for (const record of objects) if (pending.get(record.key) === record) pending.delete(record.key);
        publish(objects);
        // In a mixed batch, meta and stats take effect only once the objects are durable: all or none.
        const applied = applyMemory();
        // Only durable changes go out: a node never sends what it could lose in a crash.
        if (local) sync?.committed([...objects, ...applied]);
      },
      (error: unknown) => {
        for (const record of objects) if (pending.get(record.key) === record) pending.delete(record.key);
        throw error;
      },
    );
    commits = committed.catch(() => undefined);
    return committed;
  };

  /** Plain, acyclic, bounded data only: what the CDB takes in, it can always give back. */
  const checkPlain = (recordKey: string, value: unknown, field: string): void => {
    try {
      checkValue(value, valueLimits, field);
    } catch (error) {
      const refusal = AcpError.from(error, 'ACP_ERR_CDB_BAD_VALUE');
      throw new AcpError(refusal.code, `bad value for ${recordKey}: ${refusal.message}`);
    }
  };

  const readable = <T>(read: () => T): T | 'unreadable' => {
    try {
      return read();
    } catch (error) {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_STORE') return 'unreadable';
      throw error;
    }
  };

  const written = (record: StoredRecord): Message => ({ type: 'cdb.written', key: record.key, version: formatVersion(record.version) });

  const get = (rawKey: string): Message => {
    const parsed = parseKey(rawKey);
    const record = current(parsed);
    if (!record || record.deleted) throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no record at ${parsed.key}`);
    return { type: 'cdb.record', record: view(record) };
  };

  /**
   * Live records under a prefix in key order (meta/ < object/ < stats/), from after `cursor`.
   * With `committedOnly` (a watch's snapshot), object writes still in flight are left out: each
   * reaches the watcher once, as the event published when it is durable.
   */
  const list = (rawPrefix: string, limit: number, cursor: string | undefined, committedOnly = false): { records: StoredRecord[]; cursor?: string } => {
    const wanted = checkPrefix(rawPrefix);
    const records: StoredRecord[] = [];
    for (const kind of ['meta/', 'object/', 'stats/']) {
      if (!(kind.startsWith(wanted) || wanted.startsWith(kind))) continue;
      const rangePrefix = wanted.startsWith(kind) ? wanted : kind;
      if (cursor !== undefined && cursor >= `${rangePrefix}\uffff`) continue;
      let after = cursor !== undefined && cursor > rangePrefix ? cursor : undefined;
      // Tombstones are skipped, so pages are read until the answer is full or the range ends.
      while (records.length < limit) {
        const raw = kind === 'object/' ? store!.range(rangePrefix, after, PAGE) : memory.range(rangePrefix, after, PAGE);
        let page = raw;
        if (kind === 'object/') {
          page = committedOnly ? raw.filter((record) => !pending.has(record.key)) : mergePending(raw, rangePrefix, after, PAGE);
        }
        for (const record of page) {
          after = record.key;
          if (record.deleted) continue;
          records.push(record);
          if (records.length >= limit) break;
        }
        if (records.length >= limit) break;
        // Left-out in-flight keys were read too: go on after them, not before.
        if (committedOnly && raw.length > 0) after = raw.at(-1)!.key;
        // The range is exhausted when neither the store nor the overlay filled a page.
        if (raw.length < PAGE && page.length < PAGE) break;
      }
      if (records.length >= limit) break;
    }
    return records.length >= limit ? { records, cursor: records.at(-1)!.key } : { records };
  };

  /** Store records with this node's not-yet-durable writes laid over them. */
  const mergePending = (records: StoredRecord[], rangePrefix: string, after: string | undefined, limit: number): StoredRecord[] => {
    if (pending.size === 0) return records;
    const merged = new Map(records.map((record) => [record.key, record]));
    for (const [pendingKey, record] of pending) {
      if (pendingKey.startsWith(rangePrefix) && (after === undefined || pendingKey > after)) merged.set(pendingKey, record);
    }
    return [...merged.keys()].sort().slice(0, limit).map((mergedKey) => merged.get(mergedKey)!);
  };

  const watch = (rawPrefix: string, subscriberPath: string, sender: Principal): Message => {
    const wanted = checkPrefix(rawPrefix);
    const subscriberSegments = subscriberPath.replace(/^acp:\/\/[^/]+\/[^/]+\//, '').split('/');
    // A service takes the CDB's events only when it subscribes itself, never on someone else's say.
    const itself = sender.kind === 'actor' && sender.path === subscriberPath;
    if (!itself && subscriberSegments.length === 1 && (SERVICE_TYPES as readonly string[]).includes(subscriberSegments[0]!)) {
      throw new AcpError('ACP_ERR_CDB_BAD_KEY', `a service (${subscriberPath}) cannot be a watch subscriber; subscribe through the API (client.watch)`);
    }
    // Read first: a snapshot that fails (a damaged record) refuses the watch and leaves no watcher
    // behind. Same turn of the mailbox as the registration, so no change falls between them.
    const admin = hasRole(sender, 'admin');
    const snapshot = list(wanted, Number.MAX_SAFE_INTEGER, undefined, true).records.filter((record) => admin || !adminOnly(record.key)).map(view);
    const id = watches.add(wanted, admin, ctx.ref(subscriberPath), ctx.watch(subscriberPath), snapshot);
    return { type: 'cdb.watching', watch: id, prefix: wanted, snapshotSize: snapshot.length };
  };

  /** Records from other nodes: each applied only if it wins over what is here (LWW); resolves once durable. */
  const merge = (records: readonly StoredRecord[], strict: boolean): Promise<{ applied: number; skipped: number }> => {
    const byKey = new Map<string, { parsed: ParsedKey; record: StoredRecord }>();
    let skipped = 0;
    const removals = new Map<string, number | undefined>();
    // Asked for (cdb.merge): a value that is not plain data refuses the whole merge, naming it.
    // From the network (sync): it is skipped and logged, and the rest applies.
    const notPlain = new Set<StoredRecord>();
    records.forEach((incoming, index) => {
      if (incoming.deleted) return;
      try {
        checkPlain(incoming.key, incoming.value, `records[${index}].value`);
      } catch (error) {
        if (strict) throw error;
        notPlain.add(incoming);
        ctx.log.warn({ key: incoming.key, origin: incoming.origin, err: (error as Error).message }, 'merged record refused: its value is not plain data');
      }
    });
    const horizon = wallNow() + maxClockAheadMs;
    for (const incoming of records) {
      // One record from the far future would win every later write here and drag our clock along.
      if (incoming.version.wall > horizon) {
        skipped += 1;
        clockAheadRefused += 1;
        if (clockAheadRefused === 1 || clockAheadRefused % 1000 === 0) {
          ctx.log.warn({ key: String(incoming.key).slice(0, 200), origin: incoming.origin, aheadMs: incoming.version.wall - wallNow(), refused: clockAheadRefused }, 'replicated record refused: its clock is ahead of this node by more than cdb.maxClockAheadMs');
        }
        continue;
      }
      if (!removals.has(incoming.origin)) removals.set(incoming.origin, removedSince(incoming.origin));
      const since = removals.get(incoming.origin);
      if (since !== undefined && incoming.version.wall > since) {
        skipped += 1;
        continue;
      }
      let target: ParsedKey;
      try {
        if (notPlain.has(incoming)) throw new AcpError('ACP_ERR_CDB_BAD_VALUE', 'not plain data');
        target = parseKeyUncached(incoming.key);
        // meta and stats have one writer: only records that node wrote are taken.
        if (target.kind !== 'object' && incoming.origin !== target.node) throw new AcpError('ACP_ERR_CDB_NOT_OWNER', 'not its writer');
        if (!incoming.deleted) {
          if (target.kind === 'object') validateObject(target, incoming.value);
          else validateMeta(target, incoming.value);
        }
      } catch {
        skipped += 1;
        continue;
      }
      const record: StoredRecord = incoming.deleted
        ? { key: target.key, value: null, version: incoming.version, origin: incoming.origin, deleted: true }
        : { key: target.key, value: incoming.value, version: incoming.version, origin: incoming.origin };
      clock.observe(record.version);
      // The same key twice in one merge: the later version alone is written.
      const earlier = byKey.get(record.key);
      if (!wins(record, earlier?.record ?? current(target))) {
        skipped += 1;
        continue;
      }
      byKey.set(record.key, { parsed: target, record });
    }
    const writes = [...byKey.values()];
    return apply(writes, false).then(() => ({ applied: writes.length, skipped }));
  };

  /** A node taken out of the cluster (acp node rm): no longer listed, and what it writes from then on is not taken. */
  const removed = (name: string): boolean => {
    const record = store?.get(`object/revocation/${name}`);
    return record !== undefined && !record.deleted;
  };
  const removedSince = (name: string): number | undefined => {
    const record = store?.get(`object/revocation/${name}`);
    if (!record || record.deleted) return undefined;
    const at = Date.parse(String((record.value as { revokedAt?: unknown } | null)?.revokedAt));
    return Number.isFinite(at) ? at : undefined;
  };

  /** Tokens are the keys to the cluster: only an admin writes them; alarm targets hold secrets: likewise. */
  const requireWriter = (key: string, sender: Principal, deleting: boolean): void => {
    if (key.startsWith('object/token/') && !hasRole(sender, 'admin')) {
      throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', `${formatPrincipal(sender)} may not write ${key}: API tokens are written by an admin only (acp token api ...)`);
    }
    if (adminOnly(key) && !hasRole(sender, 'admin')) {
      throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', `${formatPrincipal(sender)} may not write ${key}: alarm targets hold secrets and are written by an admin only`);
    }
    if (key.startsWith('object/storage/share/') && !hasRole(sender, 'admin')) {
      throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', `${formatPrincipal(sender)} may not write ${key}: a share names a key file on the nodes and a server they log in to, and is written by an admin only`);
    }
    if (key.startsWith('object/storage/pool/') && !hasRole(sender, 'admin')) {
      throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', `${formatPrincipal(sender)} may not write ${key}: a pool is a host directory the daemon makes and writes, and is written by an admin only`);
    }
    // What a node reports of itself (states, stats) comes from its services; an operator's write would misreport it.
    if ((key.startsWith('meta/') || key.startsWith('stats/')) && !hasRole(sender, 'admin')) {
      throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', `${formatPrincipal(sender)} may not write ${key}: meta/ and stats/ are what the node's services report, written by them (or an admin)`);
    }
    // An alarm stands for what the primary monitor saw, in its term: a forged one would never clear.
    // An admin may delete one the monitor will never clear (its subject removed with acp node rm).
    if (key.startsWith('object/alarm/') && !sentByInternal(sender, authorityTarget, ALARM_WRITERS) && !(deleting && hasRole(sender, 'admin'))) {
      throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', `${formatPrincipal(sender)} may not write ${key}: alarms are raised and cleared by the primary monitor only (acknowledge one with acp alarm ack ID; an admin may delete one)`);
    }
  };

  const authorityTarget = { cluster: ctx.node.cluster, node, path: formatPath(ctx.path) };

  /**
   * A host file a value names for the daemon (root) to open for a guest (a kernel, an initrd, an
   * image file to boot) is an admin's to name, as an import is: an operator could otherwise put
   * any file of the host into a guest's memory or disk. One already there may stay.
   */
  const requireHostFiles = (key: string, value: unknown, sender: Principal): void => {
    if (hasRole(sender, 'admin')) return;
    const named = hostFilesOf(key, value);
    if (named.length === 0) return;
    const stored = store?.get(key);
    // Kept as field and path: an admin's kernel moved to the initrd would reach the guest's memory.
    // The stored record is this node's: a replica that lags may take back a path an admin removed elsewhere.
    const kept = new Set(stored && !stored.deleted ? hostFilesOf(key, stored.value).map((file) => `${file.field}\0${file.path}`) : []);
    const added = named.find((file) => !kept.has(`${file.field}\0${file.path}`));
    if (added) {
      throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', `${formatPrincipal(sender)} may not set ${added.field} to ${added.path.slice(0, 200)} in ${key}: a host file the daemon opens for a guest is an admin's to name; boot from a volume instead (boot.disk POOL/VOLUME, acp storage volume ...)`);
    }
  };

  /** Admin-only records (ADMIN_ONLY_PREFIXES) are read by no one else. */
  const requireReader = (key: string, sender: Principal): void => {
    if (adminOnly(key) && !hasRole(sender, 'admin')) {
      throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', `${formatPrincipal(sender)} may not read ${key}: alarm targets hold secrets and are read by an admin only`);
    }
  };

  const requireSync = (): SyncNode => {
    if (!sync) throw new AcpError('ACP_ERR_SYNC_NOT_PEER', `node '${node}' does not sync: it belongs to no cluster (acp init or acp join)`);
    return sync;
  };

  /** Every other node named in the CDB, and the seeds from joining. */
  const otherNodes = (): string[] => {
    const now = Date.now();
    if (knownNodes && now - knownNodes.at < KNOWN_NODES_TTL_MS) return knownNodes.names;
    const names = new Set(options.sync?.seeds ?? []);
    for (const record of store?.range('object/node/', undefined, 100_000) ?? []) if (!record.deleted) names.add(record.key.slice('object/node/'.length));
    names.delete(node);
    knownNodes = { at: now, names: [...names].sort() };
    return knownNodes.names;
  };

  /**
   * One page of a snapshot: meta and objects (tombstones included) in key order, filtered by
   * origin and version. The digest is taken first and every write it counts is durable before
   * the pages are read, so the pages hold all it says.
   */
  const snapshotPage = async (request: SnapshotRequest): Promise<Message & SnapshotPage> => {
    const digest = requireSync().replicator.digest();
    const takenAt = clock.tick().wall;
    await commits;
    const records: StoredRecord[] = [];
    let bytes = 0;
    let scanned = 0;
    let lastScanned = request.cursor;
    for (const kind of ['meta/', 'object/']) {
      if (request.cursor !== undefined && request.cursor >= `${kind}\uffff`) continue;
      let after = request.cursor !== undefined && request.cursor > kind ? request.cursor : undefined;
      for (;;) {
        const page = kind === 'object/' ? store!.range(kind, after, PAGE) : memory.range(kind, after, PAGE);
        for (const record of page) {
          const wanted = (request.origin === undefined || record.origin === request.origin) && (request.since === undefined || record.version.wall >= request.since);
          if (wanted) {
            const size = encodedLength(record);
            // A record that would take the page past its bytes starts the next one (a page holds at least one).
            if (records.length > 0 && bytes + size > SNAPSHOT_PAGE_BYTES) return { type: 'cdb.sync.snapshot', records, bytes, takenAt, cursor: lastScanned!, digest };
            records.push(record);
            bytes += size;
          }
          after = record.key;
          lastScanned = record.key;
          scanned += 1;
          if (records.length >= request.limit || scanned >= SNAPSHOT_PAGE_SCAN) return { type: 'cdb.sync.snapshot', records, bytes, takenAt, cursor: record.key, digest };
        }
        if (page.length < PAGE) break;
      }
    }
    return { type: 'cdb.sync.snapshot', records, bytes, takenAt, digest };
  };

  const hash = (rawPrefix: string): Message => {
    const wanted = checkPrefix(rawPrefix);
    const digest = createHash('sha256');
    let count = 0;
    for (const kind of ['meta/', 'object/', 'stats/']) {
      if (!(kind.startsWith(wanted) || wanted.startsWith(kind))) continue;
      const rangePrefix = wanted.startsWith(kind) ? wanted : kind;
      let after: string | undefined;
      for (;;) {
        const page = kind === 'object/' ? store!.range(rangePrefix, after, PAGE) : memory.range(rangePrefix, after, PAGE);
        for (const record of page) {
          after = record.key;
          // A version is given to one write only: key and version (and deletion) decide the value.
          digest.update(`${record.key}\u0000${formatVersion(record.version)}${record.deleted ? '\u0000deleted' : ''}\n`);
          count += 1;
        }
        if (page.length < PAGE) break;
      }
    }
    return { type: 'cdb.hash', prefix: wanted, records: count, hash: digest.digest('hex') };
  };


  /**
   * The reads (cdb.get, cdb.list, cdb.history; CDB_READS): synchronous over the store's committed
   * state, this node's writes in flight (`pending`) and the memory table, all of which only
   * `receive` and the commit pipeline change. The runtime runs them outside the mailbox (see
   * Actor.read), so they do not wait behind writes queued there.
   */
  const read = (parsed: CdbMessage, sender: Principal): Message => {
    switch (parsed.type) {
      case 'cdb.get':
        requireReader(parsed.key, sender);
        return get(parsed.key);
      case 'cdb.list': {
        // A prefix inside the admin-only records is refused outright (an empty answer would mislead); a wider one leaves them out.
        requireReader(parsed.prefix, sender);
        const page = list(parsed.prefix, parsed.limit ?? DEFAULT_LIST_LIMIT, parsed.cursor);
        const admin = hasRole(sender, 'admin');
        const records = page.records.filter((record) => admin || !adminOnly(record.key));
        return { type: 'cdb.records', records: records.map(view), ...(page.cursor === undefined ? {} : { cursor: page.cursor }) };
      }
      case 'cdb.history': {
        const target = parseKey(parsed.key);
        if (target.kind !== 'stats') throw new AcpError('ACP_ERR_CDB_BAD_KEY', `history is kept for stats/ keys only, not ${target.key}`);
        const points: HistoryPoint[] = memory.history(target.key);
        return { type: 'cdb.history', key: target.key, points };
      }
      default:
        throw new AcpError('ACP_ERR_INTERNAL', `'${parsed.type}' is not one of the CDB's reads`);
    }
  };

  return {
    async started() {
      store = ObjectStore.open(options.storePath);
      // The clock must never issue a version below one already on disk.
      // A damaged record is skipped here (and named in the log); reading it later is an error.
      for (const record of store.all((key, error) => ctx.log.error({ key, err: error.message }, 'a record in the store cannot be read'))) clock.observe(record.version);
      ctx.log.info({ store: options.storePath }, 'store open');
      if (options.sync) {
        const { seeds: _seeds, ...setup } = options.sync;
        sync = new SyncNode(ctx, { ...setup, knownNodes: otherNodes, merge: (records) => merge(records, false).then(() => undefined) });
        await sync.start();
      }
    },
    read(message, sender) {
      info.handled += 1;
      if (!store) throw new AcpError('ACP_ERR_ACTOR_STOPPED', 'the CDB store is closed');
      return read(parseCdbMessage(message), sender);
    },
    receive(message, sender) {
      info.handled += 1;
      const parsed = parseCdbMessage(message);
      if (parsed.type === 'cdb.put' || parsed.type === 'cdb.delete' || parsed.type === 'cdb.cas') requireWriter(parsed.key, sender, parsed.type === 'cdb.delete');
      if (parsed.type === 'cdb.put' || parsed.type === 'cdb.cas') requireHostFiles(parsed.key, parsed.value, sender);
      if (parsed.type === 'cdb.batch') {
        for (const op of parsed.ops) {
          requireWriter(op.key, sender, op.op === 'delete');
          if (op.op === 'put') requireHostFiles(op.key, op.value, sender);
        }
      }
      switch (parsed.type) {
        case 'service.info':
          return { ...info.info('cdb', 'Cluster database', ctx), watchers: watches.size, memoryKeys: memory.size, pendingWrites: pending.size, clockAheadRefused };
        case 'cdb.get':
        case 'cdb.list':
        case 'cdb.history':
          return read(parsed, sender);
        case 'cdb.put': {
          const write = prepare(parsed.key, parsed.value, false);
          return replyLater(apply([write], true).then(() => written(write.record)));
        }
        case 'cdb.delete': {
          const target = parseKey(parsed.key);
          // A record the store cannot read any more can still be deleted (the tombstone replaces it).
          const existing = readable(() => current(target));
          if (existing !== 'unreadable' && (!existing || existing.deleted)) throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no record at ${target.key}`);
          const write = prepare(parsed.key, null, true);
          return replyLater(apply([write], true).then(() => written(write.record)));
        }
        case 'cdb.cas': {
          const target = parseKey(parsed.key);
          const existing = current(target);
          const live = existing && !existing.deleted ? existing : undefined;
          const expected = parsed.expect === null ? null : parseVersion(parsed.expect);
          if (parsed.expect !== null && !expected) {
            throw new AcpError('ACP_ERR_CDB_BAD_VALUE', `expect '${parsed.expect}' is not a version like 1795616242319.0@n1 (or null for "must not exist")`);
          }
          const matches = expected === null ? live === undefined : live !== undefined && compareVersions(live.version, expected as Version) === 0;
          if (!matches) {
            const now = live ? formatVersion(live.version) : 'absent';
            throw new AcpError('ACP_ERR_CDB_CONFLICT', `${target.key} is at version ${now}, not ${parsed.expect ?? 'absent'}; read it again and retry`, { current: live ? view(live) : null });
          }
          const write = prepare(parsed.key, parsed.value, false);
          return replyLater(apply([write], true).then(() => written(write.record)));
        }
        case 'cdb.batch': {
          const writes = parsed.ops.map((item, index) => prepare(item.key, item.op === 'put' ? item.value : null, item.op === 'delete', `ops[${index}].value`));
          return replyLater(apply(writes, true).then(() => ({ type: 'cdb.written-batch', count: writes.length, versions: writes.map((write) => formatVersion(write.record.version)) })));
        }
        case 'cdb.watch':
          requireReader(parsed.prefix, sender);
          return watch(parsed.prefix, parsed.subscriber, sender);
        case 'cdb.unwatch':
          watches.drop(parsed.watch);
          return { type: 'ok' };
        case 'cdb.merge':
          return replyLater(merge(parsed.records, true).then((outcome) => ({ type: 'cdb.merged', ...outcome })));
        case 'cdb.sync': {
          requireSync().fromNetwork(parsed.payload, parsed.relay ? 'gateway' : 'domain');
          return { type: 'cdb.sync.ok' };
        }
        case 'cdb.sync.repair':
          return requireSync().serveRepair({ origin: parsed.origin, incarnation: parsed.incarnation, from: parsed.from, to: parsed.to });
        case 'cdb.sync.snapshot': {
          const { type: _type, ...request } = parsed;
          const key = snapshotKey(request);
          const ready = readAhead.get(key);
          readAhead.delete(key);
          const { counters } = requireSync().replicator;
          counters.snapshotPagesServed += 1;
          if (ready) counters.snapshotPagesReadAhead += 1;
          return replyLater(
            (ready ? ready.page.catch(() => snapshotPage(request)) : snapshotPage(request)).then((page) => {
              sync?.servedSnapshot(page);
              // Pages come one after another (each asks from the last key of the one before): the
              // next is read while this one travels and is decoded and merged over there. Told
              // before the reply leaves, so the read-ahead is in the mailbox ahead of the request
              // for that page, and is read after the digest its puller holds (the first page's):
              // the pages still hold all that digest counts.
              if (page.cursor !== undefined) ctx.self.tell({ type: 'cdb.sync.snapshot-ahead', ...request, cursor: page.cursor });
              return page;
            }),
          );
        }
        case 'cdb.sync.snapshot-ahead': {
          const { type: _type, ...request } = parsed;
          const key = snapshotKey(request);
          dropStaleReadAhead();
          readAhead.delete(key);
          // A few pullers at once at most: the oldest page read ahead makes room.
          if (readAhead.size >= READ_AHEAD_PAGES) readAhead.delete(readAhead.keys().next().value!);
          const page = snapshotPage(request);
          page.catch(() => undefined); // a page that cannot be read is read again, and fails, when it is asked for
          readAhead.set(key, { page, at: Date.now() });
          return undefined;
        }
        case 'cdb.sync.status':
          return requireSync().status();
        case 'cdb.sync.rekey':
          if (sync && secretExists(options.clusterKeyFile ?? '')) sync.rekey(readSecretFile(options.clusterKeyFile ?? '').trim());
          return { type: 'ok' };
        case 'cdb.sync.tick':
          dropStaleReadAhead();
          sync?.handle(parsed);
          return undefined;
        case 'cdb.sync.datagram':
        case 'cdb.sync.flush':
        case 'cdb.sync.repair-due':
        case 'cdb.sync.identified':
          sync?.handle(parsed);
          return undefined;
        case 'cdb.sync.faults':
          requireSync().setDropRate(parsed.dropRate);
          return { type: 'cdb.sync.faults', dropRate: parsed.dropRate };
        case 'cdb.sync.partition':
          requireSync().setPartitioned(parsed.on);
          return { type: 'cdb.sync.partition', on: parsed.on };
        case 'cdb.nodes':
          return { type: 'cdb.nodes', nodes: sync ? sync.members().filter((member) => !removed(member.node)) : [{ node, state: 'up', lastSeenMs: 0, incarnation: ctx.node.incarnation, syncLag: 0, self: true }] };
        case 'cdb.hash':
          return hash(parsed.prefix ?? 'object/');
        case 'terminated': {
          const gone = parsed as Terminated;
          watches.dropSubscriber(gone.path);
          return undefined;
        }
        default: {
          const unreachable: never = parsed;
          return unreachable;
        }
      }
    },
    async stopping(reason) {
      // Watchers are told explicitly that their stream ended, whatever the reason (a restart included).
      watches.endAll(ctx.self.path, reason);
      await sync?.stop();
      sync = undefined;
      await commits;
      await store?.close();
      store = undefined;
    },
  };
}

export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'cdb',
  description: 'Cluster database: durable objects, per-node meta and stats, watches',
  schema: cdbSchema,
  authority: cdbAuthority,
  reads: CDB_READS,
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new Error('cdb runs inline only');
    return createCdb(ctx, {
      storePath: join(deps.paths.data, 'cdb.mdb'),
      maxMemoryKeys: deps.config.cdb.maxMemoryKeys,
      statsHistory: deps.config.cdb.statsHistory,
      maxClockAheadMs: deps.config.cdb.maxClockAheadMs,
      clusterKeyFile: deps.paths.clusterKey,
      valueLimits: { maxDepth: deps.config.cdb.maxValueDepth, maxBytes: deps.config.cdb.maxValueBytes },
      // A node with a cluster key belongs to a cluster: it syncs.
      ...(secretExists(deps.paths.clusterKey)
        ? {
            sync: {
              config: deps.config.sync,
              clusterKey: readSecretFile(deps.paths.clusterKey).trim(),
              ...(deps.config.agent.listen ? { agentAddress: deps.config.agent.listen } : {}),
              faults: deps.system.faultsEnabled,
              seeds: deps.config.agent.seeds.map((seed) => seed.node),
            },
          }
        : {}),
    });
  },
};
