import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OPERATOR } from '../runtime/principal.js';
import test, { type ExecutionContext } from 'ava';
import { compareVersions, parseVersion } from '../actors/cdb/hlc.js';
import { createCdb, type CdbEvents, type CdbSnapshot, type RecordView } from '../actors/cdb/index.js';
import type { HistoryPoint } from '../actors/cdb/memory.js';
import type { ServiceInfo } from '../actors/kit.js';
import type { NodeMeta } from '../actors/model.js';
import type { Actor } from '../runtime/actor.js';
import { DeferredReply } from '../runtime/actor.js';
import type { AcpClient } from '../runtime/client.js';
import type { Daemon } from '../node/daemon.js';
import { AcpError, type ErrorCode } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import type { ServiceStatus } from '../runtime/services.js';
import { allRunning, client, eventually, makeHome, startDaemon } from './helpers/node.js';
import { stubContext } from './helpers/stub-context.js';
import { changesOf } from './helpers/watch.js';

type Written = Message & { type: 'cdb.written'; key: string; version: string };
type RecordReply = Message & { type: 'cdb.record'; record: RecordView };
type Records = Message & { type: 'cdb.records'; records: RecordView[]; cursor?: string };

const WAIT_MS = 10_000;

interface Node {
  home: string;
  daemon: Daemon;
  connection: AcpClient;
}

async function bootNode(t: ExecutionContext, options: { faults?: boolean; config?: Record<string, unknown> } = {}): Promise<Node> {
  const home = makeHome(t);
  if (options.config !== undefined) {
    const file = join(home, 'config.json');
    const config = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...config, ...options.config }));
  }
  const daemon = await startDaemon(t, home, { faults: options.faults ?? false });
  await allRunning(daemon);
  return { home, daemon, connection: await client(t, home) };
}

function cdbStatus(daemon: Daemon): ServiceStatus {
  const found = daemon.status().services.find((service) => service.name === 'cdb');
  if (!found) throw new Error('no cdb in status');
  return found;
}

async function rejection(t: ExecutionContext, promise: Promise<unknown>, code: ErrorCode, ...patterns: RegExp[]): Promise<AcpError> {
  const error = await t.throwsAsync(promise, { instanceOf: AcpError });
  if (!(error instanceof AcpError)) throw new Error('did not reject with an AcpError');
  t.is(error.code, code, error.message);
  for (const pattern of patterns) t.regex(error.message, pattern);
  return error;
}

const put = (connection: AcpClient, key: string, value: unknown) => connection.ask<Written>('cdb', { type: 'cdb.put', key, value }, { timeoutMs: WAIT_MS });
const get = (connection: AcpClient, key: string) => connection.ask<RecordReply>('cdb', { type: 'cdb.get', key }, { timeoutMs: WAIT_MS });
const list = (connection: AcpClient, prefix: string, limit?: number, cursor?: string) =>
  connection.ask<Records>('cdb', { type: 'cdb.list', prefix, ...(limit === undefined ? {} : { limit }), ...(cursor === undefined ? {} : { cursor }) }, { timeoutMs: WAIT_MS });
// On a node that does not exist, so the daemon under test does not make 2500 real interfaces.
const network = (name: string, vlan?: number) => (vlan === undefined ? { name, type: 'bridge', nodes: ['elsewhere'] } : { name, type: 'vlan', vlan, nodes: ['elsewhere'] });
const pad = (n: number) => String(n).padStart(4, '0');

/** A stream over the wire, collecting what arrives. */
function subscribe(connection: AcpClient, prefix: string): { events: Message[]; errors: AcpError[]; cancel(): void } {
  const events: Message[] = [];
  const errors: AcpError[] = [];
  const stream = connection.subscribe('cdb', { type: 'cdb.watch', prefix }, (event) => events.push(event), (error) => errors.push(error));
  return { events, errors, cancel: () => stream.cancel() };
}

const snapshotDone = (events: readonly Message[]) => events.some((event) => event.type === 'cdb.snapshot' && (event as CdbSnapshot).done);

test('put then get round-trips an object (defaults applied) and a meta record, with the version the put reported', async (t) => {
  const { connection } = await bootNode(t);
  const written = await put(connection, 'object/system/vm1', { name: 'vm1', vcpus: 2 });
  t.is(written.type, 'cdb.written');
  t.is(written.key, 'object/system/vm1');
  t.regex(written.version, /^\d+\.\d+@n1$/);
  const { record } = await get(connection, 'object/system/vm1');
  t.deepEqual(record, {
    key: 'object/system/vm1',
    value: { name: 'vm1', vcpus: 2, memoryMiB: 512, driver: 'qemu', disks: [], nics: [], ha: false, restart: 'on-crash' },
    version: written.version,
    origin: 'n1',
  });

  const second = await put(connection, 'object/system/vm1', { name: 'vm1', vcpus: 4 });
  t.not(second.version, written.version);
  t.like((await get(connection, 'object/system/vm1')).record, { version: second.version, value: { vcpus: 4 } });

  const meta = await put(connection, 'meta/system/vm1@n1', { state: 'running', cpu: 0.5 });
  t.deepEqual((await get(connection, 'meta/system/vm1@n1')).record, { key: 'meta/system/vm1@n1', value: { state: 'running', cpu: 0.5 }, version: meta.version, origin: 'n1' });
});

