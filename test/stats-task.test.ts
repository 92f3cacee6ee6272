/**
 * The node's stats as the worker pool collects them (adapters/stats-task.ts), read from /proc and
 * statfs (no df, lsblk or cat started each second): checked against the same sources and against df.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import test from 'ava';
import { collect } from '../adapters/stats-task.js';

test('filesystems, disks and interfaces come from /proc and statfs, rates from the second sample on', async (t) => {
  const first = await collect({ guests: [], previous: {} });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const { node } = await collect({ guests: [], previous: {} });

  const interfaces = readFileSync('/proc/net/dev', 'utf8').split('\n').slice(2).map((line) => line.split(':')[0]!.trim()).filter((name) => name !== '' && name !== 'lo');
  t.deepEqual(node.network.map((nic) => nic.iface).sort(), interfaces.sort(), 'every interface but loopback');
  t.true(first.node.network.every((nic) => nic.rxBytesPerSec === null && nic.txBytesPerSec === null), 'no rate before a second sample');
  t.true(node.network.every((nic) => typeof nic.rxBytesPerSec === 'number' && nic.rxBytesPerSec >= 0 && typeof nic.txBytesPerSec === 'number'));

  // Every block-device filesystem df -l lists is there, with df's size and about its usage.
  const df = execFileSync('df', ['-lkP'], { encoding: 'utf8' }).trim().split('\n').slice(1).map((line) => line.split(/\s+/)).filter((fields) => fields[0]!.startsWith('/dev/'));
  const mounts = new Set(readFileSync('/proc/self/mounts', 'utf8').split('\n').map((line) => line.split(' ')[1]));
  for (const fs of node.filesystems) {
    t.true(mounts.has(fs.mount), `${fs.mount} is mounted`);
    t.true(fs.sizeBytes > 0 && fs.usedBytes >= 0 && fs.usedBytes <= fs.sizeBytes, `${fs.mount}: ${fs.usedBytes} of ${fs.sizeBytes}`);
  }
  const devices = new Set<string>();
  for (const [device, blocks, , , , mount] of df) {
    if (devices.has(device!)) continue;
    devices.add(device!);
    const ours = node.filesystems.find((fs) => fs.mount === mount) ?? node.filesystems.find((fs) => fs.sizeBytes === Number(blocks) * 1024);
    t.truthy(ours, `df's ${device} on ${mount} is reported`);
    t.is(ours?.sizeBytes, Number(blocks) * 1024, `${mount}'s size as df says`);
  }

  if (node.disks) {
    t.true(node.disks.readOps >= 0 && node.disks.writeOps >= 0);
    t.true(node.disks.readOpsPerSec === null || node.disks.readOpsPerSec >= 0);
    t.true(typeof node.disks.writeOpsPerSec === 'number', 'a rate from the second sample on');
  }
  t.true(node.memory.totalBytes > 0 && node.cpuPercent >= 0);
});
