import { existsSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { ServiceInfo } from '../actors/kit.js';
import type { AcpClient } from '../runtime/client.js';
import { Daemon } from '../node/daemon.js';
import { AcpError } from '../runtime/errors.js';
import type { Message, Pong, Terminated } from '../runtime/messages.js';
import type { NodeStatus, ServiceStatus } from '../runtime/services.js';
import type { SystemEvent } from '../runtime/system.js';
import { allRunning, client, eventually, makeHome, startDaemon, type HomeOptions } from './helpers/node.js';

const BOOT_ORDER = ['cdb', 'agent', 'api', 'network', 'storage', 'hypervisor', 'monitor', 'ha', 'webapi'] as const;
const path = (name: string) => `acp://lab/n1/${name}`;

/** A service's restart intensity that a test can exhaust, and a failed-service retry that never comes within a test. */
const FRAGILE_NETWORK: HomeOptions = { services: { network: { maxRestarts: 3, withinMs: 60_000 } }, failedRetryMs: 600_000 };

function service(status: NodeStatus, name: string): ServiceStatus {
  const found = status.services.find((entry) => entry.name === name);
  if (!found) throw new Error(`status has no service '${name}'`);
  return found;
}

async function bootNode(t: ExecutionContext, options: HomeOptions = {}): Promise<{ daemon: Daemon; connection: AcpClient; status: NodeStatus }> {
  const home = makeHome(t, options);
  const daemon = await startDaemon(t, home, { faults: true });
  const status = await allRunning(daemon);
  const connection = await client(t, home);
  return { daemon, connection, status };
}

/** An ask that must crash the actor it is sent to. */
async function crash(t: ExecutionContext, connection: AcpClient, target: string): Promise<void> {
  const error = await t.throwsAsync(connection.ask(target, { type: 'chaos.crash' }, { timeoutMs: 10_000 }), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_ACTOR_CRASHED', error?.message);
}

function waitFor(daemon: Daemon, name: string, check: (entry: ServiceStatus) => boolean, what: string): Promise<ServiceStatus> {
  return eventually(
    () => {
      const entry = service(daemon.status(), name);
      return check(entry) ? entry : undefined;
    },
    20_000,
    what,
  );
}

/** Crashes network until its restart intensity (3 in 60 s) is exceeded: the 4th crash fails it. */
async function crashNetworkPastIntensity(t: ExecutionContext, daemon: Daemon, connection: AcpClient): Promise<void> {
  for (let restarts = 1; restarts <= 3; restarts += 1) {
    await crash(t, connection, 'network');
    await waitFor(daemon, 'network', (entry) => entry.state === 'running' && entry.restarts === restarts, `network restart #${restarts}`);
  }
  await crash(t, connection, 'network');
}

test('services boot in DESIGN order and stop in reverse, the Framework last', async (t) => {
  const { daemon, status } = await bootNode(t);
  t.deepEqual(
    status.services.map((entry) => entry.name),
    ['framework', ...BOOT_ORDER],
  );
  // Each service reached `running` no earlier than the one booted before it.
  const since = status.services.slice(1).map((entry) => Date.parse(entry.since));
  t.deepEqual(
    since,
    [...since].sort((a, b) => a - b),
  );

  const stopped: string[] = [];
  daemon.system.onEvent((event: SystemEvent) => {
    if (event.type === 'stopped') stopped.push(event.path);
  });
  await daemon.stop('test');
  const services = new Set(['framework', ...BOOT_ORDER].map(path));
  t.deepEqual(
    stopped.filter((entry) => services.has(entry)),
    [...[...BOOT_ORDER].reverse().map(path), path('framework')],
  );
  t.deepEqual(await daemon.stopped, { code: 0, reason: 'test' });
});

test('a service that exceeds its restart intensity is failed; no other service is touched', async (t) => {
  const { daemon, connection } = await bootNode(t, FRAGILE_NETWORK);
  await crashNetworkPastIntensity(t, daemon, connection);
  const network = await waitFor(daemon, 'network', (entry) => entry.state === 'failed', 'network to be failed');
  t.regex(network.lastError ?? '', /crash/);
  t.regex(network.lastError ?? '', /4 times/);
  t.is(network.pid, undefined);
  const status = daemon.status();
  for (const entry of status.services) {
    if (entry.name === 'network') continue;
    t.is(entry.state, 'running', entry.name);
    t.is(entry.restarts, 0, entry.name);
  }
  // The failed service has no actor: asks get a typed error rather than hanging.
  const error = await t.throwsAsync(connection.ask('network', { type: 'ping' }), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_NO_SUCH_ACTOR');
});

test("a Framework restart keeps a failed service's back-off: the service is not started again at once", async (t) => {
  const { daemon, connection } = await bootNode(t, FRAGILE_NETWORK);
  await crashNetworkPastIntensity(t, daemon, connection);
  await waitFor(daemon, 'network', (entry) => entry.state === 'failed', 'network to be failed');
  await crash(t, connection, 'framework');
  await waitFor(daemon, 'framework', (entry) => entry.state === 'running' && entry.restarts === 1, 'the framework to restart');
  // Once the restarted Framework's boot has passed every service, a skipped start is certain.
  await eventually(() => (daemon.status().booting ? undefined : true), 20_000, 'the boot after the restart to finish');
  t.is(service(daemon.status(), 'network').state, 'failed');
  t.is(service(daemon.status(), 'cdb').state, 'running');
});

test('thread isolation answers like inline, with its own thread, and restarts with a new one', async (t) => {
  // Storage runs inline only (it mounts shares under the node's home): network is the thread service here.
  const { daemon, connection, status } = await bootNode(t, { services: { network: { isolation: 'thread' } } });
  for (const entry of status.services) {
    t.is(entry.isolation, entry.name === 'network' ? 'thread' : 'inline', entry.name);
  }

  // monitor answers the universal messages like any service; it runs inline (it resolves @primary for the daemon).
  const inlinePong = await connection.ask<Pong>('monitor', { type: 'ping' });
  const inlineInfo = await connection.ask<ServiceInfo>('monitor', { type: 'service.info' });
  t.is(inlineInfo.threadId, 0);
  t.is(service(status, 'monitor').threadId, undefined);
  for (const name of ['network']) {
    const pong = await connection.ask<Pong>(name, { type: 'ping' });
    t.deepEqual(Object.keys(pong).sort(), Object.keys(inlinePong).sort());
    t.deepEqual(pong, { type: 'pong', path: path(name), incarnation: inlinePong.incarnation, generation: 1 });
    const info = await connection.ask<ServiceInfo>(name, { type: 'service.info' });
    t.deepEqual(Object.keys(info).sort(), Object.keys(inlineInfo).sort());
    t.like(info, { type: 'service.info', service: name, path: path(name), generation: 1, pid: process.pid });
    t.true(info.threadId > 0, `${name} threadId ${info.threadId}`);
    t.is(service(daemon.status(), name).threadId, info.threadId);
  }
  const networkBefore = await connection.ask<ServiceInfo>('network', { type: 'service.info' });
  t.not(networkBefore.threadId, (await connection.ask<ServiceInfo>('storage', { type: 'service.info' })).threadId, 'an inline service is on the main thread, not the worker');

  // A message failing the schema is refused the same way as inline.
  for (const name of ['cdb', 'network']) {
    const refused = await t.throwsAsync(connection.ask(name, { type: 'ping', x: 1 }), { instanceOf: AcpError });
    t.is(refused?.code, 'ACP_ERR_SCHEMA_REJECTED', name);
  }

  await crash(t, connection, 'network');
  const restarted = await waitFor(daemon, 'network', (entry) => entry.state === 'running' && entry.restarts === 1, 'network to restart');
  t.is(restarted.isolation, 'thread');
  const networkAfter = await connection.ask<ServiceInfo>('network', { type: 'service.info' });
  t.is(networkAfter.generation, 2);
  t.true(networkAfter.threadId > 0);
  t.not(networkAfter.threadId, networkBefore.threadId, 'a restart runs the service in a fresh thread');
  t.is(restarted.threadId, networkAfter.threadId);
  t.like(await connection.ask<Pong>('network', { type: 'ping' }), { path: path('network'), generation: 2 });
  for (const entry of daemon.status().services) {
    if (entry.name !== 'network') t.is(entry.restarts, 0, entry.name);
  }

  // chaos.stall answers before it holds the mailbox: the reply comes though the stall outlasts the ask's timeout.
  const stalling = await connection.ask<Message>('network', { type: 'chaos.stall', ms: 20_000 }, { timeoutMs: 10_000 });
  t.like(stalling, { type: 'stalling', path: path('network'), ms: 20_000 });
});

test('an isolation the service does not support fails the start with a config error naming it', async (t) => {
  const home = makeHome(t, { services: { api: { isolation: 'thread' } } });
  const error = await t.throwsAsync(Daemon.start({ home, faults: true, logLevel: 'silent' }), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_ISOLATION_UNSUPPORTED');
  t.regex(error?.message ?? '', /'api'/);
  t.false(existsSync(join(home, 'run', 'acpd.pid')), 'pidfile left behind');
  t.false(existsSync(join(home, 'run', 'acp.sock')), 'socket left behind');
});

test('death watch over the wire: a failed service and a path with no actor are reported terminated', async (t) => {
  const { daemon, connection } = await bootNode(t, FRAGILE_NETWORK);
  const none = await new Promise<Terminated>((resolve) => connection.watch('nobody-here', resolve));
  t.deepEqual(none, { type: 'terminated', path: path('nobody-here'), reason: 'no-such-actor' });

  const events: Terminated[] = [];
  const terminated = new Promise<Terminated>((resolve) =>
    connection.watch('network', (event) => {
      events.push(event);
      resolve(event);
    }),
  );
  await crashNetworkPastIntensity(t, daemon, connection);
  const event = await terminated;
  t.is(event.type, 'terminated');
  t.is(event.path, path('network'));
  t.true(event.reason.startsWith('failed'), event.reason);
  // Restarts are not terminations: the watcher heard exactly once.
  t.is(events.length, 1);
  t.is(service(daemon.status(), 'network').state, 'failed');
});

test("the Framework's shutdown message stops the daemon with code 0", async (t) => {
  const { daemon, connection } = await bootNode(t);
  const reply = await connection.ask<Message>('framework', { type: 'shutdown', reason: 'test asked' });
  t.like(reply, { type: 'shutting-down', pid: process.pid });
  t.deepEqual(await daemon.stopped, { code: 0, reason: 'test asked' });
  t.false(existsSync(daemon.paths.pidfile));
  t.false(existsSync(daemon.paths.socket));
});

test('a piscina task runs from the system and from an actor context', async (t) => {
  const { daemon } = await bootNode(t);
  const module = new URL('./fixtures/sum-task.js', import.meta.url).href;
  t.is(await daemon.system.runTask<number>({ module, name: 'sum', input: [1, 2, 3] }), 6);

  await daemon.system.spawn(daemon.system.localPath('summer'), (ctx) => ({
    async receive(message) {
      const numbers = (message as Message & { numbers: number[] }).numbers;
      return { type: 'sum', total: await ctx.runTask<number>({ module, name: 'sum', input: numbers }) };
    },
  }));
  const reply = await daemon.system.ref(path('summer')).ask<Message & { total: number }>({ type: 'sum', numbers: [4, 5, 6, 7] }, { timeoutMs: 20_000 });
  t.is(reply.total, 22);
});

// Regression: a later rejection of a told message (the actor crashing on it) used to come back as
// an error frame on the tell's forgotten id, which the client took for a connection error.
test('a told message that later crashes its actor does not poison the client connection', async (t) => {
  const { daemon, connection } = await bootNode(t);
  // Hold cdb's mailbox so the tell is accepted now and handled (and crashes) only later.
  t.like(await connection.ask<Message>('cdb', { type: 'chaos.stall', ms: 2000 }), { type: 'stalling' });
  await connection.tell('cdb', { type: 'chaos.crash' });
  await waitFor(daemon, 'cdb', (entry) => entry.state === 'running' && entry.restarts === 1, 'cdb to restart after the told crash');
  const pong = await connection.ask<Pong>('framework', { type: 'ping' });
  t.is(pong.path, path('framework'));
});

test('an idle node is quiet on meta/: after the snapshot, only its heartbeat (one record a second); a service change is written once', async (t) => {
  const { connection } = await bootNode(t);
  // Let boot-time changes settle, then count what a watch on meta/ sees for 3 s.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const keys: string[] = [];
  let snapshotDone = false;
  const cancel = connection.watch('meta/', (event) => {
    if (event.type === 'cdb.snapshot' && (event as Message & { done: boolean }).done) snapshotDone = true;
    if (event.type === 'cdb.events' && snapshotDone) keys.push(...(event as Message & { records: { key: string }[] }).records.map((record) => record.key));
  });
  t.teardown(cancel);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  t.true(keys.length <= 4, `at most one record a second, saw ${keys.length}: ${keys.join(', ')}`);
  t.deepEqual([...new Set(keys)], ['meta/node/n1@n1']);
  // A service that restarts is written again (state, restarts), once per change.
  keys.length = 0;
  await connection.tell('monitor', { type: 'chaos.crash' });
  await eventually(() => (keys.includes('meta/service/monitor/n1@n1') ? true : undefined), 5000, 'the monitor meta to change');
});
