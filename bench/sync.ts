/**
 * CDB sync between real daemons in network namespaces (needs root and iproute2). For each cluster
 * size (default 3 and 5; up to 50): replicated updates per second, latency from a write on one
 * node to its visibility on all others (p50, p99), and the time to converge after healing a
 * partition behind which 100,000 keys changed (10,000 past 5 nodes). Each beside a baseline
 * measured in the same run on the same cluster: the writing node's own acknowledged (durable) rate
 * or latency. Then, for the scale of a cluster: sync traffic per node per second (from each
 * node's `cdb.sync.status` counters) idle and under a light write load, the time for every other
 * node to call a kill -9'd node down (beside the configured downAfterMs), and each daemon's RSS.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import { difference, total, type SyncTraffic } from '../actors/cdb/sync-traffic.js';
import type { SyncStatus } from '../actors/cdb/sync-node.js';
import type { MonitorStatus } from '../actors/monitor/index.js';
import { Harness, harnessAvailable } from '../node/harness/index.js';
import type { AcpClient } from '../runtime/client.js';
import { defaultConfig } from '../runtime/config.js';
import type { Message } from '../runtime/messages.js';

const WRITES = 2000;
const CONCURRENCY = 32;
const LATENCY_SAMPLES = 200;
const PARTITION_KEYS_DEFAULT = 100_000;
/** Past this many nodes, fewer keys behind the partition: every node merges them, on two shared cores. */
const LARGE_CLUSTER = 5;
const PARTITION_KEYS_LARGE = 10_000;
const BATCH = 1000;
/** The traffic windows, and the light load: this many writes a second across the cluster, round-robin over the nodes. */
const TRAFFIC_WINDOW_MS = 10_000;
const LIGHT_WRITES_PER_SECOND = 20;

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
      if (event.type !== 'cdb.events') return;
      for (const record of (event as Message & { records: { key: string }[] }).records) {
        const count = (arrived.get(record.key) ?? 0) + 1;
        arrived.set(record.key, count);
        const waiter = waiting.get(record.key);
        if (waiter && count >= others.length) waiter.resolve(performance.now());
      }
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
  const PARTITION_KEYS = clients.length > LARGE_CLUSTER ? PARTITION_KEYS_LARGE : PARTITION_KEYS_DEFAULT;
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

const statusOf = (client: AcpClient) => client.ask<SyncStatus>('cdb', { type: 'cdb.sync.status' }, { timeoutMs: 30_000 });

/** Mean and largest over the nodes, as text. */
function spread(values: readonly number[], format: (value: number) => string): string {
  const mean = values.reduce((sum, value) => sum + value, 0) / values.length;
  return `${format(mean)} (max ${format(Math.max(...values))})`;
}

const perSecond = (value: number) => (value >= 100 ? value.toFixed(0) : value.toFixed(1));
const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;

/**
 * Sync traffic per node per second over a window: idle, or with `LIGHT_WRITES_PER_SECOND` writes
 * a second (sent on schedule, round-robin over the nodes) when `tag` is given.
 */
async function traffic(clients: readonly AcpClient[], label: string, what: string, windowMs: number, tag?: string): Promise<string> {
  const before = await Promise.all(clients.map(statusOf));
  const start = performance.now();
  const puts: Promise<Message>[] = [];
  if (tag !== undefined) {
    const count = Math.round((LIGHT_WRITES_PER_SECOND * windowMs) / 1000);
    for (let i = 0; i < count; i += 1) {
      const due = start + (i * 1000) / LIGHT_WRITES_PER_SECOND;
      await sleep(Math.max(0, due - performance.now()));
      puts.push(put(clients[i % clients.length]!, `w-${tag}-${i % 200}`, i));
    }
    await Promise.all(puts);
  }
  await sleep(Math.max(0, start + windowMs - performance.now()));
  const after = await Promise.all(clients.map(statusOf));
  const seconds = (performance.now() - start) / 1000;
  const deltas: SyncTraffic[] = after.map((status, index) => difference(status.traffic, before[index]!.traffic));
  const of = (pick: (delta: SyncTraffic) => number) => deltas.map((delta) => pick(delta) / seconds);
  const sent = (delta: SyncTraffic) => total(delta.multicast.sent);
  const received = (delta: SyncTraffic) => total(delta.multicast.received);
  const unicast = (delta: SyncTraffic) => total(delta.unicast.sent).count + total(delta.unicast.received).count;
  const exchanged = (delta: SyncTraffic) => delta.repair.received.bytes + delta.repair.served.bytes + delta.snapshot.received.bytes + delta.snapshot.served.bytes;
  const digestSizes = deltas.map((delta) => (delta.multicast.sent.digest.count > 0 ? delta.multicast.sent.digest.bytes / delta.multicast.sent.digest.count : 0));
  return (
    `${label}: sync traffic per node per second, ${what} (${(windowMs / 1000).toFixed(0)} s; mean over the nodes, max): ` +
    `multicast sent ${spread(of((delta) => sent(delta).count), perSecond)} datagrams, ${spread(of((delta) => sent(delta).bytes), kib)}; ` +
    `received ${spread(of((delta) => received(delta).count), perSecond)} datagrams, ${spread(of((delta) => received(delta).bytes), kib)}; ` +
    `of which digests sent ${spread(of((delta) => delta.multicast.sent.digest.count), perSecond)} (mean ${Math.round(digestSizes.reduce((sum, size) => sum + size, 0) / digestSizes.length)} bytes each), received ${spread(of((delta) => delta.multicast.received.digest.count), perSecond)}; ` +
    `unicast ${spread(of(unicast), perSecond)} payloads; repair and snapshot ${spread(of(exchanged), kib)}; ` +
    `send errors ${after.reduce((sum, status, index) => sum + status.counters.errors - before[index]!.counters.errors, 0)} — beside the writes themselves: ${tag === undefined ? 'none' : `${(LIGHT_WRITES_PER_SECOND / clients.length).toFixed(2)}/s per node`}`
  );
}

