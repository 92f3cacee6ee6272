import test from 'ava';
import { ChaosRun, type ChaosTarget } from '../node/chaos/run.js';
import { parseScenario } from '../node/chaos/scenario.js';

/**
 * The invariant checker against a fake cluster (a unit test of its logic; the real run is
 * test/chaos-run.solo.test.ts): each node answers system.status and monitor.status from a table
 * the test changes as faults land.
 */
interface FakeNode {
  running: string[];
  role: 'primary' | 'follower';
  term: number;
}

function fakeCluster(nodes: Record<string, FakeNode>, onKill: (name: string) => void = () => undefined): ChaosTarget {
  const names = Object.keys(nodes);
  const fake = {
    nodes: names.map((name) => ({ name, home: '/nonexistent' })),
    node: (name: string) => ({ name, home: '/nonexistent' }),
    cli: async () => ({ code: 0, stdout: '', stderr: '' }),
    client: async (name: string) => ({
      ask: async (_to: string, message: { type: string }) => {
        const node = nodes[name]!;
        if (message.type === 'system.status') return { type: 'system.status', systems: node.running.map((id) => ({ id, state: 'running' })) };
        return { type: 'monitor.status', role: node.role, term: node.term, primary: null };
      },
    }),
    kill: async (name: string) => onKill(name),
    stop: () => undefined,
    cont: () => undefined,
    partition: async () => undefined,
    heal: async () => undefined,
    restart: async () => undefined,
    dropRate: async () => undefined,
  };
  return fake as unknown as ChaosTarget;
}

const scenario = (steps: string[]) => parseScenario(JSON.stringify({ name: 't', systems: [{ id: 'web', ha: true, driver: 'sim' }], steps }));

test('a failover within the bound: no violation, the recovery time and where it ran', async (t) => {
  const nodes: Record<string, FakeNode> = { n1: { running: [], role: 'primary', term: 1 }, n2: { running: ['web'], role: 'follower', term: 1 } };
  const cluster = fakeCluster(nodes, (name) => {
    nodes[name]!.running = [];
    setTimeout(() => (nodes.n1!.running = ['web']), 300);
  });
  const report = await new ChaosRun(cluster, scenario(['kill n2', 'wait 800ms']), { boundMs: 2000, sampleMs: 50 }).run();
  t.deepEqual(report.violations, []);
  t.true(report.passed);
  const [kill] = report.recoveries;
  t.true(kill!.recoveryMs !== null && kill!.recoveryMs >= 250 && kill!.recoveryMs < 2000, `${kill!.recoveryMs} ms`);
  t.deepEqual(kill!.runningOn, { web: 'n1' });
});

test('two nodes running an HA system, two primaries in a term, no recovery within the bound: each is a violation with evidence', async (t) => {
  const nodes: Record<string, FakeNode> = {
    n1: { running: ['web'], role: 'primary', term: 3 },
    n2: { running: [], role: 'follower', term: 3 },
    n3: { running: [], role: 'follower', term: 3 },
  };
  const cluster = fakeCluster(nodes);
  const run = new ChaosRun(cluster, scenario(['wait 200ms', 'kill n3', 'wait 200ms']), { boundMs: 1000, sampleMs: 50 });
  setTimeout(() => {
    nodes.n2!.running = ['web'];
    nodes.n2!.role = 'primary';
  }, 100);
  const report = await run.run();
  t.false(report.passed);
  const kinds = new Set(report.violations.map((violation) => violation.invariant));
  t.deepEqual([...kinds].sort(), ['not-recovered', 'two-primaries', 'two-running']);
  const double = report.violations.find((violation) => violation.invariant === 'two-running')!;
  t.regex(double.message, /web reported running on n1 and n2/);
  t.deepEqual(Object.keys(double.evidence).sort(), ['n1', 'n2']);
  t.regex(report.violations.find((violation) => violation.invariant === 'two-primaries')!.message, /term 3 had primaries n1 and n2/);
  t.is(report.recoveries[0]!.recoveryMs, null);
});
