import { counterRate } from '../../runtime/rate.js';
import type { ActorContext, ActorRef } from '../../runtime/actor.js';
import type { Message } from '../../runtime/messages.js';
import type { DiskCounters } from '../../adapters/drivers/disks.js';
import type { SystemObject } from '../model.js';
import type { ResolvedCdrom, ResolvedDisk } from '../storage/schema.js';

/** What the VMM gets to attach: the disks' files and the CD-ROM's, from this node's Storage service. */
export interface SystemStorage {
  disks?: ResolvedDisk[];
  cdrom?: ResolvedCdrom;
}

/** One disk's counters with rates since the last sample (bytes per second; null on the first). */
export interface DiskStats extends DiskCounters {
  readBytesPerSec: number | null;
  writeBytesPerSec: number | null;
}

/**
 * A system's disks, between the hypervisor and this node's Storage service: before a QEMU guest
 * starts or arrives, each volume is resolved to its image file here, or the start is refused with
 * the Storage service's message naming the volume or pool this node cannot give. A simulated
 * guest has no disks of its own.
 */
export class SystemDisks {
  private readonly samples = new Map<string, { at: number; disks: DiskCounters[] }>();

  constructor(private readonly ctx: ActorContext) {}

  private storage(): ActorRef {
    return this.ctx.ref(`acp://${this.ctx.node.cluster}/${this.ctx.node.node}/storage`);
  }

  async resolve(systemId: string, spec: SystemObject): Promise<SystemStorage> {
    const boot = spec.boot && 'disk' in spec.boot ? spec.boot.disk : undefined;
    // A boot disk named as POOL/VOLUME with no disks is refused by the Storage service, not ignored.
    if (spec.driver !== 'qemu' || (spec.disks.length === 0 && spec.iso === undefined && (boot === undefined || boot.startsWith('/')))) return {};
    const reply = await this.storage().ask<Message & { disks: ResolvedDisk[]; cdrom?: ResolvedCdrom }>(
      { type: 'storage.disks', system: systemId, disks: spec.disks, ...(spec.iso ? { iso: spec.iso } : {}), ...(boot === undefined ? {} : { boot }) },
      { timeoutMs: 30_000 },
    );
    return { disks: reply.disks, ...(reply.cdrom ? { cdrom: reply.cdrom } : {}) };
  }

  /** Counters with rates against the previous sample of the same system. */
  rates(systemId: string, disks: readonly DiskCounters[], at: number): DiskStats[] {
    const previous = this.samples.get(systemId);
    this.samples.set(systemId, { at, disks: [...disks] });
    return disks.map((disk) => {
      const before = previous?.disks.find((candidate) => candidate.index === disk.index);
      const seconds = previous ? (at - previous.at) / 1000 : 0;
      return { ...disk, readBytesPerSec: counterRate(disk.readBytes, before?.readBytes, seconds, 0), writeBytesPerSec: counterRate(disk.writeBytes, before?.writeBytes, seconds, 0) };
    });
  }

  forget(systemId: string): void {
    this.samples.delete(systemId);
  }
}