/** A process's resident memory in KiB (VmRSS), or 0 once it is gone. */
function rssKib(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}

/** The daemon's pid and its children's (service processes), read from /proc. */
function processTree(pid: number): number[] {
  const children: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      if (text) children.push(...text.split(/\s+/).map(Number));
    }
  } catch {
    return [pid];
  }
  return [pid, ...children.flatMap(processTree)];
}

function memory(h: Harness, label: string): string {
  const daemon = h.nodes.map((node) => rssKib(node.pid) / 1024);
  const withChildren = h.nodes.map((node) => processTree(node.pid).reduce((sum, pid) => sum + rssKib(pid), 0) / 1024);
  const mib = (value: number) => `${value.toFixed(0)} MiB`;
  return `${label}: each daemon's memory (VmRSS): acpd ${spread(daemon, mib)}, with its service processes ${spread(withChildren, mib)}; all ${h.nodes.length} together ${mib(withChildren.reduce((sum, value) => sum + value, 0))}`;
}

/**
 * kill -9 the last node; time until every other node's `cdb.nodes` calls it down (polled every
 * 100 ms), and until the monitor primary's view does. Beside the configured downAfterMs.
 */
async function failureDetection(h: Harness, clients: readonly AcpClient[], label: string): Promise<string> {
  // The last node that is not the monitor primary: a follower's failure, seen by the primary (the primary's own is a failover, bench/failover).
  // Right after the partition heal an election may be under way: wait up to 15 s for a primary.
  const giveUpAt = performance.now() + 15_000;
  let primaryName: string | null = null;
  while (primaryName === null && performance.now() < giveUpAt) {
    primaryName = (await clients[0]!.ask<MonitorStatus>('monitor', { type: 'monitor.status' }, { timeoutMs: 5000 }).catch(() => undefined))?.primary ?? null;
    if (primaryName === null) await sleep(200);
  }
  const victimIndex = h.nodes.map((node) => node.name).findLastIndex((name) => name !== primaryName);
  const victim = h.nodes[victimIndex]!.name;
  const others = clients.filter((_, index) => index !== victimIndex);
  const primaryIndex = h.nodes.findIndex((node) => node.name === primaryName);
  const primary = primaryIndex >= 0 ? clients[primaryIndex] : undefined;
  // From a steady state: every other node heard the victim within the last second (a CDB busy
  // hashing 100,000 records just before may have been silent a while), so the time counts from the kill.
  const lastHeard = async () =>
    Promise.all(
      others.map(async (client) => {
        const reply = await client.ask<Message & { nodes: { node: string; lastSeenMs: number | null }[] }>('cdb', { type: 'cdb.nodes' }, { timeoutMs: 5000 }).catch(() => undefined);
        return reply?.nodes.find((member) => member.node === victim)?.lastSeenMs ?? Number.POSITIVE_INFINITY;
      }),
    );
  // ...and the primary's monitor counts it up (a node that joined last is down there until first heard).
  const primarySeesUp = async () =>
    !primary || (await primary.ask<MonitorStatus>('monitor', { type: 'monitor.status' }, { timeoutMs: 5000 }).catch(() => undefined))?.members.find((member) => member.name === victim)?.state === 'up';
  const settleBy = performance.now() + 60_000;
  let heard = await lastHeard();
  while ((Math.max(...heard) > 1000 || !(await primarySeesUp())) && performance.now() < settleBy) {
    await sleep(100);
    heard = await lastHeard();
  }
  const killedAt = performance.now();
  await h.kill(victim);
  const downAt: (number | undefined)[] = others.map(() => undefined);
  let monitorDownAt: number | undefined;
  const deadline = killedAt + 60_000;
  while (performance.now() < deadline && (downAt.some((at) => at === undefined) || (primary && monitorDownAt === undefined))) {
    await Promise.all(
      others.map(async (client, index) => {
        if (downAt[index] !== undefined) return;
        const reply = await client.ask<Message & { nodes: { node: string; state: string }[] }>('cdb', { type: 'cdb.nodes' }, { timeoutMs: 5000 }).catch(() => undefined);
        if (reply?.nodes.find((member) => member.node === victim)?.state === 'down') downAt[index] = performance.now() - killedAt;
      }),
    );
    if (primary && monitorDownAt === undefined) {
      const view = await primary.ask<MonitorStatus>('monitor', { type: 'monitor.status' }, { timeoutMs: 5000 }).catch(() => undefined);
      if (view?.members.find((member) => member.name === victim)?.state === 'down') monitorDownAt = performance.now() - killedAt;
    }
    await sleep(100);
  }
  const seen = downAt.filter((at): at is number => at !== undefined).sort((a, b) => a - b);
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const configured = defaultConfig('bench', 'n1').sync.downAfterMs;
  const missing = others.length - seen.length;
  return (
    `${label}: failure detection after kill -9 of ${victim}: every other node's cdb.nodes says down after ${seen.length > 0 ? `first ${s(seen[0]!)}, median ${s(seen[Math.floor(seen.length / 2)]!)}, last ${s(seen.at(-1)!)}` : 'never'}` +
    `${missing > 0 ? ` (${missing} of ${others.length} never within 60 s)` : ''} (last heard at most ${Math.max(...heard)} ms before the kill); the monitor primary's view ${monitorDownAt === undefined ? 'n/a' : s(monitorDownAt)} — ` +
    `${seen.length > 0 ? (seen.at(-1)! / configured).toFixed(2) : 'n/a'}× of the configured downAfterMs (${s(configured)}; polled every 100 ms)`
  );
}

