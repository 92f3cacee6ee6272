/**
 * The CDB's watch table on its own: a commit reaches each watcher as cdb.events with only the
 * records under its prefix, in commit order, chunked, and numbered on without a gap.
 */
import test from 'ava';
import type { StoredRecord } from '../adapters/store.js';
import type { CdbEvents } from '../actors/cdb/index.js';
import { WatchTable } from '../actors/cdb/watches.js';
import type { ActorRef } from '../runtime/actor.js';
import type { Message } from '../runtime/messages.js';
import { changesOf } from './helpers/watch.js';

function subscriber(path: string): ActorRef & { told: Message[] } {
  const told: Message[] = [];
  return {
    path,
    told,
    tell: (message) => told.push(message),
    ask: () => Promise.reject(new Error('not asked in this test')),
  };
}

const record = (key: string, wall: number): StoredRecord => ({ key, value: { name: key }, version: { wall, logical: 0, node: 'n1' }, origin: 'n1' });

test('each watcher gets the records under its prefix, one message per commit, chunked at 500 and numbered on without a gap', (t) => {
  const table = new WatchTable();
  const prefixes = ['', 'object/', 'object/system/', 'object/system/b-', 'object/sys', 'meta/', 'object/alarm-target/'];
  const subscribers = prefixes.map((prefix, index) => ({ prefix, ref: subscriber(`acp://lab/n1/s${index}`) }));
  // Everyone but the last is an admin: the last may not read alarm targets.
  subscribers.forEach(({ prefix, ref }, index) => table.add(prefix, index < subscribers.length - 1, ref, () => undefined, []));
  const keys = [
    ...Array.from({ length: 1200 }, (_, index) => `object/system/a-${index}`),
    ...Array.from({ length: 300 }, (_, index) => `object/system/b-${index}`),
    'object/network/lan',
    'meta/node/n1@n1',
    'object/alarm-target/pager',
  ];
  const commits = [keys.slice(0, 700), keys.slice(700)];
  let wall = 1;
  for (const commit of commits) table.publish(commit.map((key) => record(key, wall++)));

  for (const { prefix, ref } of subscribers) {
    const events = ref.told.filter((message): message is CdbEvents => message.type === 'cdb.events');
    t.true(events.every((event) => event.records.length > 0 && event.records.length <= 500), `${prefix}: chunks of 1 to 500`);
    const changes = changesOf(ref.told);
    // The one watcher that is not an admin gets no alarm target.
    const wanted = keys.filter((key) => key.startsWith(prefix) && prefix !== 'object/alarm-target/');
    t.deepEqual(
      changes.map((change) => change.record.key),
      wanted,
      `${JSON.stringify(prefix)}: what it watches, in commit order`,
    );
    t.deepEqual(
      changes.map((change) => change.seq),
      wanted.map((_, index) => index + 1),
      `${JSON.stringify(prefix)}: numbered 1, 2, 3, ...`,
    );
  }
  // The wide watcher of everything: 2 commits of 700 and 803 records are 2 + 2 messages.
  const eventsOf = (ref: { told: Message[] }) => ref.told.filter((message) => message.type === 'cdb.events').length;
  t.is(eventsOf(subscribers[0]!.ref), 4);
  // A watcher of a narrow collection sees a commit it has nothing in as no message at all.
  const meta = subscribers.find((entry) => entry.prefix === 'meta/')!;
  t.is(eventsOf(meta.ref), 1);
});

test('a dropped watcher is told nothing more; the others carry on', (t) => {
  const table = new WatchTable();
  const a = subscriber('acp://lab/n1/a');
  const b = subscriber('acp://lab/n1/b');
  const first = table.add('object/system/', false, a, () => undefined, []);
  table.add('object/system/', false, b, () => undefined, []);
  table.drop(first);
  table.publish([record('object/system/x', 1)]);
  t.is(changesOf(a.told).length, 0);
  t.deepEqual(changesOf(b.told).map((change) => [change.seq, change.record.key]), [[1, 'object/system/x']]);
});
