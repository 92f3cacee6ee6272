import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { open } from 'lmdb';
import { createCdb } from '../actors/cdb/index.js';
import { checkValue, DEFAULT_VALUE_LIMITS } from '../actors/cdb/value.js';
import { attachFrames } from '../adapters/frame-listener.js';
import { DeferredReply } from '../runtime/actor.js';
import { DEFAULT_MAX_DEPTH } from '../runtime/cbor-guard.js';
import { OPERATOR } from '../runtime/principal.js';
import { DEFAULT_MAX_HELLO_FRAME_BYTES, encodeFrame, FrameDecoder, type Envelope } from '../runtime/codec.js';
import { parseConfig } from '../runtime/config.js';
import { AcpError, type ErrorCode } from '../runtime/errors.js';
import { silentLogger } from '../runtime/logger.js';
import type { Message } from '../runtime/messages.js';
import { stubContext } from './helpers/stub-context.js';

function refusedValue(t: ExecutionContext, value: unknown, pattern: RegExp): void {
  const error = t.throws(() => checkValue(value), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_CDB_BAD_VALUE');
  t.regex(error?.message ?? '', pattern);
}

function nested(levels: number): Record<string, unknown> {
  let value: Record<string, unknown> = { leaf: 1 };
  for (let i = 1; i < levels; i += 1) value = { a: value };
  return value;
}

test('plain JSON-like data passes, absent optional fields included', (t) => {
  const shared = { x: 1 };
  for (const value of [{}, { a: [1, 'two', null, true, { b: -1.5 }] }, { lastError: undefined, state: 'running' }, { one: shared, two: shared }, nested(32), Object.assign(Object.create(null) as object, { a: 1 })]) {
    t.notThrows(() => checkValue(value));
  }
});

test('cycles, depth, non-finite numbers and non-plain objects are refused, naming the field', (t) => {
  const cyclic: Record<string, unknown> = { a: { b: [] } };
  ((cyclic.a as { b: unknown[] }).b).push(cyclic);
  refusedValue(t, cyclic, /^value\.a\.b\[0\]: refers back to an enclosing object or array \(a cycle\)/);
  const self: Record<string, unknown> = {};
  self.a = self;
  refusedValue(t, self, /^value\.a: refers back/);
  refusedValue(t, nested(33), /nests deeper than 32 levels/);
  refusedValue(t, nested(4000), /nests deeper than 32 levels/);
  refusedValue(t, { n: Number.NaN }, /^value\.n: the number NaN is not a finite number/);
  refusedValue(t, { list: [1, Infinity] }, /^value\.list\[1\]: the number Infinity/);
  refusedValue(t, { at: new Date(0) }, /^value\.at: is a Date, not plain data/);
  refusedValue(t, { blob: Buffer.from('x') }, /^value\.blob: is binary data/);
  refusedValue(t, { m: new Map() }, /a Map/);
  refusedValue(t, { big: 1n }, /a bigint/);
  refusedValue(t, { f: () => 1 }, /a function/);
  refusedValue(t, { 'odd key': [undefined] }, /^value\["odd key"\]\[0\]: is undefined/);
  refusedValue(t, JSON.parse('{"ok":{"__proto__":{"x":1}}}'), /__proto__/);
  refusedValue(t, undefined, /^value: is undefined/);
  refusedValue(t, { pad: 'x'.repeat(DEFAULT_VALUE_LIMITS.maxBytes) }, /larger than 1048576/);
  t.throws(() => checkValue(nested(5), { maxDepth: 4, maxBytes: 1000 }), { message: /deeper than 4/ });
});

test('checking is iterative and cheap: a value 100,000 levels deep is refused without exhausting the stack', (t) => {
  let deep: unknown[] = [];
  const root = deep;
  for (let i = 0; i < 100_000; i += 1) {
    const next: unknown[] = [];
    deep.push(next);
    deep = next;
  }
  const started = performance.now();
  t.throws(() => checkValue(root, { maxDepth: 1_000_000, maxBytes: 100_000 }), { message: /larger than 100000/ }, 'bounded by size');
  t.throws(() => checkValue(root), { message: /deeper than 32/ }, 'bounded by depth');
  t.notThrows(() => checkValue(root, { maxDepth: 1_000_000, maxBytes: 1_000_000_000 }));
  t.true(performance.now() - started < 2000);
});

// ---------------------------------------------------------------------------------------------
// The CDB actor on a stub context (as test/cdb.test.ts), with a real store

interface Stub {
  ask(message: Message): Promise<Message>;
  told: { to: string; message: Message }[];
}

async function cdbOn(t: ExecutionContext, storePath: string): Promise<Stub> {
  const { ctx, told } = stubContext('acp://lab/n1/cdb');
  const cdb = createCdb(ctx, { storePath, maxMemoryKeys: 1000, statsHistory: 10 });
  await cdb.started?.();
  t.teardown(() => cdb.stopping?.('test over'));
  return {
    told,
    async ask(message) {
      const reply = await cdb.receive(message, OPERATOR);
      if (reply instanceof DeferredReply) return (await reply.promise) ?? { type: 'ok' };
      return reply ?? { type: 'ok' };
    },
  };
}

function storePath(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'acp-cdbv-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'cdb.mdb');
}

async function refusedAsk(t: ExecutionContext, cdb: Stub, message: Message, code: ErrorCode, pattern: RegExp): Promise<void> {
  const error = await t.throwsAsync(cdb.ask(message), { instanceOf: AcpError });
  t.is(error?.code, code);
  t.regex(error?.message ?? '', pattern);
}

test('put, cas, batch and merge refuse values that are not plain data, naming the key and the field', async (t) => {
  const cdb = await cdbOn(t, storePath(t));
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  await refusedAsk(t, cdb, { type: 'cdb.put', key: 'meta/network/fz@n1', value: cyclic }, 'ACP_ERR_CDB_BAD_VALUE', /^bad value for meta\/network\/fz@n1: value\.self: refers back/);
  await refusedAsk(t, cdb, { type: 'cdb.put', key: 'meta/network/fz@n1', value: nested(4000) }, 'ACP_ERR_CDB_BAD_VALUE', /nests deeper than 32/);
  await refusedAsk(t, cdb, { type: 'cdb.cas', key: 'meta/network/fz@n1', value: { x: Number.NaN }, expect: null }, 'ACP_ERR_CDB_BAD_VALUE', /value\.x: the number NaN/);
  const ops = [
    { op: 'put', key: 'meta/network/ok@n1', value: { fine: true } },
    { op: 'put', key: 'meta/network/bad@n1', value: { when: new Date(0) } },
  ];
  await refusedAsk(t, cdb, { type: 'cdb.batch', ops }, 'ACP_ERR_CDB_BAD_VALUE', /^bad value for meta\/network\/bad@n1: ops\[1\]\.value\.when: is a Date/);
  const version = { wall: 1, logical: 0, node: 'n2' };
  const records = [
    { key: 'meta/network/m1@n2', value: { ok: 1 }, version, origin: 'n2' },
    { key: 'meta/network/m2@n2', value: nested(40), version, origin: 'n2' },
  ];
  await refusedAsk(t, cdb, { type: 'cdb.merge', records }, 'ACP_ERR_CDB_BAD_VALUE', /records\[1\]\.value(\.a)+: nests deeper/);
  // Nothing of the refused requests was written (a batch and a merge are all or none).
  const list = (await cdb.ask({ type: 'cdb.list', prefix: 'meta/' })) as Message & { records: unknown[] };
  t.deepEqual(list.records, []);
  t.is(((await cdb.ask({ type: 'cdb.put', key: 'meta/network/fz@n1', value: { a: [1, { b: null }] } })) as Message).type, 'cdb.written');
});

/** A store with a good record and one that cannot be decoded (bytes no msgpack value starts with). */
async function damagedStore(t: ExecutionContext): Promise<string> {
  const path = storePath(t);
  const db = open<unknown, string>({ path, compression: false });
  const version = { wall: 1, logical: 0, node: 'n1' };
  await db.put('object/network/good', { key: 'object/network/good', value: { name: 'good', type: 'bridge' }, version, origin: 'n1' });
  await db.close();
  const raw = open<Buffer, string>({ path, encoding: 'binary', compression: false });
  await raw.put('object/network/bad', Buffer.from([0xc1, 0xc1, 0xc1]));
  await raw.close();
  return path;
}

test('a read that fails inside the CDB answers with an error: get, list and a watch snapshot', async (t) => {
  const path = await damagedStore(t);
  const cdb = await cdbOn(t, path);
  const good = (await cdb.ask({ type: 'cdb.get', key: 'object/network/good' })) as Message & { record: { value: unknown } };
  t.like(good.record.value, { name: 'good' });
  await refusedAsk(t, cdb, { type: 'cdb.get', key: 'object/network/bad' }, 'ACP_ERR_CDB_STORE', /the record at object\/network\/bad .* cannot be read/);
  await refusedAsk(t, cdb, { type: 'cdb.list', prefix: 'object/' }, 'ACP_ERR_CDB_STORE', /object\/network\/bad/);
  await refusedAsk(t, cdb, { type: 'cdb.watch', prefix: 'object/network/', subscriber: 'acp://lab/n1/api/w1' }, 'ACP_ERR_CDB_STORE', /object\/network\/bad/);
  const info = (await cdb.ask({ type: 'service.info' })) as Message & { watchers: number };
  t.is(info.watchers, 0, 'a refused watch leaves no watcher behind');
  t.false(cdb.told.some((entry) => entry.message.type === 'cdb.snapshot'), 'and sent no snapshot');
  // The damaged record can be deleted; then everything reads again.
  t.is(((await cdb.ask({ type: 'cdb.delete', key: 'object/network/bad' })) as Message).type, 'cdb.written');
  await refusedAsk(t, cdb, { type: 'cdb.get', key: 'object/network/bad' }, 'ACP_ERR_CDB_NOT_FOUND', /no record/);
  const listed = (await cdb.ask({ type: 'cdb.list', prefix: 'object/' })) as Message & { records: { key: string }[] };
  t.deepEqual(listed.records.map((record) => record.key), ['object/network/good']);
});

// ---------------------------------------------------------------------------------------------
// The wire: an answer that cannot be encoded is answered with an error, never silence

test('a reply that cannot be encoded becomes an error frame on its id', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'acp-enc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 's.sock');
  const server = createServer((socket: Socket) => {
    attachFrames(socket, 'c1', { log: silentLogger() }, (connection) => ({
      frame: (envelope) => {
        const body: Record<string, unknown> = { type: 'cdb.record' };
        body.self = body;
        connection.send({ v: 1, k: 'reply', id: envelope.id ?? 0, body });
        connection.send({ v: 1, k: 'pong', id: 2 });
      },
      badFrame: () => undefined,
      closed: () => undefined,
    }));
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  t.teardown(() => server.close());
  const socket = netConnect({ path: socketPath });
  t.teardown(() => socket.destroy());
  const decoder = new FrameDecoder();
  const frames: Envelope[] = [];
  const done = new Promise<void>((resolve) => {
    socket.on('data', (chunk: Buffer) => {
      frames.push(...decoder.push(chunk));
      if (frames.length >= 2) resolve();
    });
  });
  socket.write(encodeFrame({ v: 1, k: 'ask', id: 41, to: 'acp://lab/n1/cdb', body: { type: 'cdb.get', key: 'meta/x/y@n1' } }));
  await done;
  t.is(frames[0]?.k, 'error');
  t.is(frames[0]?.id, 41);
  t.is(frames[0]?.err?.code, 'ACP_ERR_INTERNAL');
  t.regex(frames[0]?.err?.message ?? '', /the reply could not be encoded/);
  t.is(frames[1]?.k, 'pong', 'the connection carries on');
});

test('the config keeps room in a frame for the deepest value the CDB accepts; the defaults are in step', (t) => {
  const defaults = parseConfig({ cluster: 'lab', node: 'n1' }, 'config.json');
  t.is(defaults.cdb.maxValueDepth, DEFAULT_VALUE_LIMITS.maxDepth);
  t.is(defaults.cdb.maxValueBytes, DEFAULT_VALUE_LIMITS.maxBytes);
  t.is(defaults.api.maxFrameDepth, DEFAULT_MAX_DEPTH);
  t.is(defaults.api.maxHelloFrameBytes, DEFAULT_MAX_HELLO_FRAME_BYTES);
  const error = t.throws(() => parseConfig({ cluster: 'lab', node: 'n1', api: { maxFrameDepth: 40 }, cdb: { maxValueDepth: 40 } }, 'config.json'), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_CONFIG_INVALID');
  t.regex(error?.message ?? '', /api\.maxFrameDepth/);
});
