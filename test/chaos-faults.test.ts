/**
 * The faults a live chaos run injects through a node's own daemon (actors/framework/faults.ts):
 * refused with ACP_ERR_FAULTS_DISABLED on a daemon without --faults; on one with it, faults.stop
 * really freezes the daemon and continues it, and faults.kill really kills it and, asked to,
 * starts it again as it was. framework.qemu finds a node's QEMU processes by their command line.
 */
import { spawn } from 'node:child_process';
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { guestOf, qemuProcesses } from '../adapters/qemu-processes.js';
import type { FrameConnection } from '../adapters/frame-listener.js';
import { PartitionGate } from '../actors/agent/partition.js';
import { PROTOCOL_VERSION, type Envelope } from '../runtime/codec.js';
import { connect } from '../node/client.js';
import type { Message } from '../runtime/messages.js';
import type { NodeStatus } from '../runtime/services.js';
import { allRunning, client, eventually, isAlive, makeHome, runCli, startDaemon } from './helpers/node.js';

const FAULTS: Message[] = [
  { type: 'faults.kill' },
  { type: 'faults.kill', restartAfterMs: 100 },
  { type: 'faults.stop', ms: 1000 },
  { type: 'faults.partition', on: true },
  { type: 'faults.drop', rate: 0.5 },
];

test('every fault message is refused with ACP_ERR_FAULTS_DISABLED by a daemon without --faults, which keeps running', async (t) => {
  const home = makeHome(t);
  const daemon = await startDaemon(t, home);
  await allRunning(daemon);
  const api = await client(t, home);
  for (const message of FAULTS) {
    const error = await t.throwsAsync(api.ask('framework', message));
    t.is((error as { code?: string }).code, 'ACP_ERR_FAULTS_DISABLED', JSON.stringify(message));
    t.regex(error!.message, /acp up --faults/);
  }
  t.is((await api.ask<NodeStatus>('framework', { type: 'status' })).pid, daemon.status().pid);
  // The agent's and CDB's own halves are internal: not even the home's key sends them.
  for (const [to, message] of [
    ['agent', { type: 'agent.partition', on: true }],
    ['cdb', { type: 'cdb.sync.partition', on: true }],
  ] as const) {
    const error = await t.throwsAsync(api.ask(to, message));
    t.is((error as { code?: string }).code, 'ACP_ERR_AUTH_FORBIDDEN');
  }
});

test('guestOf reads a QEMU command line as ours only for this home\'s run directory', (t) => {
  const argv = ['/usr/bin/qemu-system-x86_64', '-name', 'acp-web', '-machine', 'pc,accel=tcg', '-qmp', 'unix:/h/a,,b/run/vmm/web/qmp.sock,server=on,wait=off'];
  t.deepEqual(guestOf(argv, '/h/a,b/run/vmm'), { system: 'web', incoming: false });
  t.deepEqual(guestOf([...argv, '-incoming', 'defer'], '/h/a,b/run/vmm'), { system: 'web', incoming: true });
  t.is(guestOf(argv, '/other/run/vmm'), undefined, 'another node on this host');
  t.is(guestOf(['/usr/bin/qemu-system-x86_64', '-name', 'acp-web', '-qmp', 'unix:/h/a,,b/run/vmm/db/qmp.sock'], '/h/a,b/run/vmm'), undefined, 'named for one system, run dir of another');
  t.is(guestOf(['/usr/bin/qemu-system-x86_64', '-name', 'acp-../x', '-qmp', 'unix:/h/run/vmm/../x/qmp.sock'], '/h/run/vmm'), undefined);
  t.is(guestOf(['/bin/sleep', '100'], '/h/run/vmm'), undefined);
});

test('framework.qemu lists a process whose command line names a guest of this home, found in /proc', async (t) => {
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  const api = await client(t, home);
  // Not QEMU, but with a QEMU guest's command line: -name acp-web and its QMP socket in this home.
  const fake = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)', '--', '-name', 'acp-web', '-qmp', `unix:${join(home, 'run', 'vmm', 'web', 'qmp.sock')},server=on,wait=off`], { stdio: 'ignore' });
  t.teardown(() => {
    fake.kill('SIGKILL');
  });
  await eventually(async () => ((await qemuProcesses(home)).length > 0 ? true : undefined), 5000, 'the fake guest in /proc');
  const reply = await api.ask<Message & { processes: { pid: number; system: string; incoming: boolean }[] }>('framework', { type: 'framework.qemu' });
  t.deepEqual(reply.processes, [{ pid: fake.pid!, system: 'web', incoming: false }]);
});

