/** Defects found in review, each pinned so it cannot come back. */
import test from 'ava';
import { z } from 'zod';
import { AcpError } from '../runtime/errors.js';
import { silentLogger } from '../runtime/logger.js';
import { ActorSystem } from '../runtime/system.js';
import { allRunning, client, makeHome, startDaemon } from './helpers/node.js';

function system(): ActorSystem {
  return new ActorSystem({ identity: { cluster: 'lab', node: 'n1', incarnation: 1 }, log: silentLogger(), faults: true });
}

test('a message failing the actor’s own schema (a ZodError) is refused, not a crash', async (t) => {
  const actors = system();
  t.teardown(() => actors.shutdown());
  const schema = z.strictObject({ type: z.literal('known') });
  let crashes = 0;
  const path = actors.localPath('strict');
  await actors.spawn(path, () => ({ receive: (message) => (schema.parse(message), { type: 'ok' }) }), { onCrash: () => (crashes += 1) });
  const refused = await t.throwsAsync(actors.ask(path, { type: 'surprise' }), { instanceOf: AcpError });
  t.is(refused?.code, 'ACP_ERR_SCHEMA_REJECTED');
  t.is(crashes, 0);
  t.is(actors.generationOf(path), 1);
  t.deepEqual(await actors.ask(path, { type: 'known' }), { type: 'ok' });
});

test('a start that never settles fails after startTimeoutMs, and what was queued fails fast', async (t) => {
  const actors = system();
  t.teardown(() => actors.shutdown());
  const path = actors.localPath('stuck');
  const spawning = actors.spawn(path, () => ({ started: () => new Promise<void>(() => undefined), receive: () => ({ type: 'ok' }) }), { startTimeoutMs: 200 });
  const failed = await t.throwsAsync(spawning, { instanceOf: AcpError });
  t.is(failed?.code, 'ACP_ERR_SUPERVISOR_START_FAILED');
  t.regex(failed?.message ?? '', /did not start within 200 ms/);
  const after = await t.throwsAsync(actors.ask(path, { type: 'anything' }, { timeoutMs: 5000 }), { instanceOf: AcpError });
  t.is(after?.kind, 'no-such-actor');
});

test('a crash with a stop queued behind it ends the stop at once, not after shutdownMs', async (t) => {
  const actors = system();
  t.teardown(() => actors.shutdown());
  const path = actors.localPath('doomed');
  let release: () => void = () => undefined;
  const actor = await actors.spawn(path, () => ({
    receive: async (message) => {
      if (message.type === 'hold') await new Promise<void>((resolve) => (release = resolve));
      throw new Error('boom');
    },
  }), { onCrash: () => undefined });
  actors.ref(path).tell({ type: 'hold' });
  const stopped = actor.stop('test', 20_000);
  release();
  const first = await Promise.race([stopped.then(() => 'stopped'), new Promise((resolve) => setTimeout(() => resolve('still waiting'), 10_000))]);
  t.is(first, 'stopped');
});

test('a cdb watch naming a service as its subscriber is refused, and the node stays up', async (t) => {
  const home = makeHome(t);
  const daemon = await startDaemon(t, home);
  await allRunning(daemon);
  const connection = await client(t, home);
  const refused = await t.throwsAsync(connection.ask('cdb', { type: 'cdb.watch', prefix: '', subscriber: 'acp://lab/n1/framework' }), { instanceOf: AcpError });
  t.is(refused?.code, 'ACP_ERR_CDB_BAD_KEY');
  // A stray internal message to the framework is refused there, never a crash.
  const stray = await t.throwsAsync(daemon.system.ask(daemon.system.localPath('framework'), { type: 'cdb.snapshot', watch: 1, records: [], done: true }), { instanceOf: AcpError });
  t.is(stray?.code, 'ACP_ERR_SCHEMA_REJECTED');
  const status = await allRunning(daemon);
  t.true(status.services.every((service) => service.restarts === 0));
});

test('subscriptions from two connections never collide on a subscriber name', async (t) => {
  const home = makeHome(t);
  const daemon = await startDaemon(t, home);
  await allRunning(daemon);
  const first = await client(t, home);
  const second = await client(t, home);
  const errors: string[] = [];
  const events: string[] = [];
  for (const connection of [first, second]) {
    connection.subscribe('cdb', { type: 'cdb.watch', prefix: 'object/' }, (event) => events.push(event.type), (error) => errors.push(error.code));
  }
  await new Promise((resolve) => setTimeout(resolve, 1500));
  t.deepEqual(errors, []);
  t.true(events.filter((type) => type === 'cdb.watching').length === 2, JSON.stringify(events));
});
