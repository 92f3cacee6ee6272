import test, { type ExecutionContext } from 'ava';
import { compareVersions, parseVersion, type Version } from '../actors/cdb/hlc.js';
import type { CdbSnapshot, RecordView } from '../actors/cdb/index.js';
import type { AcpClient } from '../runtime/client.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { FakePeer, initNode, localClient, up } from './helpers/agent.js';
import { eventually } from './helpers/node.js';
import { changesOf } from './helpers/watch.js';

type Written = Message & { type: 'cdb.written'; key: string; version: string };
type RecordReply = Message & { type: 'cdb.record'; record: RecordView };
type Merged = Message & { type: 'cdb.merged'; applied: number; skipped: number };

interface MergeRecord {
  key: string;
  value: unknown;
  version: Version;
  origin: string;
  deleted?: boolean;
}

const WAIT_MS = 10_000;

interface Booted extends AcpClient {
  peer: FakePeer;
}

/**
 * A node of cluster lab (n1) and a stand-in for its peer n2: merges come only from the other
 * nodes' CDBs, so the tests send them as n2's CDB would, through n1's agent.
 */
async function boot(t: ExecutionContext): Promise<Booted> {
  const node = await up(await initNode(t, 'n1'));
  const connection = await localClient(t, node.home);
  const peer = await FakePeer.connect(t, node, 'n2');
  return Object.assign(connection, { peer });
}

const put = (connection: AcpClient, key: string, value: unknown) => connection.ask<Written>('cdb', { type: 'cdb.put', key, value }, { timeoutMs: WAIT_MS });
const get = (connection: AcpClient, key: string) => connection.ask<RecordReply>('cdb', { type: 'cdb.get', key }, { timeoutMs: WAIT_MS });
const merge = async (connection: Booted, records: MergeRecord[]): Promise<Merged> => {
  const answer = await connection.peer.ask('acp://lab/n1/cdb', { type: 'cdb.merge', records }, 'actor:acp://lab/n2/cdb', WAIT_MS);
  if (answer.k === 'error') throw AcpError.fromData(answer.err!);
  return answer.body as Merged;
};

function versionOf(text: string): Version {
  const version = parseVersion(text);
  if (!version) throw new Error(`not a version: ${text}`);
  return version;
}

const text = (version: Version) => `${version.wall}.${version.logical}@${version.node}`;

async function notFound(t: ExecutionContext, connection: AcpClient, key: string): Promise<void> {
  const error = await t.throwsAsync(get(connection, key), { instanceOf: AcpError });
  t.is(error instanceof AcpError ? error.code : undefined, 'ACP_ERR_CDB_NOT_FOUND');
}

test('merge: a newer version replaces the local record; an older one is skipped', async (t) => {
  const connection = await boot(t);
  const key = 'object/network/net1';
  const local = versionOf((await put(connection, key, { name: 'net1', type: 'bridge' })).version);

  const newer: Version = { wall: local.wall + 1000, logical: 0, node: 'n2' };
  const applied = await merge(connection, [{ key, value: { name: 'net1', type: 'vlan', vlan: 42 }, version: newer, origin: 'n2' }]);
  t.like(applied, { type: 'cdb.merged', applied: 1, skipped: 0 });
  const afterNewer = (await get(connection, key)).record;
  t.deepEqual(afterNewer.value, { name: 'net1', type: 'vlan', vlan: 42 });
  t.is(afterNewer.version, text(newer));
  t.is(afterNewer.origin, 'n2');

  const older: Version = { wall: local.wall + 500, logical: 7, node: 'n3' };
  const skipped = await merge(connection, [{ key, value: { name: 'net1', type: 'vlan', vlan: 7 }, version: older, origin: 'n3' }]);
  t.like(skipped, { applied: 0, skipped: 1 });
  const afterOlder = (await get(connection, key)).record;
  t.deepEqual(afterOlder.value, { name: 'net1', type: 'vlan', vlan: 42 });
  t.is(afterOlder.version, text(newer));

  // The very same record again is skipped (equal version does not win).
  t.like(await merge(connection, [{ key, value: { name: 'net1', type: 'vlan', vlan: 99 }, version: newer, origin: 'n2' }]), { applied: 0, skipped: 1 });
  t.deepEqual((await get(connection, key)).record.value, { name: 'net1', type: 'vlan', vlan: 42 });
});

