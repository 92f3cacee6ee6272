/** The CDB's messages (what it accepts, what it sends watchers) and who may send each. */
import { z } from 'zod';
import type { StoredRecord } from '../../adapters/store.js';
import type { AuthorityTable } from '../../runtime/authority.js';
import type { Message } from '../../runtime/messages.js';
import { nameSchema } from '../../runtime/path.js';
import { serviceInfoSchema } from '../kit.js';
import { formatVersion } from './hlc.js';
import { snapshotRequestSchema } from './sync.js';

const key = z.string().min(1).max(512);
const prefix = z.string().max(512);
const actorPath = z.string().startsWith('acp://').max(1024);
const op = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('put'), key, value: z.unknown() }),
  z.strictObject({ op: z.literal('delete'), key }),
]);

export const cdbSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  z.strictObject({ type: z.literal('cdb.put'), key, value: z.unknown() }),
  z.strictObject({ type: z.literal('cdb.get'), key }),
  z.strictObject({ type: z.literal('cdb.delete'), key }),
  z.strictObject({ type: z.literal('cdb.list'), prefix, limit: z.number().int().min(1).max(10_000).optional(), cursor: key.optional() }),
  /** Put only if the key's current version is `expect` (`null`: only if the key does not exist). */
  z.strictObject({ type: z.literal('cdb.cas'), key, value: z.unknown(), expect: z.string().max(100).nullable() }),
  z.strictObject({ type: z.literal('cdb.batch'), ops: z.array(op).min(1).max(1000) }),
  /** The agent installed a rotated cluster key: re-key multicast from the key file. */
  z.strictObject({ type: z.literal('cdb.sync.rekey') }),
  z.strictObject({ type: z.literal('cdb.watch'), prefix, subscriber: actorPath }),
  z.strictObject({ type: z.literal('cdb.unwatch'), watch: z.number().int() }),
  z.strictObject({ type: z.literal('cdb.history'), key }),
  /** Records replicated from other nodes: each applied only if it wins over what is here (LWW). */
  z.strictObject({
    type: z.literal('cdb.merge'),
    records: z
      .array(
        z.strictObject({
          key,
          value: z.unknown(),
          version: z.strictObject({ wall: z.number().int().min(0), logical: z.number().int().min(0), node: nameSchema }),
          origin: nameSchema,
          deleted: z.boolean().optional(),
        }),
      )
      .max(10_000),
  }),
  /** Sync traffic from another node over the agent (unicast mode, or relayed by a gateway). */
  z.strictObject({ type: z.literal('cdb.sync'), payload: z.unknown(), relay: z.boolean().optional() }),
  /** Part of this node's own change stream, for a peer that missed it. */
  z.strictObject({
    type: z.literal('cdb.sync.repair'),
    origin: nameSchema,
    incarnation: z.number().int().min(0),
    from: z.number().int().min(1),
    to: z.number().int().min(1),
  }),
  snapshotRequestSchema.extend({ type: z.literal('cdb.sync.snapshot') }),
  // The page after one just served, read ahead while that one travels (only from itself).
  snapshotRequestSchema.extend({ type: z.literal('cdb.sync.snapshot-ahead') }),
  z.strictObject({ type: z.literal('cdb.sync.status') }),
  z.strictObject({ type: z.literal('cdb.sync.datagram'), payload: z.unknown(), bytes: z.number().int().min(0) }),
  z.strictObject({ type: z.literal('cdb.sync.tick') }),
  z.strictObject({ type: z.literal('cdb.sync.flush') }),
  z.strictObject({ type: z.literal('cdb.sync.repair-due') }),
  z.strictObject({ type: z.literal('cdb.sync.identified'), address: z.string().max(300), node: nameSchema }),
  /** Fault injection (daemon with --faults): drop this share of outgoing sync sends. */
  z.strictObject({ type: z.literal('cdb.sync.faults'), dropRate: z.number().min(0).max(1) }),
  /** Fault injection (daemon with --faults), from this node's Framework: no sync traffic in or out. */
  z.strictObject({ type: z.literal('cdb.sync.partition'), on: z.boolean() }),
  /** Membership: every node known, classified up, suspect or down, with its sync lag. */
  z.strictObject({ type: z.literal('cdb.nodes') }),
  /** A digest of the records under a prefix (default: every object), to compare nodes. */
  z.strictObject({ type: z.literal('cdb.hash'), prefix: prefix.optional() }),
  z.strictObject({ type: z.literal('terminated'), path: z.string(), reason: z.string() }),
]);
export type CdbMessage = z.infer<typeof cdbSchema>;

/** A record as the CDB hands it out: the version as text (`wall.logical@node`). */
export interface RecordView {
  key: string;
  value: unknown;
  version: string;
  origin: string;
  deleted?: true;
}

