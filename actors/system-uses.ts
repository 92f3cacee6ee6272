/**
 * What a system's guest holds while it runs: its volumes (disks and CD-ROM) and networks, as the
 * spec it was started with names them. The hypervisor publishes them in the system's meta; the
 * Storage and Network services refuse to take away what a running guest holds, even after the
 * system object changed (a disk detached or a NIC removed takes effect only at its next start).
 */
import type { RecordView } from './cdb/index.js';
import { parseKey, systemObjectSchema, type SystemObject } from './model.js';

export interface GuestUses {
  /** `POOL/VOLUME` of each disk and of the CD-ROM. */
  readonly volumes: string[];
  readonly networks: string[];
}

/** States in which a guest may hold its volumes and taps. */
export const GUEST_HOLDS_STATES: ReadonlySet<string> = new Set(['starting', 'running', 'paused', 'migrating', 'stopping']);

export function usesOf(spec: SystemObject): GuestUses {
  const volumes = [...spec.disks.map((disk) => `${disk.pool}/${disk.volume}`), ...(spec.iso ? [`${spec.iso.pool}/${spec.iso.volume}`] : [])];
  return { volumes: [...new Set(volumes)], networks: [...new Set(spec.nics.map((nic) => nic.network))] };
}

/** The live guests (from `meta/system/` records) whose published uses `holds` picks: `web1 (running on n1)`. */
export function liveHolders(metas: readonly RecordView[], holds: (uses: GuestUses) => boolean): { id: string; node: string; state: string }[] {
  const holders: { id: string; node: string; state: string }[] = [];
  for (const record of metas) {
    if (record.deleted) continue;
    const meta = record.value as { state?: unknown; uses?: { volumes?: unknown; networks?: unknown } } | null;
    const state = String(meta?.state);
    const parsed = parseKey(record.key);
    if (!GUEST_HOLDS_STATES.has(state) || parsed.node === undefined) continue;
    const volumes = Array.isArray(meta?.uses?.volumes) ? meta.uses.volumes.filter((item): item is string => typeof item === 'string') : [];
    const networks = Array.isArray(meta?.uses?.networks) ? meta.uses.networks.filter((item): item is string => typeof item === 'string') : [];
    if (holds({ volumes, networks })) holders.push({ id: parsed.id, node: parsed.node, state });
  }
  return holders;
}

/** Why network `name` cannot go, or undefined: systems with a NIC on it, or a running guest that still has one. */
export function networkInUse(name: string, systems: readonly RecordView[], metas: readonly RecordView[]): string | undefined {
  const users = systems
    .filter((record) => !record.deleted)
    .map((record) => systemObjectSchema.safeParse(record.value))
    .flatMap((parsed) => (parsed.success && parsed.data.nics.some((nic) => nic.network === name) ? [parsed.data.name] : []));
  if (users.length > 0) return `network '${name}' is used by system${users.length > 1 ? 's' : ''} ${users.sort().join(', ')}; remove their NICs on it first (acp system nic rm)`;
  const holders = liveHolders(metas, (uses) => uses.networks.includes(name)).map((guest) => `${guest.id} (${guest.state} on ${guest.node})`);
  if (holders.length > 0) return `network '${name}' still carries a NIC of the running guest of ${holders.join(', ')} (a NIC removed takes effect at the next start); stop ${holders.length > 1 ? 'them' : 'it'} first`;
  return undefined;
}
