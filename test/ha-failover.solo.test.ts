/**
 * HA failover between real daemons, each in its own network namespace: an HA system placed on n2
 * runs there; then the node running it is (1) killed with kill -9 together with its fence guard,
 * (2) cut off (its link set down), (3) frozen with SIGSTOP, (4) put in maintenance (the system
 * live-migrates away, and back when maintenance ends). Each time the system must run on
 * another node, and a sampler asking every node's hypervisor every 100 ms must never see two
 * nodes reporting it running at one moment (each answer says since when it ran there and when it
 * was said; the nodes share this host's clock, so two answers about moments apart, a move in
 * between, are told from two copies and logged). The recovery times are logged (bench/failover measures them).
 * Then an HA QEMU guest (the test guest), whose QEMU is its node's fence guard's child: live-
 * migrated away from n2 and back (maintenance), the arriving QEMU is its new node's guard's child
 * each time; then kill -9 of n2's daemon and its guard (the kernel kills the QEMU with the guard),
 * its node's link set down, SIGSTOP of its node's daemon (the guard, not fed, kills it): each time
 * it boots on another node (its console there shows it), and a sampler reading /proc every 100 ms
 * never finds two QEMU processes for it, nor one asking the nodes two that run it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import test, { type ExecutionContext } from 'ava';
import { guestImage, GUEST_READY_LINE } from '../adapters/guest-image.js';
import { parentOf } from '../adapters/proc-stat.js';
import type { Message } from '../runtime/messages.js';
import { Harness, harnessAvailable } from '../node/harness/index.js';
import { logEntries } from './helpers/log.js';
import { doubleRunSampler, holdsLease, runningOn as runningOnOf, runningSampler, runsOnOne as runsOnOneOf } from './helpers/ha-cluster.js';
import { eventually } from './helpers/node.js';
import { guestMissing, runsWhen } from './helpers/requires.js';

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

/** The nodes whose hypervisor says the system is running. */
const runningOn = (nodes: readonly string[] = NODES, system = SYSTEM): Promise<string[]> => runningOnOf(cluster(), system, nodes);

/** The one node running the system, once exactly one does (and it is not `not`). */
const runsOnOne = (not?: string, system = SYSTEM): Promise<string> => runsOnOneOf(cluster(), system, RECOVERY_TIMEOUT_MS, not);

/** Samples in which two nodes each said it runs, about moments that did not overlap (a move in between): logged, not doubles. */
function logApart(t: ExecutionContext, apart: readonly string[]): void {
  if (apart.length > 0) t.log(`${apart.length} sample(s) with two reports of running about moments apart (not doubles): ${apart.join(' | ')}`);
}

/** The pid of the node's fence guard, from its log (its first line says it started), once it has said so. */
async function guardPid(node: string): Promise<number> {
  return eventually(
    () => logEntries<{ event: string; pid: number }>(`${cluster().node(node).home}/log/fence-guard.log`).filter((entry) => entry.event === 'started').at(-1)?.pid,
    10_000,
    `${node}'s fence guard to log that it started`,
  );
}

const rejoined = (node: string): Promise<void> => holdsLease(cluster(), node);

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

/** The guest's one QEMU process is the child of `node`'s current fence guard (so it dies with it). */
async function underGuard(t: ExecutionContext, id: string, node: string): Promise<void> {
  const pids = qemuProcesses(id);
  t.is(pids.length, 1, `one QEMU for ${id}: ${pids.join(',')}`);
  const guard = await guardPid(node);
  t.is(parentOf(Number(pids[0])), guard, `${id}'s QEMU on ${node} is its guard's child`);
}

async function consoleShowsReady(node: string, id: string): Promise<true | undefined> {
  const reply = await (await cluster().client(node)).ask<Message & { data: string }>('hypervisor', { type: 'system.console', id, maxBytes: 1024 * 1024 }, { timeoutMs: 3000 }).catch(() => undefined);
  return reply?.data.includes(GUEST_READY_LINE) === true ? true : undefined;
}

