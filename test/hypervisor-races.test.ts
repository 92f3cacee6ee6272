/**
 * Races around a system's lifecycle, with simulated guests whose VMM holds a chosen message until
 * the test lets it through (test/helpers/gated-hypervisor.ts): the state changes only in the
 * hypervisor's receive, so an answer that comes back after the system moved on is recognised as
 * such, never applied as if nothing had happened. The hypervisor's clock here is simulated: a
 * migration deadline passes when the test moves it, not after fifteen real minutes.
 */
import test, { type ExecutionContext } from 'ava';
import type { SystemMeta } from '../actors/hypervisor/index.js';
import type { AcpClient } from '../runtime/client.js';
import type { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import type { Principal } from '../runtime/principal.js';
import { Daemon } from '../node/daemon.js';
import { clock, gates, startGatedNode } from './helpers/gated-hypervisor.js';
import { client, eventually } from './helpers/node.js';
import { systemMeta } from './helpers/system.js';

type Status = Message & { systems: (SystemMeta & { id: string; arriving: boolean; migration?: { phase: string } })[] };

type Hypervisor = (message: Message, from?: string) => Promise<Message>;

async function gatedNode(t: ExecutionContext): Promise<{ daemon: Daemon; api: AcpClient; hypervisor: Hypervisor }> {
  const { daemon, home } = await startGatedNode(t);
  const api = await client(t, home);
  // As another node's hypervisor would (the migration messages are hypervisor to hypervisor), or this one's VMM.
  const hypervisor: Hypervisor = (message, from = 'acp://lab/n2/hypervisor') => {
    const peer = from.split('/')[3]!;
    const sender: Principal = peer === 'n1' ? { kind: 'actor', path: from } : { kind: 'node', node: peer, for: { kind: 'actor', path: from } };
    return daemon.system.ask(daemon.system.localPath('hypervisor'), message, { timeoutMs: 30_000, sender });
  };
  return { daemon, api, hypervisor };
}

async function simRunning(api: AcpClient, id: string): Promise<void> {
  await api.ask('cdb', { type: 'cdb.put', key: `object/system/${id}`, value: { name: id, driver: 'sim' } });
  await api.ask('hypervisor', { type: 'system.start', id });
}

async function stateOf(api: AcpClient, id: string): Promise<Status['systems'][number]> {
  const status = await api.ask<Status>('hypervisor', { type: 'system.status', id });
  return status.systems[0]!;
}

/** Waits until the hypervisor shows the system in `state` (it handled the message that moved it there). */
function until(api: AcpClient, id: string, state: string): Promise<true> {
  return eventually(async () => ((await stateOf(api, id)).state === state ? true : undefined), 10_000, `${id} to be ${state}`);
}

test.serial('a pause the VMM answers after a stop arrived is answered as done, and the stop still stops the system', async (t) => {
  const { api } = await gatedNode(t);
  await simRunning(api, 'p1');
  const held = gates.hold('vmm.pause');
  const pause = api.ask<Message & SystemMeta>('hypervisor', { type: 'system.pause', id: 'p1' });
  await held.reached;
  const stop = api.ask<Message & SystemMeta>('hypervisor', { type: 'system.stop', id: 'p1' });
  await until(api, 'p1', 'stopping');
  held.open();
  const paused = await pause;
  t.is(paused.type, 'system.paused', 'the VMM paused the guest: the asker is told so, not refused');
  const stopped = await stop;
  t.is(stopped.state, 'stopped');
  const meta = await systemMeta(api, 'p1');
  t.is(meta.state, 'stopped');
  t.deepEqual(meta.history?.map((step) => step.event), ['start', 'started', 'stop', 'stopped'], 'the later stop stands; no pause is applied after it');
});

test.serial('a stop during a start: the start is answered as stopped while starting, the VMM it launched is gone, and the system starts again', async (t) => {
  const { daemon, api } = await gatedNode(t);
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/s1', value: { name: 's1', driver: 'sim' } });
  const held = gates.hold('vmm.start');
  const start = api.ask<Message & SystemMeta>('hypervisor', { type: 'system.start', id: 's1' });
  await held.reached;
  const stop = api.ask<Message & SystemMeta>('hypervisor', { type: 'system.stop', id: 's1' });
  await until(api, 's1', 'stopping');
  held.open();
  const refused = await t.throwsAsync(start);
  t.is((refused as AcpError).code, 'ACP_ERR_SYSTEM_BAD_STATE');
  t.regex(refused!.message, /stopped while it was starting/);
  t.is((await stop).state, 'stopped');
  t.false(daemon.system.isAlive(daemon.system.localPath('hypervisor', 'vmm', 's1')), 'the VMM the start launched is stopped by the stop');
  t.deepEqual((await systemMeta(api, 's1')).history?.map((step) => step.event), ['start', 'stop', 'stopped']);
  const again = await api.ask<Message & SystemMeta>('hypervisor', { type: 'system.start', id: 's1' });
  t.is(again.state, 'running');
});

test.serial('a stop during a migration is refused naming its phase; the migration that then fails leaves the system running', async (t) => {
  const { api } = await gatedNode(t);
  await simRunning(api, 'm1');
  const held = gates.hold('vmm.transferable');
  const migrate = api.ask('hypervisor', { type: 'system.migrate', id: 'm1', to: 'n9' }, { timeoutMs: 60_000 });
  await held.reached;
  t.is((await stateOf(api, 'm1')).migration?.phase, 'preparing');
  await eventually(async () => ((await systemMeta(api, 'm1')).migration?.phase === 'preparing' ? true : undefined), 10_000, 'the published meta to name the phase');
  const refused = await t.throwsAsync(api.ask('hypervisor', { type: 'system.stop', id: 'm1' }));
  t.is((refused as AcpError).code, 'ACP_ERR_SYSTEM_BAD_STATE');
  t.regex(refused!.message, /it is migrating .*in phase preparing/);
  held.open();
  const failed = await t.throwsAsync(migrate);
  t.is((failed as AcpError).code, 'ACP_ERR_VMM_FAILED');
  t.regex(failed!.message, /keeps running on n1/);
  const after = await stateOf(api, 'm1');
  t.is(after.state, 'running');
  t.is(after.migration, undefined);
  t.is((await systemMeta(api, 'm1')).migration, undefined, 'the phase leaves the meta with the migration');
});

test.serial('an arrival the VMM confirms after a stop dropped it is answered as dropped; the copy is gone and a late abort finds nothing running', async (t) => {
  const { api, hypervisor } = await gatedNode(t);
  const spec = { name: 'a1', driver: 'sim' };
  const ready = await hypervisor({ type: 'system.incoming', id: 'a1', spec, from: 'n2', transferred: { bootedAt: Date.now() } });
  t.is(ready.type, 'system.incoming');
  t.is((await stateOf(api, 'a1')).migration?.phase, 'waiting');
  const held = gates.hold('vmm.await-running');
  const arrived = hypervisor({ type: 'system.incoming-done', id: 'a1' });
  await held.reached;
  const stop = api.ask<Message & SystemMeta>('hypervisor', { type: 'system.stop', id: 'a1' });
  await eventually(async () => ((await stateOf(api, 'a1')).migration?.phase === 'dropping' ? true : undefined), 10_000, 'the arrival to be dropping');
  held.open();
  const refused = await t.throwsAsync(arrived);
  t.is((refused as AcpError).code, 'ACP_ERR_SYSTEM_BAD_STATE');
  t.regex(refused!.message, /dropped .*stopped while arriving/);
  const stopped = await stop;
  t.is(stopped.state, 'stopped');
  t.is(stopped.reason, 'stopped while arriving');
  t.like(await hypervisor({ type: 'system.incoming-abort', id: 'a1', reason: 'late' }), { dropped: false, running: false });
  t.is((await stateOf(api, 'a1')).state, 'stopped');
});

test.serial('a copy whose source never follows up is dropped when its waiting deadline passes on the hypervisor clock', async (t) => {
  const { api, hypervisor } = await gatedNode(t);
  await hypervisor({ type: 'system.incoming', id: 'w1', spec: { name: 'w1', driver: 'sim' }, from: 'n2', transferred: {} });
  t.is((await stateOf(api, 'w1')).migration?.phase, 'waiting');
  clock.advance(15 * 60_000 - 1);
  t.is((await stateOf(api, 'w1')).state, 'migrating', 'not before its deadline');
  clock.advance(1);
  await until(api, 'w1', 'stopped');
  const meta = await stateOf(api, 'w1');
  t.regex(String(meta.reason), /n2 did not complete the migration: its waiting phase passed its deadline of 900 s/);
  const refused = await t.throwsAsync(hypervisor({ type: 'system.incoming-done', id: 'w1' }));
  t.regex(refused!.message, /not arriving/);
});

test.serial('a crashed guest is restarted by its policy when the hypervisor clock reaches its backoff, not before', async (t) => {
  const { api, hypervisor } = await gatedNode(t);
  await simRunning(api, 'r1');
  await hypervisor({ type: 'hypervisor.guest-exited', id: 'r1', generation: 1, crashed: true, reason: 'guest panicked' }, 'acp://lab/n1/hypervisor/vmm/r1');
  t.is((await stateOf(api, 'r1')).state, 'crashed');
  // The first backoff is 500 ms ± 20 %.
  clock.advance(399);
  t.is((await stateOf(api, 'r1')).state, 'crashed');
  clock.advance(201);
  await until(api, 'r1', 'running');
  t.is((await stateOf(api, 'r1')).restarts, 1);
});

test.serial('an arrival whose system was deleted is stopped once it runs here: deleted before this node had it, and while it arrived', async (t) => {
  const { api, hypervisor } = await gatedNode(t);
  const metaGone = (id: string) => eventually(async () => (await api.ask<Message & { records: unknown[] }>('cdb', { type: 'cdb.list', prefix: `meta/system/${id}@` })).records.length === 0 || undefined, 10_000, `${id} to be stopped and forgotten`);
  // Deleted before this node had an entry for it (its feed saw the deletion, with nothing to mark).
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/d1', value: { name: 'd1', driver: 'sim' } });
  await api.ask('cdb', { type: 'cdb.delete', key: 'object/system/d1' });
  await hypervisor({ type: 'system.incoming', id: 'd1', spec: { name: 'd1', driver: 'sim' }, from: 'n2', transferred: { bootedAt: Date.now() } });
  t.like(await hypervisor({ type: 'system.incoming-done', id: 'd1' }), { type: 'system.arrived', state: 'running' });
  await metaGone('d1');
  // Deleted while it arrived: the entry was marked, and the guest stops as it starts to run.
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/d2', value: { name: 'd2', driver: 'sim' } });
  await hypervisor({ type: 'system.incoming', id: 'd2', spec: { name: 'd2', driver: 'sim' }, from: 'n2', transferred: { bootedAt: Date.now() } });
  await api.ask('cdb', { type: 'cdb.delete', key: 'object/system/d2' });
  await hypervisor({ type: 'system.incoming-done', id: 'd2' });
  await metaGone('d2');
  // Made again after a deletion, and one whose object has not reached this node yet: both keep running.
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/d1', value: { name: 'd1', driver: 'sim' } });
  for (const id of ['d1', 'd3']) {
    await hypervisor({ type: 'system.incoming', id, spec: { name: id, driver: 'sim' }, from: 'n2', transferred: { bootedAt: Date.now() } });
    await hypervisor({ type: 'system.incoming-done', id });
  }
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.is((await stateOf(api, 'd1')).state, 'running');
  t.is((await stateOf(api, 'd3')).state, 'running');
});
