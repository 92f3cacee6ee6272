import test from 'ava';
import { z } from 'zod';
import { isStoredRecord, snapshotPageSchema } from '../actors/cdb/sync-protocol.js';
import { nameSchema } from '../runtime/path.js';

/** What a record on the wire was checked against before the hand-written check: it is the reference. */
const reference = z.strictObject({
  key: z.string().min(1).max(512),
  value: z.unknown(),
  version: z.strictObject({ wall: z.number().int().min(0), logical: z.number().int().min(0), node: nameSchema }),
  origin: nameSchema,
  deleted: z.boolean().optional(),
});

const good = { key: 'object/system/web', value: { name: 'web' }, version: { wall: 1_764_600_000_000, logical: 3, node: 'n1' }, origin: 'n1' };

/** Each a change of one field of a good record: [what, the record]. */
const variants: [string, unknown][] = [
  ['good', good],
  ['a tombstone', { ...good, value: null, deleted: true }],
  ['no value', { key: good.key, version: good.version, origin: good.origin }],
  ['deleted false', { ...good, deleted: false }],
  ['deleted as a number', { ...good, deleted: 1 }],
  ['an extra field', { ...good, extra: 1 }],
  ['an empty key', { ...good, key: '' }],
  ['a key of 512', { ...good, key: 'k'.repeat(512) }],
  ['a key of 513', { ...good, key: 'k'.repeat(513) }],
  ['a key as a number', { ...good, key: 5 }],
  ['no origin', { key: good.key, value: good.value, version: good.version }],
  ['an origin against the naming rule', { ...good, origin: 'N1' }],
  ['an origin of 64 characters', { ...good, origin: 'n'.repeat(64) }],
  ['a negative wall', { ...good, version: { ...good.version, wall: -1 } }],
  ['a fractional logical', { ...good, version: { ...good.version, logical: 0.5 } }],
  ['a wall past 2^53', { ...good, version: { ...good.version, wall: 2 ** 53 } }],
  ['a wall as a string', { ...good, version: { ...good.version, wall: '1' } }],
  ['a version node against the rule', { ...good, version: { ...good.version, node: '' } }],
  ['a version without node', { ...good, version: { wall: 1, logical: 0 } }],
  ['a version with an extra field', { ...good, version: { ...good.version, extra: 0 } }],
  ['a version swapping node for an extra field', { ...good, version: { wall: 1, logical: 0, extra: 'n1' } }],
  ['a version as an array', { ...good, version: [1, 0, 'n1'] }],
  ['an array', [good]],
  ['null', null],
  ['a string', 'object/system/web'],
];

for (const [what, record] of variants) {
  test(`a record on the wire (${what}) is taken exactly when the zod schema it replaced takes it`, (t) => {
    t.is(isStoredRecord(record), reference.safeParse(record).success);
  });
}

test('a snapshot page with one bad record is refused, naming the record', (t) => {
  const digest = { k: 'digest', node: 'n1', incarnation: 1, highWater: 1, seen: {} };
  t.true(snapshotPageSchema.safeParse({ records: [good, good], digest }).success);
  const result = snapshotPageSchema.safeParse({ records: [good, { ...good, origin: 'N1' }], digest });
  t.false(result.success);
  t.deepEqual(result.error?.issues[0]?.path, ['records', 1]);
  t.regex(result.error?.issues[0]?.message ?? '', /not a CDB record/);
});
