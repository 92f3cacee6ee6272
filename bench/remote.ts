/**
 * bench/remote: two daemons in two processes, through their agents. Each rate is printed beside
 * raw TLS frames of the same size between the same two processes (the ceiling) and a local ask
 * inside one daemon, measured in the same run.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initCluster, joinCluster } from '../node/cluster.js';
import { connect } from '../node/client.js';
import type { Message } from '../runtime/messages.js';
import type { OpenLoopLatency } from './measure.js';
import { freePort } from '../test/helpers/agent.js';

function startNode(home: string, rawPort: number): Promise<ChildProcess> {
  // ACP_BENCH_CPU_PROF=DIR writes a V8 CPU profile of each node into DIR (open it in Chrome's DevTools).
  const profile = process.env.ACP_BENCH_CPU_PROF;
  const execArgv = profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : [];
  const child = fork(fileURLToPath(new URL('./remote-node.js', import.meta.url)), [home, String(rawPort)], { stdio: 'inherit', execArgv });
  return new Promise((resolve, reject) => {
    child.once('message', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`bench node exited with ${code}`)));
  });
}

export async function remoteBenchmarks(): Promise<string[]> {
  const root = mkdtempSync(join(tmpdir(), 'acp-bench-remote-'));
  const [homeA, homeB] = [join(root, 'a'), join(root, 'b')];
  const children: ChildProcess[] = [];
  try {
    for (const [home, node] of [[homeA, 'n1'], [homeB, 'n2']] as const) {
      mkdirSync(home, { recursive: true });
      writeFileSync(join(home, 'config.json'), JSON.stringify({ cluster: 'bench', node, webapi: { port: 0 } }));
    }
    const [agentA, agentB, rawA, rawB] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    await initCluster(homeA, { cluster: 'bench', node: 'n1', agent: `127.0.0.1:${agentA}` });
    children.push(await startNode(homeA, rawA));
    const client = await connect({ home: homeA });
    const { token } = await client.ask<Message & { token: string }>('agent', { type: 'agent.token', ttlMs: 60_000 });
    await client.close();
    await joinCluster(homeB, `127.0.0.1:${agentA}`, token, { node: 'n2', agent: `127.0.0.1:${agentB}` });
    children.push(await startNode(homeB, rawB));
    type Latencies = Record<'raw' | 'agent' | 'local', OpenLoopLatency[]>;
    const results = await new Promise<{ series: Record<string, number[]>; latencies: Latencies; rate: number }>((resolve, reject) => {
      children[0]!.once('message', (message: { results?: { series: Record<string, number[]>; latencies: Latencies; rate: number }; error?: string }) => {
        if (message.results) resolve(message.results);
        else reject(new Error(message.error));
      });
      children[0]!.send({ cmd: 'measure', peer: 'n2', peerRawPort: rawB });
    });
    const { series } = results;
    const median = (values: readonly number[]) => {
      const sorted = [...values].sort((a, b) => a - b);
      const middle = Math.floor(sorted.length / 2);
      return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
    };
    const r = (key: string) => `${Math.round(median(series[key]!))}/s`;
    /** The median of the per-round ratios, with their spread. */
    const ratio = (a: string, b: string) => {
      const ratios = series[a]!.map((value, round) => value / series[b]![round]!);
      return `${median(ratios).toFixed(2)}× (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`;
    };
    const rounds = series.tellsPerSecond!.length;
    const { latencies } = results;
    const latencyRounds = latencies.agent.length;
    /** Median over the rounds of one side's percentile. */
    const at = (side: keyof Latencies, pick: (latency: OpenLoopLatency) => number) => median(latencies[side].map(pick));
    const p99Ratios = latencies.agent.map((latency, round) => latency.p99 / latencies.raw[round]!.p99);
    const late = (side: keyof Latencies) => latencies[side].reduce((sum, latency) => sum + latency.late, 0);
    const sent = latencies.agent.reduce((sum, latency) => sum + latency.sent, 0);
    return [
      `remote: ${rounds} alternating rounds; medians, and the median per-round ratio (min–max). Both sides write frames the same way: no Nagle, gathered writes (gatheredWriter)`,
      `remote tells (100-byte bodies): ${r('tellsPerSecond')} — ${ratio('tellsPerSecond', 'rawTellsPerSecond')} of raw TLS frames (${r('rawTellsPerSecond')}), ${ratio('tellsPerSecond', 'localTellsPerSecond')} of local tells into the same actor (${r('localTellsPerSecond')})`,
      `remote asks, 1 asker: ${r('asks1')} — ${ratio('asks1', 'rawAsks1')} of raw TLS round trips (${r('rawAsks1')}), ${ratio('asks1', 'localAsks1')} of a local ask (${r('localAsks1')})`,
      `remote asks, 64 askers: ${r('asks64')} — ${ratio('asks64', 'rawAsks64')} of raw TLS (${r('rawAsks64')}), ${ratio('asks64', 'localAsks64')} of a local ask (${r('localAsks64')})`,
      `remote ask latency, open loop at ${results.rate}/s, ${latencyRounds} alternating rounds of 2 s (from each request's scheduled time; medians over the rounds): p50 ${at('agent', (l) => l.p50)} / p99 ${at('agent', (l) => l.p99)} ms — p99 ${median(p99Ratios).toFixed(2)}× (${Math.min(...p99Ratios).toFixed(2)}–${Math.max(...p99Ratios).toFixed(2)}) raw TLS's (p50 ${at('raw', (l) => l.p50)} / p99 ${at('raw', (l) => l.p99)} ms); local ask p50 ${at('local', (l) => l.p50)} / p99 ${at('local', (l) => l.p99)} ms; sent late by the generator (of ${sent} each): ${late('agent')}, ${late('raw')}, ${late('local')}`,
    ];
  } finally {
    for (const child of children) {
      child.send({ cmd: 'stop' });
      await new Promise((resolve) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          resolve(undefined);
        }, 10_000);
        child.once('exit', () => {
          clearTimeout(timer);
          resolve(undefined);
        });
      });
    }
    rmSync(root, { recursive: true, force: true });
  }
}
