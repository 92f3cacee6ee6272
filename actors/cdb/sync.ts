/**
 * Over 400 lines, knowingly: one class (Replicator) whose send, receive and repair paths share the
 * per-origin receiver state and the pending flush; the wire protocol (sync-protocol.ts) and
 * membership (membership.ts) are already apart.
 *
 * CDB sync: how a node's changes reach every other node, and how a node that missed some gets
 * them back. Written against `SyncEnv` (no sockets, no timers) so a simulator can drive many
 * nodes over a lossy fake network with a fake clock; the CDB actor runs it for real over
 * authenticated multicast (or unicast over the agent) and the agent.
 *
 * - Own changes are numbered per incarnation (ChangeStream), chunked to fit a datagram and sent to
 *   the domain; a record too large for one datagram is announced and fetched by repair.
 * - Received batches are merged by last-writer-wins; a gap in an origin's numbering, or a digest
 *   (per-origin high-water marks, every `digestMs`) showing more than this node has, starts a
 *   repair from the origin's recent stream, falling back to a snapshot of that origin's records
 *   since the last one received in order.
 * - On start, and whenever nothing is known yet, a full snapshot is pulled from a peer, whose
 *   digest then says what the snapshot covered.
 * - Gateways forward their domain's batches to remote gateways, which re-publish them; origin and
 *   sequence numbers make a second copy a replay.
 * - Membership: every node classifies every other as up, suspect or down from when it last heard
 *   its heartbeat or digest.
 */
import type { StoredRecord } from '../../adapters/store.js';
import { errorMessage } from '../../runtime/errors.js';
import { encode } from 'cbor-x';
import { ChangeStream, ReceiverState, type ChangeBatch, type Digest, type Gap } from './replication.js';
import { Membership } from './membership.js';
import {
  encodedSize,
  type DigestPayload,
  type MemberView,
  type RepairAnswer,
  type SyncCounters,
  type SyncEnv,
  type SyncPayload,
  type SyncTimings,
  type Via,
} from './sync-protocol.js';

export * from './sync-protocol.js';
export { Membership } from './membership.js';

const REPAIR_CHUNK = 2000;
/**
 * A node numbers its changes in version order (the CDB sends memory writes behind pending object
 * flushes). The margin covers a change numbered late all the same, at the cost of a few seconds'
 * records pulled twice.
 */
const SINCE_MARGIN_MS = 5000;
/** A repair answer stays well inside the agent's 4 MiB frames. */
const REPAIR_BYTES = 1024 * 1024;
const SNAPSHOT_PAGE = 5000;
/** Snapshot pages merged but not yet durable while the pull goes on (each flush costs a disk sync). */
const MERGES_IN_FLIGHT = 2;
/** How long after a gap shows before it is repaired: a gap from datagrams arriving out of order fills on its own. */
export const REORDER_GRACE_MS = 100;

/** What a received payload says about gaps (see `Replicator.receive`). */
export type GapNews = 'none' | 'gap' | 'back';
/** Payload fields around the records (origin, incarnation, firstSeq, keys). */
const BATCH_OVERHEAD = 120;
/** Payload fields around a digest's `seen` (kind, node, incarnation, high-water mark, keys). */
const DIGEST_OVERHEAD = 120;

interface PeerView {
  incarnation: number;
  highWater: number;
  heardAt: number;
}

/** How many peers are kept per origin as the places to repair it from while it is down. */
const HOLDERS_KEPT = 4;

/** A peer that said (in a digest of its incarnation `peerIncarnation`) how much of an origin it has. */
interface Holder {
  node: string;
  peerIncarnation: number;
  incarnation: number;
  highWater: number;
}

