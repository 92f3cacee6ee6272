/**
 * The HA service in acpd (actors/ha/index.ts) and its CLI: what it reads (inputs.ts), the flags of
 * `acp system create --ha`, and one real daemon whose HA manager starts, restarts and stops an HA
 * system on its own. The failover between nodes is test/ha-failover.solo.test.ts.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import type { HaView } from '../actors/ha/view.js';
import { guardedPids, guestsOf, haSpecOf, nodeSpecs, type HypervisorView } from '../actors/ha/inputs.js';
import { systemObjectSchema } from '../actors/model.js';
import { parsePrefer, systemSpec } from '../cli/system-spec.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { allRunning, client, eventually, makeHome, runCli, startDaemon } from './helpers/node.js';

const view = (id: string, state: string, extra: Partial<HypervisorView> = {}): [string, HypervisorView] => [id, { id, ha: true, state, pid: null, driver: 'sim', ...extra }];

test('the local manager sees HA guests conservatively: stopping counts as running, an arriving copy is not here yet, a pending start is starting', (t) => {
  const views = new Map([view('a', 'running'), view('b', 'stopping'), view('c', 'migrating', { arriving: true }), view('d', 'migrating'), view('e', 'stopped'), view('f', 'starting'), view('plain', 'running', { ha: false })]);
  t.deepEqual(guestsOf(views, new Map([['g', 'start' as const]])), { a: 'running', b: 'running', d: 'migrating', f: 'starting', g: 'starting' });
});

test('the fence guard is fed the pids of live HA QEMU guests only', (t) => {
  const views = new Map([view('q', 'running', { driver: 'qemu', pid: 101 }), view('s', 'running'), view('gone', 'stopped', { driver: 'qemu', pid: 102 }), view('plain', 'running', { ha: false, driver: 'qemu', pid: 103 })]);
  t.deepEqual(guardedPids(views), [101]);
});

test('placement candidates: nodes that published their capacity, never a witness; maintenance is carried', (t) => {
  const capacity = new Map([['n2', { memoryMiB: 4096, vcpus: 4 }], ['n1', { memoryMiB: 8192, vcpus: 8 }], ['w', { memoryMiB: 1024, vcpus: 1 }]]);
  const objects = new Map([['w', { witness: true }], ['n2', { maintenance: true }]]);
  t.deepEqual(nodeSpecs(capacity, objects), [
    { name: 'n1', memoryMiB: 8192, vcpus: 8, maintenance: false },
    { name: 'n2', memoryMiB: 4096, vcpus: 4, maintenance: true },
  ]);
});

test('an HA system object becomes the HA manager’s spec; haState absent means started', (t) => {
  const spec = systemObjectSchema.parse({ name: 'web', ha: true, memoryMiB: 256, vcpus: 2, node: 'n2', prefer: { n1: 2 }, strict: true, maxRestart: 3 });
  t.like(haSpecOf('web', spec), { id: 'web', memoryMiB: 256, vcpus: 2, want: 'started', node: 'n2', prefer: { n1: 2 }, strict: true, maxRestart: 3 });
  t.is(haSpecOf('web', { ...spec, haState: 'stopped' }).want, 'stopped');
});

test('acp system create --ha: --prefer parses NODE[:PRIORITY]; HA-only flags need --ha; --strict needs --prefer', (t) => {
  t.deepEqual(parsePrefer('n1:2,n2:1,n3'), { n1: 2, n2: 1, n3: 1 });
  for (const bad of ['n1:x', 'N1:2', 'n1:2,n1:3', 'n1:5000', '']) t.throws(() => parsePrefer(bad), { instanceOf: AcpError, message: /--prefer/ }, bad);
  t.like(systemSpec('web', { ha: true, prefer: 'n1:2,n2:1', strict: true, 'max-restart': 2, 'max-relocate': 0, 'anti-affinity': 'db,cache' }), { ha: true, prefer: { n1: 2, n2: 1 }, strict: true, maxRestart: 2, maxRelocate: 0, antiAffinity: ['db', 'cache'] });
  t.throws(() => systemSpec('web', { prefer: 'n1' }), { message: /prefer is for HA systems: add --ha/ });
  t.throws(() => systemSpec('web', { 'max-restart': 2, 'max-relocate': 1 }), { message: /maxRestart, maxRelocate are for HA systems/ });
  t.throws(() => systemSpec('web', { ha: true, strict: true }), { message: /--strict .* --prefer/ });
  t.throws(() => systemSpec('web', { ha: true, 'max-restart': -1 }), { message: /maxRestart/ });
});

test('one daemon: the HA manager starts an HA system, restarts it when it stops by itself, stops it on acp system stop; a hand start is refused', async (t) => {
  t.timeout(90_000);
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  const created = await runCli(['system', 'create', 'web', '--driver', 'sim', '--ha', '--max-restart', '2'], home);
  t.is(created.code, 0, created.stderr);
  t.regex(created.stdout, /the HA manager starts it/);
  const api = await client(t, home);
  const state = async () => (await api.ask<Message & { systems: { id: string; state: string }[] }>('hypervisor', { type: 'system.status' })).systems.find((system) => system.id === 'web')?.state;
  await eventually(async () => ((await state()) === 'running' ? true : undefined), 15_000, 'the HA manager to start web');

  const refused = await api.ask('hypervisor', { type: 'system.start', id: 'web' }).catch((error: unknown) => error);
  t.is((refused as AcpError).code, 'ACP_ERR_SYSTEM_HA_MANAGED');
  const forged = await api.ask('hypervisor', { type: 'system.ha-start', id: 'web', term: 99 }).catch((error: unknown) => error);
  t.is((forged as AcpError).code, 'ACP_ERR_AUTH_FORBIDDEN');

  // Stopped behind the HA manager's back (as a crash would): its local manager starts it again.
  await api.ask('hypervisor', { type: 'system.stop', id: 'web', force: true });
  await eventually(async () => ((await state()) === 'running' ? true : undefined), 15_000, 'the local manager to restart web');

  const status = await runCli(['--json', 'ha', 'status'], home);
  t.is(status.code, 0, status.stderr);
  const parsed = JSON.parse(status.stdout) as { term: number; systems: { id: string; state: string; node: string }[]; nodes: { name: string; state: string }[] };
  t.like(parsed.systems[0], { id: 'web', state: 'started' });
  t.is(parsed.nodes[0]?.state, 'online');
  const table = await runCli(['ha', 'status'], home);
  t.regex(table.stdout, /web\s+started\s+\S+/);

  // Maintenance: a field of the node object; bad input is a usage error; one node has nowhere to move web to, so it stays.
  const bad = await runCli(['node', 'maintenance', 'maybe', 'n1'], home);
  t.is(bad.code, 2, bad.stderr);
  t.regex(bad.stderr, /on or off.*ACP_ERR_CLI_USAGE/s);
  const nobody = await runCli(['node', 'maintenance', 'on', 'nosuch'], home);
  t.regex(nobody.stderr, /no node 'nosuch'.*ACP_ERR_CDB_NOT_FOUND/s);
  const on = await runCli(['--json', 'node', 'maintenance', 'on', 'n1'], home);
  t.is(on.code, 0, on.stderr);
  t.like(JSON.parse(on.stdout), { node: 'n1', maintenance: true });
  const node = await api.ask<Message & { record: { value: { maintenance?: boolean; name: string } } }>('cdb', { type: 'cdb.get', key: 'object/node/n1' });
  t.like(node.record.value, { name: 'n1', maintenance: true });
  await eventually(async () => ((await api.ask<HaView>('ha', { type: 'ha.show' })).manager?.nodes.find((entry) => entry.name === 'n1')?.state === 'maintenance' ? true : undefined), 10_000, 'n1 in maintenance for the HA manager');
  t.is(await state(), 'running');
  t.is((await runCli(['node', 'maintenance', 'off', 'n1'], home)).code, 0);

  const stopped = await runCli(['system', 'stop', 'web'], home);
  t.is(stopped.code, 0, stopped.stderr);
  t.regex(stopped.stdout, /haState stopped/);
  await eventually(async () => ((await state()) === 'stopped' ? true : undefined), 15_000, 'the HA manager to stop web');
  // The manager confirms the stop from the node's next report.
  const view = await eventually(async () => {
    const shown = await api.ask<HaView>('ha', { type: 'ha.show' });
    return shown.manager?.systems.find((system) => system.id === 'web')?.state === 'stopped' ? shown : undefined;
  }, 10_000, 'the HA manager to say web is stopped');
  t.true(view.local?.holding);
});

test('acp up --watchdog: a path that is not there, or not a device or FIFO, stops the start with what to do', async (t) => {
  const home = makeHome(t);
  const missing = await runCli(['up', '--detach', '--watchdog', '/nonexistent/watchdog'], home);
  t.is(missing.code, 2, missing.stderr);
  t.regex(missing.stderr, /no watchdog device at \/nonexistent\/watchdog: load the host's watchdog driver/);
  const plain = await runCli(['up', '--detach', '--watchdog', '/etc/hostname'], home);
  t.is(plain.code, 2, plain.stderr);
  t.regex(plain.stderr, /\/etc\/hostname is not a watchdog/);
  const relative = await runCli(['up', '--detach', '--watchdog', 'watchdog'], home);
  t.regex(relative.stderr, /absolute path/);
});

test('a daemon given a watchdog FIFO keeps it alive through its fence guard while it holds its HA lease', async (t) => {
  t.timeout(60_000);
  const home = makeHome(t);
  const fifo = join(home, 'watchdog.fifo');
  execFileSync('mkfifo', [fifo]);
  // The reader first: the guard opens it without blocking, and a FIFO with no reader cannot be opened for writing.
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  t.teardown(() => closeSync(reader));
  await allRunning(await startDaemon(t, home, { watchdog: fifo }));
  const bytes = Buffer.alloc(4096);
  const read = () => {
    try {
      return readSync(reader, bytes, 0, bytes.length, null);
    } catch {
      return 0;
    }
  };
  let received = 0;
  await eventually(() => ((received += read()) >= 3 ? true : undefined), 30_000, 'the fence guard to write to the watchdog');
  t.true(received >= 3);
  t.regex(readFileSync(join(home, 'log', 'fence-guard.log'), 'utf8'), /"event":"watchdog-open"/);
});
