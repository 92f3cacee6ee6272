/**
 * bench/daemon-stop: how long a daemon takes to stop with 5,000 sim systems running (each an
 * inline VMM actor below the hypervisor), beside the same with 50, scaled per system; alternating
 * rounds. Linear stopping keeps the per-system time flat as the count grows.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '../node/client.js';
import { Daemon } from '../node/daemon.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts a daemon with `count` sim systems running and returns how long its stop took, in ms. */
async function stopWith(count: number): Promise<number> {
  const home = mkdtempSync(join(tmpdir(), 'acp-bench-stop-'));
  writeFileSync(join(home, 'config.json'), JSON.stringify({ cluster: 'bench', node: 'n1', webapi: { host: '127.0.0.1', port: 0 } }));
  const daemon = await Daemon.start({ home, logLevel: 'silent' });
  try {
    const until = Date.now() + 30_000;
    while (!daemon.status().services.every((service) => service.state === 'running')) {
      if (Date.now() > until) throw new Error('the daemon did not come up within 30 s');
      await sleep(20);
    }
    const api = await connect({ home });
    try {
      const ids = Array.from({ length: count }, (_, index) => `stop-sim-${index}`);
      for (let offset = 0; offset < ids.length; offset += 250) {
        await api.ask('cdb', { type: 'cdb.batch', ops: ids.slice(offset, offset + 250).map((id) => ({ op: 'put', key: `object/system/${id}`, value: { name: id, driver: 'sim' } })) });
      }
      for (let offset = 0; offset < ids.length; offset += 250) {
        await Promise.all(ids.slice(offset, offset + 250).map((id) => api.ask('hypervisor', { type: 'system.start', id }, { timeoutMs: 120_000 })));
      }
    } finally {
      await api.close();
    }
    const began = performance.now();
    await daemon.stop('bench over');
    return performance.now() - began;
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

export async function daemonStopBenchmarks(rounds = 3): Promise<string[]> {
  const small: number[] = [];
  const large: number[] = [];
  const ratios: number[] = [];
  for (let round = 0; round < rounds; round += 1) {
    const fifty = await stopWith(50);
    const thousands = await stopWith(5000);
    small.push(fifty);
    large.push(thousands);
    ratios.push(thousands / 5000 / (fifty / 50));
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  const perSystem = (ms: number, count: number) => `${((ms / count) * 1000).toFixed(0)} µs/system`;
  return [
    `daemon stop with 5,000 sim systems: ${median(large).toFixed(0)} ms (${perSystem(median(large), 5000)}) — ${median(ratios).toFixed(2)}× per system ` +
      `(${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)} over ${rounds} alternating rounds) of a stop with 50, scaled (${median(small).toFixed(0)} ms, ${perSystem(median(small), 50)})`,
  ];
}
