/**
 * The source side of a migration through its phases (actors/hypervisor/migration-table.ts), on one
 * node whose peer n9 is a scripted target hypervisor behind the node's remote router: what the
 * target answers decides the outcome, the VMM holds a chosen message as a slow QEMU would
 * (test/helpers/gated-hypervisor.ts), and the phase deadlines run on the hypervisor's simulated clock.
 */
import test, { type ExecutionContext } from 'ava';
import type { AcpClient } from '../runtime/client.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { clock, gates, startGatedNode } from './helpers/gated-hypervisor.js';
import { client, eventually } from './helpers/node.js';
import { systemMeta } from './helpers/system.js';

type Script = Partial<Record<string, (message: Message) => Message | AcpError>>;

/** One node, a sim system running on it, and n9: a target hypervisor that answers as `script` says, recording what it got. */
async function sourceNode(t: ExecutionContext, script: Script): Promise<{ api: AcpClient; got: string[] }> {
  const { daemon, home } = await startGatedNode(t);
  const got: string[] = [];
  daemon.system.setRemoteRouter({
    deliver: (node, path, delivery) => {
      const answer = node === 'n9' && path.segments.join('/') === 'hypervisor' ? script[delivery.message.type]?.(delivery.message) : undefined;
      got.push(delivery.message.type);
      if (answer === undefined) delivery.reply?.reject(new AcpError('ACP_ERR_NODE_UNREACHABLE', `n9 does not answer ${delivery.message.type}`));
      else if (answer instanceof AcpError) delivery.reply?.reject(answer);
      else delivery.reply?.resolve(answer);
    },
    watch: () => () => undefined,
  });
  const api = await client(t, home);
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/v1', value: { name: 'v1', driver: 'sim' } });
  await api.ask('hypervisor', { type: 'system.start', id: 'v1' });
  return { api, got };
}

const arrivedThere = (): Message => ({ type: 'system.arrived', id: 'v1', node: 'n9', state: 'running', pid: null, vmmPid: 1, accelerator: 'sim', since: new Date().toISOString(), restarts: 0 });

test.serial('a migration the target completes: the CDB names the target only then, and this copy is gone', async (t) => {
  const { api, got } = await sourceNode(t, { 'system.incoming': () => ({ type: 'system.incoming', id: 'v1' }), 'system.incoming-done': arrivedThere });
  const migrated = await api.ask<Message & { from: string; to: string }>('hypervisor', { type: 'system.migrate', id: 'v1', to: 'n9' });
  t.like(migrated, { type: 'system.migrated', from: 'n1', to: 'n9', node: 'n9' });
  t.deepEqual(got, ['system.incoming', 'system.incoming-done']);
  const meta = await systemMeta(api, 'v1');
  t.is(meta.state, 'stopped');
  t.is(meta.reason, 'migrated to n9');
  t.is(meta.migration, undefined);
  t.deepEqual(meta.history?.map((step) => step.event), ['start', 'started', 'migrate', 'migrated-away']);
  const object = await api.ask<Message & { record: { value: { node?: string } } }>('cdb', { type: 'cdb.get', key: 'object/system/v1' });
  t.is(object.record.value.node, 'n9');
});

test.serial('a transfer past its deadline fails the migration on the clock; the target is told to drop its copy and the guest runs on here', async (t) => {
  const { api, got } = await sourceNode(t, { 'system.incoming': () => ({ type: 'system.incoming', id: 'v1' }), 'system.incoming-abort': () => ({ type: 'ok', dropped: true }) });
  const held = gates.hold('vmm.migrate');
  const migrate = api.ask('hypervisor', { type: 'system.migrate', id: 'v1', to: 'n9' }, { timeoutMs: 60_000 });
  await held.reached;
  t.is((await systemMeta(api, 'v1')).migration?.phase, 'transferring');
  clock.advance(620_000 - 1);
  t.is((await systemMeta(api, 'v1')).migration?.phase, 'transferring', 'not before its deadline');
  clock.advance(1);
  await eventually(async () => ((await systemMeta(api, 'v1')).migration?.phase === 'aborting' ? true : undefined), 10_000, 'the source to be aborting');
  // The stream that was still going ends after all: late, and stale; the abort's I/O comes after it.
  held.open();
  const failed = await t.throwsAsync(migrate);
  t.is((failed as AcpError).code, 'ACP_ERR_VMM_FAILED');
  t.regex(failed!.message, /its transferring phase passed its deadline of 620 s; v1 keeps running on n1/);
  t.deepEqual(got, ['system.incoming', 'system.incoming-abort']);
  const meta = await systemMeta(api, 'v1');
  t.is(meta.state, 'running');
  t.is(meta.migration, undefined);
});