test('list: prefix, limit and cursor page over 2500 objects, every key exactly once and in order; tombstones are skipped', async (t) => {
  const { connection } = await bootNode(t);
  const total = 2500;
  for (let start = 0; start < total; start += 1000) {
    const ops = Array.from({ length: Math.min(1000, total - start) }, (_, index) => {
      const name = `net-${pad(start + index)}`;
      return { op: 'put', key: `object/network/${name}`, value: network(name, ((start + index) % 4000) + 1) };
    });
    const reply = await connection.ask<Message & { count: number }>('cdb', { type: 'cdb.batch', ops }, { timeoutMs: 30_000 });
    t.is(reply.count, ops.length);
  }
  // Neighbours under other prefixes that a network listing must not show.
  await put(connection, 'object/node/net-0000', { name: 'net-0000' });
  await put(connection, 'object/storage/pool/net-0000', { name: 'net-0000', type: 'dir', path: '/srv/acp-test', nodes: ['elsewhere'] });
  // Tombstones: every 7th network is deleted, the last one too.
  const deleted = new Set<string>();
  for (let index = 0; index < total; index += 7) deleted.add(`object/network/net-${pad(index)}`);
  deleted.add(`object/network/net-${pad(total - 1)}`);
  for (const key of deleted) t.is((await connection.ask<Written>('cdb', { type: 'cdb.delete', key }, { timeoutMs: WAIT_MS })).key, key);

  const expected = Array.from({ length: total }, (_, index) => `object/network/net-${pad(index)}`).filter((key) => !deleted.has(key));
  for (const limit of [333, 1000]) {
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await list(connection, 'object/network/', limit, cursor);
      pages += 1;
      t.true(page.records.length <= limit);
      for (const record of page.records) {
        t.false(record.deleted === true, `tombstone listed: ${record.key}`);
        t.is((record.value as { name: string }).name, record.key.slice('object/network/'.length));
      }
      seen.push(...page.records.map((record) => record.key));
      if (page.cursor !== undefined) t.is(page.cursor, page.records.at(-1)?.key ?? '(no records)');
      cursor = page.cursor;
      if (pages > 100) break;
    } while (cursor !== undefined);
    t.is(seen.length, expected.length, `limit ${limit}`);
    t.is(new Set(seen).size, seen.length, `limit ${limit}: a key was listed twice`);
    t.deepEqual(seen, expected, `limit ${limit}`);
    t.true(pages >= Math.ceil(expected.length / limit), `limit ${limit}: ${pages} pages`);
  }
  // Without a limit, a page holds at most 1000 and says where to go on.
  const first = await list(connection, 'object/network/');
  t.is(first.records.length, 1000);
  t.is(first.cursor, first.records.at(-1)?.key ?? '(no records)');
  // A narrower prefix, and the same cursor under a wider prefix.
  const narrow = await list(connection, 'object/network/net-01');
  t.deepEqual(
    narrow.records.map((record) => record.key),
    expected.filter((key) => key.startsWith('object/network/net-01')),
  );
  t.is(narrow.cursor, undefined);
  const storage = await list(connection, 'object/storage/');
  t.deepEqual(
    // The node's own block devices are there too (the Storage service publishes them).
    storage.records.map((record) => record.key).filter((key) => !key.startsWith('object/storage/device/')),
    ['object/storage/pool/net-0000'],
  );
  const tail = await list(connection, 'object/network/', 10, `object/network/net-${pad(total - 5)}`);
  t.deepEqual(
    tail.records.map((record) => record.key),
    expected.filter((key) => key > `object/network/net-${pad(total - 5)}`),
  );
  t.is(tail.cursor, undefined);

  // A watch's snapshot of them comes in chunks of at most 500, in key order, only the last one done.
  const watch = subscribe(connection, 'object/network/');
  await eventually(() => (snapshotDone(watch.events) ? true : undefined), WAIT_MS, 'the whole snapshot');
  const chunks = watch.events.filter((event): event is CdbSnapshot => event.type === 'cdb.snapshot');
  t.is(chunks.length, Math.ceil(expected.length / 500));
  t.true(chunks.every((chunk) => chunk.records.length <= 500));
  t.deepEqual(
    chunks.map((chunk) => chunk.done),
    chunks.map((_, index) => index === chunks.length - 1),
  );
  t.deepEqual(
    chunks.flatMap((chunk) => chunk.records.map((record) => record.key)),
    expected,
  );
  t.like(watch.events.find((event) => event.type === 'cdb.watching'), { snapshotSize: expected.length });
  watch.cancel();
});