/** One node's side of CDB sync. */
export class Replicator {
  readonly counters: SyncCounters = {
    batchesSent: 0,
    recordsSent: 0,
    announced: 0,
    batchesReceived: 0,
    recordsMerged: 0,
    replays: 0,
    staleIncarnations: 0,
    relayed: 0,
    repairsAsked: 0,
    repairsServed: 0,
    snapshotsPulled: 0,
    snapshotPagesServed: 0,
    snapshotPagesReadAhead: 0,
    errors: 0,
  };
  readonly membership: Membership;
  private readonly stream: ChangeStream;
  private readonly receiver: ReceiverState;
  private outbox: StoredRecord[] = [];
  private readonly peers = new Map<string, PeerView>();
  /**
   * Per origin, the furthest any peer's digest has said it got (the highest incarnation with
   * changes, then the highest mark): what `missing` compares with, so a tick costs one pass over
   * the origins, not one per peer.
   */
  private readonly furthest = new Map<string, { incarnation: number; highWater: number }>();
  /**
   * Per origin, the peers whose digests said they have the most of it, best first, at most
   * HOLDERS_KEPT: where to repair from while the origin is down. Kept per origin rather than as
   * every peer's view of every origin, so a node's memory grows with nodes × HOLDERS_KEPT, not
   * with nodes² (1,000 nodes: 4,000 entries instead of a million).
   */
  private readonly holders = new Map<string, Holder[]>();
  /** Per origin: a wall time at or below every version of its changes not yet received in order. */
  private readonly sinceWall = new Map<string, { incarnation: number; wall: number }>();
  private readonly repairing = new Set<string>();
  private readonly resync = new Map<string, number>();
  private readonly announcesRelayed = new Map<string, { incarnation: number; upTo: number }>();
  private initial: 'pending' | 'running' | 'done' = 'pending';
  /** The last origin in the previous digest's slice of `seen`: the next slice starts after it. */
  private digestCursor = '';
  private readonly startedAt: number;
  private stopped = false;

  constructor(
    private readonly env: SyncEnv,
    private readonly timings: SyncTimings,
  ) {
    this.stream = new ChangeStream(env.self, env.incarnation, timings.repairKeep);
    this.receiver = new ReceiverState(env.self);
    this.membership = new Membership(env.self, timings);
    this.startedAt = env.now();
  }

  /** Local changes, durable: sent at the next flush. */
  local(records: readonly StoredRecord[]): void {
    for (const record of records) this.outbox.push(record);
  }

  get hasOutbox(): boolean {
    return this.outbox.length > 0;
  }

  /** Numbers the outbox and sends it, chunked to the payload size. */
  flush(): void {
    if (this.outbox.length === 0) return;
    const records = this.outbox;
    this.outbox = [];
    const batch = this.stream.next(records);
    const budget = this.env.payloadBytes - BATCH_OVERHEAD;
    let chunk: StoredRecord[] = [];
    let chunkFirst = batch.firstSeq;
    let chunkBytes = 0;
    const send = () => {
      if (chunk.length === 0) return;
      this.sendOwn({ k: 'batch', origin: batch.origin, incarnation: batch.incarnation, firstSeq: chunkFirst, records: chunk });
      chunkFirst += chunk.length;
      chunk = [];
      chunkBytes = 0;
    };
    records.forEach((record, index) => {
      const size = encodedSize(record);
      if (size > budget) {
        // Too large for any datagram: say it exists; receivers fetch it over the agent.
        send();
        const seq = batch.firstSeq + index;
        this.counters.announced += 1;
        this.sendOwn({ k: 'announce', origin: batch.origin, incarnation: batch.incarnation, upTo: seq });
        chunkFirst = seq + 1;
        return;
      }
      if (chunkBytes + size > budget) send();
      chunk.push(record);
      chunkBytes += size;
    });
    send();
  }

  private sendOwn(payload: SyncPayload): void {
    if (payload.k === 'batch') {
      this.counters.batchesSent += 1;
      this.counters.recordsSent += payload.records.length;
    }
    this.env.broadcast(payload);
    if (this.env.isGateway) this.env.forward(payload);
  }

  /** The digest this node sends: its own stream position and what it has of the others. */
  digest(): DigestPayload {
    return { k: 'digest', node: this.env.self, incarnation: this.env.incarnation, highWater: this.stream.highWater, seen: this.receiver.digest() };
  }