test.serial('a target that may run the guest (its confirmation lost, its abort not confirmed) leaves this copy paused: never two running', async (t) => {
  const { api, got } = await sourceNode(t, {
    'system.incoming': () => ({ type: 'system.incoming', id: 'v1' }),
    'system.incoming-done': () => new AcpError('ACP_ERR_ASK_TIMEOUT', 'no reply from n9 to system.incoming-done'),
    'system.incoming-abort': () => ({ type: 'ok', dropped: false, running: true }),
  });
  const failed = await t.throwsAsync(api.ask('hypervisor', { type: 'system.migrate', id: 'v1', to: 'n9' }));
  t.regex(failed!.message, /left paused on n1 because n9 may run it/);
  t.deepEqual(got, ['system.incoming', 'system.incoming-done', 'system.incoming-abort']);
  const meta = await systemMeta(api, 'v1');
  t.is(meta.state, 'paused');
  t.deepEqual(meta.history?.map((step) => step.event), ['start', 'started', 'migrate', 'migrated', 'pause']);
});

test.serial('a target that says it runs no copy lets this one run on after a failed confirmation', async (t) => {
  const { api } = await sourceNode(t, {
    'system.incoming': () => ({ type: 'system.incoming', id: 'v1' }),
    'system.incoming-done': () => new AcpError('ACP_ERR_VMM_FAILED', 'the guest did not run on n9'),
    'system.incoming-abort': () => ({ type: 'ok', dropped: false, running: false }),
  });
  const failed = await t.throwsAsync(api.ask('hypervisor', { type: 'system.migrate', id: 'v1', to: 'n9' }));
  t.regex(failed!.message, /keeps running on n1/);
  t.is((await systemMeta(api, 'v1')).state, 'running');
});

test.serial('a system deleted during its migration stays deleted: the source does not write its object again, and its copy goes', async (t) => {
  const { api } = await sourceNode(t, { 'system.incoming': () => ({ type: 'system.incoming', id: 'v1' }), 'system.incoming-done': arrivedThere });
  const held = gates.hold('vmm.migrate');
  const migrate = api.ask<Message & { to: string }>('hypervisor', { type: 'system.migrate', id: 'v1', to: 'n9' }, { timeoutMs: 60_000 });
  await held.reached;
  await api.ask('cdb', { type: 'cdb.delete', key: 'object/system/v1' });
  held.open();
  t.like(await migrate, { type: 'system.migrated', to: 'n9' });
  const gone = await t.throwsAsync(api.ask('cdb', { type: 'cdb.get', key: 'object/system/v1' }));
  t.is((gone as AcpError).code, 'ACP_ERR_CDB_NOT_FOUND', 'the confirmation did not bring the object back');
  // The source's copy stopped, and the system is forgotten here (its meta goes).
  await eventually(async () => ((await api.ask<Message & { records: unknown[] }>('cdb', { type: 'cdb.list', prefix: 'meta/system/v1@' })).records.length === 0 ? true : undefined), 10_000, 'the meta to go');
});

test.serial('an edit made during a migration stays: the confirmation changes only the node', async (t) => {
  const { api } = await sourceNode(t, { 'system.incoming': () => ({ type: 'system.incoming', id: 'v1' }), 'system.incoming-done': arrivedThere });
  const held = gates.hold('vmm.migrate');
  const migrate = api.ask('hypervisor', { type: 'system.migrate', id: 'v1', to: 'n9' }, { timeoutMs: 60_000 });
  await held.reached;
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/v1', value: { name: 'v1', driver: 'sim', labels: { team: 'a' } } });
  held.open();
  await migrate;
  const object = await api.ask<Message & { record: { value: { node?: string; labels?: Record<string, string> } } }>('cdb', { type: 'cdb.get', key: 'object/system/v1' });
  t.is(object.record.value.node, 'n9');
  t.deepEqual(object.record.value.labels, { team: 'a' });
});

test.serial('a system deleted during a migration that fails is stopped here, not left running', async (t) => {
  const { api } = await sourceNode(t, {
    'system.incoming': () => ({ type: 'system.incoming', id: 'v1' }),
    'system.incoming-done': () => new AcpError('ACP_ERR_VMM_FAILED', 'the guest did not run on n9'),
    'system.incoming-abort': () => ({ type: 'ok', dropped: false, running: false }),
  });
  const held = gates.hold('vmm.migrate');
  const migrate = api.ask('hypervisor', { type: 'system.migrate', id: 'v1', to: 'n9' }, { timeoutMs: 60_000 });
  await held.reached;
  await api.ask('cdb', { type: 'cdb.delete', key: 'object/system/v1' });
  held.open();
  await t.throwsAsync(migrate);
  // It ran again here when the migration failed; its object is gone, so it is stopped and forgotten.
  await eventually(async () => ((await api.ask<Message & { records: unknown[] }>('cdb', { type: 'cdb.list', prefix: 'meta/system/v1@' })).records.length === 0 ? true : undefined), 10_000, 'the meta to go');
  const status = await t.throwsAsync(api.ask('hypervisor', { type: 'system.status', id: 'v1' }));
  t.regex(status!.message, /does not run on node 'n1'/);
});
