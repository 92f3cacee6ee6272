/**
 * bench/cdb: the CDB actor's durable puts (one at a time, batched, 64 at once), gets (idle and
 * under a write load) and watch fan-out, each beside a baseline doing the same work at the same
 * concurrency, in alternating rounds (see measure.ts `alternate`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CDB_READS, createCdb } from '../actors/cdb/index.js';
import { ObjectStore, type StoredRecord } from '../adapters/store.js';
import { silentLogger } from '../runtime/logger.js';
import type { Message } from '../runtime/messages.js';
import { actorPrincipal } from '../runtime/principal.js';
import { ActorSystem } from '../runtime/system.js';
import { alternate, type Comparison } from './measure.js';

const value = (name: string) => ({ name, type: 'bridge', mtu: 1500 });
let version = 0;
const record = (name: string): StoredRecord => ({ key: `object/network/${name}`, value: value(name), version: { wall: (version += 1), logical: 0, node: 'n1' }, origin: 'n1' });
const put = (name: string): Message => ({ type: 'cdb.put', key: `object/network/${name}`, value: value(name) });
const putOp = (name: string) => ({ op: 'put', key: `object/network/${name}`, value: value(name) });

/** Operations per second of `count` operations done by `body`. */
async function timed(count: number, body: () => Promise<void> | void): Promise<number> {
  const start = process.hrtime.bigint();
  await body();
  return count / (Number(process.hrtime.bigint() - start) / 1e9);
}

/** Operations shared by `workers` concurrent loops, each starting one while `more()` says so. */
function concurrently(workers: number, more: () => boolean, op: () => Promise<unknown>): Promise<void> {
  return Promise.all(
    Array.from({ length: workers }, async () => {
      while (more()) await op();
    }),
  ).then(() => undefined);
}
const upTo = (total: number) => {
  let started = 0;
  return () => started++ < total;
};

