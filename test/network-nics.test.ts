/**
 * Systems' NICs as taps on their network's bridge, on a daemon inside a network namespace: made
 * before the guest starts, removed after it stops, refused on a network the node does not carry.
 */
import { readFileSync } from 'node:fs';
import { guestImage } from '../adapters/guest-image.js';
import { Harness, harnessAvailable } from '../node/harness/index.js';
import { homePaths } from '../runtime/config.js';
import { ip } from '../node/harness/net.js';
import { eventually } from './helpers/node.js';
import { guestMissing, runsWhen } from './helpers/requires.js';
import type { Message } from '../runtime/messages.js';

const available = harnessAvailable();
const missing = !available.ok && available.why;
const image = guestImage();
const qemuMissing = missing || guestMissing();

interface Link {
  ifname: string;
  flags: string[];
  ifalias?: string;
  master?: string;
  linkinfo?: { info_kind?: string };
}

async function linkNamed(ns: string, name: string): Promise<Link | undefined> {
  return (JSON.parse(await ip(['-n', ns, '-j', '-d', 'link', 'show'])) as Link[]).find((link) => link.ifname === name);
}

async function cli(h: Harness, args: string[]): Promise<string> {
  const result = await h.cli('n1', args, 120_000);
  if (result.code !== 0) throw new Error(`acp ${args.join(' ')} exited ${result.code}: ${result.stderr.trim()} ${result.stdout.trim()}`);
  return result.stdout;
}

