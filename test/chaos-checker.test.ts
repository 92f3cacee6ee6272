import test from 'ava';
import { InvariantChecker, type NodeAnswer } from '../node/chaos/invariants.js';
import { ranTogether, runsOf } from '../node/chaos/running.js';
import { ChaosRun, restartDelay } from '../node/chaos/run.js';
import { checkLiveRestarts, parseScenario } from '../node/chaos/scenario.js';
import type { ChaosCluster } from '../node/chaos/target.js';
import { chaosValue, checkWrites, converged, SLOTS, type ChaosWrite, type NodeView } from '../node/chaos/writes.js';

/**
 * The invariant checker against a fake cluster (a unit test of its logic; the real runs are
 * test/chaos-run.solo.test.ts and test/chaos-live.solo.test.ts): each node answers system.status,
 * monitor.status, framework.qemu and the CDB from a table the test changes as faults land.
 */
interface FakeNode {
  running: string[];
  role: 'primary' | 'follower';
  term: number;
  qemu?: { pid: number; system: string; incoming: boolean }[];
  cdb?: Map<string, unknown>;
}

/** `lose`: the nodes a put does not reach (the fake replicates every other put to every node at once). */
function fakeCluster(nodes: Record<string, FakeNode>, onKill: (name: string, restartAfterMs: number | undefined) => void = () => undefined, lose: () => string[] = () => []): ChaosCluster {
  const names = Object.keys(nodes);
  for (const node of Object.values(nodes)) node.cdb ??= new Map();
  return {
    mode: 'harness',
    names,
    client: async (name: string) => ({
      ask: async (_to: string, message: { type: string; key?: string; value?: unknown; prefix?: string }) => {
        const node = nodes[name]!;
        switch (message.type) {
          case 'system.status':
            return { type: 'system.status', systems: node.running.map((id) => ({ id, state: 'running' })) };
          case 'framework.qemu':
            return { type: 'framework.qemu', processes: node.qemu ?? [] };
          case 'cdb.put':
            for (const [other, held] of Object.entries(nodes)) if (!lose().includes(other)) held.cdb!.set(message.key!, message.value);
            return { type: 'cdb.written' };
          case 'cdb.list':
            return { type: 'cdb.records', records: [...node.cdb!].filter(([key]) => key.startsWith(message.prefix!)).map(([key, value]) => ({ key, value })) };
          default:
            return { type: 'monitor.status', role: node.role, term: node.term, primary: null };
        }
      },
    }) as never,
    createSystem: async () => undefined,
    kill: async (name, restartAfterMs) => onKill(name, restartAfterMs),
    restart: async () => undefined,
    stop: async () => undefined,
    partition: async () => undefined,
    heal: async () => undefined,
    dropRate: async () => undefined,
  };
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
  t.regex(double.message, /web ran on n1 and n2 at once/);
  t.deepEqual(Object.keys(double.evidence).sort(), ['n1', 'n2']);
  t.regex(report.violations.find((violation) => violation.invariant === 'two-primaries')!.message, /term 3 had primaries n1 and n2/);
  t.is(report.recoveries[0]!.recoveryMs, null);
});

test('two QEMU processes for one system on two nodes are a violation naming the pids', async (t) => {
  const nodes: Record<string, FakeNode> = {
    n1: { running: ['web'], role: 'primary', term: 1, qemu: [{ pid: 101, system: 'web', incoming: false }] },
    n2: { running: [], role: 'follower', term: 1, qemu: [] },
  };
  setTimeout(() => (nodes.n2!.qemu = [{ pid: 202, system: 'web', incoming: false }]), 100);
  setTimeout(() => (nodes.n2!.qemu = []), 300);
  const report = await new ChaosRun(fakeCluster(nodes), scenario(['wait 500ms']), { boundMs: 1000, sampleMs: 40 }).run();
  const doubles = report.violations.filter((violation) => violation.invariant === 'two-qemu');
  t.true(doubles.length > 0);
  t.regex(doubles[0]!.message, /2 QEMU processes ran for web: pid 101 on n1, pid 202 on n2/);
  t.deepEqual(Object.keys(doubles[0]!.evidence).sort(), ['n1', 'n2']);
  t.false(report.violations.some((violation) => violation.invariant === 'two-running'), 'only one node said running: the QEMU count caught it');
});

