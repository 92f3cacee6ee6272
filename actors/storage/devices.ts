/** Block devices as CDB objects: `object/storage/device/<node>-<name>` (names made valid). */
import type { ActorContext, ActorRef } from '../../runtime/actor.js';
import { errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { listBlockDevices, type BlockDevice } from '../../adapters/storage/lsblk.js';
import type { RecordView } from '../cdb/index.js';
import { objectKey, type StorageDevice } from '../model.js';

/** The device's id: the node, a dash, and its kernel name lower-cased with anything outside the name alphabet made '-'. */
export function deviceId(node: string, kname: string): string {
  return `${node}-${kname.toLowerCase().replace(/[^a-z0-9._-]/g, '-')}`.slice(0, 63);
}

export function deviceObject(node: string, device: BlockDevice): StorageDevice {
  return {
    name: deviceId(node, device.kname),
    node,
    device: device.kname.slice(0, 128),
    path: device.path,
    sizeBytes: device.sizeBytes,
    type: device.type.slice(0, 32),
    model: device.model?.slice(0, 256) ?? null,
    serial: device.serial?.slice(0, 256) ?? null,
    rotational: device.rotational,
    fstype: device.fstype?.slice(0, 64) ?? null,
    mountpoints: device.mountpoints.slice(0, 64),
    usedBytes: device.usedBytes,
    parent: device.parent,
  };
}

/**
 * Publishes this node's block devices as `object/storage/device/` objects: written when they
 * change, removed when gone (those this node published before a restart included).
 */
export class DevicePublisher {
  private readonly published = new Map<string, string>();

  constructor(
    private readonly cdb: ActorRef,
    private readonly node: string,
    private readonly log: ActorContext['log'],
  ) {}

  /** Devices this node published before a restart: known, so the first refresh removes the gone ones. */
  async adopt(): Promise<void> {
    const listed = await this.cdb.ask<Message & { records: RecordView[] }>({ type: 'cdb.list', prefix: 'object/storage/device/', limit: 10_000 }, { timeoutMs: 10_000 }).catch(() => undefined);
    for (const record of listed?.records ?? []) {
      if (!record.deleted && (record.value as { node?: unknown }).node === this.node) this.published.set(record.key, '');
    }
  }

  async refresh(): Promise<void> {
    try {
      const found = (await listBlockDevices()).map((device) => deviceObject(this.node, device));
      const wanted = new Map(found.map((device) => [objectKey('storage/device', device.name), device]));
      for (const [key, device] of wanted) {
        const text = JSON.stringify(device);
        if (this.published.get(key) === text) continue;
        await this.cdb.ask({ type: 'cdb.put', key, value: device }, { timeoutMs: 10_000 });
        this.published.set(key, text);
      }
      for (const key of [...this.published.keys()].filter((known) => !wanted.has(known))) {
        await this.cdb.ask({ type: 'cdb.delete', key }, { timeoutMs: 10_000 }).catch(() => undefined);
        this.published.delete(key);
      }
    } catch (error) {
      this.log.warn({ err: errorMessage(error) }, 'could not list block devices; trying again later');
    }
  }
}
