/**
 * The CDB's replication logic, free of sockets and timers so a simulator can drive it (issue 5
 * wires it to authenticated multicast and the agent). Every node numbers its own changes per
 * incarnation (1, 2, 3, ...); a receiver merges whatever arrives by last-writer-wins, which is
 * commutative and idempotent, and tracks per origin which sequence numbers it has seen, so that
 * replays are dropped, gaps are asked for, and digests (per-origin high-water marks) show what a
 * peer is missing.
 */
import type { StoredRecord } from '../../adapters/store.js';
import { compareVersions } from './hlc.js';

/** One datagram's worth of changes from one origin. */
export interface ChangeBatch {
  readonly origin: string;
  readonly incarnation: number;
  /** The sequence number of the first record; the rest follow consecutively. */
  readonly firstSeq: number;
  readonly records: readonly StoredRecord[];
}

/** Per origin: the incarnation and the highest sequence number received with no gap below it. */
export type Digest = Readonly<Record<string, { readonly incarnation: number; readonly highWater: number }>>;

export interface Gap {
  readonly origin: string;
  readonly incarnation: number;
  /** Inclusive range of missing sequence numbers. */
  readonly from: number;
  readonly to: number;
}

/** Whether `incoming` replaces `current` under last-writer-wins (HLC version, ties by node name). */
export function wins(incoming: StoredRecord, current: StoredRecord | undefined): boolean {
  return current === undefined || compareVersions(incoming.version, current.version) > 0;
}

/** What the receiver keeps per origin. */
interface OriginState {
  incarnation: number;
  /** Highest sequence with everything at or below it received. */
  highWater: number;
  /** Received above the high-water mark (out of order), bounded by `maxAhead`. */
  ahead: Set<number>;
}

export type ReceiveOutcome =
  | { readonly kind: 'accepted'; readonly records: readonly StoredRecord[]; readonly gaps: readonly Gap[] }
  | { readonly kind: 'replay'; readonly records: readonly [] }
  | { readonly kind: 'stale-incarnation'; readonly records: readonly [] };

/** The sending side: this node's own change stream. */
export class ChangeStream {
  private nextSeq = 1;
  /** Recent batches, so a peer's repair request can be answered; bounded. */
  private readonly recent: ChangeBatch[] = [];
  private kept = 0;

  constructor(
    readonly origin: string,
    readonly incarnation: number,
    private readonly keep = 10_000,
  ) {}

  /** Numbers a set of local changes for sending. */
  next(records: readonly StoredRecord[]): ChangeBatch {
    const batch: ChangeBatch = { origin: this.origin, incarnation: this.incarnation, firstSeq: this.nextSeq, records };
    this.nextSeq += records.length;
    this.recent.push(batch);
    this.kept += records.length;
    while (this.recent.length > 0 && this.kept > this.keep) this.kept -= this.recent.shift()!.records.length;
    return batch;
  }

  get highWater(): number {
    return this.nextSeq - 1;
  }

  /**
   * The records with sequence numbers `from..to` still held, as batches. What has been dropped
   * already is for a snapshot to cover (returned as `complete: false`).
   */
  repair(from: number, to: number): { batches: ChangeBatch[]; complete: boolean } {
    const batches: ChangeBatch[] = [];
    let covered = from;
    for (const batch of this.recent) {
      const last = batch.firstSeq + batch.records.length - 1;
      if (last < from || batch.firstSeq > to) continue;
      const start = Math.max(from, batch.firstSeq);
      const end = Math.min(to, last);
      if (start > covered) break;
      batches.push({ ...batch, firstSeq: start, records: batch.records.slice(start - batch.firstSeq, end - batch.firstSeq + 1) });
      covered = end + 1;
    }
    return { batches, complete: covered > to };
  }

}

/** The receiving side: what this node has seen of every other origin. */
export class ReceiverState {
  private readonly origins = new Map<string, OriginState>();
  replays = 0;
  staleIncarnations = 0;

  constructor(
    readonly self: string,
    private readonly maxAhead = 100_000,
  ) {}

