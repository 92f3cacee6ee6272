import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { SystemMeta } from '../actors/hypervisor/index.js';
import { autostartOrder, honestState, recoveryPlan } from '../actors/hypervisor/recovery.js';
import { shutdownPolicyOf, systemObjectSchema, type SystemObject } from '../actors/model.js';
import type { Message } from '../runtime/messages.js';
import { systemMeta } from './helpers/system.js';
import { allRunning, client, eventually, makeHome, runCli, startDaemon } from './helpers/node.js';

const spec = (value: Record<string, unknown>): SystemObject => systemObjectSchema.parse({ name: 'x', ...value });

test('recovery: a live QEMU still wanted here is adopted; one nobody wants is an orphan; a live meta without its guest says why', (t) => {
  const objects = new Map<string, SystemObject>([
    ['keep', spec({ name: 'keep', driver: 'qemu', node: 'n1' })],
    ['moved', spec({ name: 'moved', driver: 'qemu', node: 'n2' })],
    ['unplaced', spec({ name: 'unplaced', driver: 'qemu' })],
    ['sim1', spec({ name: 'sim1', driver: 'sim' })],
    ['died', spec({ name: 'died', driver: 'qemu' })],
    ['halted', spec({ name: 'halted', driver: 'qemu' })],
  ]);
  const metas = new Map<string, { state: SystemMeta['state'] }>([
    ['keep', { state: 'running' }],
    ['sim1', { state: 'running' }],
    ['died', { state: 'paused' }],
    ['halted', { state: 'stopped' }],
    ['deleted', { state: 'running' }],
  ]);
  const plan = recoveryPlan({ node: 'n1', metas, objects, liveGuests: new Set(['keep', 'moved', 'unplaced', 'ghost']) });
  t.deepEqual(plan, [
    { id: 'ghost', action: 'orphan', why: 'its object object/system/ghost no longer exists' },
    { id: 'keep', action: 'adopt' },
    { id: 'moved', action: 'orphan', why: "system 'moved' is placed on node 'n2' now" },
    { id: 'unplaced', action: 'adopt' },
    { id: 'deleted', action: 'gone', state: 'stopped', reason: 'its object object/system/deleted was deleted while the daemon was down' },
    { id: 'died', action: 'gone', state: 'crashed', reason: 'its QEMU was gone when the daemon started again (it ended while the daemon was down)' },
    { id: 'sim1', action: 'gone', state: 'stopped', reason: 'the daemon stopped; a simulated guest does not outlive it' },
  ]);
});

test('autostart order: this node only, not HA, ascending start order (unset last), then id', (t) => {
  const objects = new Map<string, SystemObject>([
    ['c', spec({ autostart: true, node: 'n1' })],
    ['a', spec({ autostart: true, node: 'n1', startOrder: 2 })],
    ['b', spec({ autostart: true, node: 'n1', startOrder: 1 })],
    ['b0', spec({ autostart: true, node: 'n1', startOrder: 1 })],
    ['other', spec({ autostart: true, node: 'n2', startOrder: 0 })],
    ['ha', spec({ autostart: true, node: 'n1', ha: true, startOrder: 0 })],
    ['manual', spec({ node: 'n1' })],
  ]);
  t.deepEqual(autostartOrder(objects, 'n1').map((entry) => entry.id), ['b', 'b0', 'a', 'c']);
});

test('honest state: a live state on a down node is unknown, with the last state and since when, and no pid; anything else is as published', (t) => {
  const meta = { state: 'running' as const, since: '2026-11-30T10:00:00.000Z', pid: 1234, node: 'n2' };
  t.deepEqual(honestState(meta, true), { state: 'unknown', lastState: 'running', since: meta.since, pid: null, node: 'n2' });
  t.is(honestState(meta, false), meta);
  const stopped = { ...meta, state: 'stopped' as const, pid: null };
  t.is(honestState(stopped, true), stopped);
});

test('the node shutdown policy is conditional unless the node object says otherwise', (t) => {
  t.is(shutdownPolicyOf(undefined), 'conditional');
  t.is(shutdownPolicyOf({}), 'conditional');
  t.is(shutdownPolicyOf({ shutdownPolicy: 'failover' }), 'failover');
});

