/** The Storage service's messages and who may send them (see runtime/authority.ts). */
import { z } from 'zod';
import type { AuthorityTable } from '../../runtime/authority.js';
import { nameSchema } from '../../runtime/path.js';
import { serviceInfoSchema } from '../kit.js';
import { ABSOLUTE_PATH_PATTERN, systemDiskSchema } from '../model.js';

const name = nameSchema;
/** Bytes; rounded up to whole 512-byte sectors (see sectorRounded), so at most the last safe integer that stays one then. */
const size = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER - 511);
const hostFile = z.string().max(4096).regex(ABSOLUTE_PATH_PATTERN, "must be an absolute path with no '.' or '..' parts");

export const storageSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  /** Define a pool (object/storage/pool/<name>); lvm-thin is refused where device-mapper is missing. */
  z.strictObject({ type: z.literal('storage.pool-create'), spec: z.unknown() }),
  /** Remove a pool, refused while it has volumes (its directory and files stay). */
  z.strictObject({ type: z.literal('storage.pool-rm'), name }),
  /** This node's pools (or one): state, reason, path, capacity. */
  z.strictObject({ type: z.literal('storage.pool-status'), name: name.optional() }),
  /** Define a network share (object/storage/share/<name>); nfs or cifs refused where the kernel lacks the client. */
  z.strictObject({ type: z.literal('storage.share-create'), spec: z.unknown() }),
  z.strictObject({ type: z.literal('storage.share-rm'), name }),
  z.strictObject({ type: z.literal('storage.share-status'), name: name.optional() }),
  /** A new empty volume of `sizeBytes` on this node's copy of `pool`. */
  z.strictObject({ type: z.literal('storage.volume-create'), pool: name, name, sizeBytes: size, format: z.enum(['qcow2', 'raw']).default('qcow2') }),
  /** Grow (or, not attached to any system, shrink) a volume; a running guest's QEMU grows it live (QMP block_resize). */
  z.strictObject({ type: z.literal('storage.volume-resize'), pool: name, name, sizeBytes: size }),
  z.strictObject({ type: z.literal('storage.volume-snapshot'), pool: name, name, op: z.enum(['create', 'rollback', 'rm']), snapshot: name }),
  /** A copy as volume `target` of the same pool: linked (qcow2 over the source) or full. */
  z.strictObject({ type: z.literal('storage.volume-clone'), pool: name, name, target: name, linked: z.boolean().default(false) }),
  /** A file of this node's made a volume (an image converted, an ISO copied). */
  z.strictObject({ type: z.literal('storage.volume-import'), pool: name, name, file: hostFile, format: z.enum(['qcow2', 'raw', 'iso']).default('qcow2') }),
  z.strictObject({ type: z.literal('storage.volume-rm'), pool: name, name }),
  /** qemu-img info of a volume: size, format, actual use, backing chain, snapshots. */
  z.strictObject({ type: z.literal('storage.volume-info'), pool: name, name }),
  /** The block devices found here (lsblk). */
  z.strictObject({ type: z.literal('storage.devices') }),
  /**
   * A system's disks and CD-ROM on this node: each volume's image file and format, or a refusal
   * naming the volume or pool that this node cannot give.
   */
  z.strictObject({
    type: z.literal('storage.disks'),
    system: name,
    disks: z.array(systemDiskSchema).max(64),
    iso: z.strictObject({ pool: name, volume: name }).optional(),
    boot: z.string().max(4096).optional(),
  }),
  /** Reconcile now (also every few seconds and on every change). */
  z.strictObject({ type: z.literal('storage.tick') }),
]);
export type StorageMessage = z.infer<typeof storageSchema>;

export const storageAuthority: AuthorityTable = {
  'service.info': 'read',
  // A pool is a host directory the daemon (root) makes and writes: the administrator's.
  'storage.pool-create': 'admin',
  'storage.pool-rm': 'admin',
  'storage.pool-status': 'read',
  // A share names a key file on the nodes and a server they log in to: the administrator's.
  'storage.share-create': 'admin',
  'storage.share-rm': 'admin',
  'storage.share-status': 'read',
  'storage.volume-create': 'operate',
  'storage.volume-resize': 'operate',
  'storage.volume-snapshot': 'operate',
  'storage.volume-clone': 'operate',
  // Reads any file of the node: the administrator's.
  'storage.volume-import': 'admin',
  'storage.volume-rm': 'operate',
  'storage.volume-info': 'read',
  'storage.devices': 'read',
  'storage.disks': { internal: [{ service: 'hypervisor', nodes: 'self' }] },
  'storage.tick': { internal: [{ service: 'storage', nodes: 'self' }] },
};

/** A disk as the hypervisor hands it to the VMM: a file the Storage service resolved, and how to attach it. */
export const resolvedDiskSchema = z.strictObject({
  file: hostFile,
  format: z.enum(['qcow2', 'raw']),
  bus: z.enum(['virtio', 'scsi', 'ide']),
  cache: z.enum(['none', 'writeback', 'writethrough', 'directsync', 'unsafe']).optional(),
  readonly: z.boolean().optional(),
  boot: z.boolean().optional(),
  /** `<pool>/<volume>`, for its statistics. */
  volume: z.string().max(127),
});
export type ResolvedDisk = z.infer<typeof resolvedDiskSchema>;

export const resolvedCdromSchema = z.strictObject({ file: hostFile, volume: z.string().max(127) });
export type ResolvedCdrom = z.infer<typeof resolvedCdromSchema>;
