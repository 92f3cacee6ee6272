/**
 * The Network service's decision, as pure functions: what a node's networks and taps want, what
 * iproute2 reports, and the plan of operations between them. No I/O here: the service observes
 * and applies through adapters/iproute2.ts, and tests run this without root.
 */
import type { NetworkObject, SystemNic } from '../model.js';
import { bridgeName, isAcpAlias, ownerAlias, parseOwner, provisionalName, tapName, vlanLinkName, type Owner } from '../../adapters/interface-names.js';
import type { ObservedLink, Operation } from '../../adapters/iproute2.js';

export type { ObservedLink, Operation } from '../../adapters/iproute2.js';

/** A tap a system's NIC needs here (the service keeps these while the system runs or arrives). */
export interface TapWant {
  readonly system: string;
  readonly network: string;
  readonly name: string;
  readonly mtu?: number;
  /** Down when the NIC's link is cut on purpose (`linkDown`). */
  readonly up: boolean;
}

/** An interface ACP makes and owns on this node. */
interface WantedLink {
  readonly name: string;
  readonly kind: 'bridge' | 'vlan' | 'tun';
  readonly owner: Owner;
  readonly mtu?: number;
  readonly up: boolean;
  readonly master?: string;
  readonly parent?: string;
  readonly vid?: number;
}

/** A network's state on this node, as `meta/network/<id>@<node>` carries it. */
export interface NetworkReport {
  state: 'up' | 'degraded' | 'absent';
  reason?: string;
  interfaces: string[];
  uplink: string | null;
  carrier: boolean | null;
}

export interface Plan {
  readonly operations: Operation[];
  readonly reports: Record<string, NetworkReport>;
}

/** Whether `node` carries the network (every node unless `nodes` names some). */
export function carries(network: NetworkObject, node: string): boolean {
  return network.nodes === undefined || network.nodes.includes(node);
}

/** The uplink this node attaches to the network, if any. */
export function uplinkOf(network: NetworkObject, node: string): string | undefined {
  return network.uplinks?.[node] ?? network.uplink;
}

/**
 * Why this node cannot realize the network with iproute2 (VPP's sub-interfaces are not Linux
 * links; VLAN-aware bridges come with issue 16's next steps), or undefined when it can.
 */
function unsupported(network: NetworkObject): string | undefined {
  switch (network.type) {
    case 'bridge':
      return network.vlanAware ? 'VLAN-aware bridges (vlanAware, vids) are not realized yet on this node' : undefined;
    case 'vlan':
      return undefined;
    case 'trunk':
      return 'trunk networks (VLAN-aware bridges) are not realized yet on this node';
    case 'vpp-vlan':
      return 'a vpp-vlan network is a DPDK VPP sub-interface, not a Linux link';
    default: {
      const unreachable: never = network.type;
      return unreachable;
    }
  }
}

function wantedFor(network: NetworkObject, node: string): WantedLink[] {
  const owner = { network: network.name };
  const bridge = bridgeName(network.name);
  const links: WantedLink[] = [{ name: bridge, kind: 'bridge', owner, up: true, ...(network.mtu === undefined ? {} : { mtu: network.mtu }) }];
  const uplink = uplinkOf(network, node);
  if (network.type === 'vlan' && uplink !== undefined) {
    // The tagged side on the uplink, untagged into the bridge: guests see plain frames.
    links.push({ name: vlanLinkName(uplink, network.vlan!), kind: 'vlan', owner, up: true, master: bridge, parent: uplink, vid: network.vlan!, ...(network.mtu === undefined ? {} : { mtu: network.mtu }) });
  }
  return links;
}

/**
 * Desired (networks this node carries, taps of its systems) against observed: the operations that
 * make them agree, touching only interfaces whose alias says they are this node's, and a report
 * per network saying what is (or will be, once the plan is applied) there.
 */
