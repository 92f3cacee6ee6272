/**
 * Faults around systems: a refused migration, a hung QEMU (SIGSTOP) being stopped or paused, and
 * a daemon killed under its guests. Nothing may be left running, and nothing may hang the hypervisor.
 */
import { execFileSync } from 'node:child_process';
import test from 'ava';
import type { SystemMeta } from '../actors/hypervisor/index.js';
import { guestImage } from '../adapters/guest-image.js';
import type { AcpClient } from '../runtime/client.js';
import type { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { isGone } from '../node/harness/net.js';
import { systemMeta, systemNode } from './helpers/system.js';
import { eventually, makeHome, runCli } from './helpers/node.js';
import { guestMissing, qemuMissing, runsWhen } from './helpers/requires.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function simRunning(api: AcpClient, id: string, extra: Record<string, unknown> = {}): Promise<void> {
  await api.ask('cdb', { type: 'cdb.put', key: `object/system/${id}`, value: { name: id, driver: 'sim', ...extra } });
  await api.ask('hypervisor', { type: 'system.start', id });
}

test('migrate --to with a bad node name is refused and leaves the system running (not stuck in migrating)', async (t) => {
  const { api } = await systemNode(t);
  await simRunning(api, 's1');
  const refused = await t.throwsAsync(api.ask('hypervisor', { type: 'system.migrate', id: 's1', to: 'Bad Node' }));
  t.log('migrate refused with:', (refused as AcpError).code, refused!.message);
  const after = await systemMeta(api, 's1');
  t.log('state after the refused migrate:', after.state);
  t.is(after.state, 'running', 'a refused migrate must leave the system running');
  // And it can still be stopped.
  await t.notThrowsAsync(api.ask('hypervisor', { type: 'system.stop', id: 's1' }));
});

runsWhen(qemuMissing())('a start refused for a kernel that does not exist leaves the system stopped with the reason, not crashed (no crash alarm, no restarts)', async (t) => {
  const { api } = await systemNode(t);
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/nok', value: { name: 'nok', driver: 'qemu', memoryMiB: 64, boot: { kernel: '/nonexistent/vmlinuz' } } });
  const refused = await t.throwsAsync(api.ask('hypervisor', { type: 'system.start', id: 'nok' }, { timeoutMs: 60_000 }));
  t.regex(refused!.message, /vmlinuz/);
  const after = await systemMeta(api, 'nok');
  t.is(after.state, 'stopped');
  t.regex(String(after.reason), /^start failed: /);
  t.is(after.restarts, 0);
  t.deepEqual(after.history?.map((step) => step.event), ['start', 'start-failed']);
});

const image = guestImage();
const guestAbsent = guestMissing();

runsWhen(guestAbsent)('stopping a hung QEMU leaves neither QEMU nor its VMM container behind', async (t) => {
  t.timeout(120_000);
  const { home, api } = await systemNode(t);
  const created = await runCli(['system', 'create', 'g1', '--driver', 'qemu', '--memory', '128', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', image!.cmdline], home);
  t.is(created.code, 0, created.stderr);
  const started = await api.ask<Message & SystemMeta>('hypervisor', { type: 'system.start', id: 'g1' }, { timeoutMs: 60_000 });
  const qemuPid = started.pid!;
  const vmmPid = started.vmmPid!;
  t.teardown(() => {
    for (const pid of [qemuPid, vmmPid]) {
      try {
        process.kill(pid, 'SIGCONT');
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
  // QEMU hangs (stands for a QEMU stuck in D state / wedged monitor): QMP never answers.
  process.kill(qemuPid, 'SIGSTOP');
  const stopped = await api.ask<Message & SystemMeta>('hypervisor', { type: 'system.stop', id: 'g1', timeoutMs: 1000 }, { timeoutMs: 60_000 });
  t.is(stopped.state, 'stopped');
  const gone = await eventually(() => (isGone(vmmPid) && isGone(qemuPid) ? true : undefined), 15_000, 'QEMU and its VMM container to be gone once the system is stopped');
  t.true(gone && isGone(vmmPid) && isGone(qemuPid));
});

runsWhen(guestAbsent)('a daemon that dies (kill -9) takes its VMM containers with it and leaves its QEMU guests running', async (t) => {
  t.timeout(120_000);
  const home = makeHome(t);
  const up = await runCli(['up', '--detach'], home);
  t.is(up.code, 0, up.stderr);
  const created = await runCli(['system', 'create', 'g2', '--driver', 'qemu', '--memory', '128', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', image!.cmdline], home);
  t.is(created.code, 0, created.stderr);
  const started = await runCli(['--json', 'system', 'start', 'g2'], home, 90_000);
  t.is(started.code, 0, started.stderr);
  const { pid: qemuPid, vmmPid } = JSON.parse(started.stdout) as SystemMeta;
  t.teardown(() => {
    for (const pid of [qemuPid!, vmmPid!]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
  const daemonPid = Number(execFileSync('cat', [`${home}/run/acpd.pid`], { encoding: 'utf8' }));
  process.kill(daemonPid, 'SIGKILL');
  // The VMM container goes with the daemon; the guest runs on in its own session (the next
  // daemon adopts it: test/guests.solo.test.ts).
  const gone = await eventually(() => (isGone(vmmPid!) ? true : undefined), 15_000, 'the VMM container not to outlive the daemon');
  t.true(gone);
  t.false(isGone(qemuPid!), 'the guest outlives the daemon');
});

runsWhen(guestAbsent)('pausing a hung QEMU does not hold the hypervisor mailbox (other systems stay answerable)', async (t) => {
  t.timeout(120_000);
  const { home, api } = await systemNode(t);
  const created = await runCli(['system', 'create', 'g3', '--driver', 'qemu', '--memory', '128', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', image!.cmdline], home);
  t.is(created.code, 0, created.stderr);
  const started = await api.ask<Message & SystemMeta>('hypervisor', { type: 'system.start', id: 'g3' }, { timeoutMs: 60_000 });
  t.teardown(() => {
    for (const pid of [started.pid!, started.vmmPid!]) {
      try {
        process.kill(pid, 'SIGCONT');
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
  process.kill(started.pid!, 'SIGSTOP');
  const pause = api.ask('hypervisor', { type: 'system.pause', id: 'g3' }, { timeoutMs: 30_000 }).then(
    () => 'ok',
    (error: AcpError) => error.message,
  );
  await sleep(100);
  // Asked after the pause: answered while the pause still waits on the hung QEMU.
  const order: string[] = [];
  await Promise.all([
    pause.then((outcome) => order.push(`pause: ${outcome}`)),
    api.ask('hypervisor', { type: 'system.status' }, { timeoutMs: 30_000 }).then(() => order.push('status')),
  ]);
  t.is(order[0], 'status', `answered first: ${order.join(', ')}`);
  t.regex(order[1]!, /pause: .*did not answer 'stop'/);
});
