/**
 * Reads outside the mailbox (SpawnOptions.reads + Actor.read): a read is answered at once while the
 * mailbox is busy, but never overtakes its own sender's queued messages; the CDB's gets, lists and
 * histories keep read-your-writes for a client's acknowledged and pipelined writes.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CDB_READS, createCdb } from '../actors/cdb/index.js';
import type { ActorRef } from '../runtime/actor.js';
import { AcpError } from '../runtime/errors.js';
import { silentLogger } from '../runtime/logger.js';
import type { Message } from '../runtime/messages.js';
import { actorPrincipal, type Principal } from '../runtime/principal.js';
import { ActorSystem } from '../runtime/system.js';
import { deferred, within } from './helpers/async.js';

const IDENTITY = { cluster: 'lab', node: 'n1', incarnation: 1 } as const;
const ALICE = actorPrincipal('acp://lab/n1/alice');
const BOB = actorPrincipal('acp://lab/n1/bob');

function makeSystem(t: ExecutionContext): ActorSystem {
  const system = new ActorSystem({ identity: IDENTITY, log: silentLogger() });
  t.teardown(() => system.shutdown('test over', 1000));
  return system;
}

/** A counter whose writes wait on a gate inside the mailbox; `count.read` is a read. */
async function gatedCounter(t: ExecutionContext) {
  const system = makeSystem(t);
  const path = system.localPath('counter');
  const gate = deferred();
  let value = 0;
  const handled: string[] = [];
  await system.spawn(
    path,
    () => ({
      async receive(message) {
        handled.push(message.type);
        if (message.type === 'count.add') {
          await gate.promise;
          value += 1;
          return { type: 'count.value', value };
        }
        if (message.type === 'count.read') return { type: 'count.value', value, inMailbox: true };
        return undefined;
      },
      read(message) {
        if (message.type === 'count.boom') throw new Error('not a refusal');
        if (message.type === 'count.refused') throw new AcpError('ACP_ERR_CDB_NOT_FOUND', 'nothing here');
        return { type: 'count.value', value, inMailbox: false };
      },
    }),
    { reads: new Set(['count.read', 'count.refused', 'count.boom']) },
  );
  const ask = (message: Message, sender: Principal) => within(system.ask(path, message, { sender, timeoutMs: 4000 }), message.type);
  return { system, path, gate, ask, handled, value: () => value };
}

test('a read is answered outside the mailbox while another sender\'s write holds it', async (t) => {
  const counter = await gatedCounter(t);
  const write = counter.ask({ type: 'count.add' }, ALICE);
  // Alice's write is in the mailbox, held at the gate; Bob's read does not wait for it.
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(counter.handled, ['count.add']);
  const read = await counter.ask({ type: 'count.read' }, BOB);
  t.deepEqual(read, { type: 'count.value', value: 0, inMailbox: false });
  counter.gate.resolve();
  t.deepEqual(await write, { type: 'count.value', value: 1 });
});

test('a read never overtakes its own sender\'s queued or running messages', async (t) => {
  const counter = await gatedCounter(t);
  const write = counter.ask({ type: 'count.add' }, ALICE);
  // Pipelined: Alice reads before her write is answered. Her read queues behind it.
  const read = counter.ask({ type: 'count.read' }, ALICE);
  await new Promise((resolve) => setImmediate(resolve));
  counter.gate.resolve();
  t.deepEqual(await write, { type: 'count.value', value: 1 });
  t.deepEqual(await read, { type: 'count.value', value: 1, inMailbox: true });
  // Once her messages are all handled, her reads skip the mailbox again and see what she wrote.
  t.deepEqual(await counter.ask({ type: 'count.read' }, ALICE), { type: 'count.value', value: 1, inMailbox: false });
  t.deepEqual(counter.handled, ['count.add', 'count.read']);
});

test('a refused read is answered with its error; a read that fails otherwise goes through the mailbox', async (t) => {
  const counter = await gatedCounter(t);
  const refused = await t.throwsAsync(counter.ask({ type: 'count.refused' }, BOB), { instanceOf: AcpError });
  t.is(refused?.code, 'ACP_ERR_CDB_NOT_FOUND');
  t.deepEqual(counter.handled, []);
  // Not a refusal: the mailbox handles the message (where a failure would be a crash); here `receive` answers it.
  t.deepEqual(await counter.ask({ type: 'count.boom' }, BOB), { type: 'ok' });
  t.deepEqual(counter.handled, ['count.boom']);
});

test('reads of a stopped actor are refused as for any message', async (t) => {
  const counter = await gatedCounter(t);
  counter.gate.resolve();
  await counter.system.ref(counter.path).ask({ type: 'count.add' });
  const live = counter.system.isAlive(counter.path);
  t.true(live);
  const stopping = counter.system.shutdown('over', 1000);
  const error = await t.throwsAsync(counter.ask({ type: 'count.read' }, BOB), { instanceOf: AcpError });
  t.regex(error?.code ?? '', /ACP_ERR_(NO_SUCH_ACTOR|ACTOR_STOPPED)/);
  await stopping;
});