runsWhen(missing)(`a system's --nic is a tap on the bridge while it runs, with a MAC generated once and stored; gone after the stop; a network the node does not carry refuses the start naming both; rm is refused while a system uses the network${missing ? ` (skipped: ${missing})` : ''}`, async (t) => {
  t.timeout(180_000);
  const h = await Harness.start({ nodes: ['n1'] });
  t.teardown(() => h.teardown());
  const { ns } = h.node('n1');
  await cli(h, ['network', 'create', 'lan', '--type', 'bridge']);
  await cli(h, ['network', 'create', 'elsewhere', '--type', 'bridge', '--nodes', 'n9']);
  await eventually(async () => ((await linkNamed(ns, 'lan'))?.flags.includes('UP') ? true : undefined), 10_000, 'the bridge lan');

  await cli(h, ['system', 'create', 'web', '--driver', 'sim', '--nic', 'lan']);
  await cli(h, ['system', 'start', 'web']);
  const tap = await linkNamed(ns, 'web-0');
  t.like(tap, { ifname: 'web-0', master: 'lan', ifalias: 'acp:lab/n1/lan/web', linkinfo: { info_kind: 'tun' } });
  t.true(tap?.flags.includes('UP'));
  const stored = JSON.parse(await cli(h, ['--json', 'system', 'show', 'web'])) as { spec: { nics: { mac?: string }[] } };
  t.regex(stored.spec.nics[0]?.mac ?? '', /^02(:[0-9a-f]{2}){5}$/, 'a locally administered MAC, stored');

  // Statistics every second: the network's bridge, and the system's NIC in its own stats.
  const api = await h.client('n1');
  const statsOf = async (key: string) => (await api.ask<Message & { record: { value: Record<string, unknown> } }>('cdb', { type: 'cdb.get', key })).record.value;
  const lanStats = await eventually(async () => {
    const value = await statsOf('stats/network/lan@n1');
    return typeof value['rxBytesPerSec'] === 'number' ? value : undefined;
  }, 10_000, 'stats/network/lan@n1 with rates');
  t.like(lanStats, { uplink: null });
  for (const field of ['rxBytes', 'txBytes', 'rxPackets', 'txPackets', 'rxErrors', 'txErrors', 'rxDrops', 'txDrops']) t.is(typeof lanStats[field], 'number', field);
  const nics = await eventually(async () => {
    const value = (await statsOf('stats/system/web@n1'))['nics'] as { ifname: string; network: string; txBytes: number }[] | undefined;
    return value && value.length > 0 ? value : undefined;
  }, 10_000, 'the NIC in stats/system/web@n1');
  t.like(nics[0], { index: 0, ifname: 'web-0', network: 'lan' });
  t.is(typeof nics[0]?.txBytes, 'number');

  const refused = await h.cli('n1', ['network', 'rm', 'lan']);
  t.not(refused.code, 0);
  t.regex(refused.stderr, /network 'lan' is used by system web/);

  await cli(h, ['system', 'stop', 'web']);
  t.is(await linkNamed(ns, 'web-0'), undefined, 'the tap is gone once the system stopped');

  await cli(h, ['system', 'create', 'far', '--driver', 'sim', '--nic', 'elsewhere']);
  const notCarried = await h.cli('n1', ['system', 'start', 'far']);
  t.not(notCarried.code, 0);
  t.regex(notCarried.stderr, /system 'far' NIC 0 is on network 'elsewhere', which node 'n1' does not carry/);

  // A rate limit is refused, not ignored: the start fails naming the field, and no tap is made.
  await cli(h, ['cdb', 'put', 'object/system/slow', JSON.stringify({ name: 'slow', driver: 'sim', nics: [{ network: 'lan', rateMbps: 100 }] })]);
  const limited = await h.cli('n1', ['system', 'start', 'slow']);
  t.not(limited.code, 0);
  t.regex(limited.stderr, /ACP_ERR_NETWORK_UNSUPPORTED|system 'slow' NIC 0 asks for rateMbps 100/);
  t.regex(limited.stderr, /rateMbps 100/);
  t.is(await linkNamed(ns, 'slow-0'), undefined);

  // acp system nic rm / add: the NIC moves to lan, and the next start has its tap there.
  t.regex(await cli(h, ['system', 'nic', 'rm', 'far', 'elsewhere']), /far: no NICs/);
  t.regex(await cli(h, ['system', 'nic', 'add', 'far', 'lan,model=e1000']), /far: 0: lan \(e1000\)/);
  const badNic = await h.cli('n1', ['system', 'nic', 'add', 'far', 'lan,model=rtl8139']);
  t.not(badNic.code, 0);
  t.regex(badNic.stderr, /bad NIC: field 'nics.1.model'/);
  // Refused when added, not at the next start: a network that does not exist, a VLAN tag (not realized yet), a multicast MAC.
  for (const [nic, pattern] of [['nosuch', /no network 'nosuch'/], ['lan,vlan=10', /vlan is not realized on any node yet/], ['lan,mac=01:00:5e:00:00:01', /multicast address/]] as const) {
    const result = await h.cli('n1', ['system', 'nic', 'add', 'far', nic]);
    t.not(result.code, 0, nic);
    t.regex(result.stderr, pattern, nic);
  }
  // Two NICs on one network: removing by the network's name asks which.
  await cli(h, ['system', 'nic', 'add', 'far', 'lan']);
  const ambiguous = await h.cli('n1', ['system', 'nic', 'rm', 'far', 'lan']);
  t.not(ambiguous.code, 0);
  t.regex(ambiguous.stderr, /has 2 NICs on lan \(0, 1\); give the index/);
  await cli(h, ['system', 'nic', 'rm', 'far', '1']);
  await cli(h, ['system', 'start', 'far']);
  t.like(await linkNamed(ns, 'far-0'), { master: 'lan' });
  await cli(h, ['system', 'stop', 'far']);
});

