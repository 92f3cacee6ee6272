import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { open } from 'lmdb';
import { ObjectStore, type StoredRecord } from '../adapters/store.js';

const record = (key: string, wall: number): StoredRecord => ({ key, value: { name: key.split('/').at(-1), nested: { list: [1, 'two', null] } }, version: { wall, logical: 0, node: 'n1' }, origin: 'n1' });

test('a store written with lmdb-js defaults (msgpackr records, as before plain maps) reads back, and takes new writes beside it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'acp-store-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'cdb');
  const old = open<StoredRecord, string>({ path, overlappingSync: false, compression: false });
  await old.put('object/system/a', record('object/system/a', 1));
  t.is(old.getBinary('object/system/a')?.[0], 0xd4, 'the old encoding starts with a record definition');
  await old.close();

  const store = ObjectStore.open(path);
  t.teardown(() => store.close());
  t.deepEqual(store.get('object/system/a'), record('object/system/a', 1));
  await store.write([record('object/system/b', 2)]);
  t.deepEqual(store.range('object/system/', undefined, 10), [record('object/system/a', 1), record('object/system/b', 2)]);
  t.deepEqual([...store.all()].map((stored) => stored.key), ['object/system/a', 'object/system/b']);
});
