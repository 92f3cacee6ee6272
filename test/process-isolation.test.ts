import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { ServiceInfo } from '../actors/kit.js';
import type { AcpClient } from '../runtime/client.js';
import type { Daemon } from '../node/daemon.js';
import { AcpError } from '../runtime/errors.js';
import { silentLogger } from '../runtime/logger.js';
import type { Message, Pong, Terminated } from '../runtime/messages.js';
import type { Principal } from '../runtime/principal.js';
import { processActor } from '../runtime/process.js';
import type { NodeStatus, ServiceStatus } from '../runtime/services.js';
import { ActorSystem } from '../runtime/system.js';
import { echoSchema } from './fixtures/echo-service.js';
import { allRunning, client, eventually, makeHome, startDaemon, isAlive } from './helpers/node.js';

const path = (name: string) => `acp://lab/n1/${name}`;
const ECHO_MODULE = new URL('./fixtures/echo-service.js', import.meta.url).href;


function service(status: NodeStatus, name: string): ServiceStatus {
  const found = status.services.find((entry) => entry.name === name);
  if (!found) throw new Error(`status has no service '${name}'`);
  return found;
}

function procSockets(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((name) => /^proc-.*\.sock$/.test(name)) : [];
}

async function bootNode(t: ExecutionContext): Promise<{ home: string; daemon: Daemon; connection: AcpClient; status: NodeStatus; pid: number }> {
  const home = makeHome(t, { services: { network: { isolation: 'process' } } });
  const daemon = await startDaemon(t, home, { faults: true });
  const status = await allRunning(daemon);
  const connection = await client(t, home);
  const pid = service(status, 'network').pid;
  if (pid === undefined) throw new Error('network has no pid');
  return { home, daemon, connection, status, pid };
}

function restarted(daemon: Daemon, oldPid: number): Promise<ServiceStatus> {
  return eventually(
    () => {
      const entry = service(daemon.status(), 'network');
      return entry.state === 'running' && entry.restarts === 1 && entry.pid !== undefined && entry.pid !== oldPid ? entry : undefined;
    },
    20_000,
    'network to restart in a new child process',
  );
}

test('a process-isolated service runs in its own child process and answers like inline', async (t) => {
  const { connection, status, pid } = await bootNode(t);
  for (const entry of status.services) {
    t.is(entry.isolation, entry.name === 'network' ? 'process' : 'inline', entry.name);
  }
  t.not(pid, process.pid);
  t.true(isAlive(pid), 'the child process is alive');
  t.is(service(status, 'network').threadId, undefined);

  const inlinePong = await connection.ask<Pong>('storage', { type: 'ping' });
  const pong = await connection.ask<Pong>('network', { type: 'ping' });
  t.deepEqual(Object.keys(pong).sort(), Object.keys(inlinePong).sort());
  t.deepEqual(pong, { type: 'pong', path: path('network'), incarnation: inlinePong.incarnation, generation: 1 });

  const inlineInfo = await connection.ask<ServiceInfo>('storage', { type: 'service.info' });
  const info = await connection.ask<ServiceInfo>('network', { type: 'service.info' });
  t.deepEqual(Object.keys(info).sort(), Object.keys(inlineInfo).sort());
  t.like(info, { type: 'service.info', service: 'network', path: path('network'), generation: 1, pid, threadId: 0 });

  // The schema is checked at the proxy, as for inline.
  const refused = await t.throwsAsync(connection.ask('network', { type: 'ping', x: 1 }), { instanceOf: AcpError });
  t.is(refused?.code, 'ACP_ERR_SCHEMA_REJECTED');
  // chaos.stall answers before it holds the child's mailbox.
  const stalling = await connection.ask<Message>('network', { type: 'chaos.stall', ms: 50 });
  t.like(stalling, { type: 'stalling', path: path('network'), ms: 50 });
});

test('kill -9 of the child fails the ask in flight at once and the supervisor restarts it in a new child', async (t) => {
  const { daemon, connection, pid } = await bootNode(t);
  await connection.ask('network', { type: 'chaos.stall', ms: 3000 });
  // Held in the child's mailbox behind the stall when the child dies.
  const inflight = connection.ask('network', { type: 'ping' }, { timeoutMs: 20_000 }).then(
    () => undefined,
    (error: unknown) => error,
  );
  await new Promise((resolve) => setTimeout(resolve, 200));
  process.kill(pid, 'SIGKILL');

  const error = await inflight;
  t.true(error instanceof AcpError, String(error));
  t.is((error as AcpError).code, 'ACP_ERR_PROCESS_EXITED', (error as AcpError).message);
  t.is((error as AcpError).kind, 'actor-crashed');

  const entry = await restarted(daemon, pid);
  t.is(entry.isolation, 'process');
  t.true(isAlive(entry.pid!), 'the new child is alive');
  t.false(isAlive(pid), 'the killed child is gone');
  const info = await connection.ask<ServiceInfo>('network', { type: 'service.info' });
  t.like(info, { generation: 2, pid: entry.pid });
  t.like(await connection.ask<Pong>('network', { type: 'ping' }), { path: path('network'), generation: 2 });
  for (const other of daemon.status().services) {
    if (other.name !== 'network') t.is(other.restarts, 0, other.name);
  }
});

