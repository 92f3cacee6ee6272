/**
 * HA failover between real daemons, each in its own network namespace: an HA system placed on n2
 * runs there; then the node running it is (1) killed with kill -9 together with its fence guard,
 * (2) cut off (its link set down), (3) frozen with SIGSTOP. Each time the system must run on
 * another node, and a sampler asking every node's hypervisor every 100 ms must never see two
 * nodes reporting it running. The recovery times are logged (bench/failover measures them).
 */
import { readFileSync } from 'node:fs';
import test from 'ava';
import type { HaView } from '../actors/ha/view.js';
import type { Message } from '../runtime/messages.js';
import { Harness, harnessAvailable } from '../node/harness/index.js';
import { eventually } from './helpers/node.js';
import { runsWhen } from './helpers/requires.js';

const available = harnessAvailable();
const NODES = ['n1', 'n2', 'n3'] as const;
const SYSTEM = 'web';
/** Generous: recovery takes lease + fence timeout + margin (5.8 s) plus, when the primary died, an election. */
const RECOVERY_TIMEOUT_MS = 30_000;
let h: Harness | undefined;

const cluster = (): Harness => {
  if (!h) throw new Error('the harness did not start');
  return h;
};

/** The nodes whose hypervisor says the system is running (a node that does not answer within 500 ms says nothing). */
async function runningOn(nodes: readonly string[] = NODES): Promise<string[]> {
  const answers = await Promise.all(
    nodes.map(async (node) => {
      try {
        const client = await cluster().client(node);
        const reply = await client.ask<Message & { systems: { id: string; state: string }[] }>('hypervisor', { type: 'system.status' }, { timeoutMs: 500 });
        return reply.systems.some((system) => system.id === SYSTEM && system.state === 'running') ? node : null;
      } catch {
        return null;
      }
    }),
  );
  return answers.filter((node): node is string => node !== null);
}

/** Samples every 100 ms until stopped: every sample in which two nodes reported the system running. */
function sampler(): { stop: () => Promise<{ samples: number; doubles: string[] }> } {
  let samples = 0;
  const doubles: string[] = [];
  const inFlight = new Set<Promise<void>>();
  const timer = setInterval(() => {
    const at = new Date().toISOString();
    const sample = runningOn().then((nodes) => {
      samples += 1;
      if (nodes.length > 1) doubles.push(`${at}: running on ${nodes.join(' and ')}`);
    });
    inFlight.add(sample);
    void sample.finally(() => inFlight.delete(sample));
  }, 100);
  return {
    stop: async () => {
      clearInterval(timer);
      await Promise.all(inFlight);
      return { samples, doubles };
    },
  };
}

/** The one node running the system, once exactly one does (and it is not `not`). */
async function runsOnOne(not?: string): Promise<string> {
  return eventually(async () => {
    const nodes = await runningOn();
    return nodes.length === 1 && nodes[0] !== not ? nodes[0] : undefined;
  }, RECOVERY_TIMEOUT_MS, `${SYSTEM} to run on exactly one node${not === undefined ? '' : ` other than ${not}`}`);
}

/** The pid of the node's fence guard, from its log (its first line says it started). */
function guardPid(node: string): number | undefined {
  const lines = readFileSync(`${cluster().node(node).home}/log/fence-guard.log`, 'utf8').trim().split('\n');
  const started = lines.map((line) => JSON.parse(line) as { event: string; pid: number }).filter((entry) => entry.event === 'started');
  return started.at(-1)?.pid;
}

async function rejoined(node: string): Promise<void> {
  await eventually(async () => {
    const view = await (await cluster().client(node)).ask<HaView>('ha', { type: 'ha.show' }, { timeoutMs: 2000 }).catch(() => undefined);
    return view?.local?.holding === true ? true : undefined;
  }, 60_000, `${node} to hold its HA lease again`);
}

if (!available.ok) {
  runsWhen(available.why)(`HA failover in network namespaces: skipped, ${available.why}`, () => undefined);
} else {
  test.before(async () => {
    h = await Harness.start({ nodes: NODES });
    await h.waitSynced(60_000);
  });
  test.after.always(async () => {
    await h?.teardown();
  });

  test.serial('an HA system survives kill -9 of its node with its guard, a cut link and SIGSTOP: it runs elsewhere each time, never on two nodes at once', async (t) => {
    t.timeout(240_000);
    const created = await cluster().cli('n1', ['system', 'create', SYSTEM, '--driver', 'sim', '--ha', '--node', 'n2']);
    t.is(created.code, 0, created.stderr);
    t.is(await runsOnOne(), 'n2');
    const times: string[] = [];
    const sampling = sampler();
    try {
      // 1. kill -9 of the daemon and its fence guard.
      const guard = guardPid('n2');
      t.truthy(guard, 'n2 started a fence guard');
      let killedAt = Date.now();
      await cluster().kill('n2');
      try {
        process.kill(guard!, 'SIGKILL');
      } catch {
        // Already gone.
      }
      const first = await runsOnOne('n2');
      times.push(`kill -9: ${Date.now() - killedAt} ms (to ${first})`);
      await cluster().restart('n2');
      await rejoined('n2');
      t.deepEqual(await runningOn(), [first], 'n2 came back and did not start it again');

      // 2. The link of the node running it set down.
      killedAt = Date.now();
      await cluster().partition(first);
      let second: string;
      try {
        second = await runsOnOne(first);
        times.push(`link down: ${Date.now() - killedAt} ms (from ${first} to ${second})`);
        // Cut off, it stopped its copy itself (its lease ran out): it reports it stopped.
        t.false((await runningOn([first])).includes(first));
      } finally {
        await cluster().heal(first);
      }
      await rejoined(first);
      t.deepEqual(await runningOn(), [second]);

      // 3. SIGSTOP of the daemon running it; continued once the system runs elsewhere.
      killedAt = Date.now();
      cluster().stop(second);
      let third: string;
      try {
        third = await runsOnOne(second);
        times.push(`SIGSTOP: ${Date.now() - killedAt} ms (from ${second} to ${third})`);
      } finally {
        cluster().cont(second);
      }
      await rejoined(second);
      t.deepEqual(await runningOn(), [third]);
    } finally {
      const { samples, doubles } = await sampling.stop();
      t.log(`recovery: ${times.join('; ')}; ${samples} samples`);
      t.deepEqual(doubles, [], 'never two nodes running it');
      t.true(samples > 100, `sampled ${samples} times`);
    }
    const status = await cluster().cli('n1', ['ha', 'status']);
    t.is(status.code, 0, status.stderr);
    t.regex(status.stdout, new RegExp(`${SYSTEM}\\s+started`));
  });
}
