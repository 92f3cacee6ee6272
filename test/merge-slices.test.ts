import test from 'ava';
import { MERGE_SLICE, mergeInSlices } from '../actors/cdb/merge-slices.js';
import type { StoredRecord } from '../adapters/store.js';

const records = (count: number): StoredRecord[] =>
  Array.from({ length: count }, (_, index) => ({ key: `object/network/n${index}`, value: { name: `n${index}` }, version: { wall: index, logical: 0, node: 'n1' }, origin: 'n1' }));

test('a merge of up to a slice is one call, in the same turn', async (t) => {
  const calls: number[] = [];
  const done = mergeInSlices(records(MERGE_SLICE), async (slice) => void calls.push(slice.length));
  t.deepEqual(calls, [MERGE_SLICE], 'called before the first await');
  await done;
});

test('a larger merge is sliced, a slice per turn, in order, and resolves once every slice has', async (t) => {
  const calls: string[] = [];
  let resolveSecond: () => void = () => undefined;
  const done = mergeInSlices(records(2 * MERGE_SLICE + 500), (slice) => {
    calls.push(`${slice[0]!.key}+${slice.length}`);
    return calls.length === 2 ? new Promise<void>((resolve) => (resolveSecond = resolve)) : Promise.resolve();
  });
  t.deepEqual(calls, [`object/network/n0+${MERGE_SLICE}`], 'the first slice at once, the rest in later turns');
  let settled = false;
  void done.then(() => (settled = true));
  // Turns of the event loop, counted rather than timed: a timer could fire between two slices on a loaded machine.
  let turns = 0;
  while (calls.length < 3 && turns < 100) {
    await new Promise<void>((resolve) => setImmediate(resolve));
    turns += 1;
  }
  t.true(turns >= 2, `a slice per turn: three slices took ${turns} turns after the first`);
  t.deepEqual(calls, [`object/network/n0+${MERGE_SLICE}`, `object/network/n${MERGE_SLICE}+${MERGE_SLICE}`, `object/network/n${2 * MERGE_SLICE}+500`]);
  t.false(settled, 'not before the second slice is durable');
  resolveSecond();
  await done;
});

test('once a slice fails, no further slice is merged and the merge fails with its error', async (t) => {
  let calls = 0;
  const error = await t.throwsAsync(
    mergeInSlices(records(5 * MERGE_SLICE), async () => {
      calls += 1;
      if (calls === 2) throw new Error('the store refused the write');
    }),
  );
  t.is(error?.message, 'the store refused the write');
  t.is(calls, 2, 'the slices after the failed one are not merged');
});
