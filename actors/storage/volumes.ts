/**
 * Volume requests on this node's copy of a pool: decided here (the pool active here, the volume
 * known and living here, nobody running on it), done by adapters/storage/volumes.ts. Requests on
 * one volume run one after the other.
 */
import type { ActorContext, ActorRef } from '../../runtime/actor.js';
import { AcpError } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { imageInfo } from '../../adapters/storage/qemu-img.js';
import { cloneVolume, createVolume, exists, importVolume, removeVolume, resizeVolume, snapshotVolume, type VolumeFormat } from '../../adapters/storage/volumes.js';
import type { RecordView } from '../cdb/index.js';
import { objectKey, parseKey, storageVolumeSchema, systemObjectSchema, type StoragePool, type StorageVolume, type SystemDisk } from '../model.js';
import { snapshotPath, volumeId, volumeLayout, type VolumeLayout } from './layout.js';
import type { PoolReport } from './pools.js';
import { GUEST_HOLDS_STATES, liveHolders } from '../system-uses.js';
import type { ResolvedCdrom, ResolvedDisk } from './schema.js';

/**
 * A volume's size in whole 512-byte sectors, rounded up: qemu-img makes a new image so (12345
 * bytes asked, 12800 made), refuses to resize a qcow2 to anything else, and rounds a raw one up,
 * so every size asked is rounded up here alike, and the volume's object says what the image has.
 */
export function sectorRounded(bytes: number): number {
  return Math.ceil(bytes / 512) * 512;
}

/** System states in which its guest holds its disks open. */

export interface VolumeEnv {
  readonly ctx: ActorContext;
  readonly cdb: ActorRef;
  readonly node: string;
  pool(name: string): StoragePool | undefined;
  root(name: string): string | undefined;
  report(name: string): PoolReport | undefined;
  volumes(): Iterable<StorageVolume>;
  forget(pool: string, name: string): void;
  remember(volume: StorageVolume): void;
  listAll(prefix: string): Promise<RecordView[]>;
  /** Where `volume import` takes files from (the node home's import/ and /var/lib/acp/import). */
  readonly importDirs: readonly string[];
}

interface Users {
  /** Systems whose guest runs on it: `web1 (running on n1)`. */
  live: string[];
  /** Systems that have it as a disk or CD-ROM, running or not. */
  attached: string[];
  /** The live ones: where each runs and in what state. */
  guests: { id: string; node: string; state: string }[];
}

