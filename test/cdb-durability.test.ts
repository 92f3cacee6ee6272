import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { RecordView } from '../actors/cdb/index.js';
import { connect, type AcpClient } from '../node/client.js';
import type { Message } from '../runtime/messages.js';
import type { NodeStatus } from '../runtime/services.js';
import { eventually, makeHome, runCli, isAlive } from './helpers/node.js';

type Records = Message & { records: RecordView[]; cursor?: string };
interface Network {
  name: string;
  type: 'vlan';
  vlan: number;
  mtu: number;
}

/** A network whose every field depends on `n`, so a value read back tells which write it came from. */
const network = (name: string, n: number): Network => ({ name, type: 'vlan', vlan: (n % 4094) + 1, mtu: 576 + (n % 8000) });


/** `acp up --detach`, then the pid (from run/acpd.pid, checked against `acp status --json`), with cdb running and never restarted. */
async function up(t: ExecutionContext, home: string): Promise<number> {
  const started = await runCli(['up', '--detach'], home);
  t.is(started.code, 0, `up --detach: ${started.stderr}`);
  const pid = Number(readFileSync(join(home, 'run', 'acpd.pid'), 'utf8').trim());
  const status = await runCli(['status', '--json'], home);
  t.is(status.code, 0, status.stderr);
  const node = JSON.parse(status.stdout) as NodeStatus;
  t.is(node.pid, pid);
  t.false(node.booting);
  const cdb = node.services.find((service) => service.name === 'cdb');
  t.like(cdb, { state: 'running', restarts: 0 }, 'the store opened cleanly');
  t.true(node.services.every((service) => service.state === 'running'));
  return pid;
}

async function kill(pid: number): Promise<void> {
  process.kill(pid, 'SIGKILL');
  await eventually(() => (isAlive(pid) ? undefined : true), 15_000, `pid ${pid} to be gone`);
}

async function listAll(connection: AcpClient, prefix: string): Promise<Map<string, RecordView>> {
  const records = new Map<string, RecordView>();
  let cursor: string | undefined;
  do {
    const page = await connection.ask<Records>('cdb', { type: 'cdb.list', prefix, limit: 1000, ...(cursor === undefined ? {} : { cursor }) }, { timeoutMs: 10_000 });
    for (const record of page.records) records.set(record.key, record);
    cursor = page.cursor;
  } while (cursor !== undefined);
  return records;
}

test('(a) 200 acknowledged puts survive a SIGKILL right after the last acknowledgement', async (t) => {
  const home = makeHome(t);
  const pid = await up(t, home);
  const connection = await connect({ home });
  const acknowledged = new Map<string, Network>();
  for (let i = 0; i < 200; i += 1) {
    const name = `a-${String(i).padStart(3, '0')}`;
    const value = network(name, i);
    const reply = await connection.ask<Message & { key: string }>('cdb', { type: 'cdb.put', key: `object/network/${name}`, value }, { timeoutMs: 10_000 });
    acknowledged.set(reply.key, value);
  }
  await kill(pid);
  await connection.close();

  const after = await up(t, home);
  t.not(after, pid);
  const reader = await connect({ home });
  t.teardown(() => reader.close());
  const stored = await listAll(reader, 'object/network/');
  t.is(stored.size, 200);
  for (const [key, value] of acknowledged) t.deepEqual(stored.get(key)?.value, value, key);
});

test('(b) at random kill points: every acknowledged write survives, nothing is half-written, the store opens cleanly', async (t) => {
  const home = makeHome(t);
  const rounds = 8;
  const writers = 4;
  /** Every put sent, by key: the values sent (in order) and how many of them were acknowledged. */
  const sent = new Map<string, { values: Network[]; acked: number }>();
  let pid = await up(t, home);
  let totalAcked = 0;
  for (let round = 0; round < rounds; round += 1) {
    const connection = await connect({ home });
    let stop = false;
    const writer = async (w: number) => {
      for (let i = 0; !stop; i += 1) {
        // Mostly new keys; every 4th write overwrites this writer's counter key.
        const name = i % 4 === 3 ? `r${round}-w${w}-counter` : `r${round}-w${w}-${i}`;
        const value = network(name, i);
        const entry = sent.get(`object/network/${name}`) ?? { values: [], acked: 0 };
        sent.set(`object/network/${name}`, entry);
        entry.values.push(value);
        try {
          await connection.ask('cdb', { type: 'cdb.put', key: `object/network/${name}`, value }, { timeoutMs: 10_000 });
        } catch {
          return;
        }
        entry.acked = entry.values.length;
        totalAcked += 1;
      }
    };
    const running = Array.from({ length: writers }, (_, w) => writer(w));
    const delay = 50 + Math.floor(Math.random() * 551);
    await new Promise((resolve) => setTimeout(resolve, delay));
    await kill(pid);
    stop = true;
    await Promise.all(running);
    await connection.close();
    t.log(`round ${round}: killed after ${delay} ms; ${totalAcked} puts acknowledged so far`);

    pid = await up(t, home);
    const reader = await connect({ home });
    const stored = await listAll(reader, 'object/network/');
    await reader.close();
    let missing = 0;
    let bad = 0;
    for (const [key, entry] of sent) {
      const record = stored.get(key);
      if (entry.acked > 0 && !record) {
        missing += 1;
        t.fail(`acknowledged ${key} is missing after kill ${round}`);
        continue;
      }
      if (!record) continue;
      // The value is one that was sent, whole, and no older than the last acknowledged one.
      const index = entry.values.findIndex((value) => JSON.stringify(value) === JSON.stringify(record.value));
      if (index < 0 || index + 1 < entry.acked) {
        bad += 1;
        t.fail(`${key} holds ${JSON.stringify(record.value)}; sent ${JSON.stringify(entry.values)}, ${entry.acked} acknowledged`);
      }
    }
    for (const key of stored.keys()) if (!sent.has(key)) t.fail(`${key} was never written`);
    t.is(missing + bad, 0, `round ${round}`);
  }
  t.true(totalAcked > 0, 'no put was ever acknowledged');
});

test('(c) objects survive acp down and acp up --detach', async (t) => {
  const home = makeHome(t);
  t.is((await runCli(['up', '--detach'], home)).code, 0);
  const put = await runCli(['cdb', 'put', 'object/network/lan', '{"name":"lan","type":"bridge"}'], home);
  t.is(put.code, 0, put.stderr);
  t.regex(put.stdout, /^object\/network\/lan version \d+\.\d+@n1\n$/);
  const version = /version (\S+)/.exec(put.stdout)?.[1];
  const down = await runCli(['down'], home);
  t.is(down.code, 0, down.stderr);
  t.is((await runCli(['up', '--detach'], home)).code, 0);

  const got = await runCli(['cdb', 'get', 'object/network/lan'], home);
  t.is(got.code, 0, got.stderr);
  t.is(got.stdout, `${JSON.stringify({ name: 'lan', type: 'bridge' }, null, 2)}\nversion ${version} (origin n1)\n`);
  const json = await runCli(['cdb', 'get', 'object/network/lan', '--json'], home);
  t.deepEqual(JSON.parse(json.stdout) as RecordView, { key: 'object/network/lan', value: { name: 'lan', type: 'bridge' }, version: version!, origin: 'n1' });
});
