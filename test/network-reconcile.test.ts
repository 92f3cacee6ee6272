/**
 * The Network service's decisions without root: names, the plan from desired and observed
 * interfaces, the iproute2 and vppctl command lines, and the network schema.
 */
import { runsWhen } from './helpers/requires.js';
import test from 'ava';
import { networkObjectSchema, systemObjectSchema, type NetworkObject } from '../actors/model.js';
import { bridgeName, generatedMac, ownerAlias, parseOwner, provisionalName, tapName, vlanLinkName } from '../adapters/interface-names.js';
import { plan, tapsFound, UnclaimedTaps, type ObservedLink } from '../actors/network/reconcile.js';
import { execFileSync } from 'node:child_process';
import { commandsFor, run } from '../adapters/iproute2.js';
import { vppAvailable, vppCreateCommands, vppDeleteCommands } from '../adapters/vpp.js';
import { AcpError } from '../runtime/errors.js';
import { nicArgs } from '../adapters/drivers/qemu-args.js';
import { withRates } from '../actors/network/stats.js';

const SCOPE = 'lab/n1';
const hasIp = (() => {
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const net = (spec: Partial<NetworkObject> & { name: string }): NetworkObject => networkObjectSchema.parse({ type: 'bridge', ...spec });
const link = (name: string, extra: Partial<ObservedLink> = {}): ObservedLink => ({ name, kind: undefined, alias: undefined, master: undefined, up: true, carrier: true, mtu: 1500, ...extra });
const ours = (network: string, system?: string) => ownerAlias(SCOPE, system === undefined ? { network } : { network, system });

test('names fit in 15 characters, are stable, and read like the CDB when they can', (t) => {
  t.is(bridgeName('lan'), 'lan');
  const long = bridgeName('a-network-with-a-long-name');
  t.true(long.length <= 15);
  t.is(long, bridgeName('a-network-with-a-long-name'));
  t.not(long, bridgeName('a-network-with-a-long-nam3'));
  t.is(vlanLinkName('eth1', 100), 'eth1.100');
  t.true(vlanLinkName('enp0s31f6long', 4094).length <= 15);
  t.is(tapName('web', 0), 'web-0');
  t.true(tapName('a-very-long-system-name', 31).length <= 15);
  t.true(tapName('a-very-long-system-name', 31).endsWith('-31'));
  t.is(parseOwner(SCOPE, ours('lan'))?.network, 'lan');
  t.deepEqual(parseOwner(SCOPE, ours('lan', 'web')), { network: 'lan', system: 'web' });
  t.is(parseOwner(SCOPE, 'acp:lab/n2/lan'), undefined, "another node's interface is not ours");
  t.is(parseOwner(SCOPE, 'uplink to the rack'), undefined);
  t.is(parseOwner(SCOPE, undefined), undefined);
});

test('a generated MAC is locally administered, unicast and stable', (t) => {
  const mac = generatedMac('web', 0);
  t.regex(mac, /^02(:[0-9a-f]{2}){5}$/);
  t.is(mac, generatedMac('web', 0));
  t.not(mac, generatedMac('web', 1));
});

test('a new bridge network: the bridge is created, marked and set up', (t) => {
  const { operations, reports } = plan(SCOPE, 'n1', [net({ name: 'lan' })], [], [link('lo'), link('eth0')]);
  t.deepEqual(operations, [
    { op: 'add-bridge', name: 'lan', alias: 'acp:lab/n1/lan' },
    { op: 'set-up', name: 'lan', up: true },
  ]);
  t.deepEqual(reports['lan'], { state: 'up', interfaces: ['lan'], uplink: null, carrier: null });
});

test('what exists as wanted gives an empty plan: a restart does not flap anything', (t) => {
  const observed = [link('eth1', { master: 'lan' }), link('lan', { kind: 'bridge', alias: ours('lan'), mtu: 9000 })];
  const { operations, reports } = plan(SCOPE, 'n1', [net({ name: 'lan', uplink: 'eth1', mtu: 9000 })], [], observed);
  t.deepEqual(operations, []);
  t.like(reports['lan'], { state: 'up', uplink: 'eth1', carrier: true });
});

test('drift is repaired: a bridge set down comes up, a bridge deleted comes back, an uplink released goes back in', (t) => {
  const down = plan(SCOPE, 'n1', [net({ name: 'lan' })], [], [link('lan', { kind: 'bridge', alias: ours('lan'), up: false })]);
  t.deepEqual(down.operations, [{ op: 'set-up', name: 'lan', up: true }]);
  const gone = plan(SCOPE, 'n1', [net({ name: 'lan', uplinks: { n1: 'eth1' } })], [], [link('eth1')]);
  t.deepEqual(gone.operations.map((op) => op.op), ['add-bridge', 'set-up', 'set-master']);
  t.deepEqual(gone.operations.at(-1), { op: 'set-master', name: 'eth1', master: 'lan' });
});

test("only this node's interfaces are removed; an administrator's and another node's are never touched", (t) => {
  const observed = [
    link('old', { kind: 'bridge', alias: ours('old') }),
    link('mine', { kind: 'bridge' }),
    link('theirs', { kind: 'bridge', alias: 'acp:lab/n2/theirs' }),
    link('web-0', { kind: 'tun', alias: ours('old', 'web') }),
  ];
  const { operations } = plan(SCOPE, 'n1', [], [], observed);
  t.deepEqual(operations.map((op) => [op.op, op.name]), [['delete', 'old'], ['delete', 'web-0']]);
});

test('a half-made interface (killed before it was marked) is removed, and the network made again', (t) => {
  const { operations } = plan(SCOPE, 'n1', [net({ name: 'lan' })], [], [link(provisionalName('lan'), { kind: 'bridge' }), link(provisionalName('other'), { kind: 'bridge' })]);
  t.deepEqual(operations.map((op) => [op.op, op.name]), [['delete', provisionalName('lan')], ['add-bridge', 'lan'], ['set-up', 'lan']]);
});

test('a name taken by an interface ACP does not own degrades the network and changes nothing', (t) => {
  const { operations, reports } = plan(SCOPE, 'n1', [net({ name: 'br0' })], [], [link('br0', { kind: 'bridge' })]);
  t.deepEqual(operations, []);
  t.is(reports['br0']?.state, 'degraded');
  t.regex(reports['br0']!.reason!, /br0 exists and is not this network's \(ACP did not make it\)/);
});

test('a missing uplink degrades the network, naming it; the bridge is still made', (t) => {
  const { operations, reports } = plan(SCOPE, 'n1', [net({ name: 'lan', uplink: 'eth9' })], [], []);
  t.deepEqual(operations.map((op) => op.op), ['add-bridge', 'set-up']);
  t.like(reports['lan'], { state: 'degraded', reason: "uplink eth9 does not exist on node 'n1'", uplink: 'eth9' });
});

test('a node the network leaves out reports absent and removes what it had', (t) => {
  const { operations, reports } = plan(SCOPE, 'n1', [net({ name: 'lan', nodes: ['n2'] })], [], [link('lan', { kind: 'bridge', alias: ours('lan') })]);
  t.deepEqual(operations.map((op) => [op.op, op.name]), [['delete', 'lan']]);
  t.like(reports['lan'], { state: 'absent', interfaces: [] });
});

test('a vlan network: a bridge, and the uplink tagged sub-interface in it', (t) => {
  const { operations } = plan(SCOPE, 'n1', [net({ name: 'v100', type: 'vlan', vlan: 100, uplink: 'eth1' })], [], [link('eth1')]);
  t.deepEqual(operations, [
    { op: 'add-bridge', name: 'v100', alias: ours('v100') },
    { op: 'set-up', name: 'v100', up: true },
    { op: 'add-vlan', name: 'eth1.100', parent: 'eth1', vid: 100, alias: ours('v100') },
    { op: 'set-master', name: 'eth1.100', master: 'v100' },
    { op: 'set-up', name: 'eth1.100', up: true },
  ]);
  // A VLAN's uplink that is down is set up (and stays out of any bridge).
  const downUplink = plan(SCOPE, 'n1', [net({ name: 'v100', type: 'vlan', vlan: 100, uplink: 'eth1' })], [], [link('eth1', { up: false })]);
  t.deepEqual(downUplink.operations.at(-1), { op: 'set-up', name: 'eth1', up: true });
  t.false(downUplink.operations.some((op) => op.op === 'set-master' && op.name === 'eth1'));
  // The id changed: the sub-interface is made again.
  const changed = plan(SCOPE, 'n1', [net({ name: 'v100', type: 'vlan', vlan: 100, uplink: 'eth1' })], [], [
    link('eth1'),
    link('v100', { kind: 'bridge', alias: ours('v100') }),
    link('eth1.100', { kind: 'vlan', alias: ours('v100'), parent: 'eth1', vid: 200, master: 'v100' }),
  ]);
  t.deepEqual(changed.operations.map((op) => op.op), ['delete', 'add-vlan', 'set-master', 'set-up']);
});

test("systems' taps go on their network's bridge, with their alias naming the system", (t) => {
  const observed = [link('lan', { kind: 'bridge', alias: ours('lan') })];
  const { operations } = plan(SCOPE, 'n1', [net({ name: 'lan' })], [{ system: 'web', network: 'lan', name: 'web-0', up: true }], observed);
  t.deepEqual(operations, [
    { op: 'add-tap', name: 'web-0', alias: ours('lan', 'web') },
    { op: 'set-master', name: 'web-0', master: 'lan' },
    { op: 'set-up', name: 'web-0', up: true },
  ]);
});

test('the iproute2 command lines, and names that never reach them', (t) => {
  // Made under a provisional name, marked, then named: never unmarked under a network's name.
  const lan = provisionalName('lan');
  t.regex(lan, /^acpn[0-9a-f]{11}$/);
  t.deepEqual(commandsFor({ op: 'add-bridge', name: 'lan', alias: 'acp:lab/n1/lan' }), [
    ['link', 'add', 'name', lan, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0'],
    ['link', 'set', 'dev', lan, 'alias', 'acp:lab/n1/lan'],
    ['link', 'set', 'dev', lan, 'name', 'lan'],
  ]);
  const vlan = provisionalName('eth1.100');
  t.deepEqual(commandsFor({ op: 'add-vlan', name: 'eth1.100', parent: 'eth1', vid: 100, alias: 'acp:lab/n1/v' }), [
    ['link', 'add', 'link', 'eth1', 'name', vlan, 'type', 'vlan', 'id', '100'],
    ['link', 'set', 'dev', vlan, 'alias', 'acp:lab/n1/v'],
    ['link', 'set', 'dev', vlan, 'name', 'eth1.100'],
  ]);
  const tap = provisionalName('web-0');
  t.deepEqual(commandsFor({ op: 'add-tap', name: 'web-0', alias: 'a' }), [['tuntap', 'add', 'dev', tap, 'mode', 'tap'], ['link', 'set', 'dev', tap, 'alias', 'a'], ['link', 'set', 'dev', tap, 'name', 'web-0']]);
  t.deepEqual(commandsFor({ op: 'set-master', name: 'web-0', master: 'lan' }), [['link', 'set', 'dev', 'web-0', 'master', 'lan']]);
  t.deepEqual(commandsFor({ op: 'delete', name: 'lan', why: 'x' }), [['link', 'del', 'dev', 'lan']]);
  for (const bad of ['a b', 'x/y', 'sixteen-chars-xx', '..', '-x', 'a;rm']) {
    t.throws(() => commandsFor({ op: 'delete', name: bad, why: 'x' }), { message: /not a valid interface name/ }, bad);
  }
  t.throws(() => commandsFor({ op: 'add-bridge', name: 'lan', alias: 'two words' }), { message: /printable ASCII/ });
});

test('the vppctl command lines for a VLAN sub-interface', (t) => {
  t.deepEqual(vppCreateCommands('GigabitEthernet0/8/0', 100), [
    ['create', 'sub-interfaces', 'GigabitEthernet0/8/0', '100'],
    ['set', 'interface', 'state', 'GigabitEthernet0/8/0.100', 'up'],
  ]);
  t.deepEqual(vppDeleteCommands('GigabitEthernet0/8/0', 100), [['delete', 'sub-interface', 'GigabitEthernet0/8/0.100']]);
  t.throws(() => vppCreateCommands('eth0; reboot', 100), { message: /not a VPP interface name/ });
  t.throws(() => vppCreateCommands('eth0', 4095), { message: /1-4094/ });
});

test('the network schema: types, VLAN ids, uplinks and nodes', (t) => {
  t.like(networkObjectSchema.parse({ name: 'lan', type: 'bridge', uplinks: { n1: 'eth1', n2: 'bond0' }, nodes: ['n1', 'n2'], mtu: 9000 }), { uplinks: { n1: 'eth1', n2: 'bond0' } });
  const refused = (value: unknown, pattern: RegExp) => {
    const result = networkObjectSchema.safeParse(value);
    t.false(result.success, JSON.stringify(value));
    if (!result.success) t.regex(result.error.issues[0]!.message, pattern);
  };
  refused({ name: 'v', type: 'vlan' }, /needs a vlan id/);
  refused({ name: 'v', type: 'vlan', vlan: 4095 }, /4094/);
  refused({ name: 'v', type: 'bridge', vlan: 10 }, /takes no vlan id/);
  refused({ name: 't', type: 'trunk' }, /needs the VLAN ids/);
  refused({ name: 'b', type: 'bridge', vids: [10] }, /vids go with a trunk/);
  refused({ name: 'b', type: 'bridge', uplink: 'eth0; reboot' }, /interface name/);
  refused({ name: 'b', type: 'bridge', uplink: 'eth1', uplinks: { n1: 'eth1' } }, /not both/);
  const system = systemObjectSchema.parse({ name: 'web', nics: [{ network: 'lan' }] });
  t.deepEqual(system.nics, [{ network: 'lan', model: 'virtio' }]);
});

test('rates come from the previous sample; a counter that went down (interface made again) gives none', (t) => {
  const counters = { rxBytes: 1000, txBytes: 500, rxPackets: 10, txPackets: 5, rxErrors: 0, txErrors: 0, rxDrops: 0, txDrops: 0 };
  t.like(withRates(counters, undefined, 1000), { rxBytes: 1000, rxBytesPerSec: null });
  const later = { ...counters, rxBytes: 3000, txBytes: 400, rxPackets: 30 };
  t.like(withRates(later, { counters, at: 1000 }, 3000), { rxBytesPerSec: 1000, rxPacketsPerSec: 10, txBytesPerSec: null });
});

test("a QEMU NIC opens the Network service's tap, with no scripts, and carries its MAC", (t) => {
  const spec = systemObjectSchema.parse({ name: 'web', nics: [{ network: 'lan', mac: '02:00:00:00:00:01' }, { network: 'lan', model: 'e1000' }] });
  t.deepEqual(nicArgs('web', spec), [
    '-netdev',
    'tap,id=net0,ifname=web-0,script=no,downscript=no',
    '-device',
    'virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01',
    '-netdev',
    'tap,id=net1,ifname=web-1,script=no,downscript=no',
    '-device',
    `e1000,netdev=net1,mac=${generatedMac('web', 1)}`,
  ]);
});

test.serial('a missing ip or vppctl is an error naming the command; VPP is reported unavailable saying why', async (t) => {
  const path = process.env.PATH;
  process.env.PATH = '/nonexistent';
  try {
    const missing = await t.throwsAsync(run('ip', ['-j', 'link', 'show']), { instanceOf: AcpError });
    t.is(missing?.code, 'ACP_ERR_NETWORK_TOOL_MISSING');
    t.regex(missing!.message, /'ip' is not installed or not on PATH \(needed for: ip -j link show\)/);
    const vpp = await vppAvailable();
    t.false(vpp.ok);
    if (!vpp.ok) t.regex(vpp.why, /vppctl is not installed/);
  } finally {
    process.env.PATH = path;
  }
});

runsWhen(!hasIp && 'the ip binary (iproute2) is not installed').serial(`a refused iproute2 operation is an error naming the command and what ip printed${hasIp ? '' : ' (skipped: no ip binary)'}`, async (t) => {
  // A device that cannot exist (its name is longer than Linux allows): ip refuses, nothing changes.
  const refused = await t.throwsAsync(run('ip', ['link', 'show', 'dev', 'no-such-device-acp']), { instanceOf: AcpError });
  t.is(refused?.code, 'ACP_ERR_NETWORK_COMMAND');
  t.regex(refused!.message, /^ip link show dev no-such-device-acp failed: /);
});

test('taps kept at a restart: claimed ones stay kept, the recovery\'s list releases the rest at once, and without it each goes when its wait is over', (t) => {
  const kept = new UnclaimedTaps(1000);
  kept.keep('a', 0);
  kept.keep('b', 0);
  kept.keep('c', 500);
  kept.claim('a');
  t.deepEqual(kept.systems, ['b', 'c']);
  t.deepEqual(kept.release(999), [], 'nothing before its wait is over');
  t.deepEqual(kept.release(1000), ['b'], 'b waited 1000 ms');
  t.deepEqual(kept.systems, ['c']);
  kept.keep('d', 1000);
  t.deepEqual(kept.release(1001, new Set(['d'])), ['c'], 'the recovery adopted d only: c goes, whatever its wait');
  t.deepEqual(kept.systems, [], 'd is claimed by the list');
  t.deepEqual(kept.release(10_000), []);
  kept.keep('forever', 0, false);
  t.deepEqual(kept.release(1_000_000_000), [], 'kept without a deadline: it waits for a claim or the recovery');
  t.deepEqual(kept.release(1_000_000_000, new Set()), ['forever']);
});

test("the taps found at a restart are this node's tuns, by the system their alias names, as they are", (t) => {
  const observed = [
    link('web-0', { kind: 'tun', alias: ownerAlias('lab/n1', { network: 'lan', system: 'web' }), up: false }),
    link('web-1', { kind: 'tun', alias: ownerAlias('lab/n1', { network: 'dmz', system: 'web' }) }),
    link('db-0', { kind: 'tun', alias: ownerAlias('lab/n2', { network: 'lan', system: 'db' }) }),
    link('lan', { kind: 'bridge', alias: ownerAlias('lab/n1', { network: 'lan' }) }),
    link('odd-0', { kind: 'veth', alias: ownerAlias('lab/n1', { network: 'lan', system: 'odd' }) }),
  ];
  t.deepEqual([...tapsFound('lab/n1', observed)], [['web', [{ system: 'web', network: 'lan', name: 'web-0', up: false }, { system: 'web', network: 'dmz', name: 'web-1', up: true }]]]);
});
