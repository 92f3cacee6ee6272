import { createHash } from 'node:crypto';

/** What Linux takes as an interface name (checked again before any `ip` call). */
export const IFNAME_PATTERN = /^(?!\.{1,2}$)[A-Za-z0-9][A-Za-z0-9._@-]{0,14}$/;

/** Linux refuses interface names longer than this (IFNAMSIZ 16, with its NUL). */
export const IFNAME_MAX = 15;

function shortHash(text: string, length: number): string {
  return createHash('sha256').update(text).digest('hex').slice(0, length);
}

/**
 * The bridge of a network on every node: the network's own name when it fits (so `ip link` reads
 * like the CDB), else `acpbr` and a hash of the name (stable, so every node and restart agree).
 * Network ids are `[a-z0-9][a-z0-9._-]*`, all valid in interface names.
 */
export function bridgeName(network: string): string {
  return network.length <= IFNAME_MAX && IFNAME_PATTERN.test(network) ? network : `acpbr${shortHash(network, 10)}`;
}

/** The 802.1Q sub-interface of an uplink: `eth1.100` when it fits, else `acpv100` and a hash of the uplink. */
export function vlanLinkName(uplink: string, vid: number): string {
  const plain = `${uplink}.${vid}`;
  return plain.length <= IFNAME_MAX ? plain : `acpv${vid}x${shortHash(uplink, IFNAME_MAX - 5 - String(vid).length)}`;
}

/** A system's NIC as a tap: `<system>-<index>` when it fits, else `t` and a hash of the system, then the index. */
export function tapName(system: string, index: number): string {
  const plain = `${system}-${index}`;
  if (plain.length <= IFNAME_MAX && IFNAME_PATTERN.test(plain)) return plain;
  const suffix = `-${index}`;
  return `t${shortHash(system, IFNAME_MAX - 1 - suffix.length)}${suffix}`;
}

/**
 * The name an interface is made under before it carries its alias (adapters/iproute2.ts renames
 * it once marked), so a daemon killed half-way never leaves an unmarked interface under a
 * network's name, which would look like an administrator's and block the network. A leftover
 * under this name is recognised by it (only ACP makes `acpn<hash>` names) and removed.
 */
export function provisionalName(name: string): string {
  return `acpn${shortHash(name, 11)}`;
}

/**
 * What marks an interface as this node's (its ifalias): `acp:<cluster>/<node>/<network>`, with
 * `/<system>` for a system's tap. Cluster and node are in it because test clusters run several
 * nodes in one network namespace: each must leave the others' interfaces alone.
 */
export interface Owner {
  readonly network: string;
  readonly system?: string;
}

export function ownerAlias(scope: string, owner: Owner): string {
  return `acp:${scope}/${owner.network}${owner.system === undefined ? '' : `/${owner.system}`}`;
}

/** The owner an alias names, when it is this scope's (`<cluster>/<node>`); undefined for anything else. */
export function parseOwner(scope: string, alias: string | undefined): Owner | undefined {
  const prefix = `acp:${scope}/`;
  if (alias === undefined || !alias.startsWith(prefix)) return undefined;
  const [network, system, ...rest] = alias.slice(prefix.length).split('/');
  if (!network || rest.length > 0) return undefined;
  return system === undefined ? { network } : { network, system };
}

/** Whether an alias marks the interface as some ACP node's (this one's or another's). */
export function isAcpAlias(alias: string | undefined): boolean {
  return alias !== undefined && alias.startsWith('acp:');
}

/**
 * A stable, locally administered unicast MAC for a system's NIC (52:54:00 is QEMU's, so the
 * first octet is 0x02 | hash: locally administered, not multicast).
 */
export function generatedMac(system: string, index: number): string {
  const bytes = createHash('sha256').update(`${system}/${index}`).digest().subarray(0, 5);
  const octets = ['02', ...[...bytes].map((byte) => byte.toString(16).padStart(2, '0'))];
  return octets.join(':');
}