/**
 * Each line is handed to `emit` as soon as it is measured (a 32-node run takes a while); a
 * measurement that fails is reported as such and the next one runs.
 */
export async function syncBenchmarks(sizes: readonly number[] = [3, 5], emit: (line: string) => void = () => undefined, only?: readonly string[]): Promise<string[]> {
  if (sizes.some((size) => !Number.isInteger(size) || size < 2 || size > 50)) throw new Error(`cluster sizes must be whole numbers from 2 to 50, not ${sizes.join(', ')}`);
  const available = harnessAvailable();
  if (!available.ok) return [`sync: skipped (${available.why})`];
  const lines: string[] = [];
  const say = (line: string) => {
    lines.push(line);
    emit(line);
  };
  for (const size of sizes) {
    const label = `${size} nodes`;
    const tag = `s${size}`;
    const started = performance.now();
    const h = await Harness.start({ nodes: Array.from({ length: size }, (_, index) => `n${index + 1}`), logLevel: 'warn' });
    try {
      // Nodes join and start one after another; a large cluster on two shared cores takes a while to settle.
      await h.waitSynced(60_000 + size * 10_000);
      say(`${label}: started and synced in ${((performance.now() - started) / 1000).toFixed(0)} s (load average ${loadavg().map((load) => load.toFixed(1)).join(' ')})`);
      const clients = await Promise.all(h.nodes.map((node) => h.client(node.name)));
      const steps: [string, () => Promise<string> | string][] = [
        ['idle traffic', () => traffic(clients, label, 'idle', TRAFFIC_WINDOW_MS)],
        ['traffic under load', () => traffic(clients, label, `${LIGHT_WRITES_PER_SECOND} writes/s across the cluster`, TRAFFIC_WINDOW_MS, tag)],
        ['memory', () => memory(h, label)],
        ['latency', () => latency(clients, label, tag)],
        ['throughput', () => throughput(clients, label, tag)],
        ['partition heal', () => partitionHeal(h, clients, label, tag)],
        ['memory after', () => memory(h, `${label}, after the partition`)],
        ['failure detection', () => failureDetection(h, clients, label)],
      ];
      for (const [name, step] of steps) {
        if (only && !only.includes(name)) continue;
        try {
          say(await step());
        } catch (error) {
          say(`${label}: ${name} failed: ${(error as Error).message}`);
        }
      }
      say(`${label}: load average after the runs ${loadavg().map((load) => load.toFixed(1)).join(' ')}`);
    } finally {
      await h.teardown();
    }
  }
  return lines;
}