test('acp system create: --autostart needs --node and no --ha; --start-order and --start-delay need --autostart', async (t) => {
  t.timeout(60_000);
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  const noNode = await runCli(['system', 'create', 's1', '--driver', 'sim', '--autostart'], home);
  t.is(noNode.code, 2, noNode.stderr);
  t.regex(noNode.stderr, /--node.*ACP_ERR_CLI_USAGE/s);
  const ha = await runCli(['system', 'create', 's1', '--driver', 'sim', '--autostart', '--node', 'n1', '--ha'], home);
  t.regex(ha.stderr, /non-HA/);
  const order = await runCli(['system', 'create', 's1', '--driver', 'sim', '--start-order', '1'], home);
  t.regex(order.stderr, /go with --autostart/);
  // A node that is not a member: nothing is created (an HA system was placed elsewhere, its spec naming a node that is not there).
  for (const args of [['--node', 'nosuchnode'], ['--ha', '--node', 'nosuchnode'], ['--ha', '--prefer', 'n1:2,n9:1']]) {
    const unknown = await runCli(['system', 'create', 's1', '--driver', 'sim', ...args], home);
    t.is(unknown.code, 1, unknown.stderr);
    t.regex(unknown.stderr, /no node '(nosuchnode|n9)' in the cluster \(it has n1; acp nodes\); nothing was created.*ACP_ERR_SYSTEM_UNKNOWN_NODE/s, args.join(' '));
  }
  const ok = await runCli(['--json', 'system', 'create', 's1', '--driver', 'sim', '--autostart', '--node', 'n1', '--start-order', '3', '--start-delay', '2'], home);
  t.is(ok.code, 0, ok.stderr);
  t.like(JSON.parse(ok.stdout).spec, { autostart: true, node: 'n1', startOrder: 3, startDelayS: 2 });
});

test('autostart: systems start with their node in start order, each start delay after the one before; sim guests stopped with the daemon say so and start again', async (t) => {
  t.timeout(90_000);
  const home = makeHome(t);
  const first = await startDaemon(t, home);
  await allRunning(first);
  const api = await client(t, home);
  const put = (id: string, value: Record<string, unknown>) => api.ask('cdb', { type: 'cdb.put', key: `object/system/${id}`, value: { name: id, driver: 'sim', ...value } });
  await put('late', { autostart: true, node: 'n1' });
  await put('second', { autostart: true, node: 'n1', startOrder: 2 });
  await put('first', { autostart: true, node: 'n1', startOrder: 1, startDelayS: 1 });
  await put('elsewhere', { autostart: true, node: 'n2', startOrder: 0 });
  await put('manual', { node: 'n1' });
  await api.ask('hypervisor', { type: 'system.start', id: 'manual' });
  await eventually(async () => ((await systemMeta(api, 'manual')).state === 'running' ? true : undefined), 10_000, 'the manual system to run');
  await api.close();
  await first.stop('restart');
  const second = await startDaemon(t, home);
  await allRunning(second);
  const again = await client(t, home);
  const metas = await eventually(async () => {
    const found = await Promise.all(['first', 'second', 'late'].map((id) => systemMeta(again, id)));
    return found.every((meta) => meta.state === 'running') ? found : undefined;
  }, 30_000, 'the autostart systems to run');
  const startedAt = metas.map((meta) => Date.parse(meta.history!.findLast((step) => step.event === 'start')!.at));
  t.true(startedAt[0]! + 1000 <= startedAt[1]!, 'second starts at least start delay (1 s) after first');
  t.true(startedAt[1]! <= startedAt[2]!, 'late (no start order) starts last');
  t.is(metas[0]!.history!.findLast((step) => step.event === 'start')!.reason, 'autostart with its node');
  // Not autostart: the manual one was stopped with the daemon (a sim guest cannot outlive it) and stays so.
  const manual = await systemMeta(again, 'manual');
  t.is(manual.state, 'stopped');
  t.regex(manual.reason ?? '', /simulated guest does not outlive/);
  const elsewhere = await again.ask('cdb', { type: 'cdb.get', key: 'meta/system/elsewhere@n1' }).then(() => 'found', () => 'none');
  t.is(elsewhere, 'none');
});