export function plan(scope: string, node: string, networks: readonly NetworkObject[], taps: readonly TapWant[], observed: readonly ObservedLink[]): Plan {
  const byName = new Map(observed.map((link) => [link.name, link]));
  const operations: Operation[] = [];
  const reports: Record<string, NetworkReport> = {};
  const wanted: WantedLink[] = [];
  const enslave: { network: string; uplink: string; master: string }[] = [];
  const raise = new Set<string>();

  for (const network of [...networks].sort((a, b) => a.name.localeCompare(b.name))) {
    if (!carries(network, node)) {
      reports[network.name] = { state: 'absent', reason: `node '${node}' does not carry it (nodes: ${network.nodes!.join(', ')})`, interfaces: [], uplink: null, carrier: null };
      continue;
    }
    const uplink = uplinkOf(network, node) ?? null;
    const why = unsupported(network);
    if (why !== undefined) {
      reports[network.name] = { state: 'degraded', reason: why, interfaces: [], uplink, carrier: null };
      continue;
    }
    const links = wantedFor(network, node);
    const problems: string[] = [];
    for (const link of links) {
      const there = byName.get(link.name);
      if (there && parseOwner(scope, there.alias)?.network !== network.name) {
        problems.push(`interface ${link.name} exists and is not this network's (${isAcpAlias(there.alias) ? `its alias is ${there.alias}` : 'ACP did not make it'}); rename or remove it`);
      }
    }
    const uplinkThere = uplink === null ? undefined : byName.get(uplink);
    if (uplink !== null && !uplinkThere) problems.push(`uplink ${uplink} does not exist on node '${node}'`);
    if (uplink !== null && uplinkThere && network.type === 'bridge' && uplinkThere.master !== undefined && uplinkThere.master !== bridgeName(network.name)) {
      problems.push(`uplink ${uplink} is already in bridge ${uplinkThere.master}`);
    }
    const blocked = problems.some((problem) => problem.startsWith('interface '));
    if (!blocked) {
      // A vlan link needs its parent; a missing uplink leaves the bridge alone, node-local.
      wanted.push(...links.filter((link) => link.parent === undefined || byName.has(link.parent)));
      if (uplink !== null && uplinkThere && network.type === 'bridge' && problems.length === 0) enslave.push({ network: network.name, uplink, master: bridgeName(network.name) });
      // A VLAN's tagged side rides on the uplink: it must be up too (it stays out of any bridge).
      if (uplinkThere && network.type === 'vlan' && !uplinkThere.up) raise.add(uplinkThere.name);
    }
    reports[network.name] = {
      state: problems.length > 0 ? 'degraded' : 'up',
      ...(problems.length > 0 ? { reason: problems.join('; ') } : {}),
      interfaces: blocked ? [] : links.map((link) => link.name),
      uplink,
      carrier: uplinkThere ? uplinkThere.carrier : null,
    };
  }

  const bridges = new Set(wanted.filter((link) => link.kind === 'bridge').map((link) => link.name));
  for (const tap of taps) {
    if (!bridges.has(bridgeName(tap.network))) continue;
    wanted.push({ name: tap.name, kind: 'tun', owner: { network: tap.network, system: tap.system }, up: tap.up, master: bridgeName(tap.network), ...(tap.mtu === undefined ? {} : { mtu: tap.mtu }) });
  }

  const wantedByName = new Map(wanted.map((link) => [link.name, link]));
  // Ours and no longer wanted, or wanted as something else: removed first (a name may be reused below).
  const provisional = new Set(wanted.map((want) => provisionalName(want.name)));
  for (const link of observed) {
    const owner = parseOwner(scope, link.alias);
    if (!owner && !isAcpAlias(link.alias) && provisional.has(link.name)) {
      operations.push({ op: 'delete', name: link.name, why: 'a half-made interface (made, never marked)' });
      continue;
    }
    if (!owner) continue;
    const want = wantedByName.get(link.name);
    if (!want) {
      operations.push({ op: 'delete', name: link.name, why: `nothing wants it (${link.alias})` });
      byName.delete(link.name);
    } else if (link.kind !== want.kind || link.parent !== want.parent || link.vid !== want.vid || parseOwner(scope, link.alias)?.system !== want.owner.system) {
      operations.push({ op: 'delete', name: link.name, why: `it is a ${link.kind ?? 'device'} and a ${want.kind} is wanted` });
      byName.delete(link.name);
    }
  }
  // Bridges before the links that go into them.
  const order = { bridge: 0, vlan: 1, tun: 2 } as const;
  for (const want of [...wanted].sort((a, b) => order[a.kind] - order[b.kind])) {
    const there = byName.get(want.name);
    const alias = ownerAlias(scope, want.owner);
    if (!there) {
      switch (want.kind) {
        case 'bridge':
          operations.push({ op: 'add-bridge', name: want.name, alias });
          break;
        case 'vlan':
          operations.push({ op: 'add-vlan', name: want.name, parent: want.parent!, vid: want.vid!, alias });
          break;
        case 'tun':
          operations.push({ op: 'add-tap', name: want.name, alias });
          break;
        default: {
          const unreachable: never = want.kind;
          throw new Error(`unknown link kind ${String(unreachable)}`);
        }
      }
    }
    if (want.mtu !== undefined && there?.mtu !== want.mtu) operations.push({ op: 'set-mtu', name: want.name, mtu: want.mtu });
    if (want.master !== undefined && there?.master !== want.master) operations.push({ op: 'set-master', name: want.name, master: want.master });
    if (there?.up !== want.up) operations.push({ op: 'set-up', name: want.name, up: want.up });
  }
  // Uplinks are the administrator's: put into the bridge and up, never deleted.
  for (const { uplink, master } of enslave) {
    const there = byName.get(uplink)!;
    if (there.master !== master) operations.push({ op: 'set-master', name: uplink, master });
    if (!there.up) raise.add(uplink);
  }
  for (const name of raise) operations.push({ op: 'set-up', name, up: true });
  return { operations, reports };
}

