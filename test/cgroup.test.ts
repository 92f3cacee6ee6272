import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { cgroupSupport, limitProcess } from '../adapters/cgroup.js';

/** A directory laid out like a cgroup v2 root (the files the kernel would show), to check what gets written. */
function fakeRoot(t: import('ava').ExecutionContext, controllers: string): string {
  const root = mkdtempSync(join(tmpdir(), 'acp-cgroup-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  writeFileSync(join(root, 'cgroup.controllers'), controllers);
  return root;
}

test('a VMM container gets CPU and memory limits from its system size, under acp/<node>/<id>', (t) => {
  const root = fakeRoot(t, 'cpuset cpu io memory pids\n');
  const placed = limitProcess(4242, 'n1', 'vm1', { vcpus: 2, memoryMiB: 512 }, root);
  t.like(placed, { ok: true, path: join(root, 'acp', 'n1', 'vm1') });
  const dir = join(root, 'acp', 'n1', 'vm1');
  t.is(readFileSync(join(dir, 'cpu.max'), 'utf8'), '200000 100000');
  t.is(readFileSync(join(dir, 'memory.max'), 'utf8'), String((512 + 256) * 1024 * 1024));
  t.is(readFileSync(join(dir, 'cgroup.procs'), 'utf8'), '4242');
  for (const level of [root, join(root, 'acp'), join(root, 'acp', 'n1')]) t.is(readFileSync(join(level, 'cgroup.subtree_control'), 'utf8'), '+cpu +memory');
});

test('without cgroup v2, or without its cpu or memory controller, the reason is given', (t) => {
  const none = mkdtempSync(join(tmpdir(), 'acp-cgroup-'));
  t.teardown(() => rmSync(none, { recursive: true, force: true }));
  t.like(cgroupSupport(none), { ok: false, why: `${none} is not a cgroup v2 hierarchy` });
  const noMemory = fakeRoot(t, 'cpu pids\n');
  t.like(limitProcess(1, 'n1', 'vm1', { vcpus: 1, memoryMiB: 128 }, noMemory), { ok: false, why: 'cgroup v2 has no memory controller here' });
});
