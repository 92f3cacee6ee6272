/**
 * The harness's network: a switch namespace with one bridge per domain, and each node's namespace
 * joined to its domain's bridge by a veth pair (its end named eth0). With two domains the switch
 * routes between them, so the nodes reach each other only through L3.
 */
import { ip, sysctlIn } from './net.js';
import type { HarnessNode } from './options.js';

export const SUBNET = { a: '10.77.1', b: '10.77.2' } as const;

export async function buildSwitchedNetwork(sw: string, twoDomains: boolean, ports: readonly { node: HarnessNode; port: string }[], addNamespace: (ns: string) => Promise<void>): Promise<void> {
  await addNamespace(sw);
  const domains: ('a' | 'b')[] = twoDomains ? ['a', 'b'] : ['a'];
  for (const domain of domains) {
    // No IGMP snooping: without a querier the bridge would stop flooding the group after a while.
    await ip(['-n', sw, 'link', 'add', `br-${domain}`, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0', 'mcast_snooping', '0']);
    await ip(['-n', sw, 'link', 'set', `br-${domain}`, 'up']);
    if (twoDomains) await ip(['-n', sw, 'addr', 'add', `${SUBNET[domain]}.1/24`, 'dev', `br-${domain}`]);
  }
  if (twoDomains) await sysctlIn(sw, 'net.ipv4.ip_forward', '1');
  for (const { node, port } of ports) {
    await addNamespace(node.ns);
    // Made from inside the switch namespace, the pair never appears in the host's namespace.
    await ip(['-n', sw, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', node.ns]);
    await ip(['-n', sw, 'link', 'set', port, 'master', `br-${node.domain}`]);
    await ip(['-n', sw, 'link', 'set', port, 'up']);
    await ip(['-n', node.ns, 'addr', 'add', `${node.address}/24`, 'dev', 'eth0']);
    await ip(['-n', node.ns, 'link', 'set', 'eth0', 'up']);
    // Multicast goes out eth0 whether or not the sender names the interface.
    await ip(['-n', node.ns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0']);
    if (twoDomains) await ip(['-n', node.ns, 'route', 'add', 'default', 'via', `${SUBNET[node.domain]}.1`]);
  }
}