/** An operation as the log says it. */
export function describe(operation: Operation): string {
  switch (operation.op) {
    case 'delete':
      return `removed ${operation.name}: ${operation.why}`;
    case 'add-bridge':
      return `created bridge ${operation.name}`;
    case 'add-vlan':
      return `created vlan ${operation.name} (id ${operation.vid} on ${operation.parent})`;
    case 'add-tap':
      return `created tap ${operation.name}`;
    case 'set-mtu':
      return `set ${operation.name} mtu ${operation.mtu}`;
    case 'set-master':
      return `put ${operation.name} in bridge ${operation.master}`;
    case 'set-up':
      return `set ${operation.name} ${operation.up ? 'up' : 'down'}`;
    default: {
      const unreachable: never = operation;
      return String(unreachable);
    }
  }
}

/** The taps a system's NICs need. */
export function tapWants(system: string, nics: readonly SystemNic[]): TapWant[] {
  return nics.map((nic, index) => ({ system, network: nic.network, name: tapName(system, index), up: nic.linkDown !== true, ...(nic.mtu === undefined ? {} : { mtu: nic.mtu }) }));
}

/** This node's taps among `observed`, by the system their alias names, as they are. */
export function tapsFound(scope: string, observed: readonly ObservedLink[]): Map<string, TapWant[]> {
  const found = new Map<string, TapWant[]>();
  for (const link of observed) {
    const owner = parseOwner(scope, link.alias);
    if (owner?.system === undefined || link.kind !== 'tun') continue;
    found.set(owner.system, [...(found.get(owner.system) ?? []), { system: owner.system, network: owner.network, name: link.name, up: link.up }]);
  }
  return found;
}

/**
 * Taps a restarted node found and kept for systems still defined, until the hypervisor claims
 * them (a NIC up or down), says which guests its recovery adopted, or `waitMs` passes.
 */
export class UnclaimedTaps {
  private readonly deadlines = new Map<string, number>();

  constructor(private readonly waitMs: number) {}

  get systems(): string[] {
    return [...this.deadlines.keys()];
  }

  /** `expires` false: kept until claimed or released by the recovery's report, however long. */
  keep(system: string, now: number, expires = true): void {
    this.deadlines.set(system, expires ? now + this.waitMs : Infinity);
  }

  claim(system: string): void {
    this.deadlines.delete(system);
  }

  /**
   * The systems whose kept taps go now. With `adopted` (the hypervisor's recovery is over): every
   * one it did not adopt, and the adopted ones are claimed. Without: those whose wait is over.
   */
  release(now: number, adopted?: ReadonlySet<string>): string[] {
    const released: string[] = [];
    for (const [system, deadline] of this.deadlines) {
      if (adopted ? adopted.has(system) : now < deadline) {
        if (adopted) this.deadlines.delete(system);
        continue;
      }
      this.deadlines.delete(system);
      released.push(system);
    }
    return released;
  }
}