function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

async function detachedStatus(home: string): Promise<NodeStatus | undefined> {
  try {
    const api = await connect({ home });
    try {
      return await api.ask<NodeStatus>('framework', { type: 'status' }, { timeoutMs: 2000 });
    } finally {
      await api.close();
    }
  } catch {
    return undefined;
  }
}

test('with --faults, faults.stop freezes the daemon and continues it; faults.kill kills it and starts it again as it was', async (t) => {
  t.timeout(90_000);
  const home = makeHome(t);
  const up = await runCli(['up', '--detach', '--faults'], home);
  t.is(up.code, 0, up.stderr);
  const before = (await detachedStatus(home))!;
  t.true(before.faults);
  const api = await connect({ home });
  const stopping = await api.ask<Message & { pid: number; helper: number; ms: number }>('framework', { type: 'faults.stop', ms: 1500 });
  t.is(stopping.pid, before.pid);
  await eventually(() => (processState(before.pid) === 'T' ? true : undefined), 5000, 'the daemon stopped (state T)');
  await eventually(() => (processState(before.pid) === 'S' || processState(before.pid) === 'R' ? true : undefined), 10_000, 'the daemon continued');
  t.is((await api.ask<NodeStatus>('framework', { type: 'status' })).incarnation, before.incarnation, 'the same daemon answers after its stop');
  const killing = await api.ask<Message & { pid: number; restartAfterMs: number | null }>('framework', { type: 'faults.kill', restartAfterMs: 1000 });
  t.is(killing.restartAfterMs, 1000);
  await eventually(() => (isAlive(before.pid) && processState(before.pid) !== 'Z' ? undefined : true), 10_000, 'the daemon killed');
  await api.close().catch(() => undefined);
  const after = await eventually(async () => {
    const status = await detachedStatus(home);
    return status && status.incarnation !== before.incarnation && !status.booting ? status : undefined;
  }, 30_000, 'the daemon started again');
  t.not(after.pid, before.pid);
  t.true(after.faults, 'started again with its own flags (--faults)');
  const helperLog = readFileSync(join(home, 'log', 'fault-helper.log'), 'utf8');
  t.regex(helperLog, /"event":"stopped"/);
  t.regex(helperLog, /"event":"continued".*"done":true/);
  t.regex(helperLog, /"event":"killed"/);
  t.regex(helperLog, /"event":"restarted"/);
});

test('the partition gate drops peer frames both ways and peer hellos while on, never a script\'s, and lets all through once healed', (t) => {
  const sent: Envelope[] = [];
  const raw: FrameConnection = { id: 'c1', send: (envelope) => sent.push(envelope), close: () => undefined, pendingWriteBytes: 0, onDrain: () => undefined, greeted: () => undefined };
  const gate = new PartitionGate();
  let peer = true;
  const gated = gate.wrap(raw, () => peer);
  const ping: Envelope = { v: PROTOCOL_VERSION, k: 'ping' };
  const peerHello: Envelope = { v: PROTOCOL_VERSION, k: 'hello', body: { role: 'peer', node: 'n2' } };
  const scriptHello: Envelope = { v: PROTOCOL_VERSION, k: 'hello', body: { role: 'client', node: 'n2' } };
  gated.send(ping);
  t.is(sent.length, 1);
  gate.set(true);
  t.true(gate.partitioned);
  gated.send(ping);
  t.is(sent.length, 1, 'a peer connection sends nothing while partitioned');
  t.true(gate.dropsInbound(true, ping));
  t.true(gate.dropsInbound(false, peerHello), "a peer's hello on a new connection goes unanswered");
  t.false(gate.dropsInbound(false, scriptHello));
  t.false(gate.dropsInbound(false, ping));
  peer = false;
  gated.send(ping);
  t.is(sent.length, 2, "a script's connection is not cluster traffic");
  peer = true;
  gate.set(false);
  gated.send(ping);
  t.is(sent.length, 3);
  t.false(gate.dropsInbound(true, ping));
  t.is(gated.id, 'c1');
});
