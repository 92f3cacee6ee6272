/**
 * Child-process side of process isolation: hosts one service actor and speaks to its proxy in the
 * daemon over a private Unix socket (see runtime/process.ts for the frames). It exits when that
 * socket closes, so it never outlives the daemon.
 */
import { connect } from 'node:net';
import { DEFAULT_ASK_TIMEOUT_MS, type Actor, type ActorContext, type ActorRef, type ServiceDefinition } from './actor.js';
import type { Envelope } from './codec.js';
import { actorPrincipal, parsePrincipal, type Principal } from './principal.js';
import { AcpError, errorMessage } from './errors.js';
import { createLogger, LOG_LEVELS, type LogLevel } from './logger.js';
import { isMessage, type Message } from './messages.js';
import { formatPath, parsePath, type ActorPath } from './path.js';
import { TaskPool } from './pool.js';
import { childErrorData, PROCESS_WORKER_ENV, ProcessChannel, START_ID, type ProcessReply, type ProcessWorkerData } from './process-channel.js';
import { mailboxFor } from './isolated-mailbox.js';

const raw = process.env[PROCESS_WORKER_ENV];
// The token is for this process only: nothing it spawns inherits it.
delete process.env[PROCESS_WORKER_ENV];
if (raw === undefined) {
  createLogger({ level: 'error' }).error(`process-worker.js is started by the ACP daemon, with ${PROCESS_WORKER_ENV} set`);
  process.exit(2);
}
const data = JSON.parse(raw) as ProcessWorkerData;
const level: LogLevel = (LOG_LEVELS as readonly string[]).includes(data.logLevel) ? (data.logLevel as LogLevel) : 'info';
const log = createLogger({ level, file: data.logFile }).child({ path: data.path, isolation: 'process' });
const identity = { cluster: data.cluster, node: data.node, incarnation: data.incarnation };
const pool = new TaskPool(1);
/** The envelope's limits on a target path and an ask timeout (a bad frame would end the channel). */
const MAX_PATH_CHARS = 1024;
const MAX_ASK_TIMEOUT_MS = 3_600_000;
const CONNECT_TIMEOUT_MS = 10_000;

let actor: Actor | undefined;
const mailbox = mailboxFor(data, log, 'child process', () => actor);
let stopping = false;
let nextAsk = 1;
let nextWatch = 1;
const asks = new Map<number, (reply: ProcessReply) => void>();

process.on('uncaughtException', (error) => {
  log.fatal({ err: errorMessage(error) }, 'uncaught exception in the child process; exiting');
  process.exit(1);
});
process.on('unhandledRejection', (error) => {
  log.fatal({ err: errorMessage(error) }, 'unhandled rejection in the child process; exiting');
  process.exit(1);
});

const socket = connect(data.socketPath);
const connectTimer = setTimeout(() => {
  log.error({ socket: data.socketPath }, 'the daemon did not answer the hello in time; exiting');
  process.exit(1);
}, CONNECT_TIMEOUT_MS);

const channel = new ProcessChannel(socket, {
  frame: (envelope) => onFrame(envelope),
  closed: (why) => {
    // The daemon is gone, or it let go of us: never outlive it.
    if (stopping) process.exit(0);
    log.warn({ why }, 'the channel to the daemon closed; exiting with everything this process started');
    // The daemon died without stopping us: what we started is in our process group (we lead it)
    // and goes with us. A VMM's QEMU is not: it runs in a session of its own and outlives us.
    try {
      process.kill(-process.pid, 'SIGKILL');
    } catch {
      process.exit(1);
    }
  },
});
socket.on('connect', () => channel.send({ k: 'hello', body: { token: data.token, pid: process.pid } }));

function send(envelope: Omit<Envelope, 'v'>): void {
  try {
    channel.send(envelope);
  } catch (error) {
    // An answer that cannot be encoded is answered with the reason instead.
    log.error({ err: errorMessage(error), frame: envelope.k }, 'could not send a frame to the daemon');
    if ((envelope.k === 'reply' || envelope.k === 'error') && envelope.id !== undefined) {
      const refusal = new AcpError('ACP_ERR_INTERNAL', `the answer could not be encoded: ${errorMessage(error)}`);
      channel.send({ k: 'error', id: envelope.id, err: childErrorData(refusal.toData(), false) });
    }
  }
}

function pathString(target: string | ActorPath): string {
  return typeof target === 'string' ? target : formatPath(target);
}

