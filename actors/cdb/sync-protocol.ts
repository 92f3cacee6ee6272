/** What CDB sync nodes send each other (payloads, repair and snapshot exchanges) and what they report. */
import { encode } from 'cbor-x';
import { z } from 'zod';
import type { StoredRecord } from '../../adapters/store.js';
import { isValidName, nameSchema } from '../../runtime/path.js';
import type { Logger } from '../../runtime/logger.js';
import type { ChangeBatch, Gap } from './replication.js';

const name = nameSchema;
const REPAIR_BATCHES_MAX = 10_000;
const RECORD_FIELDS = new Set(['key', 'value', 'version', 'origin', 'deleted']);
const VERSION_FIELDS = 3;
const isCount = (value: unknown): boolean => typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
const isPlainObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * `{ key (1-512 characters), value, version { wall, logical, node }, origin, deleted? }` and no
 * other field. Checked by hand rather than by a zod object: a snapshot page holds 5,000 records
 * and a multicast batch dozens, and zod's check was about 3 µs a record, a twelfth of a merging
 * node's time. The value itself is checked where it is merged (checkValue, the object's schema).
 */
export function isStoredRecord(value: unknown): value is StoredRecord {
  if (!isPlainObject(value)) return false;
  for (const field in value) if (!RECORD_FIELDS.has(field)) return false;
  if (!('value' in value)) return false;
  const { key, version, origin, deleted } = value;
  if (typeof key !== 'string' || key.length === 0 || key.length > 512) return false;
  if (typeof origin !== 'string' || !isValidName(origin)) return false;
  if (deleted !== undefined && typeof deleted !== 'boolean') return false;
  if (!isPlainObject(version) || Object.keys(version).length !== VERSION_FIELDS) return false;
  return isCount(version.wall) && isCount(version.logical) && typeof version.node === 'string' && isValidName(version.node);
}

export const storedRecordSchema = z.custom<StoredRecord>(isStoredRecord, {
  message: 'not a CDB record: { key (1-512 characters), value, version { wall, logical, node }, origin, deleted? }, node names by the naming rule',
});
const digestSchema = z.record(name, z.strictObject({ incarnation: z.number().int().min(0), highWater: z.number().int().min(0) }));
const batchSchema = z.strictObject({
  k: z.literal('batch'),
  origin: name,
  incarnation: z.number().int().min(0),
  firstSeq: z.number().int().min(1),
  records: z.array(storedRecordSchema).min(1).max(100_000),
});

export const syncPayloadSchema = z.discriminatedUnion('k', [
  batchSchema,
  /** Sequence numbers up to `upTo` exist (their records did not fit a datagram): fetch them by repair. */
  z.strictObject({ k: z.literal('announce'), origin: name, incarnation: z.number().int().min(0), upTo: z.number().int().min(1) }),
  /** The sender's own stream position and what it has of every other origin. */
  z.strictObject({ k: z.literal('digest'), node: name, incarnation: z.number().int().min(0), highWater: z.number().int().min(0), seen: digestSchema }),
]);
export type SyncPayload = z.infer<typeof syncPayloadSchema>;

/** Answers from other nodes are checked like everything else from the network. */
export const repairAnswerSchema = z.object({
  batches: z.array(batchSchema.omit({ k: true })).max(REPAIR_BATCHES_MAX),
  complete: z.boolean(),
});
export const snapshotPageSchema = z.object({
  records: z.array(storedRecordSchema).max(10_000),
  // Both optional: a node from before they were added leaves them out.
  bytes: z.number().int().min(0).max(1 << 30).optional(),
  takenAt: z.number().int().min(0).optional(),
  cursor: z.string().max(512).optional(),
  digest: z.strictObject({ k: z.literal('digest'), node: name, incarnation: z.number().int().min(0), highWater: z.number().int().min(0), seen: digestSchema }),
});
export type DigestPayload = Extract<SyncPayload, { k: 'digest' }>;

export const snapshotRequestSchema = z.strictObject({
  /** Only records whose origin is this node. */
  origin: name.optional(),
  /** Only records with a version at or after this wall time. */
  since: z.number().int().min(0).optional(),
  cursor: z.string().max(512).optional(),
  limit: z.number().int().min(1).max(10_000),
});
export type SnapshotRequest = z.infer<typeof snapshotRequestSchema>;

export interface SnapshotPage {
  records: StoredRecord[];
  /**
   * The records' CBOR size as the server measured it (it sizes each to cap the page): what both
   * sides count as snapshot traffic, so neither encodes a page again just to count it.
   */
  bytes?: number;
  /** The wall of the server's hybrid clock, ticked when it took the digest: its later changes are newer (the first page's is the one used). */
  takenAt?: number;
  /** Absent on the last page. */
  cursor?: string;
  /** What the sender had when the snapshot began: everything it counts is in the pages. */
  digest: DigestPayload;
}

export interface RepairAnswer {
  batches: ChangeBatch[];
  /** False when the origin no longer holds all of the range (or restarted): use a snapshot. */
  complete: boolean;
}

/** How a received payload came in: from this domain, from a remote gateway, or as a repair answer. */
export type Via = 'domain' | 'gateway' | 'repair';

export interface SyncEnv {
  readonly self: string;
  readonly incarnation: number;
  readonly log: Logger;
  now(): number;
  /** Largest encoded payload one send may carry (a datagram's worth on multicast). */
  readonly payloadBytes: number;
  /** Sends to every node of this domain (multicast, or unicast to each known peer). */
  broadcast(payload: SyncPayload): void;
  /** Sends to the remote domains' gateways; nothing when this node is not a gateway. */
  forward(payload: SyncPayload): void;
  readonly isGateway: boolean;
  /** Asks `origin` for part of its own stream. */
  repair(origin: string, gap: Gap): Promise<RepairAnswer>;
  /** Asks `node` for one page of a snapshot. */
  snapshot(node: string, request: SnapshotRequest): Promise<SnapshotPage>;
  /** Merges records into the local CDB by last-writer-wins; resolves once they are durable. */
  merge(records: readonly StoredRecord[]): Promise<void>;
  /** Every other node this one knows to be in the cluster. */
  knownNodes(): readonly string[];
  /** `node` was heard after it was down (a partition healed, a node came back): links to it may try at once. */
  peerBack?(node: string): void;
}

export interface SyncTimings {
  suspectAfterMs: number;
  downAfterMs: number;
  repairKeep: number;
}

export type MemberState = 'up' | 'suspect' | 'down';

export interface MemberView {
  node: string;
  state: MemberState;
  /** Milliseconds since a heartbeat or digest from it arrived; null: never. */
  lastSeenMs: number | null;
  incarnation: number | null;
  /** Its changes it has announced that this node does not have yet; null: not known. */
  syncLag: number | null;
  self?: true;
}

export interface SyncCounters {
  batchesSent: number;
  recordsSent: number;
  announced: number;
  batchesReceived: number;
  recordsMerged: number;
  replays: number;
  staleIncarnations: number;
  relayed: number;
  repairsAsked: number;
  repairsServed: number;
  snapshotsPulled: number;
  snapshotPagesServed: number;
  /** Of those, pages read ahead while the page before them travelled. */
  snapshotPagesReadAhead: number;
  errors: number;
}

/** Bytes a record takes in a payload (CBOR), with a little for the array framing. */
export function encodedSize(record: StoredRecord): number {
  return encode(record).length + 2;
}