  /**
   * The digest sent every `digestMs`: this node's own stream position, and as much of what it has
   * of the others as fits one payload (a datagram on multicast). In a cluster too large for all of
   * `seen` in one datagram (about 28 origins), successive digests carry successive slices in
   * origin order, wrapping around: each digest stays one datagram and a peer's view of this
   * node's `seen` is whole after ceil(origins / slice) digests. Gaps are found sooner by sequence
   * numbers (the next batch, at the latest the next heartbeat) and by each origin's own digest.
   */
  digestSlice(): DigestPayload {
    const seen = this.receiver.digest();
    const origins = Object.keys(seen).sort();
    const budget = this.env.payloadBytes - DIGEST_OVERHEAD;
    const slice: Record<string, { incarnation: number; highWater: number }> = {};
    let bytes = 0;
    const first = origins.findIndex((origin) => origin > this.digestCursor);
    const start = first < 0 ? 0 : first;
    for (let index = 0; index < origins.length; index += 1) {
      const origin = origins[(start + index) % origins.length]!;
      const mark = seen[origin]!;
      const size = encode([origin, mark.incarnation, mark.highWater]).length + 24;
      if (bytes + size > budget && index > 0) break;
      slice[origin] = { incarnation: mark.incarnation, highWater: mark.highWater };
      bytes += size;
      this.digestCursor = index + 1 === origins.length ? '' : origin;
    }
    return { k: 'digest', node: this.env.self, incarnation: this.env.incarnation, highWater: this.stream.highWater, seen: slice };
  }

  /** Every `digestMs`: send the digest, start repairs for what peers have that this node lacks, and the initial snapshot. */
  tick(): void {
    const digest = this.digestSlice();
    this.env.broadcast(digest);
    if (this.env.isGateway) this.env.forward(digest);
    // Once a peer is heard (or, if none, after the time it takes to call one down), so a dead node is not tried first.
    const heardAny = this.env.knownNodes().some((node) => this.membership.state(node, this.env.now()) === 'up');
    if (this.initial === 'pending' && (heardAny || this.env.now() - this.startedAt >= this.timings.downAfterMs)) void this.pullInitialSnapshot();
    if (this.resync.size > 0) void this.resyncFailed();
    this.repairAll();
  }

  stop(): void {
    this.stopped = true;
  }

  /**
   * A payload from the network. Returns what it says about gaps: `'gap'` when it revealed one (the
   * caller calls `repairAll` after REORDER_GRACE_MS: a gap from reordering fills on its own),
   * `'back'` when its sender was down and this node lacks what it has (a partition healed, or the
   * node came back: not reordering, so `repairAll` at once), `'none'` otherwise.
   */
  receive(payload: SyncPayload, via: Via): GapNews {
    switch (payload.k) {
      case 'batch':
        return this.receiveBatch(payload, via);
      case 'announce': {
        if (payload.origin === this.env.self) return 'none';
        const gaps = this.receiver.missingFrom({ [payload.origin]: { incarnation: payload.incarnation, highWater: payload.upTo } });
        // Relayed once: a copy coming back around a ring of gateways is not news.
        const relayed = this.announcesRelayed.get(payload.origin);
        if (!relayed || relayed.incarnation < payload.incarnation || (relayed.incarnation === payload.incarnation && relayed.upTo < payload.upTo)) {
          this.announcesRelayed.set(payload.origin, { incarnation: payload.incarnation, upTo: payload.upTo });
          this.relay(payload, via);
        }
        return gaps.length > 0 ? 'gap' : 'none';
      }
      case 'digest': {
        if (payload.node === this.env.self) return 'none';
        // A digest carries a slice of the sender's `seen`: each origin in it may make the sender one of its holders.
        this.peers.set(payload.node, { incarnation: payload.incarnation, highWater: payload.highWater, heardAt: this.env.now() });
        for (const [origin, mark] of Object.entries(payload.seen)) {
          this.noteHolder(origin, payload.node, payload.incarnation, mark);
          this.noteFurthest(origin, mark);
        }
        const back = this.heard(payload.node, payload.incarnation);
        const own = { incarnation: payload.incarnation, highWater: payload.highWater };
        this.noteFurthest(payload.node, own);
        // What this digest newly says (gaps in what arrived were reported when it arrived, and all are weighed at every tick).
        if (this.receiver.missingFrom(payload.seen).length === 0 && this.receiver.missingFrom({ [payload.node]: own }).length === 0) return 'none';
        return back ? 'back' : 'gap';
      }
      default: {
        const unreachable: never = payload;
        return unreachable;
      }
    }
  }