test('merge: within one batch, the winner for a key is the highest version whatever the order', async (t) => {
  const connection = await boot(t);
  const key = 'object/network/multi';
  const base = Date.now() + 10_000;
  const reply = await merge(connection, [
    { key, value: { name: 'multi', type: 'vlan', vlan: 2 }, version: { wall: base + 2, logical: 0, node: 'n2' }, origin: 'n2' },
    { key, value: { name: 'multi', type: 'vlan', vlan: 3 }, version: { wall: base + 3, logical: 0, node: 'n3' }, origin: 'n3' },
    { key, value: { name: 'multi', type: 'vlan', vlan: 1 }, version: { wall: base + 1, logical: 0, node: 'n4' }, origin: 'n4' },
  ]);
  t.is(reply.applied, 1);
  t.is(reply.skipped, 1);
  const record = (await get(connection, key)).record;
  t.deepEqual(record.value, { name: 'multi', type: 'vlan', vlan: 3 });
  t.is(record.version, `${base + 3}.0@n3`);
});

test('merge: a newer tombstone deletes the key, and a later older put does not resurrect it', async (t) => {
  const connection = await boot(t);
  const key = 'object/network/gone';
  const local = versionOf((await put(connection, key, { name: 'gone', type: 'bridge' })).version);
  const tombstone: Version = { wall: local.wall + 1000, logical: 0, node: 'n2' };
  t.like(await merge(connection, [{ key, value: null, version: tombstone, origin: 'n2', deleted: true }]), { applied: 1, skipped: 0 });
  await notFound(t, connection, key);

  const olderPut: Version = { wall: local.wall + 500, logical: 0, node: 'n3' };
  t.like(await merge(connection, [{ key, value: { name: 'gone', type: 'bridge' }, version: olderPut, origin: 'n3' }]), { applied: 0, skipped: 1 });
  await notFound(t, connection, key);

  // A put newer than the tombstone does bring it back.
  const newerPut: Version = { wall: local.wall + 2000, logical: 0, node: 'n3' };
  t.like(await merge(connection, [{ key, value: { name: 'gone', type: 'vlan', vlan: 9 }, version: newerPut, origin: 'n3' }]), { applied: 1, skipped: 0 });
  t.is((await get(connection, key)).record.version, text(newerPut));
});

test('merge: a tombstone for a key never seen here still blocks an older put', async (t) => {
  const connection = await boot(t);
  const key = 'object/network/never';
  const base = Date.now() + 5_000;
  t.like(await merge(connection, [{ key, value: null, version: { wall: base, logical: 0, node: 'n2' }, origin: 'n2', deleted: true }]), { applied: 1 });
  t.like(await merge(connection, [{ key, value: { name: 'never', type: 'bridge' }, version: { wall: base - 1, logical: 0, node: 'n3' }, origin: 'n3' }]), { applied: 0, skipped: 1 });
  await notFound(t, connection, key);
});

// Regression (found by this test, fixed since).
test('merge: a meta tombstone from its writer is not undone by an older put of the same writer arriving later', async (t) => {
  const connection = await boot(t);
  const key = 'meta/node/n2@n2';
  const base = Date.now() + 5_000;
  t.like(await merge(connection, [{ key, value: { up: true }, version: { wall: base, logical: 0, node: 'n2' }, origin: 'n2' }]), { applied: 1 });
  t.like(await merge(connection, [{ key, value: null, version: { wall: base + 20, logical: 0, node: 'n2' }, origin: 'n2', deleted: true }]), { applied: 1 });
  await notFound(t, connection, key);
  // Reordered delivery: a put issued between the two arrives last.
  const late = await merge(connection, [{ key, value: { up: false }, version: { wall: base + 10, logical: 0, node: 'n2' }, origin: 'n2' }]);
  t.like(late, { applied: 0, skipped: 1 });
  await notFound(t, connection, key);
});

