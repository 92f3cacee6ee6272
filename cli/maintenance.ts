/**
 * `acp node maintenance on NODE` for systems the HA manager does not manage: each non-HA system
 * running on the node is live-migrated to the best other node, chosen as HA placement chooses
 * (actors/ha/placement.ts: capacity, anti-affinity, then the least loaded), among nodes that are up,
 * not witnesses and not in maintenance themselves. One that cannot move (no node can take it, or
 * its migration fails) stays and is named. They are not moved back when maintenance ends.
 */
import { haSpecOf, nodeSpecs, capacityOf } from '../actors/ha/inputs.js';
import { bestNode, type Placed } from '../actors/ha/placement.js';
import type { HaSystemSpec } from '../actors/ha/protocol.js';
import { systemObjectSchema } from '../actors/model.js';
import type { AcpClient } from '../runtime/client.js';
import { errorMessage } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { listAll } from './cdb.js';

const MIGRATE_MS = 700_000;

export interface MaintenanceMoves {
  moved: { id: string; to: string }[];
  failed: { id: string; error: string }[];
}

type Status = Message & { systems: { id: string; state: string; ha?: boolean }[] };

export async function moveNonHaAway(client: AcpClient, node: string, progress: (line: string) => void): Promise<MaintenanceMoves> {
  const cluster = client.node.cluster;
  const [systems, metas, nodeRecords, membership] = await Promise.all([
    listAll(client, 'object/system/'),
    listAll(client, 'meta/node/'),
    listAll(client, 'object/node/'),
    client.ask<Message & { nodes: { node: string; state: string }[] }>('cdb', { type: 'cdb.nodes' }),
  ]);
  const specs = new Map<string, HaSystemSpec>();
  const ha = new Set<string>();
  for (const record of systems) {
    const parsed = systemObjectSchema.safeParse(record.value);
    if (!parsed.success) continue;
    const id = record.key.slice('object/system/'.length);
    specs.set(id, haSpecOf(id, parsed.data));
    if (parsed.data.ha === true) ha.add(id);
  }
  const capacity = new Map<string, { memoryMiB: number; vcpus: number }>();
  for (const record of metas) {
    const match = /^meta\/node\/([^@]+)@\1$/.exec(record.key);
    const cap = match ? capacityOf(record.value) : undefined;
    if (match && cap) capacity.set(match[1]!, cap);
  }
  const objects = new Map(nodeRecords.map((record) => {
    const value = record.value as { witness?: unknown; maintenance?: unknown } | null;
    return [record.key.slice('object/node/'.length), { witness: value?.witness === true, maintenance: value?.maintenance === true }] as const;
  }));
  const up = new Set(membership.nodes.filter((member) => member.state === 'up').map((member) => member.node));
  const candidates = nodeSpecs(capacity, objects).filter((spec) => spec.name !== node && up.has(spec.name) && !spec.maintenance);
  // What runs where now, by each node's own hypervisor: capacity counts it.
  const placed: Placed[] = [];
  let here: string[] = [];
  for (const name of [node, ...candidates.map((spec) => spec.name)]) {
    const status = await client.ask<Status>(`acp://${cluster}/${name}/hypervisor`, { type: 'system.status' }, { timeoutMs: 10_000 });
    const live = status.systems.filter((system) => system.state === 'running' || system.state === 'paused');
    for (const system of live) placed.push({ id: system.id, node: name });
    if (name === node) here = live.filter((system) => system.ha !== true && !ha.has(system.id)).map((system) => system.id).sort();
  }
  const result: MaintenanceMoves = { moved: [], failed: [] };
  for (const id of here) {
    const spec = specs.get(id);
    const to = spec === undefined ? null : bestNode(spec, candidates, placed, specs);
    if (to === null) {
      result.failed.push({ id, error: spec === undefined ? 'its object is gone' : 'no other node can take it (capacity, anti-affinity, or none up)' });
      continue;
    }
    progress(`migrating ${id} from ${node} to ${to}`);
    try {
      await client.ask(`acp://${cluster}/${node}/hypervisor`, { type: 'system.migrate', id, to }, { timeoutMs: MIGRATE_MS });
      const entry = placed.find((other) => other.id === id);
      if (entry) placed.splice(placed.indexOf(entry), 1, { id, node: to });
      result.moved.push({ id, to });
    } catch (error) {
      result.failed.push({ id, error: errorMessage(error) });
    }
  }
  return result;
}