  /** `node` heard (as of `incarnation`); true when it was down until now. */
  private heard(node: string, incarnation: number): boolean {
    const now = this.env.now();
    const wasDown = this.membership.state(node, now) === 'down';
    this.membership.hear(node, incarnation, now);
    const back = wasDown && this.membership.state(node, now) === 'up';
    if (back) this.env.peerBack?.(node);
    return back;
  }

  private receiveBatch(batch: Extract<SyncPayload, { k: 'batch' }>, via: Via): GapNews {
    if (batch.origin === this.env.self) return 'none';
    const before = this.receiver.of(batch.origin);
    const outcome = this.receiver.receive(batch);
    if (outcome.kind === 'replay') {
      this.counters.replays += 1;
      return 'none';
    }
    if (outcome.kind === 'stale-incarnation') {
      this.counters.staleIncarnations += 1;
      return 'none';
    }
    this.counters.batchesReceived += 1;
    if (before && before.incarnation < batch.incarnation) this.originRestarted(batch.origin, before.incarnation);
    const after = this.receiver.of(batch.origin)!;
    const lastSeq = batch.firstSeq + batch.records.length - 1;
    if (after.highWater >= lastSeq) {
      const wall = Math.max(...batch.records.map((record) => record.version.wall));
      const known = this.sinceWall.get(batch.origin);
      if (!known || known.incarnation !== batch.incarnation || wall > known.wall) this.sinceWall.set(batch.origin, { incarnation: batch.incarnation, wall });
    }
    let back = false;
    if (via !== 'repair') {
      for (const record of outcome.records) {
        if (record.key === `meta/node/${batch.origin}@${batch.origin}` && !record.deleted) {
          const incarnation = (record.value as { incarnation?: unknown } | null)?.incarnation;
          back = this.heard(batch.origin, typeof incarnation === 'number' ? incarnation : batch.incarnation) || back;
        }
      }
    }
    this.mergeQuietly(outcome.records);
    this.relay(batch, via);
    // Heard again after being down, with a gap in its stream (this batch's or one known before): repaired now.
    if (back && this.missing().some((gap) => gap.origin === batch.origin)) return 'back';
    return outcome.gaps.length > 0 ? 'gap' : 'none';
  }

  /** A gateway passes its domain's news on to the remote gateways, and theirs into its domain. */
  private relay(payload: SyncPayload, via: Via): void {
    if (!this.env.isGateway || via === 'repair') return;
    this.counters.relayed += 1;
    if (via === 'domain') this.env.forward(payload);
    else this.env.broadcast(payload);
  }

  /**
   * An origin restarted: what it wrote just before may never have reached this node, and its old
   * stream is gone. Its own records since the last one received in order come by snapshot.
   */
  private originRestarted(origin: string, oldIncarnation: number): void {
    const since = this.sinceWall.get(origin);
    const wall = since && since.incarnation === oldIncarnation ? Math.max(0, since.wall - SINCE_MARGIN_MS) : 0;
    void this.catchUpBySnapshot(origin, origin, wall);
  }

  /**
   * Merges records received in the stream. Their sequence numbers already count as received, so
   * if the merge fails their origins are pulled again by snapshot from before the oldest of them.
   */
  private mergeQuietly(records: readonly StoredRecord[]): Promise<void> {
    if (records.length === 0) return Promise.resolve();
    this.counters.recordsMerged += records.length;
    // A merge that throws at once (a full table, a closed store) fails like one that rejects.
    return Promise.resolve()
      .then(() => this.env.merge(records))
      .catch((error: unknown) => {
      this.counters.errors += 1;
      this.env.log.warn({ err: errorMessage(error), records: records.length }, 'merging replicated records failed; they will be pulled again');
      for (const record of records) {
        const known = this.resync.get(record.origin);
        if (known === undefined || record.version.wall < known) this.resync.set(record.origin, record.version.wall);
      }
    });
  }

