/**
 * The monitor: failure detection time and time to a new primary after the primary dies, measured
 * in the deterministic simulator over many seeds (simulated milliseconds, so the numbers are the
 * algorithm's, not this machine's load), each beside the floor its configuration sets; and a
 * health recomputation at 100 nodes and 10,000 systems beside one copy of its input.
 */
import { defaultMonitorConfig } from '../actors/monitor/election.js';
import { computeHealth, type HealthInput } from '../actors/monitor/health.js';
import { MonitorSim } from '../node/sim/monitor.js';
import { rate } from './measure.js';

const RUNS = 200;

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** When the line matching `pattern` first appears at or after `after`, in simulated ms. */
function firstAt(log: readonly string[], after: number, pattern: RegExp): number | undefined {
  for (const line of log) {
    const at = Number(line.slice(0, 6));
    if (at >= after && pattern.test(line)) return at;
  }
  return undefined;
}

function simulated(): string[] {
  const detect: number[] = [];
  const failover: number[] = [];
  const primaryDown: number[] = [];
  for (let seed = 1; seed <= RUNS; seed += 1) {
    const nodes = seed % 2 === 0 ? ['n1', 'n2', 'n3'] : ['n1', 'n2', 'n3', 'n4', 'n5'];
    const sim = new MonitorSim({ nodes: nodes.map((name) => ({ name })), seed });
    sim.command('power all on');
    sim.run(3000 + (seed % 7) * 37);
    const primary = [...sim.views().values()][0];
    if (!primary) continue;
    // A follower dies: how long until the primary reports it down?
    const follower = nodes.find((name) => name !== primary)!;
    let killedAt = sim.now;
    sim.command(`power ${follower} off`);
    sim.run(3000);
    const down = firstAt(sim.log, killedAt, new RegExp(`node ${follower} down`));
    if (down !== undefined) detect.push(down - killedAt);
    sim.command(`power ${follower} on`);
    sim.run(3000);
    // The primary dies: how long until the others agree on another, and report it down?
    killedAt = sim.now;
    sim.command(`power ${primary} off`);
    let agreedAt: number | undefined;
    for (let waited = 0; waited < 10_000 && agreedAt === undefined; waited += 10) {
      sim.run(10);
      const views = [...sim.views().values()];
      if (views[0] && views[0] !== primary && views.every((view) => view === views[0])) agreedAt = sim.now;
    }
    if (agreedAt !== undefined) failover.push(agreedAt - killedAt);
    sim.run(3000);
    const reported = firstAt(sim.log, killedAt, new RegExp(`node ${primary} down`));
    if (reported !== undefined) primaryDown.push(reported - killedAt);
  }
  const { downAfterMs, electionMinMs } = defaultMonitorConfig;
  const line = (name: string, values: number[], floor: number, floorName: string) =>
    `${name} (simulated, ${values.length} runs): p50 ${percentile(values, 50)} ms, p99 ${percentile(values, 99)} ms, max ${Math.max(...values)} ms — ${(percentile(values, 50) / floor).toFixed(2)}× of ${floorName} (${floor} ms)`;
  return [
    line('failure detection, a follower killed', detect, downAfterMs, 'the down threshold'),
    line('new primary agreed by all, after the primary is killed', failover, electionMinMs, 'the shortest election timeout'),
    line('dead primary reported down by its successor', primaryDown, electionMinMs, 'the shortest election timeout'),
  ];
}

function healthInput(nodes: number, systems: number): HealthInput {
  const names = Array.from({ length: nodes }, (_, index) => `n${index + 1}`);
  const services = ['cdb', 'agent', 'api', 'network', 'storage', 'hypervisor', 'monitor', 'webapi'];
  return {
    nodes: names.map((name, index) => ({ name, state: index === 7 ? 'down' : index === 33 ? 'suspect' : 'up' })),
    services: names.flatMap((node, index) => services.map((service, s) => ({ node, service, state: index === 42 && s === 3 ? 'failed' : 'running' }))),
    systems: Array.from({ length: systems }, (_, index) => ({ id: `s${index}`, node: names[index % nodes]!, state: index % 2000 === 1 ? 'crashed' : 'running' })),
    syncLag: names.map((node, index) => ({ node, lag: index === 5 ? 250 : 0 })),
    filesystems: names.flatMap((node, index) => [{ node, mount: '/', usedBytes: 40 + (index % 20), sizeBytes: 100 }, { node, mount: '/var', usedBytes: 30, sizeBytes: 100 }]),
    loopDelayP99: names.map((node, index) => ({ node, ms: index === 60 ? 150 : 8 })),
    alarms: names.filter((_, index) => index === 7).map((node) => ({ id: `node-down.${node}`, severity: 'critical' as const, subject: node })),
  };
}

export async function monitorBenchmarks(): Promise<string[]> {
  const lines = simulated();
  const input = healthInput(100, 10_000);
  const computed = await rate(200, (n) => {
    for (let i = 0; i < n; i += 1) computeHealth(input);
  }, 20);
  const copied = await rate(200, (n) => {
    for (let i = 0; i < n; i += 1) JSON.parse(JSON.stringify(input));
  }, 20);
  const score = computeHealth(input).score;
  lines.push(`health recomputation, 100 nodes and 10,000 systems (score ${score}): ${Math.round(computed)}/s (${(1000 / computed).toFixed(2)} ms each) — ${(computed / copied).toFixed(2)}× of one JSON copy of its input (${Math.round(copied)}/s)`);
  return lines;
}
