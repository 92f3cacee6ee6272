/**
 * CDB sync between real daemons in network namespaces (needs root and iproute2). For 3 and 5
 * nodes: replicated updates per second, latency from a write on one node to its visibility on all
 * others (p50, p99), and the time to converge after healing a partition behind which 100,000 keys
 * changed. Each beside a baseline measured in the same run on the same cluster: the writing node's
 * own acknowledged (durable) rate or latency.
 */
import { Harness, harnessAvailable } from '../node/harness/index.js';
import type { AcpClient } from '../runtime/client.js';
import type { Message } from '../runtime/messages.js';

const WRITES = 2000;
const CONCURRENCY = 32;
const LATENCY_SAMPLES = 200;
const PARTITION_KEYS = 100_000;
const BATCH = 1000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function put(client: AcpClient, key: string, i: number): Promise<Message> {
  return client.ask('cdb', { type: 'cdb.put', key: `object/system/${key}`, value: { name: key, labels: { i: String(i) } } }, { timeoutMs: 30_000 });
}

/** Resolves when every client's CDB has the same object set as the first's. */
async function allEqual(clients: readonly AcpClient[], timeoutMs: number, pollMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const hashes = await Promise.all(clients.map((client) => client.ask<Message & { hash: string }>('cdb', { type: 'cdb.hash', prefix: 'object/system/' }, { timeoutMs: 60_000 })));
    if (hashes.every((entry) => entry.hash === hashes[0]!.hash)) return;
    await sleep(pollMs);
  }
  throw new Error(`the nodes did not converge within ${timeoutMs} ms`);
}

/** Watches `object/system/<prefix>` on every other node; resolves per key when all have it. */
function visibility(others: readonly AcpClient[], prefix: string): { seen(key: string): Promise<number>; cancel(): void } {
  const waiting = new Map<string, { count: number; resolve: (at: number) => void }>();
  const arrived = new Map<string, number>();
  const cancels = others.map((client) =>
    client.watch(`object/system/${prefix}`, (event) => {
      const record = (event as Message & { record?: { key: string } }).record;
      if (event.type !== 'cdb.event' || !record) return;
      const count = (arrived.get(record.key) ?? 0) + 1;
      arrived.set(record.key, count);
      const waiter = waiting.get(record.key);
      if (waiter && count >= others.length) waiter.resolve(performance.now());
    }),
  );
  return {
    seen: (key) =>
      new Promise((resolve) => {
        const full = `object/system/${key}`;
        if ((arrived.get(full) ?? 0) >= others.length) resolve(performance.now());
        else waiting.set(full, { count: 0, resolve });
      }),
    cancel: () => cancels.forEach((cancel) => cancel()),
  };
}

async function throughput(clients: readonly AcpClient[], label: string, tag: string): Promise<string> {
  const [writer, ...others] = clients;
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < WRITES) {
        const i = next++;
        await put(writer!, `t-${tag}-${i % 500}`, i);
      }
    }),
  );
  const acknowledged = performance.now();
  await allEqual([writer!, ...others], 120_000);
  const everywhere = performance.now();
  const local = WRITES / ((acknowledged - start) / 1000);
  const replicated = WRITES / ((everywhere - start) / 1000);
  return `${label}: replicated object updates: ${Math.round(replicated)}/s on all ${clients.length} nodes — ${(replicated / local).toFixed(2)}× of the writer's own acknowledged rate (${Math.round(local)}/s, ${CONCURRENCY} concurrent writers)`;
}

