/** Block devices as CDB objects: `object/storage/device/<node>-<name>` (names made valid). */
import type { BlockDevice } from '../../adapters/storage/lsblk.js';
import type { StorageDevice } from '../model.js';

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
