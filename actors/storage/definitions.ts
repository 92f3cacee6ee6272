/**
 * Pools and shares defined and removed (`object/storage/pool/<id>`, `object/storage/share/<id>`):
 * checked (schema, what this node can provide, names free, nothing left using them), then
 * written with a compare-and-set so two callers never both create one.
 */
import type { ActorRef } from '../../runtime/actor.js';
import { AcpError } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { hasDeviceMapper } from '../../adapters/storage/mounts.js';
import type { RecordView } from '../cdb/index.js';
import { objectKey, parseKey, storagePoolSchema, storageShareSchema, systemPathProblem, type StoragePool, type StorageShare } from '../model.js';
import { homePathProblem, type HomeLayout } from './pools.js';
import { unsupportedShare } from './shares.js';

export interface DefinitionEnv {
  readonly cdb: ActorRef;
  readonly node: string;
  /** This node's home: a pool or a share must not cover it or lie in what the daemon keeps there. */
  readonly layout: HomeLayout;
  readonly pools: Map<string, StoragePool>;
  readonly shares: Map<string, StorageShare>;
  listAll(prefix: string): Promise<RecordView[]>;
  /** A reconciliation pass, awaited (the new pool's state is then known). */
  reconcile(): Promise<void>;
  /** This node's report of a pool, once reconciled. */
  report(name: string): unknown;
}

function badSpec(what: string, error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] }): AcpError {
  const issue = error.issues[0];
  return new AcpError('ACP_ERR_CDB_BAD_VALUE', `bad ${what}: ${issue && issue.path.length > 0 ? `field '${issue.path.join('.')}'` : 'value'}: ${issue?.message ?? 'invalid'}`);
}

/**
 * Why this node cannot have a pool of this type, or undefined when it can. lvm-thin needs the
 * kernel's device-mapper, and even where that is present this build has no LVM adapter (lvcreate
 * and friends): refused either way, naming which.
 */
export async function unsupportedPool(type: StoragePool['type']): Promise<string | undefined> {
  if (type !== 'lvm-thin') return undefined;
  if (!(await hasDeviceMapper())) return "lvm-thin needs the kernel's device-mapper, which this node does not have (no device-mapper in /proc/misc, and modules cannot be loaded here); use a dir or btrfs pool";
  return 'this node has device-mapper, but ACP does not drive LVM thin pools yet (no lvcreate adapter); use a dir or btrfs pool';
}

/** Whether two pools are carried by one node at least (no `nodes`: every node). */
function onSameNode(a: StoragePool, b: StoragePool): boolean {
  return a.nodes === undefined || b.nodes === undefined || a.nodes.some((node) => b.nodes!.includes(node));
}

/** The same directory, or one inside the other. */
function overlaps(a: string, b: string): boolean {
  return a === b || a.startsWith(`${b}/`) || b.startsWith(`${a}/`);
}

async function mustExist(cdb: ActorRef, key: string, missing: string): Promise<void> {
  await cdb.ask({ type: 'cdb.get', key }, { timeoutMs: 10_000 }).catch((error: unknown) => {
    if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', missing);
    throw error;
  });
}

async function createOnce(cdb: ActorRef, key: string, value: unknown, taken: string): Promise<void> {
  try {
    await cdb.ask({ type: 'cdb.cas', key, value, expect: null }, { timeoutMs: 10_000 });
  } catch (error) {
    if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_CONFLICT') throw new AcpError('ACP_ERR_STORAGE_EXISTS', taken);
    throw error;
  }
}

