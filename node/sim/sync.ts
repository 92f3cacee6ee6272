/**
 * A simulator for CDB sync (actors/cdb/sync.ts's Replicator): many nodes on a fake network that
 * drops, delays, partitions and restarts, with a fake clock. Deterministic per seed. Used by
 * test/sync-sim.test.ts (correctness) and bench/sync-sim.ts (traffic per node as the cluster
 * grows); the same Replicator runs for real in acpd (actors/cdb/sync-node.ts).
 *
 * Each node meters its traffic like the daemon does (actors/cdb/sync-traffic.ts): a broadcast
 * counts as one datagram of the size the multicast channel would send (its envelope and MAC
 * included), sent once and received by every other node of the domain.
 */
import { encode } from 'cbor-x';
import type { StoredRecord } from '../../adapters/store.js';
import { HybridClock } from '../../actors/cdb/hlc.js';
import { wins } from '../../actors/cdb/replication.js';
import { encodedSize, REORDER_GRACE_MS, Replicator, type SnapshotPage, type SnapshotRequest, type SyncPayload, type SyncTimings, type Via } from '../../actors/cdb/sync.js';
import { TrafficMeter } from '../../actors/cdb/sync-traffic.js';
import { silentLogger } from '../../runtime/logger.js';
import { seeded } from '../../runtime/sim.js';

const DIGEST_MS = 1000;
const STEP_MS = 10;

export interface SimNode {
  name: string;
  domain: string;
  gateway: boolean;
  incarnation: number;
  store: Map<string, StoredRecord>;
  clock: HybridClock;
  replicator: Replicator;
  up: boolean;
  dropRate: number;
  /** Merges that fail (a full disk, say) before they work again. */
  failMerges: number;
  /** What it sent and received, as acpd counts it. */
  traffic: TrafficMeter;
  /** Its multicast channel's sequence number (part of each datagram's envelope). */
  seq: number;
  /** When a gap it saw is repaired (as acpd does, REORDER_GRACE_MS after the gap shows), if one is due. */
  repairDueAt: number | undefined;
}

/** The multicast channel's fixed part of a datagram: `ACP1` and an HMAC-SHA256 (adapters/multicast.ts). */
const DATAGRAM_HEADER_BYTES = 4 + 32;

/** Freezes a payload shared by every receiver: a receiver that changed it would throw, not corrupt the others' copies. */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

export const DEFAULT_SIM_TIMINGS: SyncTimings = { suspectAfterMs: 1500, downAfterMs: 2500, repairKeep: 200 };

export class Sim {
  now = 1_000_000;
  readonly nodes = new Map<string, SimNode>();
  private queue: { at: number; to: string; payload: SyncPayload; via: Via; bytes: number }[] = [];
  /** Nodes cut off from everyone (a link down). */
  readonly partitioned = new Set<string>();
  readonly rand: () => number;
  /** Every write acknowledged to a client: key → the versions written. */
  readonly acknowledged: StoredRecord[] = [];
  /** Every snapshot page asked for: by whom, of whom, and the request. */
  readonly snapshotsAsked: { by: string; source: string; request: SnapshotRequest; at: number }[] = [];
  /** Each time a node heard a peer it held for down (what the real node tells its agent, to redial at once). */
  readonly heardBack: { by: string; peer: string; at: number }[] = [];

  /** The largest digest datagram any node sent, in bytes. */
  largestDigest = 0;

  constructor(
    seed: number,
    private readonly timings: SyncTimings = DEFAULT_SIM_TIMINGS,
  ) {
    this.rand = seeded(seed);
  }

  add(name: string, options: { domain?: string; gateway?: boolean } = {}): SimNode {
    const node: SimNode = {
      name,
      domain: options.domain ?? 'a',
      gateway: options.gateway ?? false,
      incarnation: this.now,
      store: this.nodes.get(name)?.store ?? new Map(),
      clock: new HybridClock(name, () => this.now),
      replicator: undefined as unknown as Replicator,
      up: true,
      dropRate: this.nodes.get(name)?.dropRate ?? 0,
      failMerges: 0,
      traffic: new TrafficMeter(),
      seq: 0,
      repairDueAt: undefined,
    };
    for (const record of node.store.values()) node.clock.observe(record.version);
    node.replicator = this.replicatorFor(node);
    this.nodes.set(name, node);
    return node;
  }

  private reachable(from: string, to: string): boolean {
    const target = this.nodes.get(to);
    return target !== undefined && target.up && !this.partitioned.has(from) && !this.partitioned.has(to);
  }

  /** One payload to many: sized and copied once, metered as one datagram sent and one received per delivery. */
  private sendAll(from: SimNode, targets: Iterable<SimNode>, payload: SyncPayload, via: Via): void {
    from.seq += 1;
    const bytes = DATAGRAM_HEADER_BYTES + encode({ o: from.name, i: from.incarnation, s: from.seq, p: payload }).length;
    if (payload.k === 'digest') this.largestDigest = Math.max(this.largestDigest, bytes);
    from.traffic.sent('multicast', payload.k, bytes);
    const copy = deepFreeze(structuredClone(payload));
    for (const to of targets) {
      if (!this.reachable(from.name, to.name) || this.rand() < from.dropRate) continue;
      this.queue.push({ at: this.now + 1 + Math.floor(this.rand() * 3), to: to.name, payload: copy, via, bytes });
    }
  }

