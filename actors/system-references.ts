/**
 * What a new system's spec names must exist in the cluster: the nodes it is placed on or prefers,
 * and the volumes it uses, each fitting where it goes. One check for every way a system is made
 * (`acp system create`, `acp system disk attach`, the web API's `POST /api/v1/systems`), read
 * through the CDB with the asker's own authority.
 */
import type { RecordView } from './cdb/index.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';

/** One ask of this node's CDB, however the caller reaches it (a client's socket, the web API's system). */
export type AskCdb = (message: Message) => Promise<Message>;

export interface VolumeUse {
  pool: string;
  volume: string;
}

/** The parts of a system spec that name things outside it. */
export interface SystemReferences {
  node?: unknown;
  prefer?: unknown;
  disks?: readonly VolumeUse[];
  iso?: VolumeUse | undefined;
  nics?: readonly { network: string }[];
}

/** A CDB object's value, or undefined where there is none. */
async function objectValue(askCdb: AskCdb, key: string): Promise<unknown> {
  return askCdb({ type: 'cdb.get', key }).then(
    (reply) => (reply as Message & { record: RecordView }).record.value,
    (error: unknown) => {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') return undefined;
      throw error;
    },
  );
}

/**
 * The nodes a spec names (`node`, `prefer`) must be members that run systems (not witnesses): a
 * typo would leave a plain system with no node to start on, and an HA one placed elsewhere with a
 * spec that names a node that is not there. `asked` is the node the request came to: right after
 * its start it may not have written its own object yet, and it is a member all the same.
 */
export async function requireKnownNodes(askCdb: AskCdb, spec: SystemReferences, asked: string): Promise<void> {
  const { node, prefer } = spec;
  const named = [...(typeof node === 'string' ? [node] : []), ...(typeof prefer === 'object' && prefer !== null ? Object.keys(prefer) : [])];
  if (named.length === 0) return;
  const reply = (await askCdb({ type: 'cdb.list', prefix: 'object/node/', limit: 10_000 })) as Message & { records: RecordView[] };
  const live = reply.records.filter((record) => !record.deleted);
  const nameOf = (record: RecordView) => record.key.slice('object/node/'.length);
  // A witness runs no hypervisor: it votes, and the HA manager never places a system there.
  const witnesses = new Set(live.filter((record) => (record.value as { witness?: unknown } | null)?.witness === true).map(nameOf));
  const members = new Set(live.map(nameOf));
  members.add(asked);
  const unique = [...new Set(named)];
  const unknown = unique.filter((name) => !members.has(name));
  if (unknown.length > 0) {
    throw new AcpError('ACP_ERR_SYSTEM_UNKNOWN_NODE', `no node ${unknown.map((name) => `'${name}'`).join(', ')} in the cluster (it has ${[...members].sort().join(', ')}; acp nodes); nothing was created`);
  }
  const voting = unique.filter((name) => witnesses.has(name));
  if (voting.length > 0) {
    const runners = [...members].filter((name) => !witnesses.has(name)).sort();
    throw new AcpError('ACP_ERR_SYSTEM_UNKNOWN_NODE', `${voting.map((name) => `'${name}'`).join(', ')} ${voting.length === 1 ? 'is a witness' : 'are witnesses'}: ${voting.length === 1 ? 'it votes but runs' : 'they vote but run'} no systems (the nodes that do: ${runners.join(', ') || 'none'}); nothing was created`);
  }
}

/**
 * The volumes a spec names are defined, and each fits where it goes: an ISO image only as the
 * CD-ROM (the Storage service refuses one as a disk when the system starts), and a qcow2 image
 * never as the CD-ROM (which QEMU reads raw). Whether the node that starts the system carries the
 * pool, and has the image file, the Storage service says then.
 */
export async function requireSystemVolumes(askCdb: AskCdb, disks: readonly VolumeUse[], iso: VolumeUse | undefined): Promise<void> {
  const pools = new Map<string, boolean>();
  const uses = [...disks.map((use) => ({ use, cdrom: false })), ...(iso === undefined ? [] : [{ use: iso, cdrom: true }])];
  for (const { use, cdrom } of uses) {
    const id = `${use.pool}/${use.volume}`;
    if (!pools.has(use.pool)) pools.set(use.pool, (await objectValue(askCdb, `object/storage/pool/${use.pool}`)) !== undefined);
    if (pools.get(use.pool) !== true) {
      throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `no pool '${use.pool}' (for ${id}): acp storage pool ls lists the pools; acp storage pool create ${use.pool} --type dir --path DIR makes one`);
    }
    const volume = (await objectValue(askCdb, `object/storage/volume/${id}`)) as { format?: string } | undefined;
    if (volume === undefined) {
      throw new AcpError('ACP_ERR_STORAGE_NOT_FOUND', `no volume '${id}': acp storage volume ls ${use.pool} lists the pool's volumes; acp storage volume create ${id} --size SIZE makes one, acp storage volume import ${id} FILE brings in an image`);
    }
    if (!cdrom && volume.format === 'iso') {
      throw new AcpError('ACP_ERR_STORAGE_WRONG_FORMAT', `volume '${id}' is an ISO image, not a disk: give it as the system's CD-ROM, its spec's iso field (acp system create ID --iso ${id} ...), which it boots from after its disks`);
    }
    if (cdrom && volume.format === 'qcow2') {
      throw new AcpError('ACP_ERR_STORAGE_WRONG_FORMAT', `volume '${id}' is a qcow2 disk image, not an ISO: the CD-ROM is read raw; give it as a disk (--disk ${id})`);
    }
  }
}

/** The networks its NICs name exist (a NIC on a missing one was refused only when the system started). */
export async function requireSystemNetworks(askCdb: AskCdb, nics: readonly { network: string }[]): Promise<void> {
  for (const network of new Set(nics.map((nic) => nic.network))) {
    if ((await objectValue(askCdb, `object/network/${network}`)) !== undefined) continue;
    throw new AcpError('ACP_ERR_NETWORK_NOT_CARRIED', `no network '${network}': acp network ls lists the networks; acp network create ${network} --type bridge makes one; nothing was changed`);
  }
}

/** The checks of a new system: its nodes, its volumes, its networks. Nothing is written by any. */
export async function requireSystemReferences(askCdb: AskCdb, spec: SystemReferences, asked: string): Promise<void> {
  await requireKnownNodes(askCdb, spec, asked);
  await requireSystemVolumes(askCdb, spec.disks ?? [], spec.iso);
  await requireSystemNetworks(askCdb, spec.nics ?? []);
}
