/**
 * `npm run bench -- network`: the Network service's reconcile time for 100 bridge networks on a
 * node, against the same interfaces made by one `ip -batch` (the floor: iproute2 alone, one
 * process); then guest-to-guest throughput through taps beside a host veth (bench/network-guests.ts). Runs in a network namespace of its own (root and iproute2 needed), deleted after.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { networkObjectSchema } from '../actors/model.js';
import { plan } from '../actors/network/reconcile.js';
import { apply, commandsFor, listLinks } from '../adapters/iproute2.js';
import { guestThroughput, guestThroughputMissing, throughputLine } from './network-guests.js';

const NETWORKS = 100;
const SCOPE = 'bench/n1';

async function pass(networks: ReturnType<typeof networkObjectSchema.parse>[]): Promise<{ ms: number; operations: number }> {
  const start = process.hrtime.bigint();
  const decided = plan(SCOPE, 'n1', networks, [], await listLinks());
  for (const operation of decided.operations) await apply(operation);
  return { ms: Number(process.hrtime.bigint() - start) / 1e6, operations: decided.operations.length };
}

/** Inside the namespace: prints one JSON line with the timings. */
async function inside(): Promise<void> {
  const networks = Array.from({ length: NETWORKS }, (_, index) => networkObjectSchema.parse({ name: `bench${index}`, type: 'bridge' }));
  const create = await pass(networks);
  const steady = await pass(networks);
  // Drift: ten bridges deleted by hand, then one pass brings them back.
  for (let index = 0; index < 10; index += 1) execFileSync('ip', ['link', 'del', `bench${index}`]);
  const repair = await pass(networks);
  const remove = await pass([]);
  // The floor: the same commands for all 100 bridges in one `ip -batch` process.
  const dir = mkdtempSync(join(tmpdir(), 'acp-bench-'));
  const batch = networks.flatMap((network) => [
    ...commandsFor({ op: 'add-bridge', name: network.name, alias: `acp:${SCOPE}/${network.name}` }),
    ...commandsFor({ op: 'set-up', name: network.name, up: true }),
  ]);
  writeFileSync(join(dir, 'batch'), `${batch.map((args) => args.join(' ')).join('\n')}\n`);
  const start = process.hrtime.bigint();
  execFileSync('ip', ['-batch', join(dir, 'batch')]);
  const floorMs = Number(process.hrtime.bigint() - start) / 1e6;
  rmSync(dir, { recursive: true, force: true });
  const missing = guestThroughputMissing();
  const throughput = missing === undefined ? throughputLine(await guestThroughput()) : `guest to guest throughput: skipped (${missing})`;
  process.stdout.write(`${JSON.stringify({ create, steady, repair, remove, floorMs, throughput })}\n`);
}

export function networkBenchmarks(): string[] {
  if (process.getuid?.() !== 0) return ['network: skipped (namespaces need root)'];
  const ns = `acpbench-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const out = execFileSync('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), '--inside'], { encoding: 'utf8', timeout: 600_000 });
    const result = JSON.parse(out.trim().split('\n').at(-1)!) as { create: { ms: number; operations: number }; steady: { ms: number; operations: number }; repair: { ms: number; operations: number }; remove: { ms: number; operations: number }; floorMs: number; throughput: string };
    const line = (name: string, measured: { ms: number; operations: number }) => `network reconcile, ${name}: ${measured.ms.toFixed(0)} ms, ${measured.operations} operations`;
    return [
      `${line(`${NETWORKS} bridges from nothing`, result.create)} — ${(result.create.ms / result.floorMs).toFixed(1)}× of one ip -batch making them (${result.floorMs.toFixed(0)} ms)`,
      `${line(`${NETWORKS} bridges already right (a pass every 2 s)`, result.steady)}`,
      line('10 of them deleted by hand', result.repair),
      line(`all ${NETWORKS} removed`, result.remove),
      result.throughput,
    ];
  } finally {
    execFileSync('ip', ['netns', 'delete', ns]);
  }
}

if (process.argv.includes('--inside')) await inside();