  /**
   * Takes a batch: replays and batches of an incarnation older than the one known are dropped;
   * otherwise its records are returned to be merged, with any gap it reveals.
   */
  receive(batch: ChangeBatch): ReceiveOutcome {
    let state = this.origins.get(batch.origin);
    if (state && batch.incarnation < state.incarnation) {
      this.staleIncarnations += 1;
      return { kind: 'stale-incarnation', records: [] };
    }
    if (!state || batch.incarnation > state.incarnation) {
      // A new incarnation starts a new stream at 1.
      state = { incarnation: batch.incarnation, highWater: 0, ahead: new Set() };
      this.origins.set(batch.origin, state);
    }
    const fresh: StoredRecord[] = [];
    batch.records.forEach((record, index) => {
      const seq = batch.firstSeq + index;
      if (seq <= state.highWater || state.ahead.has(seq)) return;
      if (state.ahead.size < this.maxAhead || seq === state.highWater + 1) {
        state.ahead.add(seq);
        fresh.push(record);
      }
    });
    if (fresh.length === 0) {
      this.replays += 1;
      return { kind: 'replay', records: [] };
    }
    while (state.ahead.delete(state.highWater + 1)) state.highWater += 1;
    return { kind: 'accepted', records: fresh, gaps: this.gapsOf(batch.origin, state) };
  }

  /** This node's high-water mark for `origin` (0 when nothing is known), with its incarnation. */
  of(origin: string): { incarnation: number; highWater: number } | undefined {
    const state = this.origins.get(origin);
    return state ? { incarnation: state.incarnation, highWater: state.highWater } : undefined;
  }

  /**
   * Everything of `origin` up to `highWater` is here by other means (a snapshot that covers it):
   * move the mark up. An older incarnation than the one known changes nothing.
   */
  fastForward(origin: string, incarnation: number, highWater: number): void {
    let state = this.origins.get(origin);
    if (state && incarnation < state.incarnation) return;
    if (!state || incarnation > state.incarnation) {
      state = { incarnation, highWater: 0, ahead: new Set() };
      this.origins.set(origin, state);
    }
    if (highWater <= state.highWater) return;
    state.highWater = highWater;
    for (const seq of state.ahead) if (seq <= highWater) state.ahead.delete(seq);
    while (state.ahead.delete(state.highWater + 1)) state.highWater += 1;
  }

  /** Gaps this node knows of in what it has received (below records that arrived out of order). */
  openGaps(): Gap[] {
    return [...this.origins.entries()].flatMap(([origin, state]) => this.gapsOf(origin, state));
  }

  /** What this node has of each origin, for anti-entropy. */
  digest(): Digest {
    const digest: Record<string, { incarnation: number; highWater: number }> = {};
    for (const [origin, state] of this.origins) digest[origin] = { incarnation: state.incarnation, highWater: state.highWater };
    return digest;
  }

  /** Compared with a peer's digest (its own stream included): the ranges this node lacks. */
  missingFrom(peer: Digest | ReadonlyMap<string, { readonly incarnation: number; readonly highWater: number }>): Gap[] {
    const gaps: Gap[] = [];
    for (const [origin, theirs] of peer instanceof Map ? peer : Object.entries(peer)) {
      if (origin === this.self) continue;
      const mine = this.origins.get(origin);
      if (!mine || theirs.incarnation > mine.incarnation) {
        if (theirs.highWater > 0) gaps.push({ origin, incarnation: theirs.incarnation, from: 1, to: theirs.highWater });
        continue;
      }
      if (theirs.incarnation < mine.incarnation) continue;
      // Nothing out of order here (the common case): at most the range above the mark, without gapsOf's sorting.
      if (mine.ahead.size === 0) {
        if (theirs.highWater > mine.highWater) gaps.push({ origin, incarnation: mine.incarnation, from: mine.highWater + 1, to: theirs.highWater });
        continue;
      }
      for (const gap of this.gapsOf(origin, mine, theirs.highWater)) gaps.push(gap);
    }
    return gaps;
  }

  private gapsOf(origin: string, state: OriginState, limit?: number): Gap[] {
    // Nothing out of order (the common case, weighed for every origin at every digest): at most one gap, above the mark.
    if (state.ahead.size === 0 && limit === undefined) return [];
    // From the sorted out-of-order arrivals, not sequence by sequence: a claimed mark may be huge.
    const ahead = [...state.ahead].sort((a, b) => a - b);
    const upTo = limit ?? Math.max(state.highWater, ahead.at(-1) ?? 0);
    const gaps: Gap[] = [];
    let next = state.highWater + 1;
    for (const seq of ahead) {
      if (seq > upTo) break;
      if (seq > next) gaps.push({ origin, incarnation: state.incarnation, from: next, to: seq - 1 });
      next = seq + 1;
    }
    if (next <= upTo) gaps.push({ origin, incarnation: state.incarnation, from: next, to: upTo });
    return gaps;
  }
}
