import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ActorContext, Actor, ServiceDefinition } from '../../runtime/actor.js';
import { replyLater } from '../../runtime/actor.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import type { ServiceDeps } from '../../runtime/services.js';
import { listBlockDevices } from '../../adapters/storage/lsblk.js';
import { FS_MAGIC, probePath, type Capacity } from '../../adapters/storage/fs.js';
import { hasDeviceMapper, hasMountHelper, kernelFilesystems, listMounts, mountNetwork, mountSshfs, unmount } from '../../adapters/storage/mounts.js';
import type { RecordView } from '../cdb/index.js';
import { CdbFeed } from '../cdb-feed.js';
import { ServiceClock } from '../kit.js';
import { metaKey, objectKey, parseKey, statsKey, storagePoolSchema, storageShareSchema, storageVolumeSchema, type StoragePool, type StorageShare, type StorageVolume } from '../model.js';
import { deviceObject } from './devices.js';
import { volumeId } from './layout.js';
import { poolStats } from './stats.js';
import { carriedBy, poolRoot, shareMountpoint, sharesWanted, type PoolReport, type ShareReport } from './pools.js';
import { storageAuthority, storageSchema } from './schema.js';
import { StorageVolumes } from './volumes.js';

export { storageAuthority, storageSchema } from './schema.js';

const DESCRIPTION = 'Storage: devices, pools, shares and volumes';
/** Pools and shares are checked, and pool stats published, this often. */
const RECONCILE_MS = 3000;
const DEVICES_MS = 30_000;
/** A pool's path (a share's above all) must answer a probe within this, or it is marked error. */
const PROBE_MS = 5000;
const STOP_WAIT_MS = 200;

function badSpec(what: string, error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] }): AcpError {
  const issue = error.issues[0];
  return new AcpError('ACP_ERR_CDB_BAD_VALUE', `bad ${what}: ${issue && issue.path.length > 0 ? `field '${issue.path.join('.')}'` : 'value'}: ${issue?.message ?? 'invalid'}`);
}

/**
 * The Storage service: follows `object/storage/{pool,share,volume}/` (CdbFeed); every
 * RECONCILE_MS mounts the shares this node uses, probes each pool it carries (in a worker, with a
 * deadline: a hung share never blocks this loop), publishes `meta/storage/pool/<id>@<node>` on
 * change and `stats/storage/pool/<id>@<node>` every pass; publishes its block devices; and carries
 * out volume requests (actors/storage/volumes.ts) on its own copy of each pool.
 */
