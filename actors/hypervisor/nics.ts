import type { ActorContext, ActorRef } from '../../runtime/actor.js';
import { errorMessage } from '../../runtime/errors.js';
import { objectKey, systemObjectSchema, type SystemObject } from '../model.js';
import { updateObject } from '../object-update.js';
import { generatedMac } from '../../adapters/interface-names.js';

/**
 * A system's NICs, between the hypervisor and this node's Network service: their taps are made
 * before the guest starts or arrives, and removed once it is gone from here. The taps' names and
 * the MACs are the same functions of the system's id everywhere (actors/network/names.ts), so the
 * QEMU command line and the Network service agree without passing names around.
 */
export class SystemNics {
  constructor(
    private readonly ctx: ActorContext,
    private readonly cdb: ActorRef,
  ) {}

  private network(): ActorRef {
    return this.ctx.ref(`acp://${this.ctx.node.cluster}/${this.ctx.node.node}/network`);
  }

  /**
   * The spec with every NIC's MAC: one not given is generated (stable, locally administered) and
   * stored in the system object, so it stays the guest's across restarts and migrations.
   */
  async withMacs(systemId: string, spec: SystemObject): Promise<SystemObject> {
    if (spec.nics.every((nic) => nic.mac !== undefined)) return spec;
    const withMac = (nic: SystemObject['nics'][number], index: number) => (nic.mac === undefined ? { ...nic, mac: generatedMac(systemId, index) } : nic);
    const filled: SystemObject = { ...spec, nics: spec.nics.map(withMac) };
    // Over the object as it is now: an edit made since the start read it stays, and a deleted
    // system stays deleted. Only while its NICs are the ones read (the guest gets these MACs).
    const withoutMacs = (nics: SystemObject['nics']) => JSON.stringify(nics.map(({ mac: _mac, ...nic }) => nic));
    const store = (current: unknown) => {
      const object = systemObjectSchema.safeParse(current);
      if (!object.success || withoutMacs(object.data.nics) !== withoutMacs(spec.nics)) return undefined;
      if (object.data.nics.every((nic) => nic.mac !== undefined)) return undefined;
      return { ...(current as object), nics: object.data.nics.map((nic, index) => (nic.mac === undefined ? { ...nic, mac: filled.nics[index]!.mac } : nic)) };
    };
    await updateObject(this.cdb, objectKey('system', systemId), store).catch((error: unknown) => {
      // The MAC is a function of the id: the same one comes next time even if it is not stored.
      this.ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'could not store the generated MAC addresses');
    });
    return filled;
  }

  /** The taps, made and in their bridges; refused (naming the NIC and network) when this node cannot. */
  async up(systemId: string, spec: SystemObject): Promise<void> {
    if (spec.nics.length === 0) return;
    await this.network().ask({ type: 'network.nics-up', system: systemId, nics: spec.nics }, { timeoutMs: 30_000 });
  }

  /** After a restart: the guests adopted here (their taps are claimed; taps kept for any other system go). */
  async adopted(systems: readonly string[]): Promise<void> {
    await this.network().ask({ type: 'network.nics-adopted', systems: [...systems] }, { timeoutMs: 30_000 });
  }

  /** The taps removed; a failure is logged, and the taps stay until the Network service next restarts without the guest running. */
  async down(systemId: string, spec: SystemObject): Promise<void> {
    if (spec.nics.length === 0) return;
    await this.network()
      .ask({ type: 'network.nics-down', system: systemId }, { timeoutMs: 30_000 })
      .catch((error: unknown) => this.ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'could not remove the system’s taps'));
  }
}
