import test from 'ava';
import type { SystemMeta } from '../actors/hypervisor/index.js';
import { canHappen, next, SYSTEM_STATES, TRANSITIONS, type SystemEvent } from '../actors/hypervisor/lifecycle.js';
import { guestImage, GUEST_READY_LINE, GUEST_UPTIME_PREFIX } from '../adapters/guest-image.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { isGone } from '../node/harness/net.js';
import { systemMeta, systemNode } from './helpers/system.js';
import { eventually, runCli } from './helpers/node.js';
import { guestMissing, runsWhen } from './helpers/requires.js';

test('lifecycle: every event happens only from its states; anything else is refused naming the current state', (t) => {
  for (const state of SYSTEM_STATES) {
    for (const event of Object.keys(TRANSITIONS) as SystemEvent[]) {
      if (canHappen(state, event)) {
        t.is(next('vm1', state, event), TRANSITIONS[event].to);
        continue;
      }
      const error = t.throws(() => next('vm1', state, event));
      t.true(error instanceof AcpError && error.code === 'ACP_ERR_SYSTEM_BAD_STATE');
      t.regex(error!.message, new RegExp(`cannot ${event} system 'vm1': it is ${state}`));
    }
  }
  t.is(next('vm1', 'running', 'pause'), 'paused');
  t.is(next('vm1', 'paused', 'resume'), 'running');
  t.false(canHappen('stopped', 'pause'));
});


test('a sim system runs through its state machine; its meta follows; illegal commands are refused', async (t) => {
  const { api } = await systemNode(t);
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/s1', value: { name: 's1', driver: 'sim' } });
  const started = await api.ask<Message & SystemMeta>('hypervisor', { type: 'system.start', id: 's1' });
  t.is(started.state, 'running');
  t.is((await systemMeta(api, 's1')).state, 'running');
  await api.ask('hypervisor', { type: 'system.pause', id: 's1' });
  t.is((await systemMeta(api, 's1')).state, 'paused');
  const refused = await t.throwsAsync(api.ask('hypervisor', { type: 'system.pause', id: 's1' }));
  t.is((refused as AcpError).code, 'ACP_ERR_SYSTEM_BAD_STATE');
  t.regex(refused!.message, /it is paused/);
  await api.ask('hypervisor', { type: 'system.resume', id: 's1' });
  await api.ask('hypervisor', { type: 'system.stop', id: 's1' });
  t.is((await systemMeta(api, 's1')).state, 'stopped');
  const again = await t.throwsAsync(api.ask('hypervisor', { type: 'system.resume', id: 's1' }));
  t.regex(again!.message, /it is stopped/);
  const elsewhere = await t.throwsAsync(
    api.ask('cdb', { type: 'cdb.put', key: 'object/system/s2', value: { name: 's2', driver: 'sim', node: 'n9' } }).then(() => api.ask('hypervisor', { type: 'system.start', id: 's2' })),
  );
  t.is((elsewhere as AcpError).code, 'ACP_ERR_SYSTEM_WRONG_NODE');
});

test('500 sim systems start and stop on one node', async (t) => {
  t.timeout(120_000);
  const { api } = await systemNode(t);
  const ids = Array.from({ length: 500 }, (_, index) => `sim${index}`);
  for (let offset = 0; offset < ids.length; offset += 250) {
    await api.ask('cdb', { type: 'cdb.batch', ops: ids.slice(offset, offset + 250).map((id) => ({ op: 'put', key: `object/system/${id}`, value: { name: id, driver: 'sim' } })) });
  }
  await Promise.all(ids.map((id) => api.ask('hypervisor', { type: 'system.start', id }, { timeoutMs: 60_000 })));
  const status = await api.ask<Message & { systems: { state: string }[] }>('hypervisor', { type: 'system.status' });
  t.is(status.systems.filter((system) => system.state === 'running').length, 500);
  // The hypervisor's own mailbox still answers at once.
  t.is((await api.ask<Message & { systems: number }>('hypervisor', { type: 'service.info' })).systems, 500);
  await Promise.all(ids.map((id) => api.ask('hypervisor', { type: 'system.stop', id }, { timeoutMs: 60_000 })));
  const after = await api.ask<Message & { systems: { state: string }[] }>('hypervisor', { type: 'system.status' });
  t.is(after.systems.filter((system) => system.state === 'stopped').length, 500);
});

const image = guestImage();
const guestAbsent = guestMissing();