export function createStorage(ctx: ActorContext, deps: ServiceDeps): Actor {
  const node = ctx.node.node;
  const home = deps.paths.home;
  const clock = new ServiceClock();
  const cdb = ctx.ref(`acp://${ctx.node.cluster}/${node}/cdb`);
  const pools = new Map<string, StoragePool>();
  const shares = new Map<string, StorageShare>();
  const volumes = new Map<string, StorageVolume>();
  const poolReports = new Map<string, PoolReport>();
  const poolRoots = new Map<string, string>();
  const capacities = new Map<string, Capacity>();
  const shareReports = new Map<string, ShareReport>();
  /** Mount points this service mounted (only those are ever unmounted). */
  const mountedHere = new Map<string, { mountpoint: string; fuse: boolean }>();
  const published = new Map<string, string>();
  const devicesPublished = new Map<string, string>();
  let running: Promise<void> | undefined;
  let again = false;
  let timer: NodeJS.Timeout | undefined;
  let devicesTimer: NodeJS.Timeout | undefined;
  let lastFailure: string | undefined;

  const tick = () => ctx.self.tell({ type: 'storage.tick' });
  // One feed for all of object/storage/ (a CdbFeed takes every cdb.event its actor gets), split by type here.
  const feeds = [
    new CdbFeed(ctx, 'object/storage/', (records) => {
      const byType = (type: string) => records.filter((record) => parseKey(record.key).type === type);
      apply(byType('storage/pool'), pools, (value) => storagePoolSchema.safeParse(value));
      apply(byType('storage/share'), shares, (value) => storageShareSchema.safeParse(value));
      apply(byType('storage/volume'), volumes, (value) => storageVolumeSchema.safeParse(value));
      if (records.some((record) => !record.key.startsWith('object/storage/volume/') && !record.key.startsWith('object/storage/device/'))) tick();
    }),
  ];

  function apply<T>(records: readonly RecordView[], into: Map<string, T>, parse: (value: unknown) => { success: true; data: T } | { success: false }): void {
    for (const record of records) {
      const id = parseKey(record.key).id;
      const parsed = record.deleted ? undefined : parse(record.value);
      if (parsed?.success) into.set(id, parsed.data);
      else into.delete(id);
    }
  }

  const put = (key: string, value: unknown) => cdb.ask({ type: 'cdb.put', key, value }, { timeoutMs: 10_000 });
  const remove = (key: string) => cdb.ask({ type: 'cdb.delete', key }, { timeoutMs: 10_000 }).catch(() => undefined);

  /** Meta written when it changes; meta of what is no longer here deleted. */
  const publishMeta = async (wanted: Map<string, unknown>): Promise<void> => {
    for (const [key, value] of wanted) {
      const text = JSON.stringify(value);
      if (published.get(key) === text) continue;
      await put(key, value);
      published.set(key, text);
      const state = (value as { state?: string; reason?: string }).state;
      ctx.log.info({ key, state, reason: (value as { reason?: string }).reason }, `${key.split('@')[0]!.slice('meta/storage/'.length)} is ${state}`);
    }
    for (const key of [...published.keys()].filter((known) => !wanted.has(known))) {
      await remove(key);
      if (key.startsWith('meta/storage/pool/')) await remove(key.replace(/^meta\//, 'stats/'));
      published.delete(key);
    }
  };

  /** Mounts what this node should, checks what is mounted, unmounts what it mounted and no longer needs. */
  const reconcileShares = async (): Promise<void> => {
    const wanted = sharesWanted(pools.values(), shares, node);
    const mounts = await listMounts();
    const mounted = new Map(mounts.map((entry) => [entry.mountpoint, entry]));
    // After a restart: a share mounted at its mount point by an earlier run of this service is its own.
    for (const share of shares.values()) {
      const mountpoint = shareMountpoint(share, home);
      const entry = mounted.get(mountpoint);
      if (entry && !mountedHere.has(share.name) && (entry.fstype === 'fuse.sshfs' || entry.fstype === share.type)) mountedHere.set(share.name, { mountpoint, fuse: share.type === 'sshfs' });
    }
    for (const id of wanted) {
      const share = shares.get(id)!;
      const mountpoint = shareMountpoint(share, home);
      const base = { type: share.type, mountpoint };
      try {
        if (!mounted.has(mountpoint)) {
          await mountShare(share, mountpoint);
          ctx.log.info({ share: id, mountpoint }, `mounted share ${id}`);
        }
        const probe = await probePath(mountpoint, PROBE_MS);
        shareReports.set(id, probe.ok ? { ...base, state: 'mounted' } : { ...base, state: 'error', reason: probe.hung ? `hung: ${probe.why}` : probe.why });
      } catch (error) {
        shareReports.set(id, { ...base, state: 'error', reason: errorMessage(error) });
      }
    }
    for (const [id, mount] of [...mountedHere].filter(([known]) => !wanted.has(known))) {
      try {
        const hung = shareReports.get(id)?.state === 'error';
        await unmount(mount.mountpoint, mount.fuse, hung);
        mountedHere.delete(id);
        ctx.log.info({ share: id, mountpoint: mount.mountpoint }, `unmounted share ${id}`);
      } catch (error) {
        ctx.log.warn({ share: id, err: errorMessage(error) }, 'could not unmount a share; the next pass tries again');
      }
    }
    for (const id of [...shareReports.keys()].filter((known) => !wanted.has(known) && !mountedHere.has(known))) shareReports.delete(id);
  };

  /** Why this node cannot mount shares of this type, or undefined when it can. */
  const unsupportedShare = async (type: StorageShare['type']): Promise<string | undefined> => {
    if (type === 'sshfs') return undefined;
    const kernel = type === 'nfs' ? 'nfs' : 'cifs';
    if (!(await kernelFilesystems()).has(kernel)) return `this node's kernel has no ${type.toUpperCase()} client ('${kernel}' is not in /proc/filesystems, and modules cannot be loaded here): use an sshfs share`;
    if (!(await hasMountHelper(type))) return `mount.${type} is not installed on this node (apt-get install ${type === 'nfs' ? 'nfs-common' : 'cifs-utils'})`;
    return undefined;
  };

  const mountShare = async (share: StorageShare, mountpoint: string): Promise<void> => {
    const why = await unsupportedShare(share.type);
    if (why) throw new AcpError('ACP_ERR_STORAGE_UNSUPPORTED', `share '${share.name}' (${share.type}): ${why}`);
    await mkdir(mountpoint, { recursive: true, mode: 0o700 });
    if (share.type === 'sshfs') {
      await mountSshfs({ server: share.server, path: share.path, mountpoint, knownHosts: join(deps.paths.secrets, 'known_hosts'), ...(share.user ? { user: share.user } : {}), ...(share.port ? { port: share.port } : {}), ...(share.identityFile ? { identityFile: share.identityFile } : {}) });
    } else if (share.type === 'nfs') {
      await mountNetwork('nfs', `${share.server}:${share.path}`, mountpoint, ['soft', 'timeo=50', 'retrans=2', ...(share.port ? [`port=${share.port}`] : [])]);
    } else {
      await mountNetwork('cifs', `//${share.server}${share.path}`, mountpoint, share.user ? [`username=${share.user}`] : ['guest']);
    }
    mountedHere.set(share.name, { mountpoint, fuse: share.type === 'sshfs' });
  };

  /** Each pool carried here: its root probed (made for a dir pool), its type checked, its capacity read. */
  const reconcilePools = async (): Promise<void> => {
    const seen = new Set<string>();
    for (const pool of pools.values()) {
      if (!carriedBy(pool, node)) continue;
      seen.add(pool.name);
      const base = { type: pool.type, shared: pool.shared, content: [...pool.content] };
      const report = (state: PoolReport['state'], path: string | null, reason?: string): PoolReport => ({ ...base, state, path, ...(reason === undefined ? {} : { reason }) });
      if (pool.type === 'lvm-thin') {
        poolReports.set(pool.name, report('error', null, (await unsupportedPool(pool.type)) ?? 'lvm-thin pools are not implemented yet; use dir or btrfs'));
        continue;
      }
      const root = poolRoot(pool, shares, shareReports, home);
      if ('why' in root) {
        poolReports.set(pool.name, report(pool.share !== undefined && shareReports.get(pool.share)?.state === 'error' ? 'error' : 'inactive', null, root.why));
        poolRoots.delete(pool.name);
        continue;
      }
      if (pool.path !== undefined) await mkdir(root.root, { recursive: true }).catch(() => undefined);
      const probe = await probePath(root.root, PROBE_MS);
      if (!probe.ok) {
        poolReports.set(pool.name, report('error', root.root, probe.hung ? `hung: ${probe.why}` : probe.why));
        continue;
      }
      if (pool.type === 'btrfs' && probe.capacity.fsType !== FS_MAGIC.btrfs) {
        poolReports.set(pool.name, report('error', root.root, `${root.root} is not on a btrfs filesystem (statfs type 0x${probe.capacity.fsType.toString(16)}); mount one there (mkfs.btrfs) or make it a dir pool`));
        continue;
      }
      poolReports.set(pool.name, report('active', root.root));
      poolRoots.set(pool.name, root.root);
      capacities.set(pool.name, probe.capacity);
    }
    for (const id of [...poolReports.keys()].filter((known) => !seen.has(known))) {
      poolReports.delete(id);
      poolRoots.delete(id);
      capacities.delete(id);
    }
  };

  /** Why this node cannot have a pool of this type (lvm-thin without device-mapper). */
  const unsupportedPool = async (type: StoragePool['type']): Promise<string | undefined> => {
    if (type !== 'lvm-thin') return undefined;
    if (!(await hasDeviceMapper())) return "lvm-thin needs the kernel's device-mapper, which this node does not have (no device-mapper in /proc/misc); use a dir or btrfs pool";
    return undefined;
  };

  /** The volumes of a pool that live on this node (all of them on a shared pool). */
  const volumesHere = (pool: StoragePool): StorageVolume[] => [...volumes.values()].filter((volume) => volume.pool === pool.name && (pool.shared || volume.node === undefined || volume.node === node));

  const publishStats = async (): Promise<void> => {
    const ops: { op: 'put'; key: string; value: unknown }[] = [];
    for (const [id, report] of poolReports) {
      const capacity = capacities.get(id);
      const root = poolRoots.get(id);
      const pool = pools.get(id);
      if (report.state !== 'active' || !capacity || !root || !pool) continue;
      ops.push({ op: 'put', key: statsKey('storage/pool', id, node), value: await poolStats(pool, capacity, root, volumesHere(pool)) });
    }
    for (let offset = 0; offset < ops.length; offset += 1000) await cdb.ask({ type: 'cdb.batch', ops: ops.slice(offset, offset + 1000) }, { timeoutMs: 10_000 });
  };

  const pass = async (): Promise<void> => {
    await reconcileShares();
    await reconcilePools();
    const meta = new Map<string, unknown>();
    for (const [id, report] of shareReports) meta.set(metaKey('storage/share', id, node), report);
    for (const [id, report] of poolReports) meta.set(metaKey('storage/pool', id, node), report);
    await publishMeta(meta);
    await publishStats();
  };

  const reconcile = (): Promise<void> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        try {
          await pass();
          if (lastFailure !== undefined) ctx.log.info('storage reconciliation works again');
          lastFailure = undefined;
        } catch (error) {
          const why = errorMessage(error);
          if (why !== lastFailure) ctx.log.warn({ err: why }, 'storage reconciliation failed; retrying');
          lastFailure = why;
        }
      } while (again);
    })().finally(() => {
      running = undefined;
    });
    return running;
  };

  /** Block devices: published when they change, removed when gone. */
  const refreshDevices = async (): Promise<void> => {
    try {
      const found = (await listBlockDevices()).map((device) => deviceObject(node, device));
      const wanted = new Map(found.map((device) => [objectKey('storage/device', device.name), device]));
      for (const [key, device] of wanted) {
        const text = JSON.stringify(device);
        if (devicesPublished.get(key) === text) continue;
        await put(key, device);
        devicesPublished.set(key, text);
      }
      for (const key of [...devicesPublished.keys()].filter((known) => !wanted.has(known))) {
        await remove(key);
        devicesPublished.delete(key);
      }
    } catch (error) {
      ctx.log.warn({ err: errorMessage(error) }, 'could not list block devices; trying again later');
    }
  };

  /** Devices this node published before a restart: known, so the first refresh removes the gone ones. */
  const adoptDevices = async (): Promise<void> => {
    const listed = await cdb.ask<Message & { records: RecordView[] }>({ type: 'cdb.list', prefix: 'object/storage/device/', limit: 10_000 }, { timeoutMs: 10_000 }).catch(() => undefined);
    for (const record of listed?.records ?? []) {
      if (!record.deleted && (record.value as { node?: unknown }).node === node) devicesPublished.set(record.key, '');
    }
  };

  const createPool = async (spec: unknown): Promise<Message> => {
    const result = storagePoolSchema.safeParse(spec);
    if (!result.success) throw badSpec('pool', result.error);
    const pool = result.data;
    const why = await unsupportedPool(pool.type);
    if (why) throw new AcpError('ACP_ERR_STORAGE_UNSUPPORTED', `cannot create ${pool.type} pool '${pool.name}' on node '${node}': ${why}; nothing was changed`);
    if (pool.share !== undefined) {
      const share = await cdb.ask({ type: 'cdb.get', key: objectKey('storage/share', pool.share) }, { timeoutMs: 10_000 }).catch(() => undefined);
      if (!share) throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `pool '${pool.name}' is on share '${pool.share}', which does not exist (acp storage share create ${pool.share} ...)`);
    }
    try {
      await cdb.ask({ type: 'cdb.cas', key: objectKey('storage/pool', pool.name), value: pool, expect: null }, { timeoutMs: 10_000 });
    } catch (error) {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_CONFLICT') throw new AcpError('ACP_ERR_STORAGE_EXISTS', `pool '${pool.name}' exists already; acp storage pool rm ${pool.name} first, or pick another name`);
      throw error;
    }
    pools.set(pool.name, pool);
    await reconcile();
    return { type: 'storage.pool-created', name: pool.name, spec: pool, ...(poolReports.has(pool.name) ? { status: poolReports.get(pool.name) } : {}) };
  };

  const listAll = async (prefix: string): Promise<RecordView[]> => {
    const reply = await cdb.ask<Message & { records: RecordView[] }>({ type: 'cdb.list', prefix, limit: 10_000 }, { timeoutMs: 10_000 });
    return reply.records.filter((record) => !record.deleted);
  };

  const removePool = async (name: string): Promise<Message> => {
    const inPool = (await listAll(`object/storage/volume/${name}/`)).map((record) => parseKey(record.key).id);
    if (inPool.length > 0) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `pool '${name}' still has ${inPool.length} volume${inPool.length > 1 ? 's' : ''} (${inPool.slice(0, 5).join(', ')}${inPool.length > 5 ? ', ...' : ''}); remove them first (acp storage volume rm)`);
    await cdb.ask({ type: 'cdb.get', key: objectKey('storage/pool', name) }, { timeoutMs: 10_000 }).catch((error: unknown) => {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `no pool '${name}' (acp storage pool ls)`);
      throw error;
    });
    await cdb.ask({ type: 'cdb.delete', key: objectKey('storage/pool', name) }, { timeoutMs: 10_000 });
    pools.delete(name);
    await reconcile();
    return { type: 'storage.pool-removed', name };
  };

  const createShare = async (spec: unknown): Promise<Message> => {
    const result = storageShareSchema.safeParse(spec);
    if (!result.success) throw badSpec('share', result.error);
    const share = result.data;
    const why = await unsupportedShare(share.type);
    if (why) throw new AcpError('ACP_ERR_STORAGE_UNSUPPORTED', `cannot create ${share.type} share '${share.name}' from node '${node}': ${why}; nothing was changed`);
    try {
      await cdb.ask({ type: 'cdb.cas', key: objectKey('storage/share', share.name), value: share, expect: null }, { timeoutMs: 10_000 });
    } catch (error) {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_CONFLICT') throw new AcpError('ACP_ERR_STORAGE_EXISTS', `share '${share.name}' exists already; acp storage share rm ${share.name} first, or pick another name`);
      throw error;
    }
    shares.set(share.name, share);
    await reconcile();
    return { type: 'storage.share-created', name: share.name, spec: share };
  };

  const removeShare = async (name: string): Promise<Message> => {
    const users = (await listAll('object/storage/pool/')).flatMap((record) => {
      const pool = storagePoolSchema.safeParse(record.value);
      return pool.success && pool.data.share === name ? [pool.data.name] : [];
    });
    if (users.length > 0) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `share '${name}' holds pool${users.length > 1 ? 's' : ''} ${users.join(', ')}; remove ${users.length > 1 ? 'them' : 'it'} first (acp storage pool rm)`);
    await cdb.ask({ type: 'cdb.get', key: objectKey('storage/share', name) }, { timeoutMs: 10_000 }).catch((error: unknown) => {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `no share '${name}' (acp storage share ls)`);
      throw error;
    });
    await cdb.ask({ type: 'cdb.delete', key: objectKey('storage/share', name) }, { timeoutMs: 10_000 });
    shares.delete(name);
    await reconcile();
    return { type: 'storage.share-removed', name };
  };

  const volumeOps = new StorageVolumes({
    ctx,
    cdb,
    node,
    pool: (name) => pools.get(name),
    root: (name) => poolRoots.get(name),
    report: (name) => poolReports.get(name),
    volumes: () => volumes.values(),
    forget: (pool, name) => volumes.delete(volumeId(pool, name)),
    remember: (volume) => volumes.set(volumeId(volume.pool, volume.name), volume),
    listAll,
  });

  return {
    async started() {
      await adoptDevices();
      for (const feed of feeds) await feed.start();
      timer = setInterval(tick, RECONCILE_MS);
      timer.unref();
      void refreshDevices();
      devicesTimer = setInterval(() => void refreshDevices(), DEVICES_MS);
      devicesTimer.unref();
    },
    receive(message) {
      clock.handled += 1;
      for (const feed of feeds) {
        const fed = feed.handle(message);
        if (fed !== false) return fed === true ? undefined : fed;
      }
      const parsed = storageSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return clock.info('storage', DESCRIPTION, ctx);
        case 'storage.pool-create':
          return replyLater(createPool(parsed.spec));
        case 'storage.pool-rm':
          return replyLater(removePool(parsed.name));
        case 'storage.pool-status': {
          const chosen = [...poolReports].filter(([id]) => parsed.name === undefined || id === parsed.name);
          return { type: 'storage.pool-status', node, pools: Object.fromEntries(chosen.map(([id, report]) => [id, { ...report, capacity: capacities.get(id) ?? null }])) };
        }
        case 'storage.share-create':
          return replyLater(createShare(parsed.spec));
        case 'storage.share-rm':
          return replyLater(removeShare(parsed.name));
        case 'storage.share-status':
          return { type: 'storage.share-status', node, shares: Object.fromEntries([...shareReports].filter(([id]) => parsed.name === undefined || id === parsed.name)) };
        case 'storage.volume-create':
          return replyLater(volumeOps.create(parsed.pool, parsed.name, parsed.sizeBytes, parsed.format));
        case 'storage.volume-resize':
          return replyLater(volumeOps.resize(parsed.pool, parsed.name, parsed.sizeBytes));
        case 'storage.volume-snapshot':
          return replyLater(volumeOps.snapshot(parsed.pool, parsed.name, parsed.op, parsed.snapshot));
        case 'storage.volume-clone':
          return replyLater(volumeOps.clone(parsed.pool, parsed.name, parsed.target, parsed.linked));
        case 'storage.volume-import':
          return replyLater(volumeOps.import(parsed.pool, parsed.name, parsed.file, parsed.format));
        case 'storage.volume-rm':
          return replyLater(volumeOps.remove(parsed.pool, parsed.name));
        case 'storage.volume-info':
          return replyLater(volumeOps.info(parsed.pool, parsed.name));
        case 'storage.devices':
          return replyLater(listBlockDevices().then((found) => ({ type: 'storage.devices', node, devices: found.map((device) => deviceObject(node, device)) })));
        case 'storage.disks':
          return replyLater(volumeOps.disks(parsed.system, parsed.disks, parsed.iso, parsed.boot));
        case 'storage.tick':
          void reconcile();
          return undefined;
        default: {
          const unreachable: never = parsed;
          return unreachable;
        }
      }
    },
    async stopping() {
      clearInterval(timer);
      clearInterval(devicesTimer);
      for (const feed of feeds) feed.stop();
      // Shares stay mounted and files stay: guests keep their disks while the daemon restarts.
      await Promise.race([running, new Promise((resolve) => setTimeout(resolve, STOP_WAIT_MS).unref())]);
    },
  };
}

export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'storage',
  description: DESCRIPTION,
  schema: storageSchema,
  authority: storageAuthority,
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new AcpError('ACP_ERR_ISOLATION_UNSUPPORTED', 'the storage service runs inline only (it mounts shares under the node home)');
    return createStorage(ctx, deps);
  },
};
