/**
 * Per-connection bounds (watches, asks in flight) and the daemon's incarnation, a durable counter
 * that grows at every start whatever the wall clock does.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { nextIncarnation } from '../adapters/home.js';
import { homePaths } from '../runtime/config.js';
import { AcpError } from '../runtime/errors.js';
import type { NodeStatus } from '../runtime/services.js';
import { allRunning, client, makeHome, startDaemon } from './helpers/node.js';

test('a connection holds at most api.maxWatches watches and api.maxAsksInFlight asks; past them, a clear ACP_ERR_API_LIMIT and the connection goes on', async (t) => {
  const home = makeHome(t, { api: { maxWatches: 2, maxAsksInFlight: 3 } });
  await allRunning(await startDaemon(t, home, { faults: true }));
  const connection = await client(t, home);
  const cancels = [connection.watch('object/', () => undefined), connection.watch('meta/', () => undefined)];
  t.teardown(() => cancels.forEach((cancel) => cancel()));
  const third = await new Promise<AcpError | undefined>((resolve) => {
    connection.subscribe('cdb', { type: 'cdb.watch', prefix: 'stats/' }, () => undefined, resolve);
    setTimeout(() => resolve(undefined), 5000);
  });
  t.is(third?.code, 'ACP_ERR_API_LIMIT');
  t.regex(third?.message ?? '', /api\.maxWatches/);
  // Three asks held by a stalled actor; the fourth is refused at once.
  await connection.ask('monitor', { type: 'chaos.stall', ms: 3000 });
  const held = [1, 2, 3].map(() => connection.ask('monitor', { type: 'ping' }, { timeoutMs: 10_000 }));
  const refused = await t.throwsAsync(connection.ask('monitor', { type: 'ping' }, { timeoutMs: 10_000 }), { instanceOf: AcpError });
  t.is(refused?.code, 'ACP_ERR_API_LIMIT');
  t.regex(refused?.message ?? '', /api\.maxAsksInFlight/);
  await Promise.all(held);
  t.like(await connection.ask('framework', { type: 'ping' }), { type: 'pong' });
});

test('the incarnation is a counter in the home: +1 at every start, also when the clock went back', async (t) => {
  const home = mkdtempSync(join(tmpdir(), 'acp-inc-'));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const paths = homePaths(home);
  const first = nextIncarnation(paths, () => 5_000);
  t.is(first, 5_001, 'a new home seeds the counter once from the clock');
  t.is(nextIncarnation(paths, () => 1_000), 5_002, 'the clock went back: the counter still grows');
  t.is(nextIncarnation(paths, () => 9_999_999), 5_003, 'the clock is not read again');
  t.is(readFileSync(join(paths.data, 'incarnation'), 'utf8').trim(), '5003');
});

test('a restarted daemon has the next incarnation', async (t) => {
  const home = makeHome(t);
  const first = await startDaemon(t, home);
  const before = (first.status() as NodeStatus).incarnation;
  await first.stop('restart');
  const second = await startDaemon(t, home);
  t.is((second.status() as NodeStatus).incarnation, before + 1);
});