async function latency(clients: readonly AcpClient[], label: string, tag: string): Promise<string> {
  const [writer, ...others] = clients;
  const watch = visibility(others, `l-${tag}-`);
  await sleep(500);
  const acks: number[] = [];
  const visible: number[] = [];
  for (let i = 0; i < LATENCY_SAMPLES; i += 1) {
    const key = `l-${tag}-${i}`;
    const seen = watch.seen(key);
    const start = performance.now();
    await put(writer!, key, i);
    acks.push(performance.now() - start);
    visible.push((await seen) - start);
    await sleep(10);
  }
  watch.cancel();
  acks.sort((a, b) => a - b);
  visible.sort((a, b) => a - b);
  const format = (ms: number) => `${ms.toFixed(1)} ms`;
  return (
    `${label}: write → visible on all ${others.length} others: p50 ${format(percentile(visible, 50))}, p99 ${format(percentile(visible, 99))} — ` +
    `${(percentile(visible, 50) / percentile(acks, 50)).toFixed(2)}× / ${(percentile(visible, 99) / percentile(acks, 99)).toFixed(2)}× of the writer's own acknowledged put (p50 ${format(percentile(acks, 50))}, p99 ${format(percentile(acks, 99))})`
  );
}

async function partitionHeal(h: Harness, clients: readonly AcpClient[], label: string, tag: string): Promise<string> {
  const cut = h.nodes.at(-1)!.name;
  const writer = clients[0]!;
  await h.partition(cut);
  const start = performance.now();
  for (let offset = 0; offset < PARTITION_KEYS; offset += BATCH) {
    const ops = Array.from({ length: BATCH }, (_, index) => ({ op: 'put', key: `object/system/h-${tag}-${offset + index}`, value: { name: `h-${tag}-${offset + index}` } }));
    await writer.ask('cdb', { type: 'cdb.batch', ops }, { timeoutMs: 60_000 });
  }
  const written = performance.now() - start;
  // The other connected nodes first, so only the cut node's catch-up is timed.
  // Hashing 100,000 records takes the CDB a while: polled once a second, not to slow what is measured.
  await allEqual(clients.slice(0, -1), 300_000, 1000);
  await h.heal(cut);
  const healed = performance.now();
  // The last key written is also the greatest: a repair brings it last (version order), a snapshot too (key order).
  const lastKey = `object/system/h-${tag}-${PARTITION_KEYS - 1}`;
  const cutClient = clients.at(-1)!;
  for (;;) {
    const has = await cutClient.ask('cdb', { type: 'cdb.get', key: lastKey }, { timeoutMs: 60_000 }).then(() => true, () => false);
    if (has) break;
    if (performance.now() - healed > 600_000) throw new Error(`${cut} did not get ${lastKey} within 600 s of the heal`);
    await sleep(20);
  }
  const converged = performance.now() - healed;
  // Then the whole set, checked by hash (which takes a while for 100,000 records, so it is not the timer).
  await allEqual(clients, 600_000, 200);
  return `${label}: converge after healing a partition behind which ${PARTITION_KEYS} keys changed (the cut node has the last of them, polled every 20 ms; then every node's hash checked equal): ${(converged / 1000).toFixed(2)} s — ${(converged / written).toFixed(2)}× of the time to write them on one node (${(written / 1000).toFixed(1)} s, batches of ${BATCH})`;
}

export async function syncBenchmarks(sizes: readonly number[] = [3, 5]): Promise<string[]> {
  if (sizes.some((size) => !Number.isInteger(size) || size < 2 || size > 50)) throw new Error(`cluster sizes must be whole numbers from 2 to 50, not ${sizes.join(', ')}`);
  const available = harnessAvailable();
  if (!available.ok) return [`sync: skipped (${available.why})`];
  const lines: string[] = [];
  for (const size of sizes) {
    const h = await Harness.start({ nodes: Array.from({ length: size }, (_, index) => `n${index + 1}`), logLevel: 'warn' });
    try {
      await h.waitSynced(120_000);
      const clients = await Promise.all(h.nodes.map((node) => h.client(node.name)));
      const label = `${size} nodes`;
      const tag = `s${size}`;
      lines.push(await throughput(clients, label, tag));
      lines.push(await latency(clients, label, tag));
      lines.push(await partitionHeal(h, clients, label, tag));
    } finally {
      await h.teardown();
    }
  }
  return lines;
}
