import test, { type ExecutionContext } from 'ava';
import { connect } from '../node/client.js';
import type { Daemon } from '../node/daemon.js';
import { AcpError } from '../runtime/errors.js';
import type { NodeStatus } from '../runtime/services.js';
import { allRunning, client, eventually, makeHome, startDaemon } from './helpers/node.js';

const WAIT_MS = 5000;

async function bootDaemon(t: ExecutionContext, faults = false): Promise<{ home: string; daemon: Daemon }> {
  const home = makeHome(t);
  const daemon = await startDaemon(t, home, { faults });
  await allRunning(daemon);
  return { home, daemon };
}

async function rejection(t: ExecutionContext, promise: Promise<unknown>): Promise<AcpError> {
  const error = await t.throwsAsync(promise, { instanceOf: AcpError });
  if (!(error instanceof AcpError)) throw new Error('did not reject with an AcpError');
  return error;
}

test('tell resolves for a valid tell and rejects with ACP_ERR_UNKNOWN_MESSAGE for an unknown type', async (t) => {
  const { home } = await bootDaemon(t);
  const connection = await client(t, home);
  // The api service counts what it handles (and, unlike cdb, gets no traffic of its own).
  const before = await connection.ask<{ type: string; handled: number }>('api', { type: 'service.info' }, { timeoutMs: WAIT_MS });
  await t.notThrowsAsync(connection.tell('api', { type: 'service.info' }));
  const after = await connection.ask<{ type: string; handled: number }>('api', { type: 'service.info' }, { timeoutMs: WAIT_MS });
  t.true(after.handled >= before.handled + 2, `the tell was delivered (and handled before the next ask): ${before.handled} then ${after.handled}`);
  const error = await rejection(t, connection.tell('framework', { type: 'no.such.type' }));
  t.is(error.code, 'ACP_ERR_UNKNOWN_MESSAGE');
  t.regex(error.message, /no\.such\.type/);
  // The refusal answered that one tell; the connection still works.
  const status = await connection.ask<NodeStatus>('framework', { type: 'status' }, { timeoutMs: WAIT_MS });
  t.is(status.type, 'status');
});

test('an ask with timeoutMs to a stalled actor rejects with kind timeout', async (t) => {
  const { home } = await bootDaemon(t, true);
  const connection = await client(t, home);
  const stalling = await connection.ask('cdb', { type: 'chaos.stall', ms: 1500 }, { timeoutMs: WAIT_MS });
  t.is(stalling.type, 'stalling');
  const error = await rejection(t, connection.ask('cdb', { type: 'ping' }, { timeoutMs: 200 }));
  t.is(error.kind, 'timeout');
  t.is(error.code, 'ACP_ERR_ASK_TIMEOUT');
  // The connection survives a timed-out ask.
  t.is((await connection.ask('framework', { type: 'ping' }, { timeoutMs: WAIT_MS })).type, 'pong');
});

test('the daemon stopping rejects pending asks with ACP_ERR_WIRE_CLOSED', async (t) => {
  const { home, daemon } = await bootDaemon(t, true);
  const connection = await client(t, home);
  await connection.ask('cdb', { type: 'chaos.stall', ms: 2000 }, { timeoutMs: WAIT_MS });
  const pending = connection.ask('cdb', { type: 'ping' }, { timeoutMs: 10_000 });
  pending.catch(() => undefined);
  const stopped = daemon.stop('test: closing connections');
  const error = await rejection(t, pending);
  t.is(error.code, 'ACP_ERR_WIRE_CLOSED');
  await stopped;
  // Later requests on the closed connection fail the same way, at once.
  const later = await rejection(t, connection.ask('framework', { type: 'ping' }, { timeoutMs: WAIT_MS }));
  t.is(later.code, 'ACP_ERR_WIRE_CLOSED');
});

test('connecting to a home that was never started tells to run acp up', async (t) => {
  const home = makeHome(t);
  const error = await rejection(t, connect({ home }));
  t.is(error.code, 'ACP_ERR_DAEMON_NOT_RUNNING');
  t.regex(error.message, /acp up/);
});

test('connecting to a home whose daemon is down tells to run acp up', async (t) => {
  const { home, daemon } = await bootDaemon(t);
  await daemon.stop('test: daemon down');
  const error = await rejection(t, connect({ home }));
  t.is(error.code, 'ACP_ERR_DAEMON_NOT_RUNNING');
  t.regex(error.message, /acp up/);
});

// Regression: an error frame for a tell the client no longer waits on used to reach `fail()`, which
// rejected every pending and later request although the socket stayed open (fixed in ffc9d4e: the
// session reports only routing refusals for tells, and the client settles an error by its id only).
test('a tell that its actor fails after accepting it does not break the connection', async (t) => {
  const { home, daemon } = await bootDaemon(t, true);
  const connection = await client(t, home);
  // Hold cdb's mailbox so the tell below is accepted (pong) well before cdb handles it.
  await connection.ask('cdb', { type: 'chaos.stall', ms: 1000 }, { timeoutMs: WAIT_MS });
  await connection.tell('cdb', { type: 'chaos.crash', reason: 'late refusal' });
  // cdb crashed handling the tell (and its refusal went out on the tell's id) before it restarted.
  await eventually(() => (daemon.status().services.some((service) => service.name === 'cdb' && service.restarts >= 1) ? true : undefined), WAIT_MS, 'cdb to restart');
  const pong = await connection.ask('framework', { type: 'ping' }, { timeoutMs: WAIT_MS });
  t.is(pong.type, 'pong');
});

test('watch(prefix) streams the records under a CDB prefix, then every change', async (t) => {
  const home = makeHome(t);
  const daemon = await startDaemon(t, home);
  await allRunning(daemon);
  const connection = await client(t, home);
  await connection.ask('cdb', { type: 'cdb.put', key: 'object/network/before', value: { name: 'before', type: 'bridge' } });
  const events: { type: string; keys: string[] }[] = [];
  const cancel = connection.watch('object/network/', (event) => {
    const keys = event.type === 'cdb.snapshot' ? (event.records as { key: string }[]).map((record) => record.key) : event.type === 'cdb.events' ? (event.records as { key: string }[]).map((record) => record.key) : [];
    events.push({ type: event.type, keys });
  });
  t.teardown(cancel);
  await eventually(() => (events.some((event) => event.type === 'cdb.snapshot') ? true : undefined), 10_000, 'the snapshot');
  await connection.ask('cdb', { type: 'cdb.put', key: 'object/network/after', value: { name: 'after', type: 'bridge' } });
  await eventually(() => (events.some((event) => event.type === 'cdb.events') ? true : undefined), 10_000, 'the change');
  t.deepEqual(events.find((event) => event.type === 'cdb.snapshot')?.keys, ['object/network/before']);
  t.deepEqual(events.find((event) => event.type === 'cdb.events')?.keys, ['object/network/after']);
});