export class StorageVolumes {
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly env: VolumeEnv) {}

  /** Runs `work` after every earlier request on the same volume. */
  private serial<T>(id: string, work: () => Promise<T>): Promise<T> {
    const before = this.locks.get(id) ?? Promise.resolve();
    const next = before.then(work, work);
    const settled = next.catch(() => undefined);
    this.locks.set(id, settled);
    void settled.then(() => {
      if (this.locks.get(id) === settled) this.locks.delete(id);
    });
    return next;
  }

  /** The pool, active on this node, holding `content`; else why not. */
  private activePool(name: string, content?: 'images' | 'iso'): { pool: StoragePool; root: string } {
    const pool = this.env.pool(name);
    if (!pool) throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `no pool '${name}' (acp storage pool ls)`);
    const report = this.env.report(name);
    const root = this.env.root(name);
    if (!report) throw new AcpError('ACP_ERR_STORAGE_NOT_CARRIED', `pool '${name}' is not carried by node '${this.env.node}' (it is on ${pool.nodes?.join(', ') ?? 'no node'}); ask a node that carries it, or add ${this.env.node} to its nodes`);
    if (report.state !== 'active' || !root) throw new AcpError('ACP_ERR_STORAGE_NOT_CARRIED', `pool '${name}' is ${report.state} on node '${this.env.node}'${report.reason ? `: ${report.reason}` : ''}`);
    if (content && !pool.content.includes(content)) throw new AcpError('ACP_ERR_STORAGE_WRONG_FORMAT', `pool '${name}' holds ${pool.content.join(' and ')}, not ${content} (its content list); use a pool that holds ${content}`);
    return { pool, root };
  }

  /** The volume's object (from the CDB, so a volume just made elsewhere is seen), living on this node. */
  private async volume(poolName: string, name: string): Promise<{ pool: StoragePool; root: string; volume: StorageVolume; layout: VolumeLayout }> {
    const { pool, root } = this.activePool(poolName);
    const record = await this.env.cdb.ask<Message & { record: RecordView }>({ type: 'cdb.get', key: objectKey('storage/volume', volumeId(poolName, name)) }, { timeoutMs: 10_000 }).catch((error: unknown) => {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `no volume '${poolName}/${name}' (acp storage volume ls ${poolName})`);
      throw error;
    });
    const volume = storageVolumeSchema.parse(record.record.value);
    if (!pool.shared && volume.node !== undefined && volume.node !== this.env.node) {
      throw new AcpError('ACP_ERR_STORAGE_NOT_CARRIED', `volume '${poolName}/${name}' lives on node '${volume.node}' (pool '${poolName}' is not shared); ask there (--node ${volume.node})`);
    }
    return { pool, root, volume, layout: volumeLayout(pool, root, volume) };
  }

  /** Who uses the volume: systems that have it as a disk or CD-ROM, and of those, the ones whose guest runs. */
  private async users(poolName: string, name: string): Promise<Users> {
    const systems = await this.env.listAll('object/system/');
    const metas = await this.env.listAll('meta/system/');
    const attached: string[] = [];
    for (const record of systems) {
      const spec = systemObjectSchema.safeParse(record.value);
      if (!spec.success) continue;
      const uses = spec.data.disks.some((disk) => disk.pool === poolName && disk.volume === name) || (spec.data.iso?.pool === poolName && spec.data.iso.volume === name);
      if (uses) attached.push(spec.data.name);
    }
    // A running guest holds what it was started with, though a disk detached since is gone from its object.
    const guests = liveHolders(metas, (uses) => uses.volumes.includes(`${poolName}/${name}`));
    for (const record of metas) {
      const parsed = parseKey(record.key);
      const state = String((record.value as { state?: unknown } | null)?.state);
      if (attached.includes(parsed.id) && GUEST_HOLDS_STATES.has(state) && parsed.node !== undefined && !guests.some((guest) => guest.id === parsed.id && guest.node === parsed.node)) guests.push({ id: parsed.id, node: parsed.node, state });
    }
    return { live: guests.map((guest) => `${guest.id} (${guest.state} on ${guest.node})`), attached, guests };
  }

  private async refuseLive(poolName: string, name: string, doing: string): Promise<Users> {
    const users = await this.users(poolName, name);
    if (users.live.length > 0) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `cannot ${doing} volume '${poolName}/${name}': system ${users.live.join(', ')} uses it; stop the system first`);
    return users;
  }

  /**
   * A change made by the QEMU that holds the volume open (it keeps the image locked): asked of the
   * hypervisor where the one running guest is. Refused while the guest is between states.
   */
  private async changeLive(poolName: string, name: string, users: Users, change: { action: 'resize'; sizeBytes: number } | { action: 'snapshot-create' | 'snapshot-delete'; snapshot: string }): Promise<void> {
    const guest = users.guests[0]!;
    if (users.guests.length > 1) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `volume '${poolName}/${name}' is open in ${users.live.join(', ')}; stop all but one to change it`);
    if (guest.state !== 'running' && guest.state !== 'paused') throw new AcpError('ACP_ERR_STORAGE_IN_USE', `volume '${poolName}/${name}': system ${users.live[0]} is between states; try again once it runs or is stopped`);
    const hypervisor = this.env.ctx.ref(`acp://${this.env.ctx.node.cluster}/${guest.node}/hypervisor`);
    await hypervisor.ask({ type: 'system.disk-change', id: guest.id, volume: volumeId(poolName, name), change }, { timeoutMs: 80_000 });
    this.env.ctx.log.info({ volume: volumeId(poolName, name), system: guest.id, node: guest.node, ...change }, `volume ${change.action} while ${guest.id} runs`);
  }

  /** Linked clones made from this volume (they read through to it). */
  private clonesOf(poolName: string, name: string): string[] {
    return [...this.env.volumes()].filter((volume) => volume.pool === poolName && volume.backing === name).map((volume) => `${volume.pool}/${volume.name}`);
  }

  private async store(volume: StorageVolume, expectNew: boolean): Promise<void> {
    const key = objectKey('storage/volume', volumeId(volume.pool, volume.name));
    if (expectNew) await this.env.cdb.ask({ type: 'cdb.cas', key, value: volume, expect: null }, { timeoutMs: 10_000 });
    else await this.env.cdb.ask({ type: 'cdb.put', key, value: volume }, { timeoutMs: 10_000 });
    this.env.remember(volume);
  }

  /** A new volume's object, refused (and its files removed) when the name was taken meanwhile. */
  private async storeNew(volume: StorageVolume, layout: VolumeLayout): Promise<void> {
    try {
      await this.store(volume, true);
    } catch (error) {
      await removeVolume(layout).catch(() => undefined);
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_CONFLICT') throw new AcpError('ACP_ERR_STORAGE_EXISTS', `volume '${volume.pool}/${volume.name}' exists already`);
      throw error;
    }
  }

  private async refuseTaken(poolName: string, name: string): Promise<void> {
    const taken = await this.env.cdb.ask({ type: 'cdb.get', key: objectKey('storage/volume', volumeId(poolName, name)) }, { timeoutMs: 10_000 }).then(
      () => true,
      () => false,
    );
    if (taken) throw new AcpError('ACP_ERR_STORAGE_EXISTS', `volume '${poolName}/${name}' exists already; pick another name, or remove it first (acp storage volume rm ${poolName}/${name})`);
  }

  private fresh(pool: StoragePool, name: string, sizeBytes: number, format: VolumeFormat, extra: Partial<StorageVolume> = {}): StorageVolume {
    return { name, pool: pool.name, sizeBytes, format, ...(pool.shared ? {} : { node: this.env.node }), ...extra, createdAt: new Date().toISOString() };
  }

  create(poolName: string, name: string, asked: number, format: 'qcow2' | 'raw'): Promise<Message> {
    const sizeBytes = sectorRounded(asked);
    return this.serial(volumeId(poolName, name), async () => {
      const { pool, root } = this.activePool(poolName, 'images');
      await this.refuseTaken(poolName, name);
      const volume = this.fresh(pool, name, sizeBytes, format);
      const layout = volumeLayout(pool, root, volume);
      await createVolume(layout, format, sizeBytes);
      await this.storeNew(volume, layout);
      this.env.ctx.log.info({ volume: volumeId(poolName, name), sizeBytes, format }, 'volume created');
      return { type: 'storage.volume-created', volume, file: layout.file };
    });
  }

  resize(poolName: string, name: string, asked: number): Promise<Message> {
    const sizeBytes = sectorRounded(asked);
    return this.serial(volumeId(poolName, name), async () => {
      const { volume, layout } = await this.volume(poolName, name);
      if (volume.format === 'iso') throw new AcpError('ACP_ERR_STORAGE_WRONG_FORMAT', `volume '${poolName}/${name}' is an ISO image; it has no size to change`);
      const users = await this.users(poolName, name);
      // QEMU holds a running guest's image locked: it grows the disk itself (block_resize), and the guest sees it at once.
      const current = users.guests.length > 0 ? volume.sizeBytes : (await imageInfo(layout.file, volume.format)).virtualSize;
      const shrink = sizeBytes < current;
      if (users.guests.length > 0) {
        if (shrink) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `cannot shrink volume '${poolName}/${name}' (${current} bytes) while system ${users.live.join(', ')} uses it; a disk only grows while attached`);
        await this.changeLive(poolName, name, users, { action: 'resize', sizeBytes });
        const updated = { ...volume, sizeBytes };
        await this.store(updated, false);
        return { type: 'storage.volume-resized', volume: updated, from: current, live: true };
      }
      if (shrink && users.attached.length > 0) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `volume '${poolName}/${name}' is a disk of ${users.attached.join(', ')}: it only grows while attached (${current} bytes now); detach it to shrink it`);
      if (shrink && this.clonesOf(poolName, name).length > 0) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `volume '${poolName}/${name}' is the base of linked clones ${this.clonesOf(poolName, name).join(', ')}; it cannot shrink`);
      await resizeVolume(layout, volume.format, sizeBytes, shrink);
      const updated = { ...volume, sizeBytes };
      await this.store(updated, false);
      return { type: 'storage.volume-resized', volume: updated, from: current };
    });
  }

  snapshot(poolName: string, name: string, op: 'create' | 'rollback' | 'rm', snapshot: string): Promise<Message> {
    return this.serial(volumeId(poolName, name), async () => {
      const { pool, volume, layout } = await this.volume(poolName, name);
      if (volume.format === 'iso') throw new AcpError('ACP_ERR_STORAGE_WRONG_FORMAT', `volume '${poolName}/${name}' is an ISO image; it has no snapshots`);
      if (pool.type !== 'btrfs' && volume.format !== 'qcow2') throw new AcpError('ACP_ERR_STORAGE_WRONG_FORMAT', `volume '${poolName}/${name}' is raw on a ${pool.type} pool: snapshots need qcow2 or a btrfs pool`);
      // A btrfs snapshot of a running guest's volume is crash-consistent. A qcow2 internal one is
      // taken or dropped by the guest's QEMU (it holds the image); a rollback needs the guest stopped.
      const users = op === 'rollback' ? await this.refuseLive(poolName, name, 'roll back') : await this.users(poolName, name);
      const known = volume.snapshots ?? [];
      const has = known.some((entry) => entry.name === snapshot);
      if (op === 'create' && has) throw new AcpError('ACP_ERR_STORAGE_EXISTS', `volume '${poolName}/${name}' has a snapshot '${snapshot}' already`);
      if (op !== 'create' && !has) throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `volume '${poolName}/${name}' has no snapshot '${snapshot}' (it has ${known.map((entry) => entry.name).join(', ') || 'none'})`);
      // Linked clones read through to their base: rolled back under them, it would corrupt them.
      const clones = op === 'rollback' ? this.clonesOf(poolName, name) : [];
      if (clones.length > 0) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `cannot roll back volume '${poolName}/${name}': linked clones ${clones.join(', ')} read through to it; remove them first`);
      if (pool.type !== 'btrfs' && users.guests.length > 0) await this.changeLive(poolName, name, users, { action: op === 'create' ? 'snapshot-create' : 'snapshot-delete', snapshot });
      else await snapshotVolume(layout, op === 'rollback' ? 'apply' : op === 'rm' ? 'delete' : 'create', snapshot, layout.snapshots ? snapshotPath(layout, snapshot) : undefined);
      const snapshots = op === 'create' ? [...known, { name: snapshot, at: new Date().toISOString() }] : op === 'rm' ? known.filter((entry) => entry.name !== snapshot) : known;
      // A rollback brings back the size the volume had then (a resize since is undone).
      const sizeBytes = op === 'rollback' ? (await imageInfo(layout.file, volume.format)).virtualSize : volume.sizeBytes;
      const updated: StorageVolume = { ...volume, snapshots, sizeBytes };
      await this.store(updated, false);
      this.env.ctx.log.info({ volume: volumeId(poolName, name), op, snapshot }, `volume snapshot ${op}`);
      return { type: 'storage.volume-snapshot', op, snapshot, volume: updated };
    });
  }

  clone(poolName: string, name: string, target: string, linked: boolean): Promise<Message> {
    return this.serial(volumeId(poolName, name), async () => {
      const { pool, root, volume, layout } = await this.volume(poolName, name);
      if (volume.format === 'iso') throw new AcpError('ACP_ERR_STORAGE_WRONG_FORMAT', `volume '${poolName}/${name}' is an ISO image; import it again under another name instead`);
      await this.refuseTaken(poolName, target);
      // A copy of an image being written is not a consistent one (a btrfs snapshot is).
      if (linked || pool.type !== 'btrfs') await this.refuseLive(poolName, name, linked ? 'make a linked clone of' : 'copy');
      const format = linked ? 'qcow2' : volume.format;
      const made = this.fresh(pool, target, volume.sizeBytes, format, linked ? { backing: name } : {});
      const targetLayout = volumeLayout(pool, root, made);
      await cloneVolume(layout, volume.format, targetLayout, linked);
      await this.storeNew(made, targetLayout);
      return { type: 'storage.volume-cloned', volume: made, from: volumeId(poolName, name), linked };
    });
  }

  import(poolName: string, name: string, file: string, format: VolumeFormat): Promise<Message> {
    return this.serial(volumeId(poolName, name), async () => {
      const { pool, root } = this.activePool(poolName, format === 'iso' ? 'iso' : 'images');
      await this.refuseTaken(poolName, name);
      const probe = this.fresh(pool, name, 0, format);
      const layout = volumeLayout(pool, root, probe);
      await importVolume(file, layout, format, this.env.importDirs);
      const sizeBytes = format === 'iso' ? ((await imageInfo(layout.file, 'raw')).virtualSize) : (await imageInfo(layout.file, format)).virtualSize;
      const volume = { ...probe, sizeBytes };
      await this.storeNew(volume, layout);
      return { type: 'storage.volume-imported', volume, file: layout.file };
    });
  }

  remove(poolName: string, name: string): Promise<Message> {
    return this.serial(volumeId(poolName, name), async () => {
      const { volume, layout } = await this.volume(poolName, name);
      const users = await this.refuseLive(poolName, name, 'remove');
      if (users.attached.length > 0) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `cannot remove volume '${poolName}/${name}': it is a disk of ${users.attached.join(', ')}; detach it first (acp system disk detach ${users.attached[0]} ${poolName}/${name})`);
      const clones = this.clonesOf(poolName, name);
      if (clones.length > 0) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `cannot remove volume '${poolName}/${name}': linked clones ${clones.join(', ')} read through to it; remove them first`);
      await removeVolume(layout);
      await this.env.cdb.ask({ type: 'cdb.delete', key: objectKey('storage/volume', volumeId(poolName, name)) }, { timeoutMs: 10_000 });
      this.env.forget(poolName, name);
      this.env.ctx.log.info({ volume: volumeId(poolName, name) }, 'volume removed');
      return { type: 'storage.volume-removed', volume };
    });
  }

  async info(poolName: string, name: string): Promise<Message> {
    const { volume, layout } = await this.volume(poolName, name);
    const info = await imageInfo(layout.file, volume.format === 'iso' ? 'raw' : volume.format);
    return { type: 'storage.volume-info', node: this.env.node, volume, file: layout.file, info };
  }

  /** The files of a system's disks and CD-ROM here, or a refusal naming the one this node cannot give. */
  async disks(system: string, disks: readonly SystemDisk[], iso: { pool: string; volume: string } | undefined, boot: string | undefined): Promise<Message> {
    const resolved: ResolvedDisk[] = [];
    const why = (what: string, error: unknown) => new AcpError(error instanceof AcpError && error.code !== 'ACP_ERR_INTERNAL' ? error.code : 'ACP_ERR_STORAGE_NOT_FOUND', `system '${system}' cannot start on node '${this.env.node}': ${what}: ${error instanceof Error ? error.message : String(error)}`);
    if (boot !== undefined && !boot.startsWith('/') && !disks.some((disk) => `${disk.pool}/${disk.volume}` === boot)) {
      throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `system '${system}' boots from disk '${boot}', which is not one of its disks (${disks.map((disk) => `${disk.pool}/${disk.volume}`).join(', ') || 'none'})`);
    }
    for (const [index, disk] of disks.entries()) {
      const id = volumeId(disk.pool, disk.volume);
      let found: Awaited<ReturnType<StorageVolumes['volume']>>;
      try {
        found = await this.volume(disk.pool, disk.volume);
        if (!(await exists(found.layout.file))) throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `its image ${found.layout.file} is missing`);
      } catch (error) {
        throw why(`disk ${index} (${id})`, error);
      }
      if (found.volume.format === 'iso') throw new AcpError('ACP_ERR_STORAGE_WRONG_FORMAT', `system '${system}': disk ${index} (${id}) is an ISO image; give it as the system's iso (a CD-ROM)`);
      const clones = this.clonesOf(disk.pool, disk.volume);
      if (clones.length > 0 && disk.readonly !== true) throw new AcpError('ACP_ERR_STORAGE_IN_USE', `system '${system}': disk ${index} (${id}) is the base of linked clones ${clones.join(', ')}; writing it would corrupt them, so attach it readonly`);
      resolved.push({ file: found.layout.file, format: found.volume.format, bus: disk.bus, volume: id, ...(disk.cache ? { cache: disk.cache } : {}), ...(disk.readonly ? { readonly: true } : {}), ...(boot === id ? { boot: true } : {}) });
    }
    let cdrom: ResolvedCdrom | undefined;
    if (iso) {
      const id = volumeId(iso.pool, iso.volume);
      try {
        const found = await this.volume(iso.pool, iso.volume);
        if (!(await exists(found.layout.file))) throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `its image ${found.layout.file} is missing`);
        cdrom = { file: found.layout.file, volume: id };
      } catch (error) {
        throw why(`iso (${id})`, error);
      }
    }
    return { type: 'storage.disks', system, disks: resolved, ...(cdrom ? { cdrom } : {}) };
  }
}
