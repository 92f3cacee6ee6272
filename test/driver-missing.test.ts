import test from 'ava';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { systemMeta, systemNode } from './helpers/system.js';

test('without a QEMU binary, a qemu system fails to start with an error naming what to install; sim systems still run', async (t) => {
  // The VMM container inherits this: its QEMU driver looks for a binary that is not there.
  process.env.ACP_QEMU = '/nonexistent/qemu-system-x86_64';
  t.teardown(() => {
    delete process.env.ACP_QEMU;
  });
  const { api } = await systemNode(t);
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/q1', value: { name: 'q1', driver: 'qemu', boot: { kernel: '/etc/hostname' } } });
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/s1', value: { name: 's1', driver: 'sim' } });
  const error = await t.throwsAsync(api.ask('hypervisor', { type: 'system.start', id: 'q1' }, { timeoutMs: 60_000 }));
  t.true(error instanceof AcpError);
  t.regex(error!.message, /qemu-system-x86_64 is not installed on this node: install qemu-system-x86/);
  const failed = await systemMeta(api, 'q1');
  t.is(failed.state, 'stopped', 'a refused start is not a crash');
  t.regex(failed.reason ?? '', /^start failed: .*not installed/);
  const sim = await api.ask<Message & { state: string }>('hypervisor', { type: 'system.start', id: 's1' });
  t.is(sim.state, 'running');
  t.is((await api.ask<Message & { type: string }>('hypervisor', { type: 'service.info' })).type, 'service.info', 'the hypervisor carries on');
});
