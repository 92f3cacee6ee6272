/**
 * The drain of a node's HA systems on a clean shutdown (actors/ha/drain.ts), the host shutdown it
 * reads from systemd (adapters/host-shutdown.ts), and the CLI that sets the policy. The drain by a
 * real `acp down` in namespaces is test/ha-shutdown.solo.test.ts.
 */
import test from 'ava';
import { drainOutcome, drainPolicyOf, DRAIN_MS, reported, startDrain } from '../actors/ha/drain.js';
import { hostShutdownOf } from '../adapters/host-shutdown.js';
import { allRunning, eventually, makeHome, runCli, startDaemon } from './helpers/node.js';

test('conditional is freeze on a reboot, failover on a power-off, nothing when only acpd stops; the others are what they say', (t) => {
  t.is(drainPolicyOf('conditional', 'reboot'), 'freeze');
  t.is(drainPolicyOf('conditional', 'poweroff'), 'failover');
  t.is(drainPolicyOf('conditional', null), null);
  for (const policy of ['migrate', 'freeze', 'failover'] as const) t.is(drainPolicyOf(policy, null), policy);
});

test('systemd’s queued jobs say whether the host reboots or powers off', (t) => {
  t.is(hostShutdownOf(''), null);
  t.is(hostShutdownOf('  12 reboot.target start waiting\n  13 systemd-reboot.service start waiting\n'), 'reboot');
  t.is(hostShutdownOf('7 kexec.target start waiting'), 'reboot');
  t.is(hostShutdownOf('  9 poweroff.target start waiting\n'), 'poweroff');
  t.is(hostShutdownOf('  9 halt.target start waiting\n'), 'poweroff');
  t.is(hostShutdownOf('  4 apt-daily.service start running\n'), null);
});

test('a drain ends once no HA guest is left and two reports told the primary; not before', (t) => {
  const drain = startDrain('failover', 'failover', 1000, ['web', 'db']);
  t.is(drainOutcome(drain, ['web'], 2000, true), null);
  reported(drain, ['web']);
  reported(drain, []);
  t.is(drainOutcome(drain, [], 2200, true), null, 'one report since the last guest left is not enough');
  reported(drain, []);
  t.like(drainOutcome(drain, [], 2400, true), { type: 'ha.drained', policy: 'failover', had: ['web', 'db'], left: [], ms: 1400, why: 'every HA system stopped (failover)' });
});

test('a drain that runs out of time names what is left; a migrate drain with no other node ends at once', (t) => {
  const slow = startDrain('migrate', 'migrate', 0, ['web']);
  t.is(drainOutcome(slow, ['web'], DRAIN_MS.migrate - 1, true), null);
  t.like(drainOutcome(slow, ['web'], DRAIN_MS.migrate, true), { left: ['web'], why: 'not done within 120 s' });
  const alone = startDrain('migrate', 'migrate', 0, ['web']);
  t.regex(drainOutcome(alone, ['web'], 10, false)?.why ?? '', /no other node is there to take them/);
});

test('acp node set --shutdown-policy: stored in the node object, shown by its meaning; a wrong policy is a usage error', async (t) => {
  t.timeout(60_000);
  const home = makeHome(t);
  const status = await allRunning(await startDaemon(t, home));
  const node = status.node;
  const bad = await runCli(['node', 'set', node, '--shutdown-policy', 'reboot'], home);
  t.is(bad.code, 2, bad.stderr);
  t.regex(bad.stderr, /--shutdown-policy is one of conditional, migrate, freeze, failover, not 'reboot'/);
  const none = await runCli(['node', 'set', node], home);
  t.regex(none.stderr, /say what to set/);
  // The node object is written moments after the services run.
  const set = await eventually(async () => {
    const result = await runCli(['node', 'set', node, '--shutdown-policy', 'migrate'], home);
    return result.code === 0 ? result : undefined;
  }, 20_000, 'acp node set to find the node object');
  t.regex(set.stdout, /shutdown policy migrate: HA systems are migrated to other nodes before it goes/);
  const read = await runCli(['--json', 'cdb', 'get', `object/node/${node}`], home);
  t.is((JSON.parse(read.stdout) as { value: { shutdownPolicy?: string } }).value.shutdownPolicy, 'migrate');
  // A single node with no HA system: acp down drains nothing and stops at once.
  const down = await runCli(['down'], home);
  t.is(down.code, 0, down.stderr);
});
