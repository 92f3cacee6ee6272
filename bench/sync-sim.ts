/**
 * CDB sync at cluster sizes no machine here can run for real: the same Replicator (and its
 * membership) driven by the sync simulator (node/sim/sync.ts), each node metering its traffic as
 * acpd does. Per size (default 10, 100, 300; 1,000 on request): datagrams and bytes per node per second, idle and
 * under a light write load (a fixed rate across the cluster, so what grows with the cluster is the
 * protocol's own traffic), and the largest digest datagram beside the 1,400-byte datagram limit
 * (and what a whole digest would be). Then how per-node traffic grew from the smallest size to the
 * largest, beside how the cluster grew.
 */
import { encode } from 'cbor-x';
import { difference, total, type SyncTraffic } from '../actors/cdb/sync-traffic.js';
import { MAX_DATAGRAM_BYTES } from '../adapters/multicast.js';
import { Sim } from '../node/sim/sync.js';

const WARMUP_MS = 4000;
const WINDOW_MS = 3000;
const WRITES_PER_SECOND = 20;
/** As acpd's defaults, but a shorter change stream (the simulated runs are short). */
const TIMINGS = { suspectAfterMs: 1500, downAfterMs: 2500, repairKeep: 2000 };

interface SizeResult {
  size: number;
  idle: PerNode;
  writing: PerNode;
  largestDigest: number;
  wholeDigest: number;
  seconds: number;
}

interface PerNode {
  sentDatagrams: number;
  sentBytes: number;
  receivedDatagrams: number;
  receivedBytes: number;
  digestBytesSent: number;
  exchangeBytes: number;
}

function perNode(before: SyncTraffic[], after: SyncTraffic[], seconds: number): PerNode {
  const deltas = after.map((traffic, index) => difference(traffic, before[index]!));
  const mean = (pick: (delta: SyncTraffic) => number) => deltas.reduce((sum, delta) => sum + pick(delta), 0) / deltas.length / seconds;
  return {
    sentDatagrams: mean((delta) => total(delta.multicast.sent).count),
    sentBytes: mean((delta) => total(delta.multicast.sent).bytes),
    receivedDatagrams: mean((delta) => total(delta.multicast.received).count),
    receivedBytes: mean((delta) => total(delta.multicast.received).bytes),
    digestBytesSent: mean((delta) => delta.multicast.sent.digest.bytes),
    exchangeBytes: mean((delta) => delta.repair.received.bytes + delta.repair.served.bytes + delta.snapshot.received.bytes + delta.snapshot.served.bytes),
  };
}

async function simulate(size: number): Promise<SizeResult> {
  const started = performance.now();
  const sim = new Sim(size, TIMINGS);
  const names = Array.from({ length: size }, (_, index) => `n${index + 1}`);
  for (const name of names) sim.add(name);
  const traffic = () => names.map((name) => sim.nodes.get(name)!.traffic.view());
  await sim.run(WARMUP_MS);
  sim.largestDigest = 0;
  const idleStart = traffic();
  await sim.run(WINDOW_MS);
  const idleEnd = traffic();
  const step = 1000 / WRITES_PER_SECOND;
  for (let i = 0; i < (WINDOW_MS / 1000) * WRITES_PER_SECOND; i += 1) {
    sim.write(names[Math.floor(sim.rand() * size)]!, `object/system/k${i % 200}`, { name: `k${i % 200}`, labels: { i: String(i) } });
    await sim.run(step);
  }
  const writingEnd = traffic();
  const first = sim.nodes.get(names[0]!)!;
  // A whole digest in its datagram: the envelope (origin, incarnation, sequence) and the 36-byte header.
  const wholeDigest = 36 + encode({ o: first.name, i: first.incarnation, s: first.seq, p: first.replicator.digest() }).length;
  return {
    size,
    idle: perNode(idleStart, idleEnd, WINDOW_MS / 1000),
    writing: perNode(idleEnd, writingEnd, WINDOW_MS / 1000),
    largestDigest: sim.largestDigest,
    wholeDigest,
    seconds: (performance.now() - started) / 1000,
  };
}

const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
const count = (value: number) => (value >= 100 ? value.toFixed(0) : value.toFixed(1));

function describe(load: PerNode): string {
  return `sent ${count(load.sentDatagrams)} datagrams (${kib(load.sentBytes)}, digests ${kib(load.digestBytesSent)}), received ${count(load.receivedDatagrams)} (${kib(load.receivedBytes)}), repair/snapshot ${kib(load.exchangeBytes)}`;
}

/**
 * The default sizes take a minute or so. 1,000 nodes takes about 11 minutes of one core and 3.3 GB
 * (`node --max-old-space-size=8000 dist/bench/run.js sync-sim 1000`): the simulator delivers about
 * 2 million payloads a simulated second, and holds all 1,000 nodes' stores in one process.
 */
export async function syncSimBenchmarks(sizes: readonly number[] = [10, 100, 300]): Promise<string[]> {
  if (sizes.some((size) => !Number.isInteger(size) || size < 2 || size > 2000)) throw new Error(`simulated cluster sizes must be whole numbers from 2 to 2,000, not ${sizes.join(', ')}`);
  const lines: string[] = [];
  const results: SizeResult[] = [];
  for (const size of sizes) {
    const result = await simulate(size);
    results.push(result);
    lines.push(
      `sync simulated, ${size} nodes: per node per second, idle: ${describe(result.idle)}; with ${WRITES_PER_SECOND} writes/s across the cluster: ${describe(result.writing)}; ` +
        `largest digest datagram ${result.largestDigest} bytes vs. the ${MAX_DATAGRAM_BYTES}-byte datagram limit (a whole digest would be ${result.wholeDigest} bytes) — ${(result.seconds).toFixed(1)} s of this machine for ${(WARMUP_MS + 2 * WINDOW_MS) / 1000} simulated s`,
    );
  }
  if (results.length >= 2) {
    const small = results[0]!;
    const large = results.at(-1)!;
    const grew = (pick: (load: PerNode) => number) => (pick(large.idle) / pick(small.idle)).toFixed(1);
    lines.push(
      `sync simulated, ${small.size} → ${large.size} nodes (×${(large.size / small.size).toFixed(0)}): idle traffic per node grew ×${grew((load) => load.sentDatagrams)} in datagrams sent, ×${grew((load) => load.sentBytes)} in bytes sent, ` +
        `×${grew((load) => load.receivedDatagrams)} in datagrams received, ×${grew((load) => load.receivedBytes)} in bytes received (linear would be ×${(large.size / small.size).toFixed(0)})`,
    );
  }
  return lines;
}
