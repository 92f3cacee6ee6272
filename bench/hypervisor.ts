/**
 * Hypervisor benchmarks, each beside a baseline measured in the same run:
 * - time to running for sim systems, beside a plain ask round trip to the same hypervisor;
 * - time to running (QMP up) and to the guest's ready line for a QEMU system, beside bare QEMU
 *   started by hand with the same command line (needs qemu and the test guest);
 * - with 5,000 sim systems and stats every second: the hypervisor's ask latency and the daemon's
 *   event-loop delay p99, beside the same daemon with 50.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { QEMU_BINARY, qemuArgs } from '../adapters/drivers/qemu-args.js';
import { guestImage, GUEST_READY_LINE } from '../adapters/guest-image.js';
import { systemObjectSchema } from '../actors/model.js';
import { connect, type AcpClient } from '../node/client.js';
import { Daemon } from '../node/daemon.js';
import type { Message } from '../runtime/messages.js';

const SMALL_SYSTEMS = 50;
const SCALE_SYSTEMS = 5000;
const LOOP_WINDOW_MS = 10_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const percentile = (values: number[], p: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor((p / 100) * values.length))]!;
const ms = (value: number) => `${value.toFixed(1)} ms`;

async function waitFor(check: () => boolean, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error('timed out');
    await sleep(20);
  }
}

async function loopDelayP99(windowMs: number): Promise<number> {
  const histogram = monitorEventLoopDelay({ resolution: 10 });
  histogram.enable();
  await sleep(windowMs);
  histogram.disable();
  return Math.max(0, histogram.percentile(99) / 1e6 - 10);
}

async function simStarts(api: AcpClient): Promise<string> {
  const ids = Array.from({ length: 200 }, (_, index) => `bench-sim-${index}`);
  await api.ask('cdb', { type: 'cdb.batch', ops: ids.map((id) => ({ op: 'put', key: `object/system/${id}`, value: { name: id, driver: 'sim' } })) });
  const starts: number[] = [];
  for (const id of ids) {
    const began = performance.now();
    await api.ask('hypervisor', { type: 'system.start', id });
    starts.push(performance.now() - began);
  }
  const asks: number[] = [];
  for (let i = 0; i < 200; i += 1) {
    const began = performance.now();
    await api.ask('hypervisor', { type: 'system.status', id: ids[i]! });
    asks.push(performance.now() - began);
  }
  for (const id of ids) await api.ask('hypervisor', { type: 'system.stop', id });
  return `sim system time to running: p50 ${ms(percentile(starts, 50))}, p99 ${ms(percentile(starts, 99))} — ${(percentile(starts, 50) / percentile(asks, 50)).toFixed(1)}× a plain ask to the hypervisor (p50 ${ms(percentile(asks, 50))}); the sim guest's own boot is 20 ms`;
}

async function qemuStart(api: AcpClient, home: string): Promise<string> {
  const image = guestImage();
  if (!image) return 'qemu time to running: skipped (npm run guest-image first)';
  const spec = systemObjectSchema.parse({ name: 'bench-qemu', driver: 'qemu', memoryMiB: 256, boot: { kernel: image.kernel, initrd: image.initrd, cmdline: image.cmdline } });
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/bench-qemu', value: spec });
  // Warm the accelerator probe (cached per host) so it is not in the measurement.
  await api.ask('hypervisor', { type: 'system.start', id: 'bench-qemu' }, { timeoutMs: 120_000 });
  await api.ask('hypervisor', { type: 'system.stop', id: 'bench-qemu', force: true });
  const consoleLog = join(home, 'log', 'systems', 'bench-qemu.console.log');
  writeFileSync(consoleLog, '');
  const began = performance.now();
  await api.ask('hypervisor', { type: 'system.start', id: 'bench-qemu' }, { timeoutMs: 120_000 });
  const running = performance.now() - began;
  await waitFor(() => readFileSync(consoleLog, 'utf8').includes(GUEST_READY_LINE), 120_000);
  const ready = performance.now() - began;
  const accelerator = ((await api.ask<Message & { systems: { accelerator: 'kvm' | 'tcg' }[] }>('hypervisor', { type: 'system.status', id: 'bench-qemu' })).systems[0]!.accelerator);
  await api.ask('hypervisor', { type: 'system.stop', id: 'bench-qemu', force: true });

  // Baseline: the same QEMU command line by hand, timed to its QMP socket and to the ready line.
  const dir = mkdtempSync(join(tmpdir(), 'acp-bench-qemu-'));
  const bareLog = join(dir, 'console.log');
  const bareBegan = performance.now();
  const child = spawn(QEMU_BINARY, qemuArgs('bare', spec, { consoleLog: bareLog, runDir: dir }, accelerator), { stdio: 'ignore' });
  await waitFor(() => existsSync(join(dir, 'qmp.sock')), 30_000);
  const bareRunning = performance.now() - bareBegan;
  await waitFor(() => existsSync(bareLog) && readFileSync(bareLog, 'utf8').includes(GUEST_READY_LINE), 120_000);
  const bareReady = performance.now() - bareBegan;
  child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
  return (
    `qemu system (${accelerator}) time to running: ${ms(running)} — ${(running / bareRunning).toFixed(2)}× bare QEMU to its QMP socket (${ms(bareRunning)}); ` +
    `to the guest's ready line: ${ms(ready)} — ${(ready / bareReady).toFixed(2)}× bare QEMU (${ms(bareReady)})`
  );
}

/** Starts `count` sim systems, lets stats run, then measures for LOOP_WINDOW_MS: the loop delay p99 and, meanwhile, asks to the hypervisor at 100/s. */
async function atScale(api: AcpClient, count: number): Promise<{ loopP99: number; askP99: number; askP50: number }> {
  const ids = Array.from({ length: count }, (_, index) => `scale-sim-${index}`);
  for (let offset = 0; offset < ids.length; offset += 250) {
    await api.ask('cdb', { type: 'cdb.batch', ops: ids.slice(offset, offset + 250).map((id) => ({ op: 'put', key: `object/system/${id}`, value: { name: id, driver: 'sim' } })) });
  }
  for (let offset = 0; offset < ids.length; offset += 500) {
    await Promise.all(ids.slice(offset, offset + 500).map((id) => api.ask('hypervisor', { type: 'system.start', id }, { timeoutMs: 120_000 })));
  }
  await sleep(3000);
  const asks: number[] = [];
  let asking = true;
  const asker = (async () => {
    for (let i = 0; asking; i += 1) {
      const began = performance.now();
      await api.ask('hypervisor', { type: 'system.status', id: ids[i % ids.length]! }, { timeoutMs: 30_000 });
      asks.push(performance.now() - began);
      await sleep(10);
    }
  })();
  const loopP99 = await loopDelayP99(LOOP_WINDOW_MS);
  asking = false;
  await asker;
  for (let offset = 0; offset < ids.length; offset += 500) {
    await Promise.all(ids.slice(offset, offset + 500).map((id) => api.ask('hypervisor', { type: 'system.stop', id }, { timeoutMs: 120_000 })));
  }
  for (let offset = 0; offset < ids.length; offset += 250) {
    await api.ask('cdb', { type: 'cdb.batch', ops: ids.slice(offset, offset + 250).map((id) => ({ op: 'delete', key: `object/system/${id}` })) });
  }
  return { loopP99, askP99: percentile(asks, 99), askP50: percentile(asks, 50) };
}

