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
import { freePort } from '../test/helpers/agent.js';

function startNode(home: string, rawPort: number): Promise<ChildProcess> {
  const child = fork(fileURLToPath(new URL('./remote-node.js', import.meta.url)), [home, String(rawPort)], { stdio: 'inherit' });
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
    const results = await new Promise<Record<string, number & { p50: number; p99: number }>>((resolve, reject) => {
      children[0]!.once('message', (message: { results?: Record<string, number & { p50: number; p99: number }>; error?: string }) => {
        if (message.results) resolve(message.results);
        else reject(new Error(message.error));
      });
      children[0]!.send({ cmd: 'measure', peer: 'n2', peerRawPort: rawB });
    });
    const r = (key: string) => Math.round(results[key] as number);
    const ratio = (a: string, b: string) => ((results[a] as number) / (results[b] as number)).toFixed(2);
    const latency = results.latency as unknown as { p50: number; p99: number };
    const raw = results.rawLatency as unknown as { p50: number; p99: number };
    const local = results.localLatency as unknown as { p50: number; p99: number };
    return [
      `remote tells (100-byte bodies): ${r('tellsPerSecond')}/s — ${ratio('tellsPerSecond', 'rawTellsPerSecond')}× of raw TLS frames (${r('rawTellsPerSecond')}/s)`,
      `remote asks, 1 asker: ${r('asks1')}/s — ${ratio('asks1', 'rawAsks1')}× of raw TLS round trips (${r('rawAsks1')}/s), ${ratio('asks1', 'localAsks1')}× of a local ask (${r('localAsks1')}/s)`,
      `remote asks, 64 askers: ${r('asks64')}/s — ${ratio('asks64', 'rawAsks64')}× of raw TLS (${r('rawAsks64')}/s), ${ratio('asks64', 'localAsks64')}× of a local ask (${r('localAsks64')}/s)`,
      `remote ask latency at ${results.rate}/s: p50 ${latency.p50} ms, p99 ${latency.p99} ms — raw TLS p50 ${raw.p50} / p99 ${raw.p99} ms, local p50 ${local.p50} / p99 ${local.p99} ms`,
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