  /** Origins whose records failed to merge, pulled again (since the wall time given) at the next tick. */
  private async resyncFailed(): Promise<void> {
    for (const [origin, wall] of [...this.resync]) {
      if (this.repairing.has(origin)) continue;
      this.repairing.add(origin);
      try {
        const at = this.receiver.of(origin);
        const source = (at && this.sourceFor(origin, at.incarnation, at.highWater)) ?? origin;
        if (await this.catchUpBySnapshot(source, origin, wall)) {
          if (this.resync.get(origin) === wall) this.resync.delete(origin);
        }
      } finally {
        this.repairing.delete(origin);
      }
    }
  }

  private noteFurthest(origin: string, mark: { incarnation: number; highWater: number }): void {
    if (origin === this.env.self || mark.highWater === 0) return;
    const known = this.furthest.get(origin);
    if (!known || mark.incarnation > known.incarnation || (mark.incarnation === known.incarnation && mark.highWater > known.highWater)) {
      this.furthest.set(origin, { incarnation: mark.incarnation, highWater: mark.highWater });
    }
  }

  /**
   * Gaps against what the peers' digests said, and below out-of-order arrivals. Per origin only
   * its latest incarnation counts (a repair asks for that one; an origin's restart brings its
   * older incarnation's records by snapshot).
   */
  private missing(): Gap[] {
    return [...this.receiver.openGaps(), ...this.receiver.missingFrom(this.furthest)];
  }

  /** Starts a repair for every origin with a gap and none in flight. */
  repairAll(): void {
    if (this.stopped) return;
    const byOrigin = new Map<string, Gap[]>();
    for (const gap of this.missing()) {
      if (gap.origin === this.env.self || this.repairing.has(gap.origin)) continue;
      byOrigin.set(gap.origin, [...(byOrigin.get(gap.origin) ?? []), gap]);
    }
    for (const [origin, gaps] of byOrigin) void this.repairOrigin(origin, gaps);
  }

  private async repairOrigin(origin: string, gaps: Gap[]): Promise<void> {
    this.repairing.add(origin);
    try {
      const from = Math.min(...gaps.map((gap) => gap.from));
      const to = Math.max(...gaps.map((gap) => gap.to));
      const incarnation = Math.max(...gaps.map((gap) => gap.incarnation));
      // A gap longer than an origin keeps (repairKeep, the same on every node by default) cannot be repaired from its stream: straight to a snapshot.
      let complete = (this.membership.state(origin, this.env.now()) !== 'down' || this.peers.size === 0) && to - from + 1 <= this.timings.repairKeep;
      for (let start = from; complete && start <= to && !this.stopped; ) {
        this.counters.repairsAsked += 1;
        const end = Math.min(to, start + REPAIR_CHUNK - 1);
        const answer = await this.env.repair(origin, { origin, incarnation, from: start, to: end }).catch((error: unknown) => {
          this.env.log.debug({ origin, err: errorMessage(error) }, 'repair from the origin failed; trying a snapshot');
          return { batches: [], complete: false };
        });
        let covered = start - 1;
        for (const batch of answer.batches) {
          // Only what was asked for, from whom it was asked.
          if (batch.origin !== origin || batch.incarnation !== incarnation || batch.records.length === 0) continue;
          this.receive({ k: 'batch', ...batch, records: [...batch.records] }, 'repair');
          covered = Math.max(covered, batch.firstSeq + batch.records.length - 1);
        }
        // A reply capped in size is progress: ask for the rest. No progress at all: a snapshot.
        if (answer.complete) start = end + 1;
        else if (covered >= start) start = covered + 1;
        else complete = false;
      }
      if (complete || this.stopped) return;
      // The origin no longer holds the range, or cannot be reached: a snapshot of its records.
      const since = this.sinceWall.get(origin);
      const wall = since && since.incarnation === incarnation ? Math.max(0, since.wall - SINCE_MARGIN_MS) : 0;
      const source = this.sourceFor(origin, incarnation, to);
      if (source) await this.catchUpBySnapshot(source, origin, wall);
    } finally {
      this.repairing.delete(origin);
    }
  }

  /** Who to pull an origin's records from: the origin when reachable, else a peer that has them. */
  private sourceFor(origin: string, incarnation: number, upTo: number): string | undefined {
    const now = this.env.now();
    if (this.membership.state(origin, now) === 'up') return origin;
    for (const holder of this.holders.get(origin) ?? []) {
      const current = this.peers.get(holder.node)?.incarnation === holder.peerIncarnation;
      if (current && this.membership.state(holder.node, now) === 'up' && holder.incarnation === incarnation && holder.highWater >= upTo) return holder.node;
    }
    return undefined;
  }

