/**
 * A node's shutdown policy carried out by `acp down`, in network namespaces (3 nodes, an HA sim
 * system): `migrate` moves it to another node before the daemon exits; `failover` stops it and the
 * primary recovers it elsewhere at once (no fence wait: the node said it stopped it); `freeze` stops
 * it and nobody runs it until its node is back, where it starts again. Sampled every 100 ms
 * throughout: never two nodes running it. And maintenance mode moves the node's non-HA systems.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import type { HaView } from '../actors/ha/view.js';
import { defaultHaConfig } from '../actors/ha/protocol.js';
import { Harness, harnessAvailable } from '../node/harness/index.js';
import { doubleRunSampler, holdsLease, runningOn, runningSampler, runsOnOne } from './helpers/ha-cluster.js';
import { eventually } from './helpers/node.js';
import { runsWhen } from './helpers/requires.js';

const available = harnessAvailable();
const NODES = ['n1', 'n2', 'n3'] as const;
const SYSTEM = 'web';
const TIMEOUT_MS = 30_000;
let h: Harness | undefined;

const cluster = (): Harness => {
  if (!h) throw new Error('the harness did not start');
  return h;
};

/** The node's own log: what its daemon said while it drained. */
const daemonLog = (node: string): string => readFileSync(`${cluster().node(node).home}/log/acpd.log`, 'utf8');

async function setPolicy(node: string, policy: string): Promise<void> {
  const set = await cluster().cli('n1', ['node', 'set', node, '--shutdown-policy', policy]);
  if (set.code !== 0) throw new Error(`acp node set ${node} --shutdown-policy ${policy}: ${set.stderr}`);
}

/** `acp down` on the node; it is brought back (and holds its lease) whatever the test found. */
async function downAndBack(node: string, whileDown: (stdout: string) => Promise<void>): Promise<void> {
  const down = await cluster().down(node);
  try {
    if (down.code !== 0) throw new Error(`acp down on ${node} exited ${down.code}: ${down.stderr}`);
    await whileDown(down.stdout);
  } finally {
    await cluster().restart(node);
    await holdsLease(cluster(), node);
  }
}

async function primaryView(): Promise<NonNullable<HaView['manager']>> {
  return eventually(async () => {
    for (const node of NODES) {
      // A node that is down does not answer: the primary is among the others.
      const view = await cluster().client(node).then((client) => client.ask<HaView>('ha', { type: 'ha.show' }, { timeoutMs: 2000 })).catch(() => undefined);
      if (view?.manager) return view.manager;
    }
    return undefined;
  }, TIMEOUT_MS, 'the HA manager to answer');
}

if (!available.ok) {
  runsWhen(available.why)(`HA shutdown policies in network namespaces: skipped, ${available.why}`, () => undefined);
} else {
  test.before(async () => {
    h = await Harness.start({ nodes: NODES });
    await h.waitSynced(60_000);
  });
  test.after.always(async () => {
    await h?.teardown();
  });

  test.serial('maintenance on a node live-migrates its non-HA systems to another node too, naming each move', async (t) => {
    t.timeout(120_000);
    const created = await cluster().cli('n1', ['system', 'create', 'plain', '--driver', 'sim', '--node', 'n3']);
    t.is(created.code, 0, created.stderr);
    const started = await cluster().cli('n1', ['system', 'start', 'plain']);
    t.is(started.code, 0, started.stderr);
    t.deepEqual(await runningOn(cluster(), 'plain'), ['n3']);
    const on = await cluster().cli('n1', ['node', 'maintenance', 'on', 'n3']);
    try {
      t.is(on.code, 0, on.stderr);
      const to = /migrating plain from n3 to (n\d)/.exec(on.stdout)?.[1];
      t.truthy(to, on.stdout);
      t.deepEqual(await runningOn(cluster(), 'plain'), [to!], 'running on the node it was moved to, and only there');
    } finally {
      const off = await cluster().cli('n1', ['node', 'maintenance', 'off', 'n3']);
      t.is(off.code, 0, off.stderr);
      await cluster().cli('n1', ['system', 'stop', 'plain']);
    }
  });

  test.serial('acp down carries out the node’s shutdown policy: migrate, failover and freeze, never two nodes running the system', async (t) => {
    t.timeout(400_000);
    const created = await cluster().cli('n1', ['system', 'create', SYSTEM, '--driver', 'sim', '--ha', '--node', 'n2']);
    t.is(created.code, 0, created.stderr);
    t.is(await runsOnOne(cluster(), SYSTEM, TIMEOUT_MS), 'n2');
    const sampling = doubleRunSampler(runningSampler(cluster(), SYSTEM));
    try {
      // migrate: by the time acp down returns, the system runs elsewhere, moved by a live migration.
      await setPolicy('n2', 'migrate');
      await downAndBack('n2', async (stdout) => {
        t.regex(stdout, /draining 1 HA system first \(shutdown policy migrate/);
        t.regex(daemonLog('n2'), /HA drain done: every HA system migrated away/);
        const to = await runsOnOne(cluster(), SYSTEM, TIMEOUT_MS, 'n2');
        t.not(to, 'n2');
      });
      const first = await runsOnOne(cluster(), SYSTEM, TIMEOUT_MS);

      // failover: stopped there, recovered elsewhere on the node's word, not after a fence.
      await setPolicy(first, 'failover');
      await downAndBack(first, async () => {
        t.regex(daemonLog(first), /HA drain done: every HA system stopped \(failover\)/);
        const to = await runsOnOne(cluster(), SYSTEM, TIMEOUT_MS, first);
        t.not(to, first);
        const said = NODES.map((node) => daemonLog(node)).join('\n');
        t.regex(said, new RegExp(`node ${first} shut down with policy failover`));
      });
      const second = await runsOnOne(cluster(), SYSTEM, TIMEOUT_MS);

      // freeze: stopped, and run nowhere while its node is away, even once a fence would have passed.
      await setPolicy(second, 'freeze');
      await downAndBack(second, async () => {
        t.regex(daemonLog(second), /HA drain done: every HA system stopped \(freeze\)/);
        const { leaseMs, fenceTimeoutMs, marginMs } = defaultHaConfig;
        const manager = await eventually(async () => {
          const view = await primaryView();
          const node = view.nodes.find((candidate) => candidate.name === second);
          return node !== undefined && node.lastReportAgoMs > leaseMs + fenceTimeoutMs + marginMs ? view : undefined;
        }, TIMEOUT_MS, `the HA manager to have heard nothing from ${second} for longer than a lease and a fence`);
        t.is(manager.systems.find((system) => system.id === SYSTEM)?.state, 'freeze');
        t.deepEqual(await runningOn(cluster(), SYSTEM), [], 'a frozen system runs nowhere');
      });
      t.is(await runsOnOne(cluster(), SYSTEM, TIMEOUT_MS), second, 'back on its node once the node is back');
    } finally {
      const { samples, doubles, apart } = await sampling.stop();
      if (apart.length > 0) t.log(`two nodes said it runs, about moments that did not overlap (not doubles): ${apart.join(' | ')}`);
      t.deepEqual(doubles, [], 'never two nodes running it');
      t.true(samples > 100, `sampled ${samples} times`);
    }
  });
}
