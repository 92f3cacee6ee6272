/**
 * bench/exec: what running a short program costs the calling process's event loop, from a process
 * the size of a loaded daemon (its heap filled to about 300 MB): through the exec helper
 * (adapters/exec.ts) vs. execFile from the process itself, alternating, each round running
 * `ip -j link show` (or `true` where there is no ip). The loop is held for the synchronous part
 * of the call (fork copies the caller's page tables); the whole call's time is given too, since
 * the helper adds a hop over its IPC channel.
 */
import { execFileSync } from 'node:child_process';
import { execProgram, runDirect, type ExecResult } from '../adapters/exec.js';

const ROUNDS = 15;

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Milliseconds the call held the loop, and until it answered. */
async function timed(call: () => Promise<ExecResult>): Promise<{ hold: number; total: number }> {
  const start = process.hrtime.bigint();
  const done = call();
  const hold = Number(process.hrtime.bigint() - start) / 1e6;
  const result = await done;
  if (result.outcome !== 'ok') throw new Error(`bench/exec: the program failed: ${result.message}`);
  return { hold, total: Number(process.hrtime.bigint() - start) / 1e6 };
}

export async function execBenchmarks(): Promise<string[]> {
  let tool = 'ip';
  let args = ['-j', 'link', 'show'];
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    [tool, args] = ['true', []];
  }
  const ballast = Array.from({ length: 1_500_000 }, (_, index) => ({ index, text: `${'x'.repeat(100)}${index}` }));
  const options = { timeoutMs: 10_000, maxBuffer: 16 * 1024 * 1024 };
  const direct = () => new Promise<ExecResult>((resolve) => runDirect({ id: 0, tool, args, timeoutMs: options.timeoutMs, maxBuffer: options.maxBuffer, killSignal: 'SIGTERM' }, resolve));
  const helped = () => execProgram(tool, args, options);
  await timed(helped); // the helper is forked once, before anything is timed
  const rows = { helper: [] as { hold: number; total: number }[], direct: [] as { hold: number; total: number }[] };
  for (let round = 0; round < ROUNDS; round += 1) {
    rows.direct.push(await timed(direct));
    rows.helper.push(await timed(helped));
  }
  const rss = process.memoryUsage().rss / 2 ** 20;
  const ms = (value: number) => `${value.toFixed(2)} ms`;
  const hold = (side: keyof typeof rows) => median(rows[side].map((row) => row.hold));
  const total = (side: keyof typeof rows) => median(rows[side].map((row) => row.total));
  ballast.length = 0;
  return [
    `exec: \`${[tool, ...args].join(' ')}\` from a process of ${Math.round(rss)} MB, ${ROUNDS} alternating rounds, medians: ` +
      `the event loop is held ${ms(hold('helper'))} through the exec helper vs. ${ms(hold('direct'))} by execFile from the process itself (${(hold('helper') / hold('direct')).toFixed(3)}×); ` +
      `until the answer ${ms(total('helper'))} vs. ${ms(total('direct'))} (${(total('helper') / total('direct')).toFixed(2)}×)`,
  ];
}