runsWhen(missing)(`after a daemon restart the taps it made are kept for the hypervisor to claim, never removed first: one whose guest was not adopted goes once the recovery says so; one of a system no longer defined goes at once${missing ? ` (skipped: ${missing})` : ''}`, async (t) => {
  t.timeout(180_000);
  const h = await Harness.start({ nodes: ['n1'] });
  t.teardown(() => h.teardown());
  const { ns, home } = h.node('n1');
  await cli(h, ['network', 'create', 'lan', '--type', 'bridge']);
  await cli(h, ['system', 'create', 'kept', '--driver', 'sim', '--nic', 'lan', '--restart', 'never']);
  await cli(h, ['system', 'start', 'kept']);
  t.like(await linkNamed(ns, 'kept-0'), { master: 'lan', ifalias: 'acp:lab/n1/lan/kept' });
  // kill -9: the tap stays behind, and a sim guest does not outlive its daemon. A tap of ours for a system nobody defines, too.
  await h.kill('n1');
  await ip(['-n', ns, 'tuntap', 'add', 'dev', 'ghost-0', 'mode', 'tap']);
  await ip(['-n', ns, 'link', 'set', 'ghost-0', 'alias', 'acp:lab/n1/lan/ghost']);
  const logFile = homePaths(home).logFile;
  const logged = readFileSync(logFile, 'utf8').length;
  await h.restart('n1');
  const logLines = () => readFileSync(logFile, 'utf8').slice(logged).split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as { msg: string; systems?: string[] });
  let lines = logLines();
  const at = (pattern: RegExp) => lines.findIndex((line) => pattern.test(line.msg));
  // Until both removals are logged (a line is written once its `ip` has returned, after the link is gone).
  await eventually(() => {
    lines = logLines();
    return at(/^removed kept-0: nothing wants it/) >= 0 && at(/^removed ghost-0: nothing wants it/) >= 0 ? true : undefined;
  }, 60_000, 'both taps removed');
  t.is(await linkNamed(ns, 'kept-0'), undefined);
  t.is(await linkNamed(ns, 'ghost-0'), undefined);
  const keptAt = lines.findIndex((line) => line.msg.startsWith('taps found from before the restart are kept') && line.systems?.includes('kept'));
  t.true(keptAt >= 0, 'the restarted Network service kept kept-0 for the hypervisor');
  t.false(lines[keptAt]!.systems!.includes('ghost'), 'not ghost-0: no system ghost is defined');
  const released = at(/^the taps of system 'kept' kept since the restart are removed: the hypervisor's recovery adopted no guest of it here$/);
  t.true(released > keptAt, "released once the hypervisor's recovery said it adopted no guest of kept");
  t.true(at(/^removed kept-0: nothing wants it/) > released, 'kept-0 was removed only after that');
  t.true(at(/^removed ghost-0: nothing wants it/) >= 0, 'ghost-0 removed by the first pass');
});

runsWhen(qemuMissing)(`a QEMU guest with --nic lan runs with its tap on the bridge, opened by QEMU${qemuMissing ? ` (skipped: ${qemuMissing})` : ''}`, async (t) => {
  t.timeout(240_000);
  const h = await Harness.start({ nodes: ['n1'] });
  t.teardown(() => h.teardown());
  const { ns } = h.node('n1');
  await cli(h, ['network', 'create', 'lan', '--type', 'bridge']);
  await eventually(async () => ((await linkNamed(ns, 'lan'))?.flags.includes('UP') ? true : undefined), 10_000, 'the bridge lan');
  await cli(h, ['system', 'create', 'g1', '--driver', 'qemu', '--memory', '256', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', image!.cmdline, '--nic', 'lan,mac=02:00:00:00:00:01']);
  const started = JSON.parse(await cli(h, ['--json', 'system', 'start', 'g1'])) as { pid: number };
  const args = readFileSync(`/proc/${started.pid}/cmdline`, 'utf8').split('\0');
  t.true(args.includes('tap,id=net0,ifname=g1-0,script=no,downscript=no'), args.join(' '));
  t.true(args.includes('virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01'));
  // QEMU holds the tap open: its carrier comes up, in the bridge.
  const tap = await eventually(async () => {
    const link = await linkNamed(ns, 'g1-0');
    return link && !link.flags.includes('NO-CARRIER') ? link : undefined;
  }, 20_000, 'the tap with carrier');
  t.is(tap.master, 'lan');
  await cli(h, ['system', 'stop', 'g1', '--force']);
  t.is(await linkNamed(ns, 'g1-0'), undefined);
});