async function cdbNode(t: ExecutionContext): Promise<{ system: ActorSystem; ref: (sender: Principal) => ActorRef }> {
  const dir = mkdtempSync(join(tmpdir(), 'acp-reads-'));
  const system = new ActorSystem({ identity: IDENTITY, log: silentLogger() });
  t.teardown(async () => {
    await system.shutdown('test over', 2000);
    rmSync(dir, { recursive: true, force: true });
  });
  const path = system.localPath('cdb');
  await system.spawn(path, (ctx) => createCdb(ctx, { storePath: join(dir, 'cdb.mdb'), maxMemoryKeys: 10_000, statsHistory: 5 }), { reads: CDB_READS });
  return { system, ref: (sender) => system.ref(path, sender) };
}

/** A network object; its name is its key's id, and `mtu` tells the writes apart. */
const network = (id: string, mtu = 1500) => ({ name: id, type: 'bridge', mtu });

test('cdb: a client\'s get, list and history after its acknowledged write see it, with other clients writing', async (t) => {
  const { ref } = await cdbNode(t);
  const alice = ref(ALICE);
  const bob = ref(BOB);
  for (let round = 0; round < 50; round += 1) {
    // Bob keeps the mailbox busy with writes of his own while Alice writes and reads.
    const bobs = Array.from({ length: 8 }, (_, i) => bob.ask({ type: 'cdb.put', key: `object/network/bob-${round}-${i}`, value: network(`bob-${round}-${i}`) }));
    const written = await alice.ask<Message & { version: string }>({ type: 'cdb.put', key: 'object/network/alice', value: network('alice', 1000 + round) });
    const got = await alice.ask<Message & { record: { value: { mtu: number }; version: string } }>({ type: 'cdb.get', key: 'object/network/alice' });
    t.is(got.record.value.mtu, 1000 + round);
    t.is(got.record.version, written.version);
    const listed = await alice.ask<Message & { records: { key: string; value: { mtu: number } }[] }>({ type: 'cdb.list', prefix: 'object/network/alice' });
    t.deepEqual(listed.records.map((record) => record.value.mtu), [1000 + round]);
    await alice.ask({ type: 'cdb.put', key: 'stats/node/n1@n1', value: { cpu: round } });
    const history = await alice.ask<Message & { points: { value: { cpu: number } }[] }>({ type: 'cdb.history', key: 'stats/node/n1@n1' });
    t.deepEqual(history.points.at(-1)?.value, { cpu: round });
    await Promise.all(bobs);
  }
});

test('cdb: pipelined write then read (not awaited in between) reads the write', async (t) => {
  const { ref } = await cdbNode(t);
  const alice = ref(ALICE);
  for (let round = 0; round < 50; round += 1) {
    const put = alice.ask({ type: 'cdb.put', key: `object/network/p-${round}`, value: network(`p-${round}`) });
    const del = round > 0 ? alice.ask({ type: 'cdb.delete', key: `object/network/p-${round - 1}` }) : Promise.resolve();
    const got = alice.ask<Message & { record: { value: { name: string } } }>({ type: 'cdb.get', key: `object/network/p-${round}` });
    const listed = alice.ask<Message & { records: { key: string }[] }>({ type: 'cdb.list', prefix: 'object/network/p-' });
    t.is((await got).record.value.name, `p-${round}`);
    t.deepEqual((await listed).records.map((record) => record.key), [`object/network/p-${round}`]);
    await Promise.all([put, del]);
  }
});

test('cdb: another client\'s read does not wait for writes queued in the mailbox', async (t) => {
  const { ref } = await cdbNode(t);
  const alice = ref(ALICE);
  const bob = ref(BOB);
  await alice.ask({ type: 'cdb.put', key: 'object/network/seen', value: network('seen') });
  const writes = Array.from({ length: 200 }, (_, i) => alice.ask({ type: 'cdb.put', key: `object/network/w-${i}`, value: network(`w-${i}`) }));
  // Bob's reads are answered from the state before Alice's queued writes were handled (in the
  // mailbox, they would have come after them and seen them, in flight).
  const [seen, notYet] = await Promise.allSettled([bob.ask({ type: 'cdb.get', key: 'object/network/seen' }), bob.ask({ type: 'cdb.get', key: 'object/network/w-199' })]);
  t.is(seen.status, 'fulfilled');
  t.is(notYet.status === 'rejected' ? (notYet.reason as AcpError).code : 'answered', 'ACP_ERR_CDB_NOT_FOUND');
  // Alice's read of her own last write queues behind her writes, and sees it.
  const own = await alice.ask<Message & { record: { key: string } }>({ type: 'cdb.get', key: 'object/network/w-199' });
  t.is(own.record.key, 'object/network/w-199');
  await Promise.all(writes);
  // Refusals are answered off the mailbox too, with the CDB's own codes.
  const missing = await t.throwsAsync(bob.ask({ type: 'cdb.get', key: 'object/network/none' }), { instanceOf: AcpError });
  t.is(missing?.code, 'ACP_ERR_CDB_NOT_FOUND');
  const bad = await t.throwsAsync(bob.ask({ type: 'cdb.history', key: 'object/network/seen' }), { instanceOf: AcpError });
  t.is(bad?.code, 'ACP_ERR_CDB_BAD_KEY');
});