runsWhen(guestAbsent)(`a real QEMU guest boots and prints its ready line; pause, resume; kill -9 of QEMU restarts it; kill -9 of its VMM container leaves it running, adopted by a new VMM${guestAbsent ? ` (skipped: ${guestAbsent})` : ''}`, async (t) => {
  t.timeout(300_000);
  const { home, api } = await systemNode(t);
  const created = await runCli(
    ['system', 'create', 'g1', '--driver', 'qemu', '--memory', '256', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', image!.cmdline],
    home,
  );
  t.is(created.code, 0, created.stderr);
  t.is((await runCli(['system', 'start', 'g1'], home)).code, 0);
  const console = () => runCli(['system', 'console', 'g1'], home).then((result) => result.stdout);
  await eventually(async () => ((await console()).includes(GUEST_READY_LINE) ? true : undefined), 60_000, 'the guest ready line');
  const first = await systemMeta(api, 'g1');
  t.is(first.state, 'running');
  t.true(first.accelerator === 'tcg' || first.accelerator === 'kvm');
  // The probe's verdict is in the node's meta (KVM only if a guest really ran under it).
  const nodeMeta = await eventually(async () => {
    const record = await api.ask<Message & { record: { value: { accelerator?: string } } }>('cdb', { type: 'cdb.get', key: 'meta/node/n1@n1' });
    return record.record.value.accelerator;
  }, 10_000, 'the accelerator in the node meta');
  t.is(nodeMeta, String(first.accelerator));
  t.true(first.pid !== null && !isGone(first.pid) && first.vmmPid !== null && first.vmmPid !== process.pid);

  await api.ask('hypervisor', { type: 'system.pause', id: 'g1' });
  t.is((await systemMeta(api, 'g1')).state, 'paused');
  await api.ask('hypervisor', { type: 'system.resume', id: 'g1' });
  const uptimes = (text: string) => text.split('\n').filter((line) => line.startsWith(GUEST_UPTIME_PREFIX)).length;
  const before = uptimes(await console());
  await eventually(async () => (uptimes(await console()) > before ? true : undefined), 20_000, 'the guest to run on after resume');

  // QEMU killed: crashed, then restarted by its policy (on-crash).
  process.kill(first.pid!, 'SIGKILL');
  const second = await eventually(async () => {
    const now = await systemMeta(api, 'g1');
    return now.state === 'running' && now.pid !== first.pid ? now : undefined;
  }, 30_000, 'the system to be restarted after QEMU was killed');
  t.is(second.restarts, 1);

  // The VMM container killed: QEMU runs on in its own session, and a new VMM adopts it (same
  // guest, same pid; not a restart).
  process.kill(second.vmmPid!, 'SIGKILL');
  const third = await eventually(async () => {
    const now = await systemMeta(api, 'g1');
    return now.state === 'running' && now.vmmPid !== null && now.vmmPid !== second.vmmPid ? now : undefined;
  }, 30_000, 'a new VMM to adopt the guest after its VMM was killed');
  t.is(third.pid, second.pid);
  t.false(isGone(second.pid!));
  t.is(third.restarts, 1);
  const afterAdoption = uptimes(await console());
  await eventually(async () => (uptimes(await console()) > afterAdoption ? true : undefined), 120_000, 'the adopted guest to run on');

  const stopped = await runCli(['system', 'stop', 'g1', '--timeout', '1000'], home);
  t.is(stopped.code, 0, stopped.stderr);
  t.is((await systemMeta(api, 'g1')).state, 'stopped');
  await eventually(() => (isGone(third.pid!) ? true : undefined), 10_000, 'QEMU to be gone');
});

test('node and system stats are written every second, from the worker pool', async (t) => {
  t.timeout(60_000);
  const { api } = await systemNode(t, { statsMs: 1000 });
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/s1', value: { name: 's1', driver: 'sim' } });
  await api.ask('hypervisor', { type: 'system.start', id: 's1' });
  const history = await eventually(async () => {
    const points = (await api.ask<Message & { points: { at: number; value: Record<string, unknown> }[] }>('cdb', { type: 'cdb.history', key: 'stats/node/n1@n1' })).points;
    return points.length >= 3 ? points : undefined;
  }, 20_000, 'three node stats points');
  const latest = history.at(-1)!.value;
  t.true(typeof latest['cpuPercent'] === 'number');
  t.true((latest['memory'] as { totalBytes: number }).totalBytes > 0);
  t.true(Array.isArray(latest['filesystems']));
  t.true('eventLoopDelayMs' in latest);
  // Once a second, not faster: no more points than seconds they span (one collection may land late).
  const spanSeconds = (history.at(-1)!.at - history[0]!.at) / 1000;
  t.true(history.length <= Math.ceil(spanSeconds) + 2, `${history.length} points over ${spanSeconds.toFixed(1)} s`);
  const system = await eventually(async () => (await api.ask<Message & { record: { value: Record<string, unknown> } }>('cdb', { type: 'cdb.get', key: 'stats/system/s1@n1' })).record.value, 10_000, 's1 stats');
  t.like(system, { state: 'running', simulated: true });
  // Stopped: its live stats go.
  await api.ask('hypervisor', { type: 'system.stop', id: 's1' });
  const gone = await eventually(async () => {
    const found = await api.ask('cdb', { type: 'cdb.get', key: 'stats/system/s1@n1' }).then(
      () => undefined,
      (error: AcpError) => (error.code === 'ACP_ERR_CDB_NOT_FOUND' ? true : undefined),
    );
    return found;
  }, 10_000, 'the stopped system stats to be removed');
  t.true(gone);
});