test("two nodes' reports of running count as two copies only when the runs they belong to overlap: a move between two answers is not, a run seen again later still going after the other began is; an end known only from a history is no proof; a report of running without times always counts", (t) => {
  const answer = (state: string, since: number | undefined, at: number | undefined): NodeAnswer => ({ systems: [{ id: 'web', state, ...(since === undefined ? {} : { since }) }], ...(at === undefined ? {} : { at }) });
  const running = (since: number | undefined, at: number | undefined) => answer('running', since, at);
  const checker = (skewMs = 0) => new InvariantChecker(['web'], 10_000, skewMs);
  const observe = (into: InvariantChecker, said: Record<string, NodeAnswer>) => into.observe(new Map(Object.entries(said)), new Set(), new Set(), 0, 0);
  // The source said it runs (since 1000) at 5000; the target's copy runs since 5200, said at 5300: it moved between the two answers.
  const moved = checker();
  observe(moved, { n1: running(1000, 5000), n2: running(5200, 5300) });
  t.deepEqual(moved.violations, []);
  t.is(moved.apart, 1);
  observe(moved, { n1: answer('stopped', 5250, 5400), n2: running(5200, 5500) });
  t.deepEqual(moved.violations, []);
  // The next sample finds the source's same run still going at 5400: both ran over 5200..5300, whichever samples said so.
  const still = checker();
  observe(still, { n1: running(1000, 5000), n2: running(5200, 5300) });
  observe(still, { n1: running(1000, 5400) });
  t.is(still.violations.length, 1);
  t.regex(still.violations[0]!.message, /web ran on n1 and n2 at once: n1 running from .* until at least .*; n2 running from/);
  observe(still, { n1: running(1000, 5500), n2: running(5200, 5600) });
  t.is(still.violations.length, 1, 'each pair of runs once');
  // A new run on n1 (since 9000) after n2's copy was last seen (5600): not a double.
  observe(still, { n1: running(9000, 9100) });
  t.is(still.violations.length, 1);
  // The source's next answer says it crashed at 5350, after the target began: that is when its hypervisor noticed (a frozen or
  // restarted daemon notices late), not proof that it ran until then, so it is not counted.
  const noticed = checker();
  observe(noticed, { n1: running(1000, 5000), n2: running(5200, 5300) });
  observe(noticed, { n1: answer('crashed', 5350, 5400), n2: running(5200, 5500) });
  t.deepEqual(noticed.violations, []);
  // Clocks that may differ by 300 ms: the move above could hide an overlap, so it counts.
  const skewed = checker(300);
  observe(skewed, { n1: running(1000, 5000), n2: running(5200, 5300) });
  t.is(skewed.violations.length, 1);
  // A node that does not say when: counted with any other report of running in its sample.
  const untimed = checker();
  observe(untimed, { n1: running(undefined, undefined), n2: running(5200, 5300) });
  t.is(untimed.violations.length, 1);
  t.regex(untimed.violations[0]!.message, /it did not say since when/);
  t.true(ranTogether({ node: 'n1', since: 0, at: 10 }, { node: 'n2', since: 5, at: 6 }, 0));
  t.false(ranTogether({ node: 'n1', since: 0, at: 10 }, { node: 'n2', since: 10, at: 20 }, 0), 'one ending as the other begins');
  t.deepEqual(runsOf({ node: 'n1', state: 'paused', since: 30, at: 40 }), []);
});

test('a killed node is not asked, but its QEMU processes seen from this host still count', async (t) => {
  const nodes: Record<string, FakeNode> = {
    n1: { running: [], role: 'primary', term: 1 },
    n2: { running: ['web'], role: 'follower', term: 1 },
  };
  const cluster = fakeCluster(nodes, () => {
    nodes.n2!.running = [];
    setTimeout(() => (nodes.n1!.running = ['web']), 100);
    setTimeout(() => (nodes.n1!.qemu = [{ pid: 11, system: 'web', incoming: false }]), 100);
  });
  cluster.localQemu = async (name) => (name === 'n2' ? [{ pid: 22, system: 'web', incoming: false }] : []);
  const report = await new ChaosRun(cluster, scenario(['kill n2', 'wait 400ms']), { boundMs: 2000, sampleMs: 40 }).run();
  const double = report.violations.find((violation) => violation.invariant === 'two-qemu');
  t.truthy(double, JSON.stringify(report.violations));
  t.regex(double!.message, /pid 11 on n1, pid 22 on n2/);
  t.deepEqual(report.leftDown, ['n2']);
});

test('the writer puts keys through the nodes that are up; a write that reached no node but was acknowledged is a write-lost violation', async (t) => {
  const nodes: Record<string, FakeNode> = {
    n1: { running: ['web'], role: 'primary', term: 1 },
    n2: { running: [], role: 'follower', term: 1 },
    n3: { running: [], role: 'follower', term: 1 },
  };
  const clean = await new ChaosRun(fakeCluster(nodes), scenario(['wait 400ms']), { boundMs: 1000, sampleMs: 50, writeMs: 20 }).run();
  t.deepEqual(clean.violations, []);
  t.true(clean.writes.made >= 5 && clean.writes.acked === clean.writes.made, JSON.stringify(clean.writes));
  t.deepEqual(clean.writes.checkedOn, ['n1', 'n2', 'n3']);
  t.true(clean.writes.convergedMs !== null);
  // Writes through n3 land on n3 alone: the others never get them, n3 acknowledged them.
  let losing = false;
  setTimeout(() => (losing = true), 100);
  const lossy = await new ChaosRun(fakeCluster(nodes, () => undefined, () => (losing ? ['n1', 'n2'] : [])), scenario(['wait 400ms']), { boundMs: 1000, sampleMs: 50, writeMs: 20, convergeMs: 300 }).run();
  t.false(lossy.passed);
  t.is(lossy.writes.convergedMs, null);
  const lost = lossy.violations.filter((violation) => violation.invariant === 'write-lost');
  t.true(lost.length > 0);
  t.regex(lost[0]!.message, /^n[12] (has no|holds) object\/chaos\/run-[0-9a-f]{8}-\d/);
});