/** Issue 19 item 7: the node with SCALE_SYSTEMS sim systems beside the same daemon with SMALL_SYSTEMS, stats every second. */
async function scale(api: AcpClient): Promise<string> {
  const small = await atScale(api, SMALL_SYSTEMS);
  const large = await atScale(api, SCALE_SYSTEMS);
  return (
    `${SCALE_SYSTEMS} sim systems on one node, 1 s stats: hypervisor ask p50 ${ms(large.askP50)} / p99 ${ms(large.askP99)}, event-loop delay p99 ${ms(large.loopP99)} — ` +
    `beside ${SMALL_SYSTEMS} systems in the same daemon: ask p50 ${ms(small.askP50)} / p99 ${ms(small.askP99)} (${(large.askP99 / small.askP99).toFixed(1)}× at p99), loop delay p99 ${ms(small.loopP99)}`
  );
}

export async function hypervisorBenchmarks(): Promise<string[]> {
  const home = mkdtempSync(join(tmpdir(), 'acp-bench-hv-'));
  writeFileSync(join(home, 'config.json'), JSON.stringify({ cluster: 'bench', node: 'n1', webapi: { host: '127.0.0.1', port: 0 } }));
  const daemon = await Daemon.start({ home, logLevel: 'silent' });
  try {
    await waitFor(() => daemon.status().services.every((service) => service.state === 'running'), 30_000);
    const api = await connect({ home });
    try {
      return [await simStarts(api), await qemuStart(api, home).catch((error: unknown) => `qemu time to running: skipped (${(error as Error).message})`), await scale(api)];
    } finally {
      await api.close();
    }
  } finally {
    await daemon.stop('bench over');
    rmSync(home, { recursive: true, force: true });
  }
}