  /** The peers this node would repair `origin` from while it is down, best first (for status and tests). */
  holdersOf(origin: string): string[] {
    return (this.holders.get(origin) ?? []).map((holder) => holder.node);
  }

  /**
   * `node` (as of its incarnation `peerIncarnation`) has `mark` of `origin`: it takes its place among
   * the origin's holders, best first (newest incarnation, then highest mark). Its older entry goes;
   * when the list is full, so do those of peers that restarted since (their claims were of an old
   * incarnation) or are down, so that live holders are not crowded out by dead ones.
   */
  private noteHolder(origin: string, node: string, peerIncarnation: number, mark: { incarnation: number; highWater: number }): void {
    let list = this.holders.get(origin);
    if (!list) {
      list = [];
      this.holders.set(origin, list);
    }
    const previous = list.findIndex((holder) => holder.node === node);
    if (previous >= 0) list.splice(previous, 1);
    if (list.length >= HOLDERS_KEPT) {
      // Full: room is made first from peers that restarted since they said it, or are down.
      const now = this.env.now();
      for (let index = list.length - 1; index >= 0; index -= 1) {
        const holder = list[index]!;
        if (this.peers.get(holder.node)?.incarnation !== holder.peerIncarnation || this.membership.state(holder.node, now) === 'down') list.splice(index, 1);
      }
    }
    let at = 0;
    while (at < list.length && (list[at]!.incarnation > mark.incarnation || (list[at]!.incarnation === mark.incarnation && list[at]!.highWater >= mark.highWater))) at += 1;
    if (at >= HOLDERS_KEPT) return;
    list.splice(at, 0, { node, peerIncarnation, incarnation: mark.incarnation, highWater: mark.highWater });
    if (list.length > HOLDERS_KEPT) list.length = HOLDERS_KEPT;
  }

  /** Pulls `origin`'s records since `wall` (all records when origin is undefined) from `source`. */
  private async catchUpBySnapshot(source: string, origin: string | undefined, wall: number): Promise<boolean> {
    const startedAt = this.env.now();
    let records = 0;
    try {
      const request = (cursor: string | undefined) => {
        const page = this.env.snapshot(source, {
          limit: SNAPSHOT_PAGE,
          ...(origin === undefined ? {} : { origin }),
          ...(wall > 0 ? { since: wall } : {}),
          ...(cursor === undefined ? {} : { cursor }),
        });
        page.catch(() => undefined); // a prefetched page's failure surfaces when it is awaited
        return page;
      };
      let cursor: string | undefined;
      let digest: DigestPayload | undefined;
      let takenAt: number | undefined;
      let next = request(undefined);
      // A page's merge is applied at once but is durable only when its flush ends: the next page is
      // merged meanwhile (the flushes queue into the next transaction) and the pull waits for the
      // flushes only when MERGES_IN_FLIGHT are outstanding, and at its end.
      const merging: Promise<void>[] = [];
      try {
        do {
          const page = await next;
          if (page.digest.node !== source) throw new Error(`the snapshot from ${source} carries ${page.digest.node}'s digest`);
          if (digest === undefined) {
            digest = page.digest;
            takenAt = page.takenAt;
          }
          cursor = page.cursor;
          // The next page travels while this one is written.
          if (cursor !== undefined) next = request(cursor);
          this.counters.recordsMerged += page.records.length;
          records += page.records.length;
          const merged = Promise.resolve().then(() => this.env.merge(page.records));
          merged.catch(() => undefined); // awaited below
          merging.push(merged);
          if (merging.length > MERGES_IN_FLIGHT) await merging.shift();
        } while (cursor !== undefined && !this.stopped);
      } finally {
        // A failed merge fails the pull (retried later): the marks below must not claim what is not here.
        await Promise.all(merging);
      }
      if (this.stopped || !digest) return false;
      this.counters.snapshotsPulled += 1;
      this.env.log.info({ source, origin, since: wall, records, ms: this.env.now() - startedAt }, 'snapshot pulled and merged');
      // What the source counted when it began is now here.
      const covered: Digest = { ...digest.seen, [digest.node]: { incarnation: digest.incarnation, highWater: digest.highWater } };
      for (const [covers, mark] of Object.entries(covered)) {
        if (covers === this.env.self || (origin !== undefined && covers !== origin)) continue;
        this.receiver.fastForward(covers, mark.incarnation, mark.highWater);
      }
      // The source's own changes that the snapshot did not cover were made after its digest was
      // taken, when its hybrid clock stood at `takenAt`, so their versions are later: a later
      // snapshot of the source starts there (less the margin) instead of at the first gap again. Of other origins a peer's pages say no such thing (it may hold their newer
      // changes past a gap): their marks stay.
      const mark = covered[source];
      const known = this.sinceWall.get(source);
      if (takenAt !== undefined && mark && (origin === undefined || origin === source) && (!known || known.incarnation !== mark.incarnation || takenAt > known.wall)) {
        this.sinceWall.set(source, { incarnation: mark.incarnation, wall: takenAt });
      }
      return true;
    } catch (error) {
      this.counters.errors += 1;
      this.env.log.info({ source, origin, err: errorMessage(error) }, 'snapshot pull failed; the next digest retries');
      return false;
    }
  }

