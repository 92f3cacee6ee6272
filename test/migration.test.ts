/**
 * Migration between two real nodes in network namespaces: a real QEMU guest moved live (its own
 * uptime, printed on its console, goes on), a simulated one by state transfer, and a refusal for
 * a disk off a shared pool.
 */
import { execFileSync } from 'node:child_process';
import test from 'ava';
import type { SystemMeta } from '../actors/hypervisor/index.js';
import { QEMU_BINARY } from '../adapters/drivers/qemu.js';
import { guestImage, GUEST_UPTIME_PREFIX } from '../adapters/guest-image.js';
import type { Message } from '../runtime/messages.js';
import { Harness, harnessAvailable } from './harness/index.js';
import { eventually } from './helpers/node.js';

const available = harnessAvailable();
const image = guestImage();
let missing: string | undefined = available.ok ? undefined : available.why;
if (!missing) {
  try {
    execFileSync(QEMU_BINARY, ['--version'], { stdio: 'ignore' });
  } catch {
    missing = `${QEMU_BINARY} is not installed (apt-get install qemu-system-x86)`;
  }
}
missing ??= image ? undefined : 'the test guest is not built (npm run guest-image)';

const uptimes = (text: string): number[] =>
  text
    .split('\n')
    .filter((line) => line.startsWith(GUEST_UPTIME_PREFIX))
    .map((line) => Number(line.slice(GUEST_UPTIME_PREFIX.length + 1)));

(missing ? test.skip : test)(`a running QEMU guest migrates live between two nodes and its uptime goes on; a sim system moves by state transfer${missing ? ` (skipped: ${missing})` : ''}`, async (t) => {
  t.timeout(240_000);
  const h = await Harness.start({ nodes: ['n1', 'n2'] });
  t.teardown(() => h.teardown());
  await h.waitSynced(60_000);
  const cli = async (node: string, args: string[]) => {
    const result = await h.cli(node, args, 120_000);
    if (result.code !== 0) throw new Error(`acp ${args.join(' ')} on ${node} exited ${result.code}: ${result.stderr.trim()}`);
    return result.stdout;
  };
  await cli('n1', ['system', 'create', 'g1', '--driver', 'qemu', '--memory', '256', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', image!.cmdline]);
  await cli('n1', ['system', 'create', 's1', '--driver', 'sim']);
  await cli('n1', ['system', 'start', 'g1']);
  await cli('n1', ['system', 'start', 's1']);
  // Up for a few seconds on n1 before it moves.
  const before = await eventually(async () => {
    const seen = uptimes(await cli('n1', ['system', 'console', 'g1']));
    return seen.length > 0 && seen.at(-1)! >= 3 ? seen.at(-1)! : undefined;
  }, 90_000, 'the guest to be up 3 s on n1');

  const moved = JSON.parse(await cli('n1', ['--json', 'system', 'migrate', 'g1', '--to', 'n2'])) as SystemMeta & { from: string; to: string; ms: number };
  t.like(moved, { from: 'n1', to: 'n2', state: 'running', node: 'n2' });
  t.log(`live migration took ${moved.ms} ms`);
  // The console now comes from n2: the guest's own clock went on from where it was.
  const after = await eventually(async () => {
    const seen = uptimes(await cli('n1', ['system', 'console', 'g1']));
    return seen.length >= 2 ? seen : undefined;
  }, 30_000, 'uptime lines from the guest on n2');
  t.true(after[0]! >= before, `the first uptime on n2 (${after[0]}) is not below the last on n1 (${before}): the same guest, not a new boot`);
  t.true(after.at(-1)! > after[0]!, 'and it keeps counting');

  const n1 = await h.client('n1');
  const placed = await n1.ask<Message & { record: { value: { node?: string } } }>('cdb', { type: 'cdb.get', key: 'object/system/g1' });
  t.is(placed.record.value.node, 'n2', 'ownership switched in the CDB');
  const sourceState = await n1.ask<Message & { record: { value: SystemMeta } }>('cdb', { type: 'cdb.get', key: 'meta/system/g1@n1' });
  t.like(sourceState.record.value, { state: 'stopped', reason: 'migrated to n2' });

  // Asked on n2: the command finds where s1 runs (n1) and asks that node's hypervisor.
  const sim = JSON.parse(await cli('n2', ['--json', 'system', 'migrate', 's1', '--to', 'n2'])) as SystemMeta & { to: string };
  t.like(sim, { to: 'n2', state: 'running' });
  const listed = JSON.parse(await cli('n2', ['--json', 'system', 'ls'])) as { id: string; state: string; node: string }[];
  t.deepEqual(
    listed.map((row) => [row.id, row.state, row.node]),
    [
      ['g1', 'running', 'n2'],
      ['s1', 'running', 'n2'],
    ],
  );

  // A disk on a pool not marked shared: refused before anything moves.
  await n1.ask('cdb', { type: 'cdb.put', key: 'object/storage/pool/local', value: { name: 'local', type: 'dir', path: '/var/lib/acp', shared: false } });
  await cli('n2', ['system', 'create', 's2', '--driver', 'sim', '--spec', JSON.stringify({ disks: [{ pool: 'local', volume: 'v1' }] })]);
  await cli('n2', ['system', 'start', 's2']);
  const refused = await h.cli('n2', ['system', 'migrate', 's2', '--to', 'n1']);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /ACP_ERR_SYSTEM_NOT_MIGRATABLE/);
  t.is(JSON.parse(await cli('n2', ['--json', 'system', 'ls'])).find((row: { id: string }) => row.id === 's2').state, 'running');

  await cli('n2', ['system', 'stop', 'g1', '--force']);
});