export async function cdbBenchmarks(): Promise<Comparison[]> {
  const dir = mkdtempSync(join(tmpdir(), 'acp-bench-cdb-'));
  const results: Comparison[] = [];
  const raw = ObjectStore.open(join(dir, 'raw.mdb'));
  const system = new ActorSystem({ identity: { cluster: 'bench', node: 'n1', incarnation: 1 }, log: silentLogger() });
  const cdbPath = system.localPath('cdb');
  await system.spawn(cdbPath, (ctx) => createCdb(ctx, { storePath: join(dir, 'cdb.mdb'), maxMemoryKeys: 100_000, statsHistory: 600 }), { reads: CDB_READS });
  const ask = (message: Message) => system.ask(cdbPath, message, { timeoutMs: 60_000 });
  let id = 0;
  try {
    // Durable puts, one at a time: each waits for its own flush.
    results.push(
      await alternate('cdb durable puts, sequential', 'raw lmdb durable writes, sequential', 11,
        () => timed(50, async () => { for (let i = 0; i < 50; i += 1) await raw.write([record(`single-${id++}`)]); }),
        () => timed(50, async () => { for (let i = 0; i < 50; i += 1) await ask(put(`single-${id++}`)); })),
    );

    // Batched: 100 writes per transaction (cdb.batch vs. one store transaction).
    results.push(
      await alternate('cdb durable puts, batched 100 per transaction', 'raw lmdb, same batches', 11,
        () => timed(500, async () => { for (let k = 0; k < 5; k += 1) await raw.write(Array.from({ length: 100 }, () => record(`batch-${id++}`))); }),
        () => timed(500, async () => { for (let k = 0; k < 5; k += 1) await ask({ type: 'cdb.batch', ops: Array.from({ length: 100 }, () => putOp(`batch-${id++}`)) }); })),
    );

    // 64 at once on both sides: the CDB does not hold its mailbox on a flush, and lmdb gathers
    // concurrent writes into shared transactions.
    results.push(
      await alternate('cdb durable puts, 64 concurrent askers', 'raw lmdb durable writes, 64 concurrent writers', 11,
        () => timed(500, () => concurrently(64, upTo(500), () => raw.write([record(`conc-${id++}`)]))),
        () => timed(500, () => concurrently(64, upTo(500), () => ask(put(`conc-${id++}`))))),
    );

    // Gets, one at a time on both sides, of the same 1,000 keys.
    await raw.write(Array.from({ length: 1000 }, (_, i) => record(`get-${i}`)));
    for (let k = 0; k < 10; k += 1) await ask({ type: 'cdb.batch', ops: Array.from({ length: 100 }, (_, i) => putOp(`get-${k * 100 + i}`)) });
    // Short rounds, many of them: load from elsewhere on a shared machine comes in bursts.
    const gets = 4000;
    const rawGets = () => timed(gets, () => { for (let i = 0; i < gets; i += 1) raw.get(`object/network/get-${i % 1000}`); });
    const cdbGets = () => timed(gets, async () => { for (let i = 0; i < gets; i += 1) await ask({ type: 'cdb.get', key: `object/network/get-${i % 1000}` }); });
    await rawGets();
    await cdbGets();
    results.push(await alternate('cdb gets, sequential local asks', 'raw lmdb gets, sequential', 31, rawGets, cdbGets));

    // The same gets while 64 other askers keep putting through the CDB, on both sides: the reads
    // do not queue behind the writes in the CDB's mailbox.
    const writer = system.ref(cdbPath, actorPrincipal('acp://bench/n1/writer'));
    let writing = true;
    const load = concurrently(64, () => writing, () => writer.ask(put(`load-${id++}`), { timeoutMs: 60_000 }));
    results.push(await alternate('cdb gets, sequential local asks, while 64 other askers put', 'raw lmdb gets under the same put load', 15, rawGets, cdbGets));
    writing = false;
    await load;

    // Watch fan-out: a batch of 50 puts until each of 20 watchers has all 50 events, against the
    // same batch under a prefix nobody watches, until it is acknowledged.
    const subscribers = 20;
    let delivered = 0;
    for (let s = 0; s < subscribers; s += 1) {
      const path = system.localPath(`sub-${s}`);
      await system.spawn(path, () => ({ receive: (message) => { if (message.type === 'cdb.events') delivered += (message.records as unknown[]).length; } }));
      await ask({ type: 'cdb.watch', prefix: 'object/network/fan-', subscriber: `acp://bench/n1/sub-${s}` });
    }
    const batch = (prefix: string) => ({ type: 'cdb.batch', ops: Array.from({ length: 50 }, () => putOp(`${prefix}-${id++}`)) });
    results.push(
      await alternate(`watch fan-out: 50-put batch until ${subscribers} watchers have every event`, 'the same batch unwatched, until acknowledged', 15,
        () => timed(50, async () => { await ask(batch('quiet')); }),
        () => timed(50, async () => {
          const target = delivered + 50 * subscribers;
          await ask(batch('fan'));
          while (delivered < target) await new Promise((resolve) => setImmediate(resolve));
        })),
    );

    results.push(await watchSnapshot(system, dir));
  } finally {
    await system.shutdown();
    await raw.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

/**
 * A watch's snapshot of 200,000 stats keys (cdb.watch until the subscriber has the last chunk),
 * beside one sorted copy of the same keys: the table's sorted index is read once, not sorted per page.
 */
async function watchSnapshot(system: ActorSystem, dir: string): Promise<Comparison> {
  const keys = 200_000;
  const path = system.localPath('cdb-big');
  await system.spawn(path, (ctx) => createCdb(ctx, { storePath: join(dir, 'big.mdb'), maxMemoryKeys: keys + 1000, statsHistory: 2 }), { reads: CDB_READS });
  const ask = (message: Message) => system.ask(path, message, { timeoutMs: 120_000 });
  // Written in a shuffled order, so the table's keys are not already sorted.
  const ids = Array.from({ length: keys }, (_, i) => (i * 7919) % keys);
  for (let offset = 0; offset < keys; offset += 1000) {
    await ask({ type: 'cdb.batch', ops: ids.slice(offset, offset + 1000).map((i) => ({ op: 'put', key: `stats/system/s-${i}@n1`, value: { cpu: i } })) });
  }
  let received = 0;
  let done: (() => void) | undefined;
  await system.spawn(system.localPath('snapshot-sub'), () => ({
    receive: (message) => {
      if (message.type !== 'cdb.snapshot') return;
      received += (message as Message & { records: unknown[] }).records.length;
      if ((message as Message & { done: boolean }).done) done?.();
    },
  }));
  const allKeys = ids.map((i) => `stats/system/s-${i}@n1`);
  return alternate(`watch snapshot of ${keys.toLocaleString('en')} stats keys (cdb.watch until the subscriber has the last chunk)`, 'one sorted copy of the same keys', 5,
    () => timed(keys, () => { [...allKeys].sort(); }),
    () => timed(keys, async () => {
      received = 0;
      const finished = new Promise<void>((resolve) => { done = resolve; });
      const watching = await ask({ type: 'cdb.watch', prefix: 'stats/', subscriber: 'acp://bench/n1/snapshot-sub' });
      await finished;
      if (received !== keys) throw new Error(`the snapshot had ${received} records, not ${keys}`);
      await ask({ type: 'cdb.unwatch', watch: (watching as Message & { watch: number }).watch });
    }));
}
