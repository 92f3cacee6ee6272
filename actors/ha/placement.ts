/**
 * Where an HA system may run and which node is best, deterministically:
 * - capacity: the memory and vCPUs of the systems already placed on a node plus this one stay
 *   within the node's;
 * - anti-affinity: never on a node holding a system it names (or one naming it);
 * - node affinity: the highest-priority group of preferred nodes that can take it; other nodes
 *   come after every preferred one, or never when `strict`;
 * - then the node with the fewest HA systems, then the most free memory, then by name.
 */
import type { HaNodeSpec, HaSystemSpec } from './protocol.js';

export interface Placed {
  readonly id: string;
  readonly node: string;
}

function repels(a: HaSystemSpec, b: HaSystemSpec): boolean {
  return (a.antiAffinity ?? []).includes(b.id) || (b.antiAffinity ?? []).includes(a.id);
}

/** Why `node` cannot take `system`, or null when it can. */
export function unfit(system: HaSystemSpec, node: HaNodeSpec, placed: readonly Placed[], specs: ReadonlyMap<string, HaSystemSpec>): string | null {
  if (system.strict === true && system.prefer?.[node.name] === undefined) return 'not a preferred node (strict)';
  let memory = system.memoryMiB;
  let vcpus = system.vcpus;
  for (const other of placed) {
    if (other.node !== node.name || other.id === system.id) continue;
    const spec = specs.get(other.id);
    if (!spec) continue;
    if (repels(system, spec)) return `anti-affinity with ${spec.id}`;
    memory += spec.memoryMiB;
    vcpus += spec.vcpus;
  }
  if (memory > node.memoryMiB) return `memory ${memory} MiB over ${node.memoryMiB} MiB`;
  if (vcpus > node.vcpus) return `${vcpus} vCPUs over ${node.vcpus}`;
  return null;
}

/** The best node for `system` among `candidates` (already filtered for being online), or null. */
export function bestNode(system: HaSystemSpec, candidates: readonly HaNodeSpec[], placed: readonly Placed[], specs: ReadonlyMap<string, HaSystemSpec>): string | null {
  const fit = candidates.filter((node) => unfit(system, node, placed, specs) === null);
  if (fit.length === 0) return null;
  const priority = (name: string): number => system.prefer?.[name] ?? -1;
  const load = (name: string): number => placed.filter((other) => other.node === name && other.id !== system.id).length;
  const used = (name: string): number => placed.filter((other) => other.node === name && other.id !== system.id).reduce((sum, other) => sum + (specs.get(other.id)?.memoryMiB ?? 0), 0);
  const ranked = [...fit].sort((a, b) => priority(b.name) - priority(a.name) || load(a.name) - load(b.name) || (b.memoryMiB - used(b.name)) - (a.memoryMiB - used(a.name)) || a.name.localeCompare(b.name));
  return ranked[0]!.name;
}
