/**
 * The Network service for real, on a daemon inside a network namespace (node/harness): nothing it
 * makes ever reaches the machine's own namespace, and the namespace goes at teardown.
 */
import { Harness, harnessAvailable } from '../node/harness/index.js';
import { ip } from '../node/harness/net.js';
import { eventually } from './helpers/node.js';
import { runsWhen } from './helpers/requires.js';
import type { RecordView } from '../actors/cdb/index.js';
import type { Message } from '../runtime/messages.js';
import { AcpError } from '../runtime/errors.js';

const available = harnessAvailable();
const missing = !available.ok && available.why;
const skipped = missing ? ` (skipped: ${missing})` : '';

interface Link {
  ifname: string;
  ifindex: number;
  flags: string[];
  ifalias?: string;
  master?: string;
  linkinfo?: { info_kind?: string };
}

async function links(ns: string): Promise<Link[]> {
  return JSON.parse(await ip(['-n', ns, '-j', '-d', 'link', 'show'])) as Link[];
}

async function linkNamed(ns: string, name: string): Promise<Link | undefined> {
  return (await links(ns)).find((link) => link.ifname === name);
}

runsWhen(missing)(`acp network create makes a bridge that ip -j link shows; drift is repaired within 5 s; a restart does not flap it; an administrator's bridge is left alone; vpp-vlan without VPP is refused; rm removes it${skipped}`, async (t) => {
  t.timeout(180_000);
  const h = await Harness.start({ nodes: ['n1'] });
  t.teardown(() => h.teardown());
  const { ns } = h.node('n1');
  const meta = async (id: string) => (await (await h.client('n1')).ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key: `meta/network/${id}@n1` })).record.value as { state: string; reason?: string; interfaces: string[] };

  const created = await h.cli('n1', ['network', 'create', 'lan', '--type', 'bridge']);
  t.is(created.code, 0, created.stderr);
  t.regex(created.stdout, /network lan created/);
  const bridge = await eventually(async () => {
    const link = await linkNamed(ns, 'lan');
    return link?.flags.includes('UP') ? link : undefined;
  }, 10_000, 'the bridge lan, up');
  t.is(bridge.linkinfo?.info_kind, 'bridge');
  t.is(bridge.ifalias, 'acp:lab/n1/lan');
  t.like(await eventually(() => meta('lan'), 10_000, 'meta/network/lan@n1'), { state: 'up', interfaces: ['lan'] });
  const listed = await h.cli('n1', ['network', 'ls']);
  t.regex(listed.stdout, /lan\s+bridge\s+-\s+n1\s+up\s+lan/);

  // Deleted by hand: back within 5 s. Set down by hand: up again.
  await ip(['-n', ns, 'link', 'del', 'lan']);
  const deletedAt = Date.now();
  await eventually(async () => ((await linkNamed(ns, 'lan'))?.flags.includes('UP') ? true : undefined), 5000, 'lan to come back');
  t.log(`a bridge deleted by hand was back after ${Date.now() - deletedAt} ms`);
  await ip(['-n', ns, 'link', 'set', 'lan', 'down']);
  await eventually(async () => ((await linkNamed(ns, 'lan'))?.flags.includes('UP') ? true : undefined), 5000, 'lan to be up again');

  // A daemon restart leaves what exists alone: the same interface, never deleted and made again.
  const before = (await linkNamed(ns, 'lan'))!.ifindex;
  await h.kill('n1');
  await h.restart('n1');
  const after = await h.client('n1');
  await eventually(async () => ((await after.ask<Message & { networks: Record<string, unknown> }>('network', { type: 'network.status' })).networks['lan'] ? true : undefined), 15_000, 'the restarted service to report lan');
  t.is((await linkNamed(ns, 'lan'))?.ifindex, before, 'the bridge was not recreated');

  // A bridge the administrator made under a network's name is never touched; the network says why.
  await ip(['-n', ns, 'link', 'add', 'adm', 'type', 'bridge']);
  t.is((await h.cli('n1', ['network', 'create', 'adm', '--type', 'bridge'])).code, 0);
  const degraded = await eventually(async () => {
    const value = await meta('adm').catch(() => undefined);
    return value?.state === 'degraded' ? value : undefined;
  }, 10_000, 'adm to be degraded');
  t.regex(degraded.reason!, /adm exists and is not this network's \(ACP did not make it\)/);
  t.like(await linkNamed(ns, 'adm'), { ifname: 'adm' });
  t.is((await linkNamed(ns, 'adm'))?.ifalias, undefined);
  t.is((await h.cli('n1', ['network', 'rm', 'adm'])).code, 0);

  // vpp-vlan where no VPP runs: refused, and nothing is written.
  const vpp = await t.throwsAsync(after.ask('network', { type: 'network.create', spec: { name: 'fast', type: 'vpp-vlan', vlan: 10 } }), { instanceOf: AcpError });
  t.is(vpp?.code, 'ACP_ERR_NETWORK_VPP_UNAVAILABLE');
  t.regex(vpp!.message, /vppctl is not installed|no VPP is running|cannot reach a running VPP/);
  const cli = await h.cli('n1', ['network', 'create', 'fast', '--type', 'vpp-vlan', '--vlan', '10']);
  t.not(cli.code, 0);
  t.regex(cli.stderr + cli.stdout, /ACP_ERR_NETWORK_VPP_UNAVAILABLE|vpp/i);
  await t.throwsAsync(after.ask('cdb', { type: 'cdb.get', key: 'object/network/fast' }), { message: /fast/ });

  // A running guest's NIC holds its network even after the NIC left the system object (that takes effect at its next start).
  await after.ask('cdb', { type: 'cdb.put', key: 'object/system/s1', value: { name: 's1', driver: 'sim', nics: [{ network: 'lan' }] } });
  await after.ask('hypervisor', { type: 'system.start', id: 's1' }, { timeoutMs: 30_000 });
  await after.ask('cdb', { type: 'cdb.put', key: 'object/system/s1', value: { name: 's1', driver: 'sim' } });
  const held = await h.cli('n1', ['network', 'rm', 'lan']);
  t.not(held.code, 0);
  t.regex(held.stderr, /running guest of s1 \(running on n1\)/);
  await after.ask('hypervisor', { type: 'system.stop', id: 's1' }, { timeoutMs: 30_000 });
  await after.ask('cdb', { type: 'cdb.delete', key: 'object/system/s1' });

  // Removed: the bridge goes, the administrator's stays.
  const removed = await h.cli('n1', ['network', 'rm', 'lan']);
  t.is(removed.code, 0, removed.stderr);
  await eventually(async () => ((await linkNamed(ns, 'lan')) === undefined ? true : undefined), 10_000, 'lan to be removed');
  t.truthy(await linkNamed(ns, 'adm'));
});
