/**
 * `acp chaos run FILE --cluster` against three real daemons started with --faults (the harness
 * starts them in network namespaces, but the run does not use its namespace tools: it is run as a
 * node's own `acp`, inside that node's namespace, and every fault travels as a message to the
 * faulted node's daemon). The scenario kills the node running an HA system and has it restarted,
 * partitions a node and heals it, freezes one, and makes one drop sync traffic, with an HA sim system
 * and an HA QEMU guest (the test guest) on the node killed: the run must pass,
 * report a recovery time for each fault, check its CDB writes on all three nodes, and leave the
 * cluster as it found it (its system and writes removed).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestImage } from '../adapters/guest-image.js';
import type { ChaosReport } from '../node/chaos/run.js';
import { Harness, harnessAvailable } from '../node/harness/index.js';
import type { Message } from '../runtime/messages.js';
import { guestMissing, runsWhen } from './helpers/requires.js';

const available = harnessAvailable();
const image = guestImage();
const guestAbsent = guestMissing();

const scenario = {
  name: 'live-mix',
  // An HA sim system and an HA QEMU guest (the test guest), both on n2.
  systems: [
    { id: 'web', ha: true, driver: 'sim', node: 'n2' },
    { id: 'vm', ha: true, driver: 'qemu', node: 'n2', kernel: image?.kernel, initrd: image?.initrd, cmdline: image?.cmdline, memoryMiB: 128 },
  ],
  steps: ['kill n2', 'wait 9s', 'restart n2', 'wait 2s', 'partition n1', 'wait 9s', 'heal', 'wait 3s', 'stop n3 3s', 'wait 1s', 'drop n2 30%', 'wait 3s', 'drop n2 0%', 'wait 2s'],
};

runsWhen(available.ok ? guestAbsent : available.why)('acp chaos run --cluster injects each fault through the node\'s own daemon and passes, with recovery times and every acknowledged write found', async (t) => {
  t.timeout(240_000);
  const dir = mkdtempSync(join(tmpdir(), 'acp-chaos-live-'));
  const h = await Harness.start({ nodes: ['n1', 'n2', 'n3'] });
  try {
    await h.waitSynced(60_000);
    const file = join(dir, 'live-mix.json');
    const out = join(dir, 'report.json');
    writeFileSync(file, JSON.stringify(scenario));
    const killedPid = h.node('n2').pid;
    const result = await h.cli('n1', ['chaos', 'run', file, '--cluster', '--bound', '15s', '--report', out], 200_000);
    t.is(result.code, 0, `${result.stdout}\n${result.stderr}`);
    t.regex(result.stdout, /live-mix: passed/);
    t.regex(result.stdout, /cdb writes: \d+ made, \d+ acknowledged/);
    const report = JSON.parse(readFileSync(out, 'utf8')) as ChaosReport;
    t.is(report.mode, 'cluster');
    t.deepEqual(report.nodes, ['n1', 'n2', 'n3']);
    t.deepEqual(report.violations, []);
    t.deepEqual(report.leftDown, []);
    t.deepEqual(report.recoveries.map((recovery) => recovery.text), ['kill n2', 'partition n1', 'stop n3 3s', 'drop n2 30%']);
    // 15 s: a partitioned node that was primary and ran the system costs an election, the lease and the fence timeout (about 9 s seen); the failover tests and bench hold the 10 s goal.
    for (const recovery of report.recoveries) t.true(recovery.recoveryMs !== null && recovery.recoveryMs <= report.boundMs, `${recovery.text}: ${recovery.recoveryMs} ms`);
    // Both ran on n2: the kill had to fail them over (vm's QEMU killed by n2's fence guard first).
    t.not(report.recoveries[0]!.runningOn?.web, 'n2');
    t.not(report.recoveries[0]!.runningOn?.vm, 'n2');
    // The QEMU count ran all along: vm's QEMU seen on n2, then elsewhere, never two at once (no violation).
    t.true(report.qemu.vm!.samples > 50, JSON.stringify(report.qemu));
    t.true(report.qemu.vm!.nodes.includes('n2') && report.qemu.vm!.nodes.length >= 2, JSON.stringify(report.qemu));
    t.true(report.writes.acked > 20, JSON.stringify(report.writes));
    t.deepEqual(report.writes.checkedOn, ['n1', 'n2', 'n3']);
    t.true(report.writes.convergedMs !== null);
    t.log(`vm's QEMU seen in ${report.qemu.vm!.samples} of ${report.samples} samples, on ${report.qemu.vm!.nodes.join(', ')}`);
    t.log(report.recoveries.map((recovery) => `${recovery.text}: ${recovery.recoveryMs} ms`).join('; '), `writes ${JSON.stringify(report.writes)}`);

    // The faults went through the daemons: their own helpers and logs say so.
    const helperLog = (node: string) => readFileSync(join(h.node(node).home, 'log', 'fault-helper.log'), 'utf8');
    t.regex(helperLog('n2'), /"event":"killed","target":\d+/);
    t.regex(helperLog('n2'), /"event":"restarted"/);
    t.regex(helperLog('n3'), /"event":"stopped"[^\n]*"ms":3000/);
    t.regex(helperLog('n3'), /"event":"continued"[^\n]*"done":true/);
    t.regex(readFileSync(join(h.node('n1').home, 'log', 'acpd.log'), 'utf8'), /partitioned by a fault/);
    // n2 is a new daemon (the old pid is gone), started again by its helper with its own flags.
    const n2 = await h.client('n2');
    const status = await n2.ask<Message & { pid: number; faults: boolean }>('framework', { type: 'status' });
    t.not(status.pid, killedPid);
    t.true(status.faults);
    // The run removed what it made.
    const n1 = await h.client('n1');
    const left = await n1.ask<Message & { records: unknown[] }>('cdb', { type: 'cdb.list', prefix: 'object/chaos/' });
    t.deepEqual(left.records, []);
    const system = await n1.ask<Message & { records: unknown[] }>('cdb', { type: 'cdb.list', prefix: 'object/system/' });
    t.deepEqual(system.records, []);
  } finally {
    await h.teardown();
    rmSync(dir, { recursive: true, force: true });
  }
});

runsWhen(available.ok ? undefined : available.why)('acp chaos run --cluster on nodes without --faults stops at the first fault with ACP_ERR_FAULTS_DISABLED', async (t) => {
  t.timeout(120_000);
  const dir = mkdtempSync(join(tmpdir(), 'acp-chaos-live-'));
  const h = await Harness.start({ nodes: ['n1', 'n2'], faults: false });
  try {
    await h.waitSynced(60_000);
    const file = join(dir, 'p.json');
    writeFileSync(file, JSON.stringify({ name: 'p', systems: [{ id: 'web', ha: true, driver: 'sim', node: 'n1' }], steps: ['partition n2', 'wait 1s', 'heal'] }));
    const result = await h.cli('n1', ['chaos', 'run', file, '--cluster'], 100_000);
    t.not(result.code, 0);
    t.regex(result.stderr, /ACP_ERR_FAULTS_DISABLED/);
    t.regex(result.stderr, /acp up --faults/);
    // What the run made is removed even so.
    const n1 = await h.client('n1');
    const system = await n1.ask<Message & { records: unknown[] }>('cdb', { type: 'cdb.list', prefix: 'object/system/' });
    t.deepEqual(system.records, []);
  } finally {
    await h.teardown();
    rmSync(dir, { recursive: true, force: true });
  }
});
