/**
 * The node's stats as the worker pool collects them (adapters/stats-task.ts), read from /proc and
 * statfs (no df, lsblk or cat started each second): checked against the same sources and against df.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import test from 'ava';
import { collect } from '../adapters/stats-task.js';
import { runsWhen } from './helpers/requires.js';

test('filesystems, disks and interfaces come from /proc and statfs, rates from the second sample on', async (t) => {
  const interfaces = () => readFileSync('/proc/net/dev', 'utf8').split('\n').slice(2).map((line) => line.split(':')[0]!.trim()).filter((name) => name !== '' && name !== 'lo');
  const first = await collect({ guests: [], previous: {} });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const before = interfaces();
  const { node } = await collect({ guests: [], previous: {} });
  const after = interfaces();
  // Every interface but loopback (one made or removed by another test meanwhile may or may not be in).
  const ours = node.network.map((nic) => nic.iface);
  t.true(before.filter((name) => after.includes(name)).every((name) => ours.includes(name)), `${ours.join(',')} has every interface of ${before.join(',')}`);
  t.true(ours.every((name) => before.includes(name) || after.includes(name)));
  t.false(ours.includes('lo'));
  t.true(first.node.network.every((nic) => nic.rxBytesPerSec === null && nic.txBytesPerSec === null), 'no rate before a second sample');
  const sampledTwice = node.network.filter((nic) => first.node.network.some((earlier) => earlier.iface === nic.iface));
  t.true(sampledTwice.length > 0);
  t.true(sampledTwice.every((nic) => typeof nic.rxBytesPerSec === 'number' && nic.rxBytesPerSec >= 0 && typeof nic.txBytesPerSec === 'number'));

  // The root filesystem, when it is on a block device, is there with df's size (other mounts come
  // and go while other test files run: loop devices of the storage tests).
  const root = execFileSync('df', ['-kP', '/'], { encoding: 'utf8' }).trim().split('\n')[1]!.split(/\s+/);
  for (const fs of node.filesystems) t.true(fs.sizeBytes > 0 && fs.usedBytes >= 0 && fs.usedBytes <= fs.sizeBytes, `${fs.mount}: ${fs.usedBytes} of ${fs.sizeBytes}`);
  if (root[0]!.startsWith('/dev/')) {
    const rootFs = node.filesystems.find((fs) => fs.mount === '/');
    t.truthy(rootFs, `the root filesystem (${root[0]}) is reported`);
    t.is(rootFs?.sizeBytes, Number(root[1]) * 1024, 'its size as df says');
  }

  if (node.disks) {
    t.true(node.disks.readOps >= 0 && node.disks.writeOps >= 0);
    t.true(node.disks.readOpsPerSec === null || node.disks.readOpsPerSec >= 0);
    t.true(typeof node.disks.writeOpsPerSec === 'number', 'a rate from the second sample on');
  }
  t.true(node.memory.totalBytes > 0 && node.cpuPercent >= 0);
});

const cannotMakeNamespaces = process.getuid?.() !== 0 ? 'making a network namespace needs root' : undefined;

runsWhen(cannotMakeNamespaces)('a network namespace bound at /run/netns (nsfs, no blocks) is not reported as a filesystem', async (t) => {
  const name = `acp-stats-${process.pid}`;
  execFileSync('ip', ['netns', 'add', name]);
  try {
    t.true(readFileSync('/proc/self/mounts', 'utf8').includes(`/run/netns/${name} nsfs`), 'the namespace is mounted');
    const { node } = await collect({ guests: [], previous: {} });
    t.false(node.filesystems.some((fs) => fs.mount.startsWith('/run/netns/')), node.filesystems.map((fs) => fs.mount).join(', '));
    t.true(node.filesystems.every((fs) => fs.sizeBytes > 0));
  } finally {
    execFileSync('ip', ['netns', 'del', name]);
  }
});
