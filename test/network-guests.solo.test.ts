/**
 * Guests on the network, for real: two nodes in namespaces, each with an uplink (eth1, a veth into
 * a switch bridge of its own), a bridge network (or, where the kernel makes 802.1Q links, a VLAN)
 * on those uplinks, and test guests that configure eth0 from `acp.ip=` and ping `acp.ping=` every
 * second, saying so on their console.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { homePaths } from '../runtime/config.js';
import type { ExecutionContext } from 'ava';
import { guestHasNetworking, guestImage, GUEST_PING_PREFIX } from '../adapters/guest-image.js';
import { tapName } from '../adapters/interface-names.js';
import { Harness, harnessAvailable } from '../node/harness/index.js';
import { ip } from '../node/harness/net.js';
import { eventually } from './helpers/node.js';
import { guestMissing, runsWhen, unlessKernelLacks } from './helpers/requires.js';
import type { RecordView } from '../actors/cdb/index.js';
import type { Message } from '../runtime/messages.js';

const available = harnessAvailable();
const image = guestImage();
let missing = available.ok ? guestMissing() : available.why;
missing ??= guestHasNetworking() ? undefined : 'the test guest has no networking yet (npm run guest-image builds it again)';

/** The last `ACP-GUEST-PING <address> ok|fail` results in a console log, oldest first. */
const pings = (text: string, address: string): string[] =>
  text
    .split('\n')
    .filter((line) => line.startsWith(`${GUEST_PING_PREFIX} ${address} `))
    .map((line) => line.slice(`${GUEST_PING_PREFIX} ${address} `.length).trim());

/** Whether the kernel makes 802.1Q links (tried in a probe namespace, then deleted); what is missing, if not. */
function vlanMissing(): string | undefined {
  const ns = `acph-${process.pid}-vlanprobe`;
  try {
    execFileSync('ip', ['netns', 'add', ns], { stdio: 'pipe' });
    execFileSync('ip', ['-n', ns, 'link', 'add', 'name', 'p0', 'type', 'veth', 'peer', 'name', 'p1'], { stdio: 'pipe' });
    execFileSync('ip', ['-n', ns, 'link', 'add', 'link', 'p0', 'name', 'p0.5', 'type', 'vlan', 'id', '5'], { stdio: 'pipe' });
    return undefined;
  } catch (error) {
    return `the kernel makes no 802.1Q VLAN links (modprobe 8021q): ${String((error as { stderr?: Buffer }).stderr ?? '').trim() || (error as Error).message}`;
  } finally {
    try {
      execFileSync('ip', ['netns', 'delete', ns], { stdio: 'pipe' });
    } catch {
      // never made
    }
  }
}
const kernelVlan = missing ? undefined : vlanMissing();
const missingVlan = missing ?? kernelVlan;

/**
 * The networks of a scenario: `main` on both nodes' uplinks, `other` where g3 lives: another
 * bridge (node-local), or another VLAN on the same uplinks.
 */
const SCENARIOS = {
  bridge: { main: ['lan', '--type', 'bridge', '--uplink', 'eth1'], other: ['iso', '--type', 'bridge', '--nodes', 'n1'] },
  vlan: { main: ['v100', '--type', 'vlan', '--vlan', '100', '--uplink', 'eth1'], other: ['v200', '--type', 'vlan', '--vlan', '200', '--uplink', 'eth1'] },
} as const;

runsWhen(missing)(`two guests on two nodes on one bridge network ping each other; a guest on another network does not reach them; after a live migration the guest still answers, and after its node's daemon restarts under it${missing ? ` (skipped: ${missing})` : ''}`, (t) => guests(t, 'bridge'));

(kernelVlan ? unlessKernelLacks(kernelVlan) : runsWhen(missing))(`two guests on two nodes on one VLAN ping each other across the nodes' uplinks; a guest on another VLAN does not; after a live migration the guest still answers, and after its node's daemon restarts under it${missingVlan ? ` (skipped: ${missingVlan})` : ''}`, (t) => guests(t, 'vlan'));