test('merge: a meta key from a node that is not its writer is skipped; from its writer it is applied', async (t) => {
  const connection = await boot(t);
  const key = 'meta/node/n2@n2';
  const version: Version = { wall: Date.now() + 1000, logical: 0, node: 'n3' };
  t.like(await merge(connection, [{ key, value: { up: true }, version, origin: 'n3' }]), { applied: 0, skipped: 1 });
  await notFound(t, connection, key);
  // Stats follow the same rule.
  t.like(await merge(connection, [{ key: 'stats/node/n2@n2', value: { cpu: 1 }, version, origin: 'n3' }]), { applied: 0, skipped: 1 });
  // This node's own meta cannot be overwritten by a peer either.
  t.like(await merge(connection, [{ key: 'meta/node/n1@n1', value: { hijacked: true }, version: { wall: Date.now() + 1000, logical: 0, node: 'n2' }, origin: 'n2' }]), { applied: 0, skipped: 1 });

  const fromWriter: Version = { wall: Date.now() + 2000, logical: 0, node: 'n2' };
  t.like(await merge(connection, [{ key, value: { up: true }, version: fromWriter, origin: 'n2' }]), { applied: 1, skipped: 0 });
  const record = (await get(connection, key)).record;
  t.deepEqual(record.value, { up: true });
  t.is(record.version, text(fromWriter));
});

test('merge: invalid records are skipped and counted, valid ones in the same batch applied', async (t) => {
  const connection = await boot(t);
  const wall = Date.now() + 1000;
  const version = (node: string): Version => ({ wall, logical: 0, node });
  const reply = await merge(connection, [
    { key: 'object/network/bad1', value: { name: 'bad1', type: 'no-such-type' }, version: version('n2'), origin: 'n2' },
    { key: 'object/network/bad2', value: { name: 'other-name', type: 'bridge' }, version: version('n2'), origin: 'n2' },
    { key: 'object/network/bad3', value: { name: 'bad3', type: 'vlan' }, version: version('n2'), origin: 'n2' }, // vlan needs an id
    { key: 'nonsense/key', value: {}, version: version('n2'), origin: 'n2' },
    { key: 'object/network/good', value: { name: 'good', type: 'bridge' }, version: version('n2'), origin: 'n2' },
  ]);
  t.like(reply, { type: 'cdb.merged', applied: 1, skipped: 4 });
  for (const key of ['object/network/bad1', 'object/network/bad2', 'object/network/bad3']) await notFound(t, connection, key);
  t.deepEqual((await get(connection, 'object/network/good')).record.value, { name: 'good', type: 'bridge' });
});

// Regression (found by this test, fixed since).
test('merge: an invalid meta value (not a JSON object) is skipped like an invalid object', async (t) => {
  const connection = await boot(t);
  const key = 'meta/node/n2@n2';
  const reply = await merge(connection, [{ key, value: 'up', version: { wall: Date.now() + 1000, logical: 0, node: 'n2' }, origin: 'n2' }]);
  t.like(reply, { applied: 0, skipped: 1 });
  await notFound(t, connection, key);
});

