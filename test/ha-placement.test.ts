/** HA placement (actors/ha/placement.ts): capacity, anti-affinity, node affinity with priorities (strict or not), and deterministic ties. */
import test from 'ava';
import { bestNode, unfit } from '../actors/ha/placement.js';
import type { HaNodeSpec, HaSystemSpec } from '../actors/ha/protocol.js';

const node = (name: string, memoryMiB = 4096, vcpus = 4): HaNodeSpec => ({ name, memoryMiB, vcpus, maintenance: false });
const system = (id: string, extra: Partial<HaSystemSpec> = {}): HaSystemSpec => ({ id, memoryMiB: 1024, vcpus: 1, want: 'started', ...extra });
const nodes = [node('n1'), node('n2'), node('n3')];

test('with nothing placed and no preference, ties go to the first node by name, every time', (t) => {
  const specs = new Map([['a', system('a')]]);
  t.is(bestNode(system('a'), nodes, [], specs), 'n1');
  t.is(bestNode(system('a'), [...nodes].reverse(), [], specs), 'n1');
});

test('the least loaded node wins among equals', (t) => {
  const specs = new Map([['a', system('a')], ['b', system('b')], ['c', system('c')]]);
  t.is(bestNode(system('c'), nodes, [{ id: 'a', node: 'n1' }, { id: 'b', node: 'n2' }], specs), 'n3');
});

test('node affinity: the highest priority that fits; others only after, never when strict', (t) => {
  const big = system('big', { memoryMiB: 3072 });
  const specs = new Map([['big', big], ['x', system('x', { memoryMiB: 2048 })]]);
  const preferring = system('p', { memoryMiB: 3072, prefer: { n3: 2, n2: 1 } });
  specs.set('p', preferring);
  t.is(bestNode(preferring, nodes, [], specs), 'n3');
  // n3 full: the next preferred.
  t.is(bestNode(preferring, nodes, [{ id: 'x', node: 'n3' }], specs), 'n2');
  // Both preferred full: any other node when not strict, none when strict.
  const placed = [{ id: 'x', node: 'n3' }, { id: 'big', node: 'n2' }];
  t.is(bestNode(preferring, nodes, placed, specs), 'n1');
  const strict = { ...preferring, strict: true };
  t.is(bestNode(strict, nodes, placed, specs), null);
  t.is(unfit(strict, node('n1'), placed, specs), 'not a preferred node (strict)');
});

test('capacity counts memory and vCPUs of what is placed', (t) => {
  const specs = new Map([['a', system('a', { memoryMiB: 3072 })], ['b', system('b', { vcpus: 4 })], ['c', system('c', { memoryMiB: 1024, vcpus: 1 })]]);
  t.regex(unfit(system('c'), node('n1'), [{ id: 'a', node: 'n1' }, { id: 'b', node: 'n1' }], specs) ?? '', /memory|vCPUs/);
  t.is(unfit(system('c'), node('n1'), [{ id: 'a', node: 'n1' }], specs), null);
  t.is(unfit(system('c', { vcpus: 2 }), node('n1', 8192, 4), [{ id: 'b', node: 'n1' }], specs), '6 vCPUs over 4');
});

test('anti-affinity holds either way round', (t) => {
  const a = system('a');
  const b = system('b', { antiAffinity: ['a'] });
  const specs = new Map([['a', a], ['b', b]]);
  t.is(unfit(b, node('n1'), [{ id: 'a', node: 'n1' }], specs), 'anti-affinity with a');
  t.is(unfit(a, node('n1'), [{ id: 'b', node: 'n1' }], specs), 'anti-affinity with b');
  t.is(bestNode(b, [node('n1')], [{ id: 'a', node: 'n1' }], specs), null);
  t.is(bestNode(b, nodes, [{ id: 'a', node: 'n1' }], specs), 'n2');
});
