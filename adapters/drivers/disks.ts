/**
 * A system's disks and CD-ROM on the QEMU command line (-blockdev and -device), and its per-disk
 * I/O counters from QMP query-blockstats. The image files were resolved by the node's Storage
 * service (actors/storage/volumes.ts) and checked to be absolute paths before they reach here.
 */
import { AcpError } from '../../runtime/errors.js';

export interface GuestDisk {
  readonly file: string;
  readonly format: 'qcow2' | 'raw';
  readonly bus: 'virtio' | 'scsi' | 'ide';
  readonly cache?: 'none' | 'writeback' | 'writethrough' | 'directsync' | 'unsafe';
  readonly readonly?: boolean;
  /** Booted first. */
  readonly boot?: boolean;
  /** `<pool>/<volume>`. */
  readonly volume: string;
}

export interface GuestCdrom {
  readonly file: string;
  readonly volume: string;
}

/** One disk's counters since its guest started. */
export interface DiskCounters {
  readonly index: number;
  readonly volume: string;
  readonly readBytes: number;
  readonly writeBytes: number;
  readonly readOps: number;
  readonly writeOps: number;
  readonly flushOps: number;
}

/** QEMU option values separate with commas: a comma inside a value is written twice. */
function value(text: string): string {
  return text.replace(/,/g, ',,');
}

/** The pc machine's IDE controller: two buses, a master and a slave on each. */
const IDE_SLOTS = 4;

function cacheOptions(cache: GuestDisk['cache']): { node: string; writeCache: boolean } {
  const direct = cache === 'none' || cache === 'directsync';
  const noFlush = cache === 'unsafe';
  return { node: `cache.direct=${direct ? 'on' : 'off'},cache.no-flush=${noFlush ? 'on' : 'off'}`, writeCache: cache !== 'writethrough' && cache !== 'directsync' };
}

/**
 * The arguments for the disks (in order, the boot disk first in the boot order) and the CD-ROM
 * (booted after the disks). Node names `acp-disk<i>` and device ids `disk<i>` are what
 * query-blockstats reports them by.
 */
export function diskArgs(disks: readonly GuestDisk[], cdrom: GuestCdrom | undefined): string[] {
  const args: string[] = [];
  let ide = 0;
  const ideSlot = (what: string) => {
    if (ide >= IDE_SLOTS) throw new AcpError('ACP_ERR_VMM_FAILED', `${what}: the IDE controller has ${IDE_SLOTS} slots, all taken; put disks on virtio or scsi`);
    const slot = ide++;
    return `bus=ide.${slot >> 1},unit=${slot & 1}`;
  };
  const order = [...disks.keys()].sort((a, b) => Number(disks[b]!.boot === true) - Number(disks[a]!.boot === true) || a - b);
  if (disks.some((disk) => disk.bus === 'scsi')) args.push('-device', 'virtio-scsi-pci,id=acp-scsi');
  for (const [index, disk] of disks.entries()) {
    const cache = cacheOptions(disk.cache);
    const readOnly = disk.readonly ? ',read-only=on' : '';
    if (disk.readonly && disk.bus === 'ide') throw new AcpError('ACP_ERR_VMM_FAILED', `disk ${index} (${disk.volume}): an IDE disk cannot be read-only in QEMU; use virtio or scsi`);
    args.push('-blockdev', `driver=file,filename=${value(disk.file)},node-name=acp-file${index},${cache.node}${readOnly}`);
    args.push('-blockdev', `driver=${disk.format},file=acp-file${index},node-name=acp-disk${index},${cache.node}${readOnly}`);
    const common = `drive=acp-disk${index},id=disk${index},bootindex=${order.indexOf(index) + 1}${cache.writeCache ? '' : ',write-cache=off'}`;
    const device = disk.bus === 'virtio' ? `virtio-blk-pci,${common}` : disk.bus === 'scsi' ? `scsi-hd,bus=acp-scsi.0,${common}` : `ide-hd,${ideSlot(`disk ${index} (${disk.volume})`)},${common}`;
    args.push('-device', device);
  }
  if (cdrom) {
    args.push('-blockdev', `driver=file,filename=${value(cdrom.file)},node-name=acp-cdrom-file,read-only=on`);
    args.push('-blockdev', 'driver=raw,file=acp-cdrom-file,node-name=acp-cdrom,read-only=on');
    args.push('-device', `ide-cd,${ideSlot(`the CD-ROM (${cdrom.volume})`)},drive=acp-cdrom,id=cdrom,bootindex=${disks.length + 1}`);
  }
  return args;
}

/** A change to a disk of a running guest: grow it, or take or drop an internal (qcow2) snapshot. */
export type LiveDiskChange = { readonly action: 'resize'; readonly sizeBytes: number } | { readonly action: 'snapshot-create' | 'snapshot-delete'; readonly snapshot: string };

/**
 * The QMP command for a change to the disk that is volume `volume` (its node `acp-disk<i>`):
 * block_resize, or blockdev-snapshot-internal-sync / -delete-internal-sync (qcow2 only).
 */
export function liveDiskCommand(disks: readonly Pick<GuestDisk, 'volume' | 'format' | 'readonly'>[], volume: string, change: LiveDiskChange): { command: string; args: Record<string, unknown> } {
  const index = disks.findIndex((disk) => disk.volume === volume);
  if (index < 0) throw new AcpError('ACP_ERR_VMM_FAILED', `volume ${volume} is not a disk of this guest as its VMM started it (${disks.map((disk) => disk.volume).join(', ') || 'no disks'}); restart the system to change it`);
  const disk = disks[index]!;
  if (disk.readonly) throw new AcpError('ACP_ERR_VMM_FAILED', `volume ${volume} is attached read-only; QEMU cannot change it while the guest runs`);
  const node = `acp-disk${index}`;
  if (change.action === 'resize') return { command: 'block_resize', args: { 'node-name': node, size: change.sizeBytes } };
  if (disk.format !== 'qcow2') throw new AcpError('ACP_ERR_VMM_FAILED', `volume ${volume} is ${disk.format}: only a qcow2 image takes internal snapshots while its guest runs`);
  return { command: change.action === 'snapshot-create' ? 'blockdev-snapshot-internal-sync' : 'blockdev-snapshot-delete-internal-sync', args: { device: node, name: change.snapshot } };
}

interface BlockStatsEntry {
  'node-name'?: unknown;
  qdev?: unknown;
  stats?: { rd_bytes?: unknown; wr_bytes?: unknown; rd_operations?: unknown; wr_operations?: unknown; flush_operations?: unknown };
}

const count = (raw: unknown): number => (typeof raw === 'number' && Number.isFinite(raw) && raw >= 0 ? raw : 0);

/** query-blockstats' answer, as each disk's counters (found by its device id or node name). */
export function parseBlockStats(raw: unknown, disks: readonly Pick<GuestDisk, 'volume'>[]): DiskCounters[] {
  const entries = Array.isArray(raw) ? (raw as BlockStatsEntry[]) : [];
  return disks.flatMap((disk, index) => {
    const entry = entries.find((candidate) => candidate['node-name'] === `acp-disk${index}` || (typeof candidate.qdev === 'string' && (candidate.qdev === `disk${index}` || candidate.qdev.includes(`/disk${index}/`))));
    if (!entry?.stats) return [];
    const stats = entry.stats;
    return [{ index, volume: disk.volume, readBytes: count(stats.rd_bytes), writeBytes: count(stats.wr_bytes), readOps: count(stats.rd_operations), writeOps: count(stats.wr_operations), flushOps: count(stats.flush_operations) }];
  });
}