  /** On start: a full snapshot from the first peer that answers. */
  private async pullInitialSnapshot(): Promise<void> {
    this.initial = 'running';
    const now = this.env.now();
    const candidates = [...this.env.knownNodes()].sort((a, b) => Number(this.membership.state(b, now) === 'up') - Number(this.membership.state(a, now) === 'up'));
    for (const node of candidates) {
      if (this.stopped) return;
      if (await this.catchUpBySnapshot(node, undefined, 0)) {
        this.initial = 'done';
        this.env.log.info({ from: node }, 'initial snapshot pulled');
        return;
      }
    }
    // Nobody answered: only a node that knows no other is done; the rest keep trying (not synced meanwhile).
    this.initial = candidates.length === 0 ? 'done' : 'pending';
  }

  /** A repair request for this node's own stream. */
  serveRepair(gap: Gap): RepairAnswer {
    this.counters.repairsServed += 1;
    if (gap.origin !== this.env.self || gap.incarnation !== this.env.incarnation) return { batches: [], complete: false };
    const answer = this.stream.repair(gap.from, Math.min(gap.to, gap.from + REPAIR_CHUNK - 1));
    // Bounded in bytes too: the asker goes on from where this answer stops.
    let bytes = 0;
    const batches: ChangeBatch[] = [];
    for (const batch of answer.batches) {
      const records: StoredRecord[] = [];
      for (const record of batch.records) {
        bytes += encodedSize(record);
        if (bytes > REPAIR_BYTES && (batches.length > 0 || records.length > 0)) {
          if (records.length > 0) batches.push({ ...batch, records });
          return { batches, complete: false };
        }
        records.push(record);
      }
      batches.push({ ...batch, records });
    }
    return { batches, complete: answer.complete && gap.to <= gap.from + REPAIR_CHUNK - 1 };
  }

  /** Caught up: the initial snapshot is in, and no known gap is open or being repaired. */
  get synced(): boolean {
    return this.initial === 'done' && this.repairing.size === 0 && this.resync.size === 0 && this.missing().length === 0;
  }

  members(known: readonly string[]): MemberView[] {
    const now = this.env.now();
    const nodes = [...new Set([...known, ...this.peers.keys()])].filter((node) => node !== this.env.self).sort();
    const views: MemberView[] = [{ node: this.env.self, state: 'up', lastSeenMs: 0, incarnation: this.env.incarnation, syncLag: 0, self: true }];
    for (const node of nodes) {
      const heard = this.membership.lastHeard(node);
      const peer = this.peers.get(node);
      const have = this.receiver.of(node);
      const syncLag = peer && have && have.incarnation === peer.incarnation ? Math.max(0, peer.highWater - have.highWater) : peer && peer.highWater === 0 ? 0 : null;
      views.push({ node, state: this.membership.state(node, now), lastSeenMs: heard ? now - heard.at : null, incarnation: heard?.incarnation ?? null, syncLag });
    }
    return views.sort((a, b) => a.node.localeCompare(b.node));
  }
}
