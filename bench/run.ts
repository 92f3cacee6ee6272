/**
 * Benchmarks print each measurement beside a baseline run in the same process, as a ratio:
 * machines here are shared and noisy, so absolute numbers mean little and ratios are what we compare.
 */
import { Encoder } from 'cbor-x';
import { encodeFrame, FrameDecoder } from '../runtime/codec.js';
import { silentLogger } from '../runtime/logger.js';
import { CellHost } from '../runtime/nact-cell.js';
import { ActorSystem } from '../runtime/system.js';
import { rate, report, type Comparison } from './measure.js';


async function askRoundTrip(): Promise<Comparison> {
  const count = 20_000;
  const system = new ActorSystem({ identity: { cluster: 'bench', node: 'n1', incarnation: 1 }, log: silentLogger() });
  const path = system.localPath('echo');
  await system.spawn(path, () => ({ receive: (message) => message }));
  const ask = await rate(count, async (n) => {
    for (let i = 0; i < n; i += 1) await system.ask(path, { type: 'echo', i });
  });
  await system.shutdown();
  // Baseline: the bare mailbox (nact cell through our adapter), answering through a promise.
  const host = new CellHost();
  const cell = host.spawn<{ resolve: () => void }>(undefined, 'echo', { handle: (item) => item.resolve(), crashed: () => undefined, stopped: () => undefined });
  const bare = await rate(count, async (n) => {
    for (let i = 0; i < n; i += 1) await new Promise<void>((resolve) => cell.dispatch({ resolve }));
  });
  host.stop();
  return { name: 'local ask round trips (sequential)', opsPerSecond: ask, baseline: 'bare nact mailbox round trip', baselineOpsPerSecond: bare };
}

async function codec(): Promise<Comparison> {
  const count = 100_000;
  const body = { type: 'bench', payload: 'x'.repeat(100) };
  const framed = await rate(count, (n) => {
    const decoder = new FrameDecoder();
    for (let i = 0; i < n; i += 1) decoder.push(encodeFrame({ v: 1, k: 'tell', to: 'acp://bench/n1/echo', body }));
  });
  const cbor = new Encoder({ useRecords: false });
  const raw = await rate(count, (n) => {
    for (let i = 0; i < n; i += 1) cbor.decode(cbor.encode({ v: 1, k: 'tell', to: 'acp://bench/n1/echo', body }));
  });
  return { name: 'frame encode + streaming decode + envelope check (100-byte body)', opsPerSecond: framed, baseline: 'raw cbor-x encode + decode', baselineOpsPerSecond: raw };
}

const only = process.argv[2];
if (!only || only === 'runtime') {
  report(await askRoundTrip());
  report(await codec());
}
if (!only || only === 'remote') {
  const { remoteBenchmarks } = await import('./remote.js');
  for (const line of await remoteBenchmarks()) process.stdout.write(`${line}\n`);
}
if (!only || only === 'exec') {
  const { execBenchmarks } = await import('./exec.js');
  for (const line of await execBenchmarks()) process.stdout.write(`${line}\n`);
}
if (!only || only === 'web') {
  const { webBenchmarks } = await import('./web.js');
  for (const result of await webBenchmarks()) report(result);
}
if (!only || only === 'cdb') {
  const { cdbBenchmarks } = await import('./cdb.js');
  for (const result of await cdbBenchmarks()) report(result);
}
if (!only || only === 'hypervisor') {
  const { hypervisorBenchmarks } = await import('./hypervisor.js');
  for (const line of await hypervisorBenchmarks()) process.stdout.write(`${line}\n`);
}
if (!only || only === 'stop') {
  const { daemonStopBenchmarks } = await import('./daemon-stop.js');
  for (const line of await daemonStopBenchmarks()) process.stdout.write(`${line}\n`);
}
if (!only || only === 'sync') {
  const { syncBenchmarks } = await import('./sync.js');
  // `npm run bench -- sync 3` measures one cluster size.
  const sizes = process.argv.slice(3).map(Number);
  await syncBenchmarks(sizes.length > 0 ? sizes : undefined, (line) => process.stdout.write(`${line}\n`));
}
if (only === 'sync-detect') {
  // Only each daemon's memory and failure detection after kill -9, on fresh clusters: `npm run bench -- sync-detect 3 32`.
  const { syncBenchmarks } = await import('./sync.js');
  const sizes = process.argv.slice(3).map(Number);
  await syncBenchmarks(sizes.length > 0 ? sizes : undefined, (line) => process.stdout.write(`${line}\n`), ['memory', 'memory after', 'failure detection']);
}
if (only === 'sync-heal') {
  // Only the partition heal of 100,000 keys: `npm run bench -- sync-heal 3 5`.
  const { syncBenchmarks } = await import('./sync.js');
  const sizes = process.argv.slice(3).map(Number);
  await syncBenchmarks(sizes.length > 0 ? sizes : undefined, (line) => process.stdout.write(`${line}\n`), ['partition heal']);
}
if (!only || only === 'sync-sim') {
  const { syncSimBenchmarks } = await import('./sync-sim.js');
  // `npm run bench -- sync-sim 10 100` simulates chosen cluster sizes (default 10, 100, 300; 1,000 needs node --max-old-space-size=8000 and about 11 minutes).
  const sizes = process.argv.slice(3).map(Number);
  for (const line of await syncSimBenchmarks(sizes.length > 0 ? sizes : undefined)) process.stdout.write(`${line}\n`);
}
if (!only || only === 'monitor') {
  const { monitorBenchmarks } = await import('./monitor.js');
  for (const line of await monitorBenchmarks()) process.stdout.write(`${line}\n`);
}
if (!only || only === 'network') {
  const { networkBenchmarks } = await import('./network.js');
  for (const line of networkBenchmarks()) process.stdout.write(`${line}\n`);
}
if (!only || only === 'storage') {
  const { storageBenchmarks } = await import('./storage.js');
  for (const line of await storageBenchmarks()) process.stdout.write(`${line}\n`);
}
if (only === 'failover') {
  // Real daemons in namespaces (root), about 20 s a trial: run on its own, `npm run bench -- failover`.
  const { failoverBenchmarks } = await import('./failover.js');
  for (const line of await failoverBenchmarks()) process.stdout.write(`${line}\n`);
}