const write = (seq: number, outcome: ChaosWrite['outcome'], via = 'n1'): ChaosWrite => ({ ...chaosValue('r1', seq, via), seq, via, atMs: seq, outcome });
const view = (entries: [number, string][]): NodeView => new Map(entries.map(([seq, via]) => [chaosValue('r1', seq, via).key, { seq, via }]));

test('checkWrites: the newest acknowledged write, or a newer or indeterminate one, passes; an older acknowledged one, a stranger or nothing fails', (t) => {
  const slot = SLOTS; // seq 8 and 16 share slot 0 with seq 24
  const writes = [write(slot, 'acked'), write(2 * slot, 'indeterminate'), write(3 * slot, 'acked', 'n2'), write(4 * slot, 'indeterminate', 'n3')];
  const ok = new Map([
    ['n1', view([[3 * slot, 'n2']])],
    ['n2', view([[4 * slot, 'n3']])],
    ['n3', view([[2 * slot, 'n1']])],
  ]);
  t.deepEqual(checkWrites(writes, ok), []);
  const bad = new Map([
    ['n1', view([[slot, 'n1']])],
    ['n2', new Map()],
    ['n3', view([[5 * slot, 'n9']])],
  ]);
  const violations = checkWrites(writes, bad);
  t.deepEqual(violations.map((violation) => violation.evidence.node), ['n1', 'n2', 'n3']);
  t.regex(violations[0]!.message, /n1 holds object\/chaos\/r1-0 = write 8 \(acknowledged earlier\), not the newer acknowledged write 24 through n2/);
  t.regex(violations[1]!.message, /n2 has no object\/chaos\/r1-0: write 24 through n2 was acknowledged/);
  t.regex(violations[2]!.message, /n3 holds object\/chaos\/r1-0 = write 40, which this run never made/);
  // A slot only ever written indeterminately asks nothing.
  t.deepEqual(checkWrites([write(3, 'indeterminate')], new Map([['n1', new Map()]])), []);
  t.true(converged(ok) === false && converged(new Map([['a', view([[1, 'n1']])], ['b', view([[1, 'n1']])]])));
});

test('restartDelay: the waits and stops between a kill and the restart of the same node, primary followed by name', (t) => {
  const steps = (texts: string[]) => parseScenario(JSON.stringify({ name: 't', systems: [{ id: 'web', ha: true, driver: 'sim' }], steps: texts })).steps;
  t.is(restartDelay(steps(['kill n2', 'wait 10s', 'restart n2']), 0, 'n2', undefined), 10_000);
  t.is(restartDelay(steps(['kill primary', 'wait 8s', 'stop n1 2s', 'partition n3', 'restart primary']), 0, 'n3', undefined), 10_000);
  t.is(restartDelay(steps(['kill primary', 'stop primary 2s', 'restart primary']), 0, 'n3', undefined), undefined, 'the primary named last is no longer known');
  t.is(restartDelay(steps(['kill n2', 'wait 5s']), 0, 'n2', undefined), undefined);
  t.is(restartDelay(steps(['kill n2', 'wait 1s', 'restart n1', 'wait 2s', 'restart n2']), 0, 'n2', undefined), 3000);
});

test('a live run refuses a restart no earlier kill arranges, naming the step', (t) => {
  const parse = (texts: string[]) => parseScenario(JSON.stringify({ name: 't', systems: [{ id: 'web', ha: true, driver: 'sim' }], steps: texts }));
  t.notThrows(() => checkLiveRestarts(parse(['kill n2', 'wait 10s', 'restart n2'])));
  t.notThrows(() => checkLiveRestarts(parse(['kill primary', 'wait 8s', 'restart primary'])));
  const error = t.throws(() => checkLiveRestarts(parse(['wait 1s', 'restart n2'])));
  t.is((error as { code?: string }).code, 'ACP_ERR_CHAOS_SCENARIO');
  t.regex(error!.message, /step 2 \('restart n2'\): on a live cluster \(--cluster\) a node comes back only after a 'kill'/);
  t.throws(() => checkLiveRestarts(parse(['kill primary', 'stop primary 1s', 'restart primary'])), { message: /the last step naming 'primary' before it must be 'kill primary'/ });
});