/**
 * Changes under a watch's prefix, in commit order: one message per commit (a write, a batch, a
 * merge of replicated records; a batch mixing objects with meta or stats: one for each, objects
 * first), split into chunks of at most 500 records.
 */
export interface CdbEvents extends Message {
  type: 'cdb.events';
  watch: number;
  /**
   * The number of the first record; the others follow it. Records are numbered 1, 2, 3, ... per
   * watch with no gap, so a watcher can tell that nothing was missed.
   */
  seq: number;
  records: RecordView[];
}

export interface CdbSnapshot extends Message {
  type: 'cdb.snapshot';
  watch: number;
  records: RecordView[];
  /** The last snapshot chunk: changes follow as cdb.events. */
  done: boolean;
}


export function view(record: StoredRecord): RecordView {
  const version = formatVersion(record.version);
  // Two literals, not a spread: this runs for every record a get or a list answers.
  return record.deleted
    ? { key: record.key, value: record.value, version, origin: record.origin, deleted: true }
    : { key: record.key, value: record.value, version, origin: record.origin };
}

/** Sync and merge come only from the other nodes' CDBs (each relayed by its own node's agent). */
const fromPeerCdbs = { internal: [{ service: 'cdb', nodes: 'peers' }] } as const;
const ownCdb = { internal: [{ service: 'cdb', nodes: 'self' }] } as const;

/**
 * Records only an admin reads and writes: alarm targets carry a webhook's bearer token and HMAC
 * secret (and a webhook URL is often a credential itself). Other readers (operator, auditor
 * tokens) are refused a get, list or watch inside the prefix, and a wider list or watch leaves
 * them out; the node's own services read them as ever.
 */
export const ADMIN_ONLY_PREFIXES = ['object/alarm-target/'] as const;

export function adminOnly(key: string): boolean {
  for (const prefix of ADMIN_ONLY_PREFIXES) if (key.startsWith(prefix)) return true;
  return false;
}

/**
 * The CDB's messages parsed, with the commonest read checked by hand: a `cdb.get` that is exactly
 * `{ type, key }` with a key of 1 to 512 characters is what the schema would return, unchanged.
 * Anything else goes to the schema, which decides and names what is wrong. A get is most of what
 * the CDB is asked, and the schema's generic walk costs as much as a cached store read.
 */
export function parseCdbMessage(message: Message): CdbMessage {
  if (message.type === 'cdb.get' && isPlainGet(message)) return message as CdbMessage;
  return cdbSchema.parse(message);
}

function isPlainGet(message: Message): boolean {
  const { key } = message as { key?: unknown };
  if (typeof key !== 'string' || key.length < 1 || key.length > 512 || Object.getPrototypeOf(message) !== Object.prototype) return false;
  let fields = 0;
  for (const name in message) {
    if (name !== 'type' && name !== 'key') return false;
    fields += 1;
  }
  return fields === 2;
}

/** Answered by the CDB's `read` outside its mailbox (see Actor.read): they never wait behind writes. */
export const CDB_READS: ReadonlySet<string> = new Set(['cdb.get', 'cdb.list', 'cdb.history']);

/** Who may send what to the CDB (see runtime/authority.ts); writes to object/token/ also need admin, and ADMIN_ONLY_PREFIXES reads and writes. */
export const cdbAuthority: AuthorityTable = {
  'service.info': 'read',
  'cdb.get': 'read',
  'cdb.list': 'read',
  'cdb.watch': 'read',
  'cdb.unwatch': 'read',
  'cdb.history': 'read',
  'cdb.nodes': 'read',
  'cdb.hash': 'read',
  'cdb.sync.status': 'read',
  'cdb.put': 'operate',
  'cdb.delete': 'operate',
  'cdb.cas': 'operate',
  'cdb.batch': 'operate',
  'cdb.sync.faults': 'local-admin',
  // The Framework's faults.partition (admin, --faults) sets it.
  'cdb.sync.partition': { internal: [{ service: 'framework', nodes: 'self' }] },
  'cdb.sync.rekey': { internal: [{ service: 'agent', nodes: 'self' }] },
  // The sync machinery's datagrams, timers and findings, told by this CDB to itself.
  'cdb.sync.datagram': ownCdb,
  'cdb.sync.tick': ownCdb,
  'cdb.sync.flush': ownCdb,
  'cdb.sync.repair-due': ownCdb,
  'cdb.sync.identified': ownCdb,
  'cdb.merge': fromPeerCdbs,
  'cdb.sync': fromPeerCdbs,
  'cdb.sync.repair': fromPeerCdbs,
  'cdb.sync.snapshot': fromPeerCdbs,
  'cdb.sync.snapshot-ahead': ownCdb,
};
