import { join } from 'node:path';
import type { ActorContext, Actor, ServiceDefinition } from '../../runtime/actor.js';
import { replyLater } from '../../runtime/actor.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import type { ServiceDeps } from '../../runtime/services.js';
import { listBlockDevices } from '../../adapters/storage/lsblk.js';
import { FS_MAGIC, makeDirectory, probePath, type Capacity } from '../../adapters/storage/fs.js';
import type { RecordView } from '../cdb/index.js';
import { CdbFeed } from '../cdb-feed.js';
import { ServiceCounters } from '../kit.js';
import { metaKey, parseKey, statsKey, storagePoolSchema, storageShareSchema, storageVolumeSchema, type StoragePool, type StorageShare, type StorageVolume } from '../model.js';
import { createPool, createShare, removePool, removeShare, unsupportedPool, type DefinitionEnv } from './definitions.js';
import { deviceObject, DevicePublisher } from './devices.js';
import { volumeId } from './layout.js';
import { poolStats } from './stats.js';
import { carriedBy, homeLayout, poolRoot, type PoolReport } from './pools.js';
import { storageAuthority, storageSchema } from './schema.js';
import { knownHostsIn, ShareMounts } from './shares.js';
import { StorageVolumes } from './volumes.js';

export { storageAuthority, storageSchema } from './schema.js';

const DESCRIPTION = 'Storage: devices, pools, shares and volumes';
/** Pools and shares are checked, and pool stats published, this often. */
const RECONCILE_MS = 3000;
const DEVICES_MS = 30_000;
/** A pool's path (a share's above all) must answer a probe within this, or it is marked error. */
const PROBE_MS = 5000;
const STOP_WAIT_MS = 200;

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
  const counters = new ServiceCounters();
  const cdb = ctx.ref(`acp://${ctx.node.cluster}/${node}/cdb`);
  const pools = new Map<string, StoragePool>();
  const shares = new Map<string, StorageShare>();
  const volumes = new Map<string, StorageVolume>();
  const poolReports = new Map<string, PoolReport>();
  const poolRoots = new Map<string, string>();
  const capacities = new Map<string, Capacity>();
  const importDir = join(home, 'import');
  const layout = homeLayout(deps.paths, importDir);
  const shareMounts = new ShareMounts(ctx, node, layout, knownHostsIn(deps.paths.secrets), PROBE_MS);
  const shareReports = shareMounts.reports;
  const published = new Map<string, string>();
  let running: Promise<void> | undefined;
  let again = false;
  let timer: NodeJS.Timeout | undefined;
  let devicesTimer: NodeJS.Timeout | undefined;
  let lastFailure: string | undefined;
  /** The first reconciliation after a start: until it is done no pool is known active here. */
  let firstPass: Promise<void> = Promise.resolve();

  const tick = () => ctx.self.tell({ type: 'storage.tick' });
  // One feed for all of object/storage/ (a CdbFeed takes every cdb.events its actor gets), split by type here.
  const feeds = [
    new CdbFeed(ctx, 'object/storage/', (records) => {
      const byType = (type: string) => records.filter((record) => parseKey(record.key).type === type);
      apply(byType('storage/pool'), pools, (value) => storagePoolSchema.safeParse(value));
      apply(byType('storage/share'), shares, (value) => storageShareSchema.safeParse(value));
      apply(byType('storage/volume'), volumes, (value) => storageVolumeSchema.safeParse(value));
      if (records.some((record) => !record.key.startsWith('object/storage/volume/') && !record.key.startsWith('object/storage/device/'))) tick();
    }, () => {
      // The CDB restarted and lost the meta/ published: the next pass publishes all of it again.
      published.clear();
      tick();
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

  /** Each pool carried here: its root probed (made for a dir pool), its type checked, its capacity read. */
  const reconcilePools = async (): Promise<void> => {
    const seen = new Set<string>();
    for (const pool of pools.values()) {
      if (!carriedBy(pool, node)) continue;
      seen.add(pool.name);
      const base = { type: pool.type, shared: pool.shared, content: [...pool.content] };
      const report = (state: PoolReport['state'], path: string | null, reason?: string): PoolReport => ({ ...base, state, path, ...(reason === undefined ? {} : { reason }) });
      if (pool.type === 'lvm-thin') {
        poolReports.set(pool.name, report('error', null, (await unsupportedPool(pool.type))!));
        continue;
      }
      const root = poolRoot(pool, shares, shareReports, layout);
      if ('why' in root) {
        const failed = pool.path !== undefined || (pool.share !== undefined && shareReports.get(pool.share)?.state === 'error');
        poolReports.set(pool.name, report(failed ? 'error' : 'inactive', null, root.why));
        poolRoots.delete(pool.name);
        continue;
      }
      if (pool.path !== undefined) await makeDirectory(root.root).catch(() => undefined);
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
    await shareMounts.reconcile(pools.values(), shares);
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

  const listAll = async (prefix: string): Promise<RecordView[]> => {
    const reply = await cdb.ask<Message & { records: RecordView[] }>({ type: 'cdb.list', prefix, limit: 10_000 }, { timeoutMs: 10_000 });
    return reply.records.filter((record) => !record.deleted);
  };

  const definitions: DefinitionEnv = { cdb, node, layout, pools, shares, listAll, reconcile, report: (name) => poolReports.get(name) };
  const devices = new DevicePublisher(cdb, node, ctx.log);

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
    importDirs: [importDir, '/var/lib/acp/import'],
  });

  return {
    async started() {
      await devices.adopt();
      for (const feed of feeds) await feed.start();
      firstPass = reconcile();
      timer = setInterval(tick, RECONCILE_MS);
      timer.unref();
      void devices.refresh();
      devicesTimer = setInterval(() => void devices.refresh(), DEVICES_MS);
      devicesTimer.unref();
    },
    receive(message) {
      counters.handled += 1;
      for (const feed of feeds) {
        const fed = feed.handle(message);
        if (fed !== false) return fed === true ? undefined : fed;
      }
      const parsed = storageSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return counters.info('storage', DESCRIPTION, ctx);
        case 'storage.pool-create':
          return replyLater(createPool(definitions, parsed.spec));
        case 'storage.pool-rm':
          return replyLater(removePool(definitions, parsed.name));
        case 'storage.pool-status': {
          const chosen = [...poolReports].filter(([id]) => parsed.name === undefined || id === parsed.name);
          return { type: 'storage.pool-status', node, pools: Object.fromEntries(chosen.map(([id, report]) => [id, { ...report, capacity: capacities.get(id) ?? null }])) };
        }
        case 'storage.share-create':
          return replyLater(createShare(definitions, parsed.spec));
        case 'storage.share-rm':
          return replyLater(removeShare(definitions, parsed.name));
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
          // Right after a start (a daemon adopting its guests) the pools are checked first.
          return replyLater(firstPass.then(() => volumeOps.disks(parsed.system, parsed.disks, parsed.iso, parsed.boot)));
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