test('list with the empty prefix pages across meta/, object/ and stats/ in key order, every key once', async (t) => {
  const { connection } = await bootNode(t);
  await eventually(async () => ((await list(connection, 'meta/node/')).records.length === 1 ? true : undefined), WAIT_MS, 'the node meta');
  for (let i = 0; i < 7; i += 1) {
    await put(connection, `object/network/n${i}`, network(`n${i}`));
    await put(connection, `stats/network/n${i}@n1`, { rx: i });
    await put(connection, `meta/network/n${i}@n1`, { up: true });
  }
  const kinds = await Promise.all(['meta/', 'object/', 'stats/'].map((kind) => list(connection, kind, 10_000)));
  const expected = kinds.flatMap((page) => page.records.map((record) => record.key));
  t.deepEqual(expected, [...expected].sort());
  for (const limit of [1, 4, 9]) {
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let pages = 0; pages < 1000; pages += 1) {
      const page = await list(connection, '', limit, cursor);
      seen.push(...page.records.map((record) => record.key));
      cursor = page.cursor;
      if (cursor === undefined) break;
    }
    t.deepEqual(seen, expected, `limit ${limit}`);
  }
  // A prefix shorter than a kind ('o') still lists that kind.
  t.deepEqual(
    (await list(connection, 'o', 10_000)).records.map((record) => record.key),
    kinds[1]!.records.map((record) => record.key),
  );
});

test('delete leaves nothing to get (ACP_ERR_CDB_NOT_FOUND); deleting twice is NOT_FOUND; a put after delete revives the key', async (t) => {
  const { connection } = await bootNode(t);
  await put(connection, 'object/network/lan', network('lan'));
  const removed = await connection.ask<Written>('cdb', { type: 'cdb.delete', key: 'object/network/lan' }, { timeoutMs: WAIT_MS });
  t.is(removed.type, 'cdb.written');
  await rejection(t, get(connection, 'object/network/lan'), 'ACP_ERR_CDB_NOT_FOUND', /object\/network\/lan/);
  await rejection(t, connection.ask('cdb', { type: 'cdb.delete', key: 'object/network/lan' }), 'ACP_ERR_CDB_NOT_FOUND', /object\/network\/lan/);
  await rejection(t, get(connection, 'object/network/never'), 'ACP_ERR_CDB_NOT_FOUND', /no record at object\/network\/never/);
  t.deepEqual((await list(connection, 'object/network/')).records, []);
  await put(connection, 'object/network/lan', network('lan', 5));
  t.deepEqual((await get(connection, 'object/network/lan')).record.value, network('lan', 5));
  // Meta records delete the same way.
  await put(connection, 'meta/network/lan@n1', { up: true });
  await connection.ask('cdb', { type: 'cdb.delete', key: 'meta/network/lan@n1' }, { timeoutMs: WAIT_MS });
  await rejection(t, get(connection, 'meta/network/lan@n1'), 'ACP_ERR_CDB_NOT_FOUND');
});

test('CAS: of two writers that read the same version the first wins, the second gets ACP_ERR_CDB_CONFLICT with the current record', async (t) => {
  const { home, connection } = await bootNode(t);
  const other = await client(t, home);
  const key = 'object/network/lan';
  const created = await connection.ask<Written>('cdb', { type: 'cdb.cas', key, value: network('lan'), expect: null }, { timeoutMs: WAIT_MS });
  const [readA, readB] = await Promise.all([get(connection, key), get(other, key)]);
  t.is(readA.record.version, created.version);
  t.is(readB.record.version, created.version);

  const winner = await connection.ask<Written>('cdb', { type: 'cdb.cas', key, value: network('lan', 10), expect: readA.record.version }, { timeoutMs: WAIT_MS });
  const error = await rejection(t, other.ask('cdb', { type: 'cdb.cas', key, value: network('lan', 20), expect: readB.record.version }), 'ACP_ERR_CDB_CONFLICT', new RegExp(`is at version ${winner.version.replace('.', '\\.')}`), /retry/);
  const details = error.details as { current: RecordView | null };
  t.like(details.current, { key, version: winner.version, value: network('lan', 10) });
  t.deepEqual((await get(connection, key)).record.value, network('lan', 10));

  // expect null on an existing key conflicts, and so does a version on an absent key.
  const exists = await rejection(t, other.ask('cdb', { type: 'cdb.cas', key, value: network('lan'), expect: null }), 'ACP_ERR_CDB_CONFLICT', /not absent/);
  t.like((exists.details as { current: RecordView }).current, { version: winner.version });
  const absent = await rejection(t, other.ask('cdb', { type: 'cdb.cas', key: 'object/network/wan', value: network('wan'), expect: winner.version }), 'ACP_ERR_CDB_CONFLICT', /is at version absent/);
  t.deepEqual(absent.details, { current: null });
  await rejection(t, other.ask('cdb', { type: 'cdb.cas', key, value: network('lan'), expect: 'yesterday' }), 'ACP_ERR_CDB_BAD_VALUE', /'yesterday' is not a version/);
  // The loser retries with what the conflict told it, and wins.
  const retried = await other.ask<Written>('cdb', { type: 'cdb.cas', key, value: network('lan', 20), expect: details.current!.version }, { timeoutMs: WAIT_MS });
  t.is((await get(connection, key)).record.version, retried.version);
  // Racing CAS writers on one version: exactly one wins.
  const base = (await get(connection, key)).record.version;
  const results = await Promise.allSettled([connection, other, connection, other].map((writer, index) => writer.ask('cdb', { type: 'cdb.cas', key, value: network('lan', 100 + index), expect: base }, { timeoutMs: WAIT_MS })));
  t.is(results.filter((result) => result.status === 'fulfilled').length, 1);
  for (const result of results) if (result.status === 'rejected') t.is((result.reason as AcpError).code, 'ACP_ERR_CDB_CONFLICT');
});