  private replicatorFor(node: SimNode): Replicator {
    const incarnation = node.incarnation;
    const alive = () => this.nodes.get(node.name) === node && node.up;
    return new Replicator(
      {
        self: node.name,
        incarnation,
        log: silentLogger(),
        now: () => this.now,
        payloadBytes: 1300,
        isGateway: node.gateway,
        broadcast: (payload) => {
          if (!alive()) return;
          this.sendAll(node, [...this.nodes.values()].filter((other) => other !== node && other.domain === node.domain), payload, 'domain');
        },
        forward: (payload) => {
          if (!alive()) return;
          this.sendAll(node, [...this.nodes.values()].filter((other) => other.gateway && other.domain !== node.domain), payload, 'gateway');
        },
        repair: async (origin, gap) => {
          if (!this.reachable(node.name, origin)) throw new Error(`${origin} unreachable`);
          const source = this.nodes.get(origin)!;
          const answer = source.replicator.serveRepair(gap);
          const bytes = encode(answer).length;
          source.traffic.exchange('repair', 'served', bytes);
          node.traffic.exchange('repair', 'received', bytes);
          return structuredClone(answer);
        },
        snapshot: async (source, request) => {
          if (!this.reachable(node.name, source)) throw new Error(`${source} unreachable`);
          const from = this.nodes.get(source)!;
          this.snapshotsAsked.push({ by: node.name, source, request, at: this.now });
          const page = snapshotOf(from, request);
          from.traffic.exchange('snapshot', 'served', page.bytes ?? 0);
          node.traffic.exchange('snapshot', 'received', page.bytes ?? 0);
          return structuredClone(page);
        },
        merge: async (records) => {
          if (node.failMerges > 0) {
            node.failMerges -= 1;
            throw new Error('the store refused the write');
          }
          for (const record of records) {
            node.clock.observe(record.version);
            if (wins(record, node.store.get(record.key))) node.store.set(record.key, record);
          }
        },
        knownNodes: () => [...this.nodes.keys()].filter((name) => name !== node.name),
        peerBack: (peer) => this.heardBack.push({ by: node.name, peer, at: this.now }),
      },
      this.timings,
    );
  }

  /** A client's write on `name`, acknowledged once in its store. */
  write(name: string, key: string, value: unknown, deleted = false): StoredRecord {
    const node = this.nodes.get(name)!;
    const record: StoredRecord = { key, value: deleted ? null : value, version: node.clock.tick(), origin: name, ...(deleted ? { deleted: true } : {}) };
    node.store.set(key, record);
    node.replicator.local([record]);
    this.acknowledged.push(record);
    return record;
  }

  /** Runs the network and the timers for `ms` of simulated time. */
  async run(ms: number): Promise<void> {
    const end = this.now + ms;
    while (this.now < end) {
      this.now += STEP_MS;
      for (const node of this.nodes.values()) if (node.up) node.replicator.flush();
      const due = this.queue.filter((item) => item.at <= this.now);
      this.queue = this.queue.filter((item) => item.at > this.now);
      for (const item of due) {
        const target = this.nodes.get(item.to);
        if (!target?.up) continue;
        target.traffic.received('multicast', item.payload.k, item.bytes);
        const news = target.replicator.receive(item.payload, item.via);
        if (news === 'back') target.repairDueAt = this.now;
        else if (news === 'gap') target.repairDueAt ??= this.now + REORDER_GRACE_MS;
      }
      for (const node of this.nodes.values()) {
        if (!node.up || node.repairDueAt === undefined || node.repairDueAt > this.now) continue;
        node.repairDueAt = undefined;
        node.replicator.repairAll();
      }
      if (this.now % DIGEST_MS === 0) {
        for (const node of this.nodes.values()) {
          if (!node.up) continue;
          // The Framework's heartbeat: a meta record like any other change.
          const heartbeat: StoredRecord = { key: `meta/node/${node.name}@${node.name}`, value: { incarnation: node.incarnation }, version: node.clock.tick(), origin: node.name };
          node.store.set(heartbeat.key, heartbeat);
          node.replicator.local([heartbeat]);
          node.replicator.tick();
        }
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  kill(name: string): void {
    const node = this.nodes.get(name)!;
    node.up = false;
    node.replicator.stop();
  }

  restart(name: string): SimNode {
    return this.add(name, { domain: this.nodes.get(name)!.domain, gateway: this.nodes.get(name)!.gateway });
  }

  fingerprint(name: string): string {
    const store = this.nodes.get(name)!.store;
    // Heartbeats change every second (one may be in flight): objects are what must agree.
    return [...store.keys()]
      .filter((key) => key.startsWith('object/'))
      .sort()
      .map((key) => `${key}=${JSON.stringify(store.get(key)!.version)}`)
      .join('\n');
  }
}

export function snapshotOf(node: SimNode, request: SnapshotRequest): SnapshotPage {
  const digest = node.replicator.digest();
  const takenAt = node.clock.tick().wall;
  const keys = [...node.store.keys()].sort().filter((key) => request.cursor === undefined || key > request.cursor);
  const records: StoredRecord[] = [];
  let bytes = 0;
  for (const key of keys) {
    const record = node.store.get(key)!;
    if (request.origin !== undefined && record.origin !== request.origin) continue;
    if (request.since !== undefined && record.version.wall < request.since) continue;
    records.push(record);
    bytes += encodedSize(record);
    if (records.length >= request.limit) return { records, bytes, takenAt, cursor: key, digest };
  }
  return { records, bytes, takenAt, digest };
}