test('deleting a running system object stops its guest, logged with the reason; acp system rm of a running system is refused naming its state', async (t) => {
  t.timeout(60_000);
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  const api = await client(t, home);
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/s1', value: { name: 's1', driver: 'sim' } });
  await api.ask('hypervisor', { type: 'system.start', id: 's1' });
  const refused = await runCli(['system', 'rm', 's1'], home);
  t.not(refused.code, 0);
  t.regex(refused.stderr, /is running on n1; acp system stop s1 first.*ACP_ERR_SYSTEM_BAD_STATE/s);
  const removed = await runCli(['cdb', 'rm', 'object/system/s1'], home);
  t.is(removed.code, 0, removed.stderr);
  // Stopped (the reason logged), then forgotten here: the hypervisor lists it no more, and its meta goes.
  await eventually(async () => {
    const status = await api.ask<Message & { systems: { id: string; state: string }[] }>('hypervisor', { type: 'system.status' });
    return status.systems.some((system) => system.id === 's1') ? undefined : true;
  }, 20_000, 'the guest of the deleted system to stop');
  t.is(await api.ask('cdb', { type: 'cdb.get', key: 'meta/system/s1@n1' }).then(() => 'found', (error: { code?: string }) => error.code), 'ACP_ERR_CDB_NOT_FOUND');
});

test("a CDB restart loses meta/ (it lives in memory): the hypervisor and the Storage service publish theirs again", async (t) => {
  t.timeout(90_000);
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home, { faults: true }));
  const api = await client(t, home);
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/kept', value: { name: 'kept', driver: 'sim' } });
  await api.ask('hypervisor', { type: 'system.start', id: 'kept' });
  const dir = mkdtempSync(join(tmpdir(), 'acp-republish-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await api.ask('storage', { type: 'storage.pool-create', spec: { name: 'local', type: 'dir', path: join(dir, 'images') } });
  const metaOf = (key: string) => api.ask<Message & { record: { value: { state?: string } } }>('cdb', { type: 'cdb.get', key }).then((reply) => reply.record.value, () => undefined);
  const poolMeta = await eventually(async () => ((await metaOf('meta/storage/pool/local@n1'))?.state === 'active' ? metaOf('meta/storage/pool/local@n1') : undefined), 20_000, 'the pool meta');
  await api.ask('cdb', { type: 'chaos.crash' }).catch(() => undefined);
  const state = await eventually(async () => (await metaOf('meta/system/kept@n1'))?.state, 20_000, "the system's meta published again");
  t.is(state, 'running');
  t.deepEqual(await eventually(() => metaOf('meta/storage/pool/local@n1'), 20_000, "the pool's meta published again"), poolMeta);
});

test('a deleted system is forgotten by the node it ran on: its meta and stats go, at once when stopped, after its guest stops when running', async (t) => {
  t.timeout(90_000);
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  const api = await client(t, home);
  const gone = (key: string) => api.ask('cdb', { type: 'cdb.get', key }).then(() => undefined, (error: { code?: string }) => (error.code === 'ACP_ERR_CDB_NOT_FOUND' ? true : undefined));
  for (const id of ['idle', 'busy']) {
    await api.ask('cdb', { type: 'cdb.put', key: `object/system/${id}`, value: { name: id, driver: 'sim' } });
    await api.ask('hypervisor', { type: 'system.start', id });
  }
  await api.ask('hypervisor', { type: 'system.stop', id: 'idle' });
  await eventually(async () => ((await systemMeta(api, 'idle'))?.state === 'stopped' ? true : undefined), 10_000, 'idle stopped');
  for (const id of ['idle', 'busy']) await api.ask('cdb', { type: 'cdb.delete', key: `object/system/${id}` });
  await eventually(() => gone('meta/system/idle@n1'), 10_000, "the stopped system's meta to go");
  await eventually(() => gone('meta/system/busy@n1'), 30_000, "the running system's meta to go once its guest stopped");
  t.true(await gone('stats/system/busy@n1'));
  // Made again under the same name, it starts afresh.
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/idle', value: { name: 'idle', driver: 'sim' } });
  t.like(await api.ask('hypervisor', { type: 'system.start', id: 'idle' }), { state: 'running' });
});