export async function createPool(env: DefinitionEnv, spec: unknown): Promise<Message> {
  const result = storagePoolSchema.safeParse(spec);
  if (!result.success) throw badSpec('pool', result.error);
  const pool = result.data;
  // An lvm-thin pool's path names its volume group (/dev/<vg>), not a directory.
  const misplaced = pool.path === undefined || pool.type === 'lvm-thin' ? undefined : (systemPathProblem(pool.path) ?? homePathProblem(pool.path, env.layout));
  if (misplaced !== undefined) throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `bad pool: field 'path': a pool is a directory of its own: ${misplaced}`);
  const why = await unsupportedPool(pool.type);
  if (why) throw new AcpError('ACP_ERR_STORAGE_UNSUPPORTED', `cannot create ${pool.type} pool '${pool.name}' on node '${env.node}': ${why}; nothing was changed`);
  // Two pools over the same files would give two volumes one image (a volume's file is its name in the pool's directory).
  for (const other of env.pools.values()) {
    if (other.name === pool.name || !onSameNode(pool, other)) continue;
    if (pool.share !== undefined && other.share === pool.share) throw new AcpError('ACP_ERR_STORAGE_EXISTS', `pool '${other.name}' is on share '${pool.share}' already: two pools on one directory would share their volumes' files; use that pool, or another share`);
    if (pool.path !== undefined && other.path !== undefined && overlaps(pool.path, other.path)) {
      throw new AcpError('ACP_ERR_STORAGE_EXISTS', `pool '${other.name}' is at ${other.path}, ${other.path === pool.path ? 'the same directory' : 'which overlaps ' + pool.path}: a directory holds one pool's volumes; pick a directory of its own`);
    }
  }
  if (pool.share !== undefined) {
    const share = await env.cdb.ask({ type: 'cdb.get', key: objectKey('storage/share', pool.share) }, { timeoutMs: 10_000 }).catch(() => undefined);
    if (!share) throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `pool '${pool.name}' is on share '${pool.share}', which does not exist (acp storage share create ${pool.share} ...)`);
  }
  await createOnce(env.cdb, objectKey('storage/pool', pool.name), pool, `pool '${pool.name}' exists already; acp storage pool rm ${pool.name} first, or pick another name`);
  env.pools.set(pool.name, pool);
  await env.reconcile();
  const status = env.report(pool.name);
  return { type: 'storage.pool-created', name: pool.name, spec: pool, ...(status === undefined ? {} : { status }) };
}

export async function removePool(env: DefinitionEnv, name: string): Promise<Message> {
  const inPool = (await env.listAll(`object/storage/volume/${name}/`)).map((record) => parseKey(record.key).id);
  if (inPool.length > 0) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `pool '${name}' still has ${inPool.length} volume${inPool.length > 1 ? 's' : ''} (${inPool.slice(0, 5).join(', ')}${inPool.length > 5 ? ', ...' : ''}); remove them first (acp storage volume rm)`);
  await mustExist(env.cdb, objectKey('storage/pool', name), `no pool '${name}' (acp storage pool ls)`);
  await env.cdb.ask({ type: 'cdb.delete', key: objectKey('storage/pool', name) }, { timeoutMs: 10_000 });
  env.pools.delete(name);
  await env.reconcile();
  return { type: 'storage.pool-removed', name };
}

export async function createShare(env: DefinitionEnv, spec: unknown): Promise<Message> {
  const result = storageShareSchema.safeParse(spec);
  if (!result.success) throw badSpec('share', result.error);
  const share = result.data;
  const misplaced = share.mountpoint === undefined ? undefined : (systemPathProblem(share.mountpoint) ?? homePathProblem(share.mountpoint, env.layout));
  if (misplaced !== undefined) throw new AcpError('ACP_ERR_STORAGE_BAD_PATH', `bad share: field 'mountpoint': a share is mounted on a directory of its own: ${misplaced}`);
  const why = await unsupportedShare(share.type);
  if (why) throw new AcpError('ACP_ERR_STORAGE_UNSUPPORTED', `cannot create ${share.type} share '${share.name}' from node '${env.node}': ${why}; nothing was changed`);
  await createOnce(env.cdb, objectKey('storage/share', share.name), share, `share '${share.name}' exists already; acp storage share rm ${share.name} first, or pick another name`);
  env.shares.set(share.name, share);
  await env.reconcile();
  return { type: 'storage.share-created', name: share.name, spec: share };
}

export async function removeShare(env: DefinitionEnv, name: string): Promise<Message> {
  const users = (await env.listAll('object/storage/pool/')).flatMap((record) => {
    const pool = storagePoolSchema.safeParse(record.value);
    return pool.success && pool.data.share === name ? [pool.data.name] : [];
  });
  if (users.length > 0) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `share '${name}' holds pool${users.length > 1 ? 's' : ''} ${users.join(', ')}; remove ${users.length > 1 ? 'them' : 'it'} first (acp storage pool rm)`);
  await mustExist(env.cdb, objectKey('storage/share', name), `no share '${name}' (acp storage share ls)`);
  await env.cdb.ask({ type: 'cdb.delete', key: objectKey('storage/share', name) }, { timeoutMs: 10_000 });
  env.shares.delete(name);
  await env.reconcile();
  return { type: 'storage.share-removed', name };
}