function remoteRef(path: string): ActorRef {
  return {
    path,
    tell: (message) => {
      if (path.length > MAX_PATH_CHARS) {
        log.warn({ to: path.slice(0, 80) }, 'tell to an overlong path dropped');
        return;
      }
      // No sender: the parent stamps this child's path on whatever it relays.
      send({ k: 'tell', to: path, body: message });
    },
    ask: <Reply extends Message>(message: Message, options?: { timeoutMs?: number }) =>
      new Promise<Reply>((resolve, reject) => {
        if (path.length > MAX_PATH_CHARS) {
          reject(new AcpError('ACP_ERR_PATH_INVALID', `actor path of ${path.length} characters is too long`));
          return;
        }
        const timeoutMs = Math.min(MAX_ASK_TIMEOUT_MS, Math.max(1, Math.round(options?.timeoutMs ?? DEFAULT_ASK_TIMEOUT_MS)));
        const id = nextAsk++;
        asks.set(id, (result) => {
          if (result.ok) resolve(result.reply as Reply);
          else reject(AcpError.fromData(result.error));
        });
        try {
          channel.send({ k: 'ask', id, to: path, body: message, t: timeoutMs });
        } catch (error) {
          asks.delete(id);
          reject(new AcpError('ACP_ERR_INTERNAL', `could not send '${message.type}' to ${path}: ${errorMessage(error)}`));
        }
      }),
  };
}


function answer(id: string | number, reply: ProcessReply): void {
  if (reply.ok) send({ k: 'reply', id, ...(reply.reply === undefined ? {} : { body: reply.reply }) });
  else send({ k: 'error', id, err: childErrorData(reply.error, reply.crash) });
}

async function start(): Promise<void> {
  const module = (await import(data.module)) as Record<string, unknown>;
  const definition = module[data.exportName] as ServiceDefinition<undefined> | undefined;
  if (!definition || typeof definition.create !== 'function') {
    throw new AcpError('ACP_ERR_PROCESS_START_FAILED', `${data.module} has no service definition named ${data.exportName}`);
  }
  const ctx: ActorContext = {
    path: parsePath(data.path),
    self: remoteRef(data.path),
    node: identity,
    log,
    generation: data.generation,
    ref: (target) => remoteRef(pathString(target)),
    runTask: (task) => pool.run(task),
    watch: (target) => {
      const id = nextWatch++;
      send({ k: 'watch', id, to: pathString(target) });
      return () => send({ k: 'watch', id, body: { cancel: true } });
    },
  };
  actor = definition.create(ctx, undefined);
  await actor.started?.();
}

/** One message at a time, as in any mailbox (see IsolatedMailbox). */
function receive(id: string | number, message: Message, sender: Principal): void {
  mailbox.run(message, sender, (reply) => answer(id, reply));
}

async function stop(reason: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  try {
    await actor?.stopping?.(reason);
  } catch (error) {
    log.warn({ err: errorMessage(error) }, 'stopping hook failed');
  }
  await pool.close().catch(() => undefined);
  channel.end({ k: 'bye' });
}

function onFrame(envelope: Envelope): void {
  switch (envelope.k) {
    case 'hello':
      clearTimeout(connectTimer);
      start().then(
        () => send({ k: 'reply', id: START_ID }),
        (error: unknown) => {
          log.error({ err: errorMessage(error) }, 'the actor did not start in its child process');
          send({ k: 'error', id: START_ID, err: childErrorData(AcpError.from(error, 'ACP_ERR_PROCESS_START_FAILED').toData(), true) });
        },
      );
      return;
    case 'ask': {
      if (envelope.id === undefined) return;
      const body = envelope.body;
      if (!isMessage(body)) {
        answer(envelope.id, { ok: false, error: new AcpError('ACP_ERR_SCHEMA_REJECTED', 'the daemon sent a frame with no message').toData(), crash: false });
        return;
      }
      let sender: Principal;
      try {
        sender = typeof envelope.from === 'string' ? parsePrincipal(envelope.from) : actorPrincipal(data.path);
      } catch (error) {
        answer(envelope.id, { ok: false, error: AcpError.from(error).toData(), crash: false });
        return;
      }
      receive(envelope.id, body, sender);
      return;
    }
    case 'reply':
    case 'error': {
      if (typeof envelope.id !== 'number') return;
      const settle = asks.get(envelope.id);
      asks.delete(envelope.id);
      const error = envelope.err ?? new AcpError('ACP_ERR_INTERNAL', 'error frame without an error').toData();
      settle?.(envelope.k === 'reply' ? { ok: true, reply: envelope.body as Message | undefined } : { ok: false, error, crash: false });
      return;
    }
    case 'bye': {
      const body = envelope.body as { reason?: unknown } | undefined;
      void stop(typeof body?.reason === 'string' ? body.reason : 'stopped by the daemon');
      return;
    }
    default:
      log.warn({ frame: envelope.k }, 'unexpected frame from the daemon');
  }
}
