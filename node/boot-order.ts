import type { ServiceEntry } from '../supervisors/service-tree.js';

const local = (relative: string) => new URL(relative, import.meta.url).href;

/**
 * The node's services in the design's boot order (docs/design.md) (cdb → agent, api → network, storage → hypervisor
 * → monitor → ha → webapi); they stop in the reverse order.
 */
export const BOOT_ORDER: readonly ServiceEntry[] = [
  { name: 'cdb', module: local('../actors/cdb/index.js') },
  { name: 'agent', module: local('../actors/agent/index.js') },
  { name: 'api', module: local('../actors/api/index.js') },
  { name: 'network', module: local('../actors/network/index.js') },
  { name: 'storage', module: local('../actors/storage/index.js') },
  { name: 'hypervisor', module: local('../actors/hypervisor/index.js') },
  { name: 'monitor', module: local('../actors/monitor/index.js') },
  { name: 'ha', module: local('../actors/ha/index.js') },
  { name: 'webapi', module: local('../webapi/service.js') },
];

/** What a witness runs: enough to hold the membership (cdb), reach the others (agent), be driven locally (api) and vote (monitor). */
export const WITNESS_SERVICES: readonly string[] = ['cdb', 'agent', 'api', 'monitor'];

/** The boot order for a node of this kind: a witness runs no network, storage, hypervisor or web UI. */
export function bootOrderFor(config: { witness?: boolean | undefined }): readonly ServiceEntry[] {
  return config.witness === true ? BOOT_ORDER.filter((entry) => WITNESS_SERVICES.includes(entry.name)) : BOOT_ORDER;
}