const image = guestImage();
const guestAbsent = guestMissing();

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
    const sampling = doubleRunSampler(runningSampler(cluster(), SYSTEM));
    let completed = false;
    try {
      // 1. kill -9 of the daemon and its fence guard.
      const guard = await guardPid('n2');
      let killedAt = Date.now();
      await cluster().kill('n2');
      try {
        process.kill(guard, 'SIGKILL');
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
      completed = true;
    } finally {
      const { samples, doubles, apart } = await sampling.stop();
      t.log(`recovery: ${times.join('; ')}; ${samples} samples`);
      logApart(t, apart);
      t.deepEqual(doubles, [], 'never two nodes running it');
      // Only once it went through (else this would hide why it did not).
      if (completed) t.true(samples > 100, `sampled ${samples} times`);
    }
    const status = await cluster().cli('n1', ['ha', 'status']);
    t.is(status.code, 0, status.stderr);
    t.regex(status.stdout, new RegExp(`${SYSTEM}\\s+started`));
  });

  /** The HA QEMU guest of the tests below, and the node it runs on (each test leaves it running, on one node). */
  const hq = { id: `hq${process.pid}`, on: 'n2' };
  const skipped = guestAbsent ? ` (skipped: ${guestAbsent})` : '';

  /**
   * One fault of the node running the HA QEMU guest: it must run on another node, its console there
   * must show it booted, its QEMU must be that node's guard's child, and samplers (every 100 ms)
   * must never see two QEMU processes for it nor two nodes running it. `restore` runs in `finally`.
   */
  async function qemuFault(t: ExecutionContext, what: string, fault: (node: string) => Promise<void> | void, restore: (node: string) => Promise<void> | void, after?: (node: string) => void): Promise<void> {
    t.timeout(240_000);
    const from = hq.on;
    t.is((await runningOn(NODES, hq.id)).join(), from, `${hq.id} runs on ${from} before the fault`);
    const processes = doubleRunSampler(async () => {
      const pids = qemuProcesses(hq.id);
      return pids.length > 1 ? { double: `QEMU processes ${pids.join(', ')}` } : {};
    });
    const nodes = doubleRunSampler(runningSampler(cluster(), hq.id));
    let line = '';
    let completed = false;
    try {
      const at = Date.now();
      try {
        await fault(from);
        const to = await runsOnOne(from, hq.id);
        const runningMs = Date.now() - at;
        await eventually(() => consoleShowsReady(to, hq.id), 180_000, `${hq.id} to boot on ${to}`);
        line = `${what} of ${from}: running on ${to} after ${runningMs} ms, booted after ${Date.now() - at} ms`;
        await underGuard(t, hq.id, to);
        after?.(from);
        hq.on = to;
      } finally {
        await restore(from);
      }
      await rejoined(from);
      t.is(await runsOnOne(undefined, hq.id), hq.on, `${from} came back and did not start it again`);
      completed = true;
    } finally {
      const p = await processes.stop();
      const n = await nodes.stop();
      logApart(t, n.apart);
      t.log(`${line}; ${p.samples} process samples, ${n.samples} node samples`);
      t.deepEqual(p.doubles, [], 'never two QEMU processes for the guest');
      t.deepEqual(n.doubles, [], 'never two nodes running the guest');
      if (completed) t.true(p.samples > 50 && n.samples > 50, `sampled ${p.samples} and ${n.samples} times`);
    }
    t.is(qemuProcesses(hq.id).length, 1);
  }

  runsWhen(guestAbsent).serial(`an HA QEMU guest runs as its node's fence guard's child, and an arriving one as its new node's: created on n2, live-migrated away and back${skipped}`, async (t) => {
    t.timeout(240_000);
    const { id } = hq;
    const created = await cluster().cli('n1', ['system', 'create', id, '--driver', 'qemu', '--memory', '128', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', image!.cmdline, '--ha', '--node', 'n2']);
    t.is(created.code, 0, created.stderr);
    t.is(await runsOnOne(undefined, id), 'n2');
    await eventually(() => consoleShowsReady('n2', id), 180_000, `${id} to boot on n2`);
    await underGuard(t, id, 'n2');
    const nodes = doubleRunSampler(runningSampler(cluster(), id));
    let away = '';
    try {
      // Maintenance: live-migrated away, and back when it ends; each arriving QEMU is its target's guard's child.
      const on = await cluster().cli('n1', ['node', 'maintenance', 'on', 'n2']);
      t.is(on.code, 0, on.stderr);
      try {
        away = await runsOnOne('n2', id);
        await eventually(() => (qemuProcesses(id).length === 1 ? true : undefined), 30_000, `the source QEMU of ${id} to go once it arrived on ${away}`);
        await underGuard(t, id, away);
      } finally {
        const off = await cluster().cli('n1', ['node', 'maintenance', 'off', 'n2']);
        t.is(off.code, 0, off.stderr);
      }
      await eventually(async () => ((await runningOn(NODES, id)).join() === 'n2' ? true : undefined), RECOVERY_TIMEOUT_MS, `${id} to move back to n2`);
      await eventually(() => (qemuProcesses(id).length === 1 ? true : undefined), 30_000, `the source QEMU of ${id} on ${away} to go`);
      await underGuard(t, id, 'n2');
    } finally {
      const { samples, doubles, apart } = await nodes.stop();
      t.log(`migrated to ${away} and back; ${samples} node samples`);
      logApart(t, apart);
      t.deepEqual(doubles, [], 'never two nodes running the guest');
    }
  });

  runsWhen(guestAbsent).serial(`the HA QEMU guest: kill -9 of n2's daemon and its fence guard kills its QEMU at once (the kernel, not the guard firing); it boots on another node, never two QEMU processes${skipped}`, async (t) => {
    const guardLog = `${cluster().node('n2').home}/log/fence-guard.log`;
    let guard = 0;
    let logged = 0;
    await qemuFault(
      t,
      'kill -9 of daemon and guard',
      async (node) => {
        t.is(node, 'n2');
        guard = await guardPid(node);
        logged = readFileSync(guardLog, 'utf8').length;
        const qemu = qemuProcesses(hq.id);
        const at = Date.now();
        await cluster().kill(node);
        process.kill(guard, 'SIGKILL');
        await eventually(() => (qemuProcesses(hq.id).length === 0 ? true : undefined), 10_000, `${hq.id}'s QEMU (${qemu.join(',')}) to die with its guard`);
        t.log(`QEMU gone ${Date.now() - at} ms after the kill`);
      },
      (node) => cluster().restart(node),
      () => t.notRegex(readFileSync(guardLog, 'utf8').slice(logged), new RegExp(`"pid":${guard},"event":"fired"`), 'the guard fired: it was not killed'),
    );
  });

  runsWhen(guestAbsent).serial(`the HA QEMU guest: the link of its node set down; it boots on another node, never two QEMU processes${skipped}`, async (t) => {
    await qemuFault(t, 'link down', (node) => cluster().partition(node), (node) => cluster().heal(node));
  });

  runsWhen(guestAbsent).serial(`the HA QEMU guest: SIGSTOP of its node's daemon; its guard, not fed, kills the QEMU; it boots on another node, never two QEMU processes${skipped}`, async (t) => {
    let guard = 0;
    let log = '';
    let logged = 0;
    await qemuFault(
      t,
      'SIGSTOP',
      async (node) => {
        guard = await guardPid(node);
        log = `${cluster().node(node).home}/log/fence-guard.log`;
        logged = readFileSync(log, 'utf8').length;
        cluster().stop(node);
      },
      (node) => cluster().cont(node),
      () => t.regex(readFileSync(log, 'utf8').slice(logged), new RegExp(`"pid":${guard},"event":"fired","killed":\\[\\d+\\]`), "the stopped daemon's guard fired on its QEMU"),
    );
  });
}