test('chaos.crash in the child restarts it like inline', async (t) => {
  const { daemon, connection, pid } = await bootNode(t);
  const error = await t.throwsAsync(connection.ask('network', { type: 'chaos.crash' }, { timeoutMs: 10_000 }), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_ACTOR_CRASHED', error?.message);
  const entry = await restarted(daemon, pid);
  t.regex(entry.lastError ?? '', /crash/);
  const info = await connection.ask<ServiceInfo>('network', { type: 'service.info' });
  t.like(info, { generation: 2, pid: entry.pid });
  // The crashed child is stopped, not left behind.
  await eventually(() => (isAlive(pid) ? undefined : true), 10_000, 'the crashed child to exit');
  t.false(isAlive(pid));
});

test('after the daemon stops, the child process is gone and its socket removed', async (t) => {
  const { home, daemon, pid } = await bootNode(t);
  const run = join(home, 'run');
  t.true(isAlive(pid));
  // The socket is removed once the child has connected: nothing else may connect to it.
  t.deepEqual(procSockets(run), []);
  await daemon.stop('test over');
  t.false(isAlive(pid), 'the child outlived the daemon');
  t.deepEqual(procSockets(run), []);
});

// processActor on its own, with an ActorSystem, a stand-in Framework and a test service.

interface Harness {
  system: ActorSystem;
  socketDir: string;
  pids: number[];
  exited: number[];
  crashes: AcpError[];
  spawnEcho(exportName?: string): Promise<unknown>;
}

async function harness(t: ExecutionContext): Promise<Harness> {
  const socketDir = mkdtempSync(join(tmpdir(), 'acp-proc-'));
  const system = new ActorSystem({ identity: { cluster: 'lab', node: 'n1', incarnation: Date.now() }, log: silentLogger(), faults: true });
  t.teardown(async () => {
    await system.shutdown('test over');
    rmSync(socketDir, { recursive: true, force: true });
  });
  await system.spawn(system.localPath('framework'), () => ({
    receive: (message) => (message.type === 'status' ? { type: 'status', node: system.identity.node } : undefined),
  }));
  const pids: number[] = [];
  const exited: number[] = [];
  const crashes: AcpError[] = [];
  const spawnEcho = (exportName = 'service') =>
    system.spawn(
      system.localPath('echo'),
      processActor(system, {
        module: ECHO_MODULE,
        exportName,
        logLevel: 'silent',
        logFile: undefined,
        socketDir,
        onProcess: (pid, gone) => {
          (gone ? exited : pids).push(pid);
        },
      }),
      { schema: echoSchema, forwardsUniversal: true, onCrash: (error) => crashes.push(error) },
    );
  return { system, socketDir, pids, exited, crashes, spawnEcho };
}

test("the child's ctx reaches the parent's actors: ask, tell, watch; replies, deferred replies and refusals come back", async (t) => {
  const { system, socketDir, pids, crashes, spawnEcho } = await harness(t);
  const told: Array<{ message: Message; from: Principal }> = [];
  await system.spawn(system.localPath('recorder'), () => ({
    receive: (message, from) => {
      told.push({ message, from });
    },
  }));
  const victim = await system.spawn(system.localPath('victim'), () => ({ receive: () => undefined }));
  await spawnEcho();
  const echo = system.ref(system.localPath('echo'));
  t.is(pids.length, 1);
  t.not(pids[0], process.pid);
  t.like(await echo.ask({ type: 'echo.pid' }), { pid: pids[0] });

  t.deepEqual(await echo.ask({ type: 'echo.status' }), { type: 'echo.status', node: 'n1' });

  await echo.ask({ type: 'echo.tell', path: path('recorder'), message: { type: 'note', n: 1 } });
  await eventually(() => (told.length > 0 ? true : undefined), 5000, 'the tell to arrive');
  t.deepEqual(told, [{ message: { type: 'note', n: 1 }, from: { kind: 'actor', path: path('echo') } }]);

  await echo.ask({ type: 'echo.watch', path: path('victim') });
  await victim.stop('test', 1000);
  const watched = await eventually(async () => {
    const reply = await echo.ask<Message & { terminated: Terminated[] }>({ type: 'echo.watched' });
    return reply.terminated.length > 0 ? reply.terminated : undefined;
  }, 5000, 'the terminated message to reach the child');
  t.deepEqual(watched, [{ type: 'terminated', path: path('victim'), reason: 'test' }]);

  t.deepEqual(await echo.ask({ type: 'echo.later', ms: 20 }), { type: 'echo.later', ms: 20 });
  const refused = await t.throwsAsync(echo.ask({ type: 'echo.refuse' }), { instanceOf: AcpError });
  t.is(refused?.code, 'ACP_ERR_UNKNOWN_MESSAGE');
  t.deepEqual(refused?.details, { why: 'test' });
  t.deepEqual(crashes, [], 'a refusal is not a crash');

  const crashed = await t.throwsAsync(echo.ask({ type: 'echo.boom' }), { instanceOf: AcpError });
  t.is(crashed?.code, 'ACP_ERR_ACTOR_CRASHED');
  t.regex(crashed?.message ?? '', /boom/);
  await eventually(() => (crashes.length > 0 ? true : undefined), 5000, 'the proxy to crash');
  await eventually(() => (isAlive(pids[0]!) ? undefined : true), 5000, 'the crashed child to exit');
  t.deepEqual(procSockets(socketDir), []);
});

test('a child whose actor cannot start fails the start with a clear error and leaves nothing behind', async (t) => {
  const { system, socketDir, pids, exited, spawnEcho } = await harness(t);
  const error = await t.throwsAsync(spawnEcho('nothingHere'), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_PROCESS_START_FAILED');
  t.regex(error?.message ?? '', /nothingHere/);
  t.false(system.isAlive(path('echo')));
  t.deepEqual(pids, [], 'a child that never started is never reported running');
  t.is(exited.length, 1);
  t.false(isAlive(exited[0]!), 'the child is gone');
  t.deepEqual(procSockets(socketDir), []);
});
