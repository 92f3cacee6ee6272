/**
 * bench/cdb: the CDB actor's durable puts (one at a time and batched), gets and watch fan-out, each
 * beside the raw store's own rate for the same operations, measured in the same run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCdb } from '../actors/cdb/index.js';
import { ObjectStore, type StoredRecord } from '../adapters/store.js';
import { silentLogger } from '../runtime/logger.js';
import type { Message } from '../runtime/messages.js';
import { ActorSystem } from '../runtime/system.js';
import { rate, type Comparison } from './measure.js';

const value = (i: number) => ({ name: `net-${i}`, type: 'bridge', mtu: 1500 });
const record = (i: number, prefix: string): StoredRecord => ({ key: `object/network/${prefix}-${i}`, value: value(i), version: { wall: i, logical: 0, node: 'n1' }, origin: 'n1' });

export async function cdbBenchmarks(): Promise<Comparison[]> {
  const dir = mkdtempSync(join(tmpdir(), 'acp-bench-cdb-'));
  const results: Comparison[] = [];
  const raw = ObjectStore.open(join(dir, 'raw.mdb'));
  const system = new ActorSystem({ identity: { cluster: 'bench', node: 'n1', incarnation: 1 }, log: silentLogger() });
  const cdbPath = system.localPath('cdb');
  await system.spawn(cdbPath, (ctx) => createCdb(ctx, { storePath: join(dir, 'cdb.mdb'), maxMemoryKeys: 100_000, statsHistory: 600 }));
  const ask = (message: Message) => system.ask(cdbPath, message, { timeoutMs: 60_000 });
  try {
    // Durable puts, one at a time: each waits for its own flush.
    let n = 0;
    const rawSingle = await rate(300, async (count) => {
      for (let i = 0; i < count; i += 1) await raw.write([record(n++, 'single')]);
    }, 20);
    let m = 0;
    const cdbSingle = await rate(300, async (count) => {
      for (let i = 0; i < count; i += 1) {
        const id = m++;
        await ask({ type: 'cdb.put', key: `object/network/single-${id}`, value: { ...value(id), name: `single-${id}` } });
      }
    }, 20);
    results.push({ name: 'cdb durable puts, sequential', opsPerSecond: cdbSingle, baseline: 'raw lmdb durable writes, sequential', baselineOpsPerSecond: rawSingle });

    // Batched: 100 writes per transaction (cdb.batch vs. one store transaction).
    const batches = 40;
    let b = 0;
    const rawBatched = await rate(batches * 100, async (count) => {
      for (let k = 0; k < count / 100; k += 1) await raw.write(Array.from({ length: 100 }, () => record(b++, 'batch')));
    }, 0);
    let c = 0;
    const cdbBatched = await rate(batches * 100, async (count) => {
      for (let k = 0; k < count / 100; k += 1) {
        await ask({ type: 'cdb.batch', ops: Array.from({ length: 100 }, () => { const id = c++; return { op: 'put', key: `object/network/batch-${id}`, value: { ...value(id), name: `batch-${id}` } }; }) });
      }
    }, 0);
    results.push({ name: 'cdb durable puts, batched 100 per transaction', opsPerSecond: cdbBatched, baseline: 'raw lmdb, same batches', baselineOpsPerSecond: rawBatched });

    // Concurrent puts: 64 askers; the CDB does not hold its mailbox on a flush, so writes share commits.
    let p = 0;
    const cdbConcurrent = await rate(2000, async (count) => {
      await Promise.all(Array.from({ length: 64 }, async (_, worker) => {
        for (let i = worker; i < count; i += 64) { const id = p++; await ask({ type: 'cdb.put', key: `object/network/conc-${id}`, value: { ...value(id), name: `conc-${id}` } }); }
      }));
    }, 0);
    results.push({ name: 'cdb durable puts, 64 concurrent askers', opsPerSecond: cdbConcurrent, baseline: 'raw lmdb durable writes, sequential', baselineOpsPerSecond: rawSingle });

    // Gets.
    const rawGets = await rate(50_000, (count) => {
      for (let i = 0; i < count; i += 1) raw.get(`object/network/batch-${i % 1000}`);
    });
    const cdbGets = await rate(20_000, async (count) => {
      for (let i = 0; i < count; i += 1) await ask({ type: 'cdb.get', key: `object/network/batch-${i % 1000}` });
    });
    results.push({ name: 'cdb gets (ask round trip)', opsPerSecond: cdbGets, baseline: 'raw lmdb gets', baselineOpsPerSecond: rawGets });

    // Watch fan-out: 20 local subscribers on object/network/; events delivered per second.
    const subscribers = 20;
    let delivered = 0;
    for (let s = 0; s < subscribers; s += 1) {
      const path = system.localPath(`sub-${s}`);
      await system.spawn(path, () => ({ receive: (message) => { if (message.type === 'cdb.event') delivered += 1; } }));
      await ask({ type: 'cdb.watch', prefix: 'object/network/fan-', subscriber: `acp://bench/n1/sub-${s}` });
    }
    let f = 0;
    const puts = 50;
    const start = process.hrtime.bigint();
    await ask({ type: 'cdb.batch', ops: Array.from({ length: puts }, () => { const id = f++; return { op: 'put', key: `object/network/fan-${id}`, value: { ...value(id), name: `fan-${id}` } }; }) });
    while (delivered < puts * subscribers) await new Promise((resolve) => setImmediate(resolve));
    const fanout = (puts * subscribers) / (Number(process.hrtime.bigint() - start) / 1e9);
    results.push({ name: `watch fan-out (events delivered, ${subscribers} watchers)`, opsPerSecond: fanout, baseline: 'raw lmdb durable writes, batched', baselineOpsPerSecond: rawBatched });
  } finally {
    await system.shutdown();
    await raw.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return results;
}