async function guests(t: ExecutionContext, kind: keyof typeof SCENARIOS): Promise<void> {
  const { main, other } = SCENARIOS[kind];
  t.timeout(400_000);
  const h = await Harness.start({ nodes: ['n1', 'n2'] });
  t.teardown(() => h.teardown());
  await h.waitSynced(60_000);
  const cli = async (node: string, args: string[]) => {
    const result = await h.cli(node, args, 120_000);
    if (result.code !== 0) throw new Error(`acp ${args.join(' ')} on ${node} exited ${result.code}: ${result.stderr.trim()}`);
    return result.stdout;
  };

  // Each node's uplink: eth1, a veth into the switch namespace's second bridge (the guests' wire).
  await ip(['-n', h.switchNs, 'link', 'add', 'br-guests', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
  await ip(['-n', h.switchNs, 'link', 'set', 'br-guests', 'up']);
  for (const [index, node] of h.nodes.entries()) {
    await ip(['-n', h.switchNs, 'link', 'add', `g${index}`, 'type', 'veth', 'peer', 'name', 'eth1', 'netns', node.ns]);
    await ip(['-n', h.switchNs, 'link', 'set', `g${index}`, 'master', 'br-guests']);
    await ip(['-n', h.switchNs, 'link', 'set', `g${index}`, 'up']);
    await ip(['-n', node.ns, 'link', 'set', 'eth1', 'up']);
  }

  await cli('n1', ['network', 'create', ...main]);
  await cli('n1', ['network', 'create', ...other]);
  const n1 = await h.client('n1');
  await eventually(async () => {
    const { records } = await n1.ask<Message & { records: RecordView[] }>('cdb', { type: 'cdb.list', prefix: `meta/network/${main[0]}@` });
    return records.length === 2 && records.every((record) => (record.value as { state: string }).state === 'up') ? true : undefined;
  }, 20_000, `${main[0]} up on both nodes`);

  const guest = async (id: string, node: string, network: string, address: string, target: string) =>
    cli('n1', ['system', 'create', id, '--driver', 'qemu', '--memory', '192', '--node', node, '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', `${image!.cmdline} acp.ip=${address}/24 acp.ping=${target}`, '--nic', network]);
  await guest('g1', 'n1', main[0], '10.9.0.2', '10.9.0.3');
  await guest('g2', 'n2', main[0], '10.9.0.3', '10.9.0.2');
  await guest('g3', 'n1', other[0], '10.9.0.4', '10.9.0.3');
  for (const id of ['g1', 'g2', 'g3']) await cli('n1', ['system', 'start', id]);

  const consoleOf = async (id: string) => cli('n1', ['system', 'console', id]);
  await eventually(async () => (pings(await consoleOf('g1'), '10.9.0.3').includes('ok') ? true : undefined), 120_000, 'g1 (n1) to reach g2 (n2)');
  await eventually(async () => (pings(await consoleOf('g2'), '10.9.0.2').includes('ok') ? true : undefined), 60_000, 'g2 (n2) to reach g1 (n1)');
  const isolated = await eventually(async () => {
    const seen = pings(await consoleOf('g3'), '10.9.0.3');
    return seen.length >= 5 ? seen : undefined;
  }, 60_000, 'five pings from g3');
  t.false(isolated.includes('ok'), `g3 on ${other[0]} must not reach g2 on ${main[0]}: ${isolated.join(',')}`);

  // Live migration: g1 moves to n2 (its tap is made there first) and g2 still reaches it.
  const before = pings(await consoleOf('g2'), '10.9.0.2').length;
  const moved = JSON.parse(await cli('n1', ['--json', 'system', 'migrate', 'g1', '--to', 'n2'])) as { node: string; state: string };
  t.like(moved, { node: 'n2', state: 'running' });
  const after = await eventually(async () => {
    const seen = pings(await consoleOf('g2'), '10.9.0.2').slice(before);
    return seen.slice(-3).length === 3 && seen.slice(-3).every((result) => result === 'ok') ? seen : undefined;
  }, 60_000, 'g2 to reach g1 on n2, three times in a row');
  t.log(`after the migration g2's pings to g1: ${after.join(',')}`);

  // n2's daemon restarts (acp down, acp up) under g1 and g2: the guests run on, the restarted
  // daemon adopts them, and their taps are the same interfaces (never removed and made again,
  // which would leave each QEMU holding a deleted tap), so they still reach each other.
  const n2 = h.nodes.find((candidate) => candidate.name === 'n2')!;
  const tapOf = async (system: string) => (JSON.parse(await ip(['-n', n2.ns, '-j', 'link', 'show', 'dev', tapName(system, 0)])) as { ifindex: number; flags: string[] }[])[0]!;
  const tapsBefore = [await tapOf('g1'), await tapOf('g2')];
  t.is((await h.down('n2')).code, 0, 'acp down on n2');
  const n2Log = homePaths(n2.home).logFile;
  const loggedBefore = readFileSync(n2Log, 'utf8').length;
  await h.restart('n2');
  // From n2's own log: n1 may still hold n2's meta from before the restart.
  await eventually(() => {
    const adopted = readFileSync(n2Log, 'utf8').slice(loggedBefore).split('\n').filter((line) => line.includes('"msg":"adopted a guest that outlived the daemon"'));
    return ['g1', 'g2'].every((id) => adopted.some((line) => line.includes(`"system":"${id}"`))) ? true : undefined;
  }, 90_000, "g1 and g2 adopted by n2's restarted daemon");
  const sinceRestart = pings(await consoleOf('g2'), '10.9.0.2').length;
  const resumed = await eventually(async () => {
    const seen = pings(await consoleOf('g2'), '10.9.0.2').slice(sinceRestart);
    return seen.length >= 3 && seen.slice(-3).every((result) => result === 'ok') ? seen : undefined;
  }, 60_000, "g2 to reach g1 after n2's daemon restarted, three times in a row");
  t.log(`after n2's daemon restarted, g2's pings to g1: ${resumed.join(',')}`);
  const tapsAfter = [await tapOf('g1'), await tapOf('g2')];
  t.deepEqual(tapsAfter.map((tap) => tap.ifindex), tapsBefore.map((tap) => tap.ifindex), 'the same taps: not removed and made again');
  for (const tap of tapsAfter) t.false(tap.flags.includes('NO-CARRIER'), `a tap with its QEMU attached has carrier: ${tap.flags.join(',')}`);
  await cli('n1', ['system', 'stop', 'g3', '--force']);
}