test('bad keys, values and foreign meta are rejected with clear errors, and the CDB keeps serving without a restart', async (t) => {
  const { daemon, connection } = await bootNode(t);
  const before = await connection.ask<ServiceInfo>('cdb', { type: 'service.info' });
  await rejection(t, put(connection, 'object/vm/a', { name: 'a' }), 'ACP_ERR_CDB_BAD_KEY', /unknown type 'vm'/);
  await rejection(t, put(connection, 'objects/network/a', network('a')), 'ACP_ERR_CDB_BAD_KEY', /must start with object\/, meta\/ or stats\//);
  await rejection(t, put(connection, 'object/network/a@n1', network('a')), 'ACP_ERR_CDB_BAD_KEY', /carry no '@node'/);
  await rejection(t, put(connection, 'meta/node/n1', {}), 'ACP_ERR_CDB_BAD_KEY', /end with '@<node>'/);
  await rejection(t, put(connection, 'object/network/Bad', network('Bad')), 'ACP_ERR_CDB_BAD_KEY', /id 'Bad'/);
  await rejection(t, get(connection, 'nope'), 'ACP_ERR_CDB_BAD_KEY');
  await rejection(t, list(connection, 'nope/'), 'ACP_ERR_CDB_BAD_KEY', /bad prefix/);
  await rejection(t, put(connection, 'object/network/v', { name: 'v', type: 'vlan' }), 'ACP_ERR_CDB_BAD_VALUE', /field 'vlan'/);
  await rejection(t, put(connection, 'object/network/v', network('w')), 'ACP_ERR_CDB_BAD_VALUE', /field 'name'/, /differs from the key's id 'v'/);
  await rejection(t, put(connection, 'object/system/s', { name: 's', vcpus: 0 }), 'ACP_ERR_CDB_BAD_VALUE', /field 'vcpus'/);
  await rejection(t, put(connection, 'meta/node/n1@n1', 'up'), 'ACP_ERR_CDB_BAD_VALUE', /must be a JSON object/);
  await rejection(t, put(connection, 'meta/node/x@other', { up: true }), 'ACP_ERR_CDB_NOT_OWNER', /belongs to node 'other'/, /this is 'n1'/);
  await rejection(t, put(connection, 'stats/node/x@other', { cpu: 1 }), 'ACP_ERR_CDB_NOT_OWNER');
  await rejection(t, connection.ask('cdb', { type: 'cdb.history', key: 'object/network/a' }), 'ACP_ERR_CDB_BAD_KEY', /stats\/ keys only/);
  // A batch with one bad op applies none of them.
  await rejection(
    t,
    connection.ask('cdb', { type: 'cdb.batch', ops: [{ op: 'put', key: 'object/network/ok1', value: network('ok1') }, { op: 'put', key: 'object/network/bad', value: { name: 'bad' } }] }),
    'ACP_ERR_CDB_BAD_VALUE',
    /field 'type'/,
  );
  await rejection(t, get(connection, 'object/network/ok1'), 'ACP_ERR_CDB_NOT_FOUND');
  // Malformed messages are refused by the schema.
  await rejection(t, connection.ask('cdb', { type: 'cdb.put', key: '', value: 1 }), 'ACP_ERR_SCHEMA_REJECTED');
  await rejection(t, connection.ask('cdb', { type: 'cdb.list', prefix: '', limit: 0 }), 'ACP_ERR_SCHEMA_REJECTED');

  // Still serving, same generation, no restarts.
  const ok = await put(connection, 'object/network/ok', network('ok'));
  t.is((await get(connection, 'object/network/ok')).record.version, ok.version);
  const after = await connection.ask<ServiceInfo>('cdb', { type: 'service.info' });
  t.is(after.generation, before.generation);
  t.is(cdbStatus(daemon).restarts, 0);
  t.is(cdbStatus(daemon).state, 'running');
});

test('watch: 3 concurrent writers x 200 puts reach the watcher as snapshot, then exactly 600 events, seq 1..600, each writer in its own order', async (t) => {
  const { home, connection } = await bootNode(t);
  await put(connection, 'object/network/pre', network('pre'));
  const watch = subscribe(connection, 'object/network/');
  await eventually(() => (snapshotDone(watch.events) && watch.events.some((event) => event.type === 'cdb.watching') ? true : undefined), WAIT_MS, 'the snapshot and the watching reply');
  const snapshot = watch.events.filter((event): event is CdbSnapshot => event.type === 'cdb.snapshot');
  t.deepEqual(
    snapshot.flatMap((chunk) => chunk.records.map((record) => record.key)),
    ['object/network/pre'],
  );
  const watching = watch.events.find((event) => event.type === 'cdb.watching')!;
  t.like(watching, { prefix: 'object/network/', snapshotSize: 1 });

  const writers = await Promise.all([0, 1, 2].map(() => client(t, home)));
  // Noise under another prefix, which the watch must not see.
  await put(connection, 'object/system/noise', { name: 'noise' });
  const perWriter = 200;
  await Promise.all(
    writers.map(async (writer, w) => {
      for (let i = 0; i < perWriter; i += 1) await put(writer, `object/network/w${w}-${pad(i)}`, network(`w${w}-${pad(i)}`, i + 1));
    }),
  );
  const total = perWriter * writers.length;
  const events = await eventually(() => {
    const received = changesOf(watch.events);
    return received.length >= total ? received : undefined;
  }, 30_000, `${total} events`);
  // Nothing more trails in: once a marker written after everything is in, nothing else came.
  await put(connection, 'object/network/zz-marker', network('zz-marker'));
  const all = await eventually(() => {
    const received = changesOf(watch.events);
    return received.some((event) => event.record.key === 'object/network/zz-marker') ? received : undefined;
  }, 30_000, 'the marker');
  t.is(all.length, total + 1);
  t.deepEqual(
    events.map((event) => event.seq),
    Array.from({ length: total }, (_, index) => index + 1),
  );
  t.true(events.every((event) => event.watch === watching.watch));
  // The snapshot came before every event.
  const lastSnapshot = watch.events.findIndex((event) => event.type === 'cdb.snapshot' && (event as CdbSnapshot).done);
  const firstEvent = watch.events.findIndex((event) => event.type === 'cdb.events');
  t.true(lastSnapshot < firstEvent);
  for (let w = 0; w < writers.length; w += 1) {
    const mine = events.filter((event) => event.record.key.startsWith(`object/network/w${w}-`)).map((event) => event.record.key);
    t.deepEqual(
      mine,
      Array.from({ length: perWriter }, (_, i) => `object/network/w${w}-${pad(i)}`),
      `writer ${w}`,
    );
  }
  // Versions grow with seq: commit order is version order on one node.
  const versions = events.map((event) => event.record.version);
  for (let i = 1; i < versions.length; i += 1) {
    t.is(compareVersions(parseVersion(versions[i - 1]!)!, parseVersion(versions[i]!)!), -1, `${versions[i - 1]} then ${versions[i]}`);
  }
  t.deepEqual(watch.errors, []);
  watch.cancel();
});

test('stats history: 20 puts of stats/node/n1@n1 give 20 points, oldest first', async (t) => {
  const { connection } = await bootNode(t);
  for (let i = 0; i < 20; i += 1) await put(connection, 'stats/node/n1@n1', { cpu: i / 100, seq: i });
  const reply = await connection.ask<Message & { key: string; points: HistoryPoint[] }>('cdb', { type: 'cdb.history', key: 'stats/node/n1@n1' }, { timeoutMs: WAIT_MS });
  t.is(reply.key, 'stats/node/n1@n1');
  t.is(reply.points.length, 20);
  t.deepEqual(
    reply.points.map((point) => (point.value as { seq: number }).seq),
    Array.from({ length: 20 }, (_, i) => i),
  );
  for (let i = 1; i < reply.points.length; i += 1) t.true(reply.points[i - 1]!.at <= reply.points[i]!.at);
  t.deepEqual((await get(connection, 'stats/node/n1@n1')).record.value, { cpu: 0.19, seq: 19 });
  const none = await connection.ask<Message & { points: HistoryPoint[] }>('cdb', { type: 'cdb.history', key: 'stats/node/none@n1' }, { timeoutMs: WAIT_MS });
  t.deepEqual(none.points, []);
});

test('a supervised restart of the CDB ends a watch with an explicit watch.ended (resubscribe), and objects survive it', async (t) => {
  const { daemon, connection } = await bootNode(t, { faults: true });
  const before = await put(connection, 'object/network/lan', network('lan', 7));
  await put(connection, 'object/storage/pool/p1', { name: 'p1', type: 'dir', path: '/srv/acp-test', nodes: ['elsewhere'] });
  const watch = subscribe(connection, 'object/');
  await eventually(() => (snapshotDone(watch.events) ? true : undefined), WAIT_MS, 'the snapshot');

  await rejection(t, connection.ask('cdb', { type: 'chaos.crash' }, { timeoutMs: WAIT_MS }), 'ACP_ERR_ACTOR_CRASHED');
  const ended = await eventually(() => watch.events.find((event) => event.type === 'watch.ended'), WAIT_MS, 'watch.ended');
  t.is(ended.resubscribe, true);
  t.deepEqual(watch.errors, []);
  await eventually(() => {
    const status = cdbStatus(daemon);
    return status.state === 'running' && status.restarts === 1 ? status : undefined;
  }, 20_000, 'cdb restarted');

  const after = await eventually(async () => (await get(connection, 'object/network/lan')).record, WAIT_MS, 'the object after the restart');
  t.deepEqual(after, { key: 'object/network/lan', value: network('lan', 7), version: before.version, origin: 'n1' });
  t.is((await get(connection, 'object/storage/pool/p1')).record.key, 'object/storage/pool/p1');
  const info = await connection.ask<ServiceInfo>('cdb', { type: 'service.info' });
  t.is(info.generation, 2);

  // Resubscribing works, with a snapshot holding what was written before.
  const again = subscribe(connection, 'object/network/');
  await eventually(() => (snapshotDone(again.events) ? true : undefined), WAIT_MS, 'the new snapshot');
  t.true(
    again.events
      .filter((event): event is CdbSnapshot => event.type === 'cdb.snapshot')
      .flatMap((chunk) => chunk.records)
      .some((record) => record.key === 'object/network/lan'),
  );
  // New writes after the restart get versions above the ones before it.
  const later = await put(connection, 'object/network/lan', network('lan', 8));
  t.is(compareVersions(parseVersion(before.version)!, parseVersion(later.version)!), -1);
  const event = await eventually(() => changesOf(again.events)[0], WAIT_MS, 'an event after resubscribing');
  t.like(event, { seq: 1, record: { key: 'object/network/lan', version: later.version } });
  again.cancel();
});

test("the Framework's heartbeat shows in a watch on meta/: node and cdb service meta arrive and heartbeatAt advances", async (t) => {
  const { connection } = await bootNode(t, { config: { heartbeatMs: 200 } });
  const watch = subscribe(connection, 'meta/');
  const nodeBeats = () =>
    changesOf(watch.events)
      .filter((change) => change.record.key === 'meta/node/n1@n1')
      .map((change) => (change.record.value as NodeMeta).heartbeatAt);
  const beats = await eventually(() => (nodeBeats().length >= 3 ? nodeBeats() : undefined), WAIT_MS, 'three node heartbeats');
  const times = beats.map((beat) => Date.parse(beat));
  for (let i = 1; i < times.length; i += 1) t.true(times[i - 1]! < times[i]!, `heartbeatAt ${beats[i - 1]} then ${beats[i]}`);
  // A service's meta changes rarely: it is in the snapshot (or an event, if the watch came first).
  const cdbMeta = watch.events
    .flatMap((event) => (event.type === 'cdb.snapshot' ? (event as CdbSnapshot).records : event.type === 'cdb.events' ? (event as CdbEvents).records : []))
    .find((record) => record.key === 'meta/service/cdb/n1@n1');
  t.truthy(cdbMeta, 'meta/service/cdb/n1@n1 arrived');
  t.like(cdbMeta, { origin: 'n1', value: { state: 'running', restarts: 0, isolation: 'inline' } });
  const nodeMeta = changesOf(watch.events).find((change) => change.record.key === 'meta/node/n1@n1');
  t.like(nodeMeta?.record.value as NodeMeta, { state: 'running', pid: process.pid });
  // The watch sees meta only: no objects.
  t.true(
    changesOf(watch.events)
      .every((event) => event.record.key.startsWith('meta/')),
  );
  const seqs = changesOf(watch.events).map((event) => event.seq);
  t.deepEqual(
    seqs,
    Array.from({ length: seqs.length }, (_, i) => i + 1),
  );
  watch.cancel();
});

test('a cancelled watch and the watches of a closed connection are dropped by the CDB', async (t) => {
  const { home, connection } = await bootNode(t);
  const count = async () => (await connection.ask<ServiceInfo & { watchers: number }>('cdb', { type: 'service.info' })).watchers;
  // The node's own services watch too (the API its tokens, the agent the removed nodes): counted apart.
  const own = await eventually(async () => ((await count()) >= 2 ? count() : undefined), WAIT_MS, "the services' own watches");
  const watchers = async () => (await count()) - own;
  const first = subscribe(connection, 'object/');
  const other = await client(t, home);
  subscribe(other, 'meta/');
  subscribe(other, '');
  await eventually(() => (snapshotDone(first.events) ? true : undefined), WAIT_MS, 'the snapshot');
  t.is(await eventually(async () => ((await watchers()) === 3 ? 3 : undefined), WAIT_MS, 'three watchers'), 3);
  first.cancel();
  t.is(await eventually(async () => ((await watchers()) === 2 ? 2 : undefined), WAIT_MS, 'the cancelled watch dropped'), 2);
  await other.close();
  t.is(await eventually(async () => ((await watchers()) === 0 ? 0 : undefined), WAIT_MS, "the closed connection's watches dropped"), 0);
  // A cancelled stream hears nothing more: once a live watch on the same connection has the
  // change, the cancelled one would have had it too.
  const seen = first.events.length;
  const live = subscribe(connection, 'object/');
  await eventually(() => (snapshotDone(live.events) ? true : undefined), WAIT_MS, 'the live snapshot');
  await put(connection, 'object/network/after', network('after'));
  await eventually(() => (changesOf(live.events).some((change) => change.record.key === 'object/network/after') ? true : undefined), WAIT_MS, 'the live watch to see the change');
  live.cancel();
  t.is(first.events.length, seen);
});

const SMALL_MEMORY = { cdb: { maxMemoryKeys: 100, statsHistory: 5 } };

test('cdb.statsHistory bounds the history: 20 puts keep the last 5, oldest first', async (t) => {
  const { connection } = await bootNode(t, { config: SMALL_MEMORY });
  for (let i = 0; i < 20; i += 1) await put(connection, 'stats/node/n1@n1', { seq: i });
  const reply = await connection.ask<Message & { points: HistoryPoint[] }>('cdb', { type: 'cdb.history', key: 'stats/node/n1@n1' }, { timeoutMs: WAIT_MS });
  t.deepEqual(
    reply.points.map((point) => (point.value as { seq: number }).seq),
    [15, 16, 17, 18, 19],
  );
});

/** Fills the meta/stats table (cdb.maxMemoryKeys 100) to 99 keys once the Framework's 10 are in. */
async function fillMemory(t: ExecutionContext, connection: AcpClient): Promise<void> {
  const memoryKeys = async () => (await connection.ask<ServiceInfo & { memoryKeys: number }>('cdb', { type: 'service.info' })).memoryKeys;
  // The Framework's meta: the node and its 10 services.
  await eventually(async () => ((await memoryKeys()) === 11 ? true : undefined), WAIT_MS, "the Framework's 11 meta keys");
  const ops = Array.from({ length: 88 }, (_, i) => ({ op: 'put', key: `stats/system/s${i}@n1`, value: { i } }));
  await connection.ask('cdb', { type: 'cdb.batch', ops }, { timeoutMs: WAIT_MS });
  t.is(await memoryKeys(), 99);
}

test('the meta/stats table is bounded: a new key past cdb.maxMemoryKeys is ACP_ERR_CDB_FULL; the CDB keeps serving', async (t) => {
  const { daemon, connection } = await bootNode(t, { config: SMALL_MEMORY });
  await fillMemory(t, connection);
  await put(connection, 'meta/system/last@n1', { up: true });
  await rejection(t, put(connection, 'meta/system/more@n1', { up: true }), 'ACP_ERR_CDB_FULL', /limit of 100 keys/, /cdb\.maxMemoryKeys/);
  await rejection(t, get(connection, 'meta/system/more@n1'), 'ACP_ERR_CDB_NOT_FOUND');
  // Existing keys are still written, objects are not bounded by it.
  await put(connection, 'meta/system/last@n1', { up: false });
  t.deepEqual((await get(connection, 'meta/system/last@n1')).record.value, { up: false });
  // An object no service answers with meta of its own (a network would: its report takes a slot).
  await put(connection, 'object/alarm-target/hook', { name: 'hook', webhook: 'http://127.0.0.1:9/' });
  // A deleted key frees its slot.
  await connection.ask('cdb', { type: 'cdb.delete', key: 'meta/system/last@n1' }, { timeoutMs: WAIT_MS });
  await put(connection, 'meta/system/more@n1', { up: true });
  t.is(cdbStatus(daemon).restarts, 0);
});

// Regression: a batch that filled the meta/stats table used to apply (and publish) its first ops.
test('a batch refused with ACP_ERR_CDB_FULL applies none of its ops (atomic batch)', async (t) => {
  const { connection } = await bootNode(t, { config: SMALL_MEMORY });
  await fillMemory(t, connection);
  const watch = subscribe(connection, 'meta/system/');
  await eventually(() => (snapshotDone(watch.events) ? true : undefined), WAIT_MS, 'the snapshot');
  await rejection(
    t,
    connection.ask('cdb', {
      type: 'cdb.batch',
      ops: [
        { op: 'put', key: 'meta/system/first@n1', value: { n: 1 } },
        { op: 'put', key: 'meta/system/second@n1', value: { n: 2 } },
        { op: 'put', key: 'object/network/lan', value: network('lan') },
      ],
    }),
    'ACP_ERR_CDB_FULL',
  );
  await rejection(t, get(connection, 'object/network/lan'), 'ACP_ERR_CDB_NOT_FOUND');
  // A marker in the table's one free slot: events come in order, so the marker's event is the first.
  await put(connection, 'meta/system/marker@n1', { marker: true });
  const events = await eventually(() => {
    const found = changesOf(watch.events);
    return found.some((event) => event.record.key === 'meta/system/marker@n1') ? found : undefined;
  }, WAIT_MS, 'the marker');
  t.deepEqual(
    events.map((event) => event.record.key),
    ['meta/system/marker@n1'],
    'watchers were told of a write from a refused batch',
  );
  await rejection(t, get(connection, 'meta/system/first@n1'), 'ACP_ERR_CDB_NOT_FOUND');
});

// ---------------------------------------------------------------- the CDB actor in this process, on a stub context

interface Harness {
  cdb: Actor;
  /** Everything the CDB told, by target path. */
  told: { to: string; message: Message }[];
  ask(message: Message): Promise<Message>;
  stop(reason: string): Promise<void>;
}

/** Runs createCdb on a stub context and a store in a temporary directory; `now` is its wall clock. */
async function harness(t: ExecutionContext, storePath: string, now: () => number): Promise<Harness> {
  const { ctx, told } = stubContext('acp://lab/n1/cdb');
  const cdb = createCdb(ctx, { storePath, maxMemoryKeys: 1000, statsHistory: 10, now });
  await cdb.started?.();
  let stopped = false;
  const stop = async (reason: string) => {
    if (stopped) return;
    stopped = true;
    await cdb.stopping?.(reason);
  };
  t.teardown(() => stop('test over'));
  return {
    cdb,
    told,
    stop,
    async ask(message) {
      const reply = await cdb.receive(message, OPERATOR);
      if (reply instanceof DeferredReply) return (await reply.promise) ?? { type: 'ok' };
      return reply ?? { type: 'ok' };
    },
  };
}

function storeDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'acp-cdb-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'cdb.mdb');
}

test('versions never go back: not when the wall clock does, nor across a restart on a clock behind the store', async (t) => {
  const storePath = storeDir(t);
  let now = 5_000_000;
  const first = await harness(t, storePath, () => now);
  const a = (await first.ask({ type: 'cdb.put', key: 'object/network/a', value: network('a') })) as Written;
  now = 4_000_000;
  const b = (await first.ask({ type: 'cdb.put', key: 'object/network/b', value: network('b') })) as Written;
  t.is(compareVersions(parseVersion(a.version)!, parseVersion(b.version)!), -1, `${a.version} then ${b.version}`);
  await first.stop('restart');

  // Reopened with a clock far behind what is on disk: the store's versions are observed first.
  const second = await harness(t, storePath, () => 1000);
  const c = (await second.ask({ type: 'cdb.put', key: 'object/network/a', value: network('a', 3) })) as Written;
  t.is(compareVersions(parseVersion(b.version)!, parseVersion(c.version)!), -1, `${b.version} then ${c.version}`);
  const read = (await second.ask({ type: 'cdb.get', key: 'object/network/a' })) as RecordReply;
  t.is(read.record.version, c.version);
  t.deepEqual(read.record.value, network('a', 3));
});

test('stopping the CDB tells every watcher watch.ended with resubscribe', async (t) => {
  const cdb = await harness(t, storeDir(t), () => Date.now());
  await cdb.ask({ type: 'cdb.watch', prefix: 'object/', subscriber: 'acp://lab/n1/api/w1' });
  await cdb.ask({ type: 'cdb.watch', prefix: 'meta/', subscriber: 'acp://lab/n1/api/w2' });
  await cdb.stop('test');
  const ended = cdb.told.filter((entry) => entry.message.type === 'watch.ended');
  t.deepEqual(
    ended.map((entry) => entry.to).sort(),
    ['acp://lab/n1/api/w1', 'acp://lab/n1/api/w2'],
  );
  for (const entry of ended) t.like(entry.message, { resubscribe: true, path: 'acp://lab/n1/cdb' });
});

// Regression: a watch opened while writes were in flight used to get them in its snapshot and again as events.
test('a watch opened while writes are pending gets each change once: in the snapshot or as an event', async (t) => {
  const cdb = await harness(t, storeDir(t), () => Date.now());
  const ops = Array.from({ length: 50 }, (_, i) => ({ op: 'put', key: `object/network/n${pad(i)}`, value: network(`n${pad(i)}`) }));
  const batch = cdb.ask({ type: 'cdb.batch', ops });
  await cdb.ask({ type: 'cdb.watch', prefix: 'object/network/', subscriber: 'acp://lab/n1/api/w1' });
  await batch;
  const delivered = () => {
    const messages = cdb.told.map((entry) => entry.message);
    const inSnapshot = messages.filter((message): message is CdbSnapshot => message.type === 'cdb.snapshot').flatMap((chunk) => chunk.records.map((record) => record.key));
    return [...inSnapshot, ...changesOf(messages).map((event) => event.record.key)];
  };
  await eventually(() => (delivered().length >= ops.length ? true : undefined), 5000, 'every change in the snapshot or as an event');
  t.deepEqual(delivered().sort(), ops.map((op) => op.key));
});