test('merge: applied changes reach a watcher as cdb.events; skipped ones do not', async (t) => {
  const connection = await boot(t);
  const events: Message[] = [];
  const unwatch = connection.watch('object/network/', (event) => events.push(event));
  t.teardown(unwatch);
  await eventually(() => (events.some((event) => event.type === 'cdb.snapshot' && (event as CdbSnapshot).done) ? true : undefined), WAIT_MS, 'the snapshot');

  const base = Date.now() + 1000;
  const first: Version = { wall: base, logical: 0, node: 'n2' };
  const second: Version = { wall: base + 1, logical: 0, node: 'n3' };
  t.like(await merge(connection, [{ key: 'object/network/w1', value: { name: 'w1', type: 'bridge' }, version: first, origin: 'n2' }]), { applied: 1 });
  // Skipped (older) and out-of-prefix records.
  t.like(await merge(connection, [{ key: 'object/network/w1', value: { name: 'w1', type: 'vlan', vlan: 3 }, version: { wall: base - 1, logical: 0, node: 'n4' }, origin: 'n4' }]), { skipped: 1 });
  t.like(await merge(connection, [{ key: 'object/system/s1', value: { name: 's1' }, version: first, origin: 'n2' }]), { type: 'cdb.merged' });
  t.like(await merge(connection, [{ key: 'object/network/w1', value: null, version: second, origin: 'n3', deleted: true }]), { applied: 1 });

  const received = await eventually(() => {
    const found = changesOf(events);
    return found.length >= 2 ? found : undefined;
  }, WAIT_MS, 'two changes');
  // A marker written after every merge: events come in commit order, so once the marker's is in,
  // a stray event (the skipped merge, or the other prefix) would have come before it.
  await put(connection, 'object/network/marker', { name: 'marker', type: 'bridge' });
  const all = await eventually(() => {
    const found = changesOf(events);
    return found.some((event) => event.record.key === 'object/network/marker') ? found : undefined;
  }, WAIT_MS, 'the marker');
  t.deepEqual(all.map((event) => event.record.key), ['object/network/w1', 'object/network/w1', 'object/network/marker']);
  t.deepEqual(
    received.slice(0, 2).map((event) => [event.seq, event.record.key, event.record.version, event.record.origin, event.record.deleted === true]),
    [
      [1, 'object/network/w1', text(first), 'n2', false],
      [2, 'object/network/w1', text(second), 'n3', true],
    ],
  );
  t.deepEqual(all[0]!.record.value, { name: 'w1', type: 'bridge' });
});

test('merge: a record a few seconds ahead is observed, so local writes come after it (the HLC moved)', async (t) => {
  const connection = await boot(t);
  const ahead: Version = { wall: Date.now() + 3000, logical: 5, node: 'n2' };
  t.like(await merge(connection, [{ key: 'object/network/ahead', value: { name: 'ahead', type: 'bridge' }, version: ahead, origin: 'n2' }]), { applied: 1 });
  const local = versionOf((await put(connection, 'object/network/after', { name: 'after', type: 'bridge' })).version);
  t.is(local.node, 'n1');
  t.true(compareVersions(local, ahead) > 0, `${text(local)} should be after ${text(ahead)}`);
  // Overwriting the merged key locally therefore wins over it.
  const overwrite = versionOf((await put(connection, 'object/network/ahead', { name: 'ahead', type: 'vlan', vlan: 5 })).version);
  t.true(compareVersions(overwrite, ahead) > 0);
  const record = (await get(connection, 'object/network/ahead')).record;
  t.is(record.version, text(overwrite));
  t.deepEqual(record.value, { name: 'ahead', type: 'vlan', vlan: 5 });
});

test('merge: a record stamped a year ahead (past cdb.maxClockAheadMs) is refused and counted; it changes nothing and the next ordinary write wins', async (t) => {
  const connection = await boot(t);
  const key = 'object/network/poison';
  const before = versionOf((await put(connection, key, { name: 'poison', type: 'bridge' })).version);
  const future: Version = { wall: Date.now() + 365 * 24 * 3600 * 1000, logical: 0, node: 'n2' };
  t.like(await merge(connection, [{ key, value: { name: 'poison', type: 'vlan', vlan: 666 }, version: future, origin: 'n2' }]), { applied: 0, skipped: 1 });
  const kept = (await get(connection, key)).record;
  t.is(kept.version, text(before));
  t.deepEqual(kept.value, { name: 'poison', type: 'bridge' });
  // The clock did not follow it: the next write is stamped now, and wins.
  const next = versionOf((await put(connection, key, { name: 'poison', type: 'vlan', vlan: 7 })).version);
  t.true(next.wall < Date.now() + 1000, 'the local clock was not dragged into the future');
  t.deepEqual((await get(connection, key)).record.value, { name: 'poison', type: 'vlan', vlan: 7 });
  const info = await connection.ask<Message & { clockAheadRefused: number }>('cdb', { type: 'service.info' });
  t.is(info.clockAheadRefused, 1);
});
