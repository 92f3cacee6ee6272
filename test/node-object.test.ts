/**
 * A node's object keeps what others put there: the node writes its own fields over it (witness,
 * agent, cluster), an operator's `votes: 0` and labels survive a restart; a witness boots only
 * cdb, agent, api and monitor.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { patchNodeObject } from '../actors/node-object.js';
import type { Message } from '../runtime/messages.js';
import { BOOT_ORDER, bootOrderFor } from '../node/boot-order.js';
import { allRunning, client, eventually, makeHome, startDaemon } from './helpers/node.js';

test('patchNodeObject changes only the fields it is given, removes the undefined ones, and says when nothing changes', (t) => {
  const existing = { name: 'w', cluster: 'lab', agent: '10.0.0.3:7480', votes: 0 as const, labels: { rack: 'r1' } };
  t.deepEqual(patchNodeObject('w', existing, { witness: true }), { ...existing, witness: true });
  t.is(patchNodeObject('w', { ...existing, witness: true }, { witness: true, agent: '10.0.0.3:7480' }), undefined);
  t.deepEqual(patchNodeObject('w', { ...existing, witness: true }, { witness: undefined }), existing);
  t.deepEqual(patchNodeObject('n9', undefined, { cluster: 'lab', agent: '10.0.0.9:7480' }), { name: 'n9', cluster: 'lab', agent: '10.0.0.9:7480' });
  // A broken record is replaced by the node's own fields.
  t.deepEqual(patchNodeObject('n9', { name: 'n9', votes: 7 }, { cluster: 'lab' }), { name: 'n9', cluster: 'lab' });
  t.throws(() => patchNodeObject('n9', undefined, { agent: 'not an address' }));
});

test('a witness boots cdb, agent, api and monitor only, in the boot order', (t) => {
  t.deepEqual(bootOrderFor({ witness: true }).map((entry) => entry.name), ['cdb', 'agent', 'api', 'monitor']);
  t.is(bootOrderFor({}), BOOT_ORDER);
  t.is(bootOrderFor({ witness: false }), BOOT_ORDER);
});

test("the node's own object keeps an operator's votes: 0 and labels across a restart, and says witness when the config does", async (t) => {
  t.timeout(60_000);
  const home = makeHome(t, { node: 'n1' });
  const first = await startDaemon(t, home);
  await allRunning(first);
  const c1 = await client(t, home);
  const key = 'object/node/n1';
  const written = await eventually(async () => (await c1.ask<Message & { record: { value: Record<string, unknown> } }>('cdb', { type: 'cdb.get', key })).record.value, 10_000, 'the node object');
  t.is(written['witness'], undefined);
  await c1.ask('cdb', { type: 'cdb.put', key, value: { ...written, votes: 0, labels: { rack: 'r1' } } });
  await c1.close();
  await first.stop('restart');

  // Restarted as a witness (config.json says so): it adds `witness` and keeps the rest.
  const configPath = join(home, 'config.json');
  writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')), witness: true }));
  const second = await startDaemon(t, home);
  const status = await allRunning(second);
  t.deepEqual(status.services.map((service) => service.name), ['framework', 'cdb', 'agent', 'api', 'monitor']);
  const c2 = await client(t, home);
  const after = await eventually(async () => {
    const value = (await c2.ask<Message & { record: { value: Record<string, unknown> } }>('cdb', { type: 'cdb.get', key })).record.value;
    return value['witness'] === true ? value : undefined;
  }, 10_000, 'the node object to say witness');
  t.is(after['votes'], 0);
  t.deepEqual(after['labels'], { rack: 'r1' });
});
