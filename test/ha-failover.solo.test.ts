/**
 * HA failover between real daemons, each in its own network namespace: an HA system placed on n2
 * runs there; then the node running it is (1) killed with kill -9 together with its fence guard,
 * (2) cut off (its link set down), (3) frozen with SIGSTOP, (4) put in maintenance (the system
 * live-migrates away, and back when maintenance ends). Each time the system must run on
 * another node, and a sampler asking every node's hypervisor every 100 ms must never see two
 * nodes reporting it running. The recovery times are logged (bench/failover measures them).
 * Then an HA QEMU guest (the test guest): kill -9 of its node's daemon alone leaves the fence
 * guard to kill its QEMU; it boots on another node, and no two QEMU processes for it ever exist.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import test from 'ava';
import { QEMU_BINARY } from '../adapters/drivers/qemu-args.js';
import { guestImage, GUEST_READY_LINE } from '../adapters/guest-image.js';
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
async function runningOn(nodes: readonly string[] = NODES, system = SYSTEM): Promise<string[]> {
  const answers = await Promise.all(
    nodes.map(async (node) => {
      try {
        const client = await cluster().client(node);
        const reply = await client.ask<Message & { systems: { id: string; state: string }[] }>('hypervisor', { type: 'system.status' }, { timeoutMs: 500 });
        return reply.systems.some((listed) => listed.id === system && listed.state === 'running') ? node : null;
      } catch {
        return null;
      }
    }),
  );
  return answers.filter((node): node is string => node !== null);
}

/** Samples every 100 ms until stopped: every sample in which two nodes reported the system running. */
function sampler(count: () => Promise<string[]> = () => runningOn()): { stop: () => Promise<{ samples: number; doubles: string[] }> } {
  let samples = 0;
  const doubles: string[] = [];
  const inFlight = new Set<Promise<void>>();
  const timer = setInterval(() => {
    const at = new Date().toISOString();
    const sample = count().then((nodes) => {
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
async function runsOnOne(not?: string, system = SYSTEM): Promise<string> {
  return eventually(async () => {
    const nodes = await runningOn(NODES, system);
    return nodes.length === 1 && nodes[0] !== not ? nodes[0] : undefined;
  }, RECOVERY_TIMEOUT_MS, `${system} to run on exactly one node${not === undefined ? '' : ` other than ${not}`}`);
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

/** The QEMU processes on this host for guest `id` of this harness (its home is in QEMU's command line): their pids. */
function qemuProcesses(id: string): string[] {
  const pids: string[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    const named = argv.some((arg, index) => arg === '-name' && argv[index + 1] === `acp-${id}`);
    if (named && argv.some((arg) => arg.includes(cluster().id))) pids.push(pid);
  }
  return pids;
}

async function consoleShowsReady(node: string, id: string): Promise<true | undefined> {
  const reply = await (await cluster().client(node)).ask<Message & { data: string }>('hypervisor', { type: 'system.console', id, maxBytes: 1024 * 1024 }, { timeoutMs: 3000 }).catch(() => undefined);
  return reply?.data.includes(GUEST_READY_LINE) === true ? true : undefined;
}

const image = guestImage();
let qemuMissing: string | undefined;
try {
  execFileSync(QEMU_BINARY, ['--version'], { stdio: 'ignore' });
} catch {
  qemuMissing = `${QEMU_BINARY} is not installed (apt-get install qemu-system-x86)`;
}
const guestMissing = qemuMissing ?? (image ? undefined : 'the test guest is not built (npm run guest-image)');

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
      // A node that answers slowly (it is catching up) says nothing: asked until all answer, it runs on one node still.
      t.is(await runsOnOne(), first, 'n2 came back and did not start it again');

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
      t.is(await runsOnOne(), second);

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
      t.is(await runsOnOne(), third);

      // 4. Maintenance of the node running it: live-migrated away, and back when it ends.
      const on = await cluster().cli('n1', ['node', 'maintenance', 'on', third]);
      t.is(on.code, 0, on.stderr);
      const away = await runsOnOne(third);
      times.push(`maintenance on ${third}: migrated to ${away}`);
      const off = await cluster().cli('n1', ['node', 'maintenance', 'off', third]);
      t.is(off.code, 0, off.stderr);
      await eventually(async () => ((await runningOn()).join() === third ? true : undefined), RECOVERY_TIMEOUT_MS, `${SYSTEM} to move back to ${third}`);
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

  runsWhen(guestMissing).serial(`an HA QEMU guest whose daemon is killed: the fence guard kills its QEMU, it boots on another node, never two QEMU processes${guestMissing ? ` (skipped: ${guestMissing})` : ''}`, async (t) => {
    t.timeout(300_000);
    const id = `hq${process.pid}`;
    const created = await cluster().cli('n1', ['system', 'create', id, '--driver', 'qemu', '--memory', '128', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', image!.cmdline, '--ha', '--node', 'n2']);
    t.is(created.code, 0, created.stderr);
    const home = await runsOnOne(undefined, id);
    await eventually(() => consoleShowsReady(home, id), 180_000, `${id} to boot on ${home}`);
    const before = qemuProcesses(id);
    t.is(before.length, 1, `one QEMU for ${id}: ${before.join(',')}`);
    const sampling = sampler(async () => (qemuProcesses(id).length > 1 ? qemuProcesses(id) : []));
    const nodeSampling = sampler(() => runningOn(NODES, id));
    let recovery = '';
    try {
      const killedAt = Date.now();
      // The daemon alone: its guard lives on, not fed, and kills the guest's QEMU.
      await cluster().kill(home);
      await eventually(() => (qemuProcesses(id).length === 0 ? true : undefined), 10_000, `the fence guard to kill ${id}'s QEMU`);
      const fencedMs = Date.now() - killedAt;
      const guardLog = readFileSync(`${cluster().node(home).home}/log/fence-guard.log`, 'utf8');
      t.regex(guardLog, new RegExp(`"event":"fired","killed":\\[${before[0]}\\]`));
      const next = await runsOnOne(home, id);
      const runningMs = Date.now() - killedAt;
      await eventually(() => consoleShowsReady(next, id), 180_000, `${id} to boot on ${next}`);
      recovery = `QEMU killed by the guard after ${fencedMs} ms; running on ${next} after ${runningMs} ms, booted after ${Date.now() - killedAt} ms`;
      t.is(qemuProcesses(id).length, 1);
    } finally {
      // Back, still sampled: the restarted daemon finds its guest gone and does not start it again.
      await cluster().restart(home);
      await rejoined(home).catch(() => undefined);
      const processes = await sampling.stop();
      const nodes = await nodeSampling.stop();
      t.log(`${recovery}; ${processes.samples} process samples, ${nodes.samples} node samples`);
      t.deepEqual(processes.doubles, [], 'never two QEMU processes for the guest');
      t.deepEqual(nodes.doubles, [], 'never two nodes running the guest');
    }
    t.not(await runsOnOne(home, id), home, 'the killed node came back and did not start it again');
  });
}
