import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Actor, ActorContext, ActorFactory } from './actor.js';
import type { Envelope } from './codec.js';
import { formatPrincipal } from './principal.js';
import { AcpError, errorMessage } from './errors.js';
import { isMessage, type Message } from './messages.js';
import type { ActorSystem } from './system.js';
import { isolatedActorData } from './isolated-mailbox.js';
import { fromChildError, PROCESS_WORKER_ENV, ProcessChannel, START_ID, type ProcessReply, type ProcessWorkerData } from './process-channel.js';

export * from './process-channel.js';

const MAX_SOCKET_PATH_BYTES = 103;
const DEFAULT_START_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 2000;


const workerEntry = fileURLToPath(new URL('./process-worker.js', import.meta.url));

/** Children alive in this process: killed (with their process groups) if the daemon exits under them. */
const liveChildren = new Set<number>();
let exitHookInstalled = false;

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // the group is gone already
  }
}

function trackChild(pid: number): void {
  liveChildren.add(pid);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of liveChildren) killGroup(child);
  });
}

function sleep(ms: number): Promise<'timeout'> {
  return new Promise((resolve) => setTimeout(() => resolve('timeout'), ms).unref());
}

export interface ProcessActorOptions {
  module: string;
  exportName: string;
  logLevel: string;
  logFile: string | undefined;
  /** Where the private channel's socket is made (`proc-<random>.sock`; the directory is made 0700). */
  socketDir: string;
  /** Told the child's pid when it runs, and again (with `exited`) when it exits. */
  onProcess?: (pid: number, exited: boolean) => void;
  /** How long the child has to connect back; 10 s unless told. */
  startTimeoutMs?: number;
}

/**
 * Process isolation: an inline proxy actor, at the service's path and under its supervisor, that
 * runs the real actor in a child process (its own process group) connected back over a private
 * Unix socket. Every message, the universal ones included, is handled in the child; a crash there,
 * or the child exiting, crashes the proxy, so the supervisor restarts it (and with it a fresh
 * child). Asks in flight when the child dies fail at once with ACP_ERR_PROCESS_EXITED.
 */
export function processActor(system: Pick<ActorSystem, 'faultsEnabled'>, options: ProcessActorOptions): ActorFactory {
  return (ctx: ActorContext): Actor => {
    const nonce = randomBytes(8).toString('hex');
    let child: ChildProcess | undefined;
    let pid: number | undefined;
    let childExited = false;
    let resolveChildExit: () => void = () => undefined;
    const childExit = new Promise<void>((resolve) => {
      resolveChildExit = resolve;
    });
    let server: Server | undefined;
    let socketPath: string | undefined;
    let channel: ProcessChannel | undefined;
    let running = false;
    let stopping = false;
    let lostError: AcpError | undefined;
    let rejectLost: (error: AcpError) => void = () => undefined;
    const lost = new Promise<never>((_resolve, reject) => {
      rejectLost = reject;
    });
    lost.catch(() => undefined);
    let resolveHello: (channel: ProcessChannel) => void = () => undefined;
    const hello = new Promise<ProcessChannel>((resolve) => {
      resolveHello = resolve;
    });
    let settleStart: ((reply: ProcessReply) => void) | undefined;
    const pending = new Map<number, { resolve: (reply: ProcessReply) => void; reject: (error: AcpError) => void }>();
    let nextId = 1;
    const watches = new Map<number, () => void>();

    /** The child is gone (or its channel is): fail everything in flight now, and crash the proxy. */
    const lose = (error: AcpError): void => {
      if (lostError || stopping) return;
      lostError = error;
      rejectLost(error);
      for (const entry of pending.values()) entry.reject(error);
      pending.clear();
      if (pid !== undefined && !childExited) killGroup(pid);
      // Crash the proxy even when it is idle, so the supervisor restarts the service.
      if (running) ctx.self.tell({ type: 'process.exited', nonce, reason: error.message });
    };

    const removeSocket = (): void => {
      if (socketPath) rmSync(socketPath, { force: true });
    };

    const closeServer = (): void => {
      const current = server;
      server = undefined;
      current?.close();
      removeSocket();
    };

    const send = (envelope: Omit<Envelope, 'v'>): void => {
      try {
        channel?.send(envelope);
      } catch (error) {
        ctx.log.warn({ err: errorMessage(error), frame: envelope.k }, 'could not send a frame to the child process');
      }
    };

    /** The child's actor asking another actor: served by the parent's system. */
    const serveAsk = (envelope: Envelope): void => {
      const id = envelope.id;
      if (typeof id !== 'number') return;
      const body = envelope.body;
      let answer: Promise<Message>;
      try {
        if (!isMessage(body) || envelope.to === undefined) throw new AcpError('ACP_ERR_SCHEMA_REJECTED', 'an ask from the child process has no target or no message');
        answer = ctx.ref(envelope.to).ask(body, envelope.t === undefined ? {} : { timeoutMs: envelope.t });
      } catch (error) {
        answer = Promise.reject(error);
      }
      answer.then(
        (reply) => send({ k: 'reply', id, body: reply }),
        (error: unknown) => send({ k: 'error', id, err: AcpError.from(error).toData() }),
      );
    };

    const serveTell = (envelope: Envelope): void => {
      const body = envelope.body;
      if (!isMessage(body) || envelope.to === undefined) {
        ctx.log.warn({ to: envelope.to }, 'dropped a malformed tell from the child process');
        return;
      }
      try {
        // Stamped with the child's path by us, whatever the child wrote: it speaks only for itself.
        ctx.ref(envelope.to).tell(body);
      } catch (error) {
        ctx.log.warn({ to: envelope.to, err: errorMessage(error) }, 'a tell from the child process was refused');
      }
    };

    /** Death watch for the child's actor: held by the proxy, so `terminated` reaches the child through its mailbox. */
    const serveWatch = (envelope: Envelope): void => {
      const id = envelope.id;
      if (typeof id !== 'number') return;
      const body = envelope.body as { cancel?: unknown } | undefined;
      if (body?.cancel === true) {
        watches.get(id)?.();
        watches.delete(id);
        return;
      }
      if (envelope.to === undefined || watches.has(id)) return;
      try {
        watches.set(id, ctx.watch(envelope.to));
      } catch (error) {
        ctx.log.warn({ to: envelope.to, err: errorMessage(error) }, 'a watch from the child process was refused');
      }
    };

    const onFrame = (connection: ProcessChannel, envelope: Envelope): void => {
      switch (envelope.k) {
        case 'reply':
        case 'error': {
          const reply: ProcessReply =
            envelope.k === 'reply' ? { ok: true, reply: envelope.body as Message | undefined } : fromChildError(envelope.err ?? new AcpError('ACP_ERR_INTERNAL', 'error frame without an error').toData());
          if (envelope.id === START_ID) {
            settleStart?.(reply);
            return;
          }
          if (typeof envelope.id !== 'number') return;
          const entry = pending.get(envelope.id);
          pending.delete(envelope.id);
          entry?.resolve(reply);
          return;
        }
        case 'ask':
          serveAsk(envelope);
          return;
        case 'tell':
          serveTell(envelope);
          return;
        case 'watch':
          serveWatch(envelope);
          return;
        case 'bye':
          return;
        case 'hello':
          ctx.log.warn('a second hello from the child process; closing its channel');
          connection.destroy();
          return;
        default:
          ctx.log.warn({ frame: envelope.k }, 'unexpected frame from the child process');
      }
    };

    /** The first connection that proves it is our child becomes the channel; any other is closed. */
    const onSocket = (socket: Socket): void => {
      let accepted = false;
      const connection = new ProcessChannel(socket, {
        frame: (envelope) => {
          if (accepted) {
            onFrame(connection, envelope);
            return;
          }
          const body = envelope.body as { token?: unknown; pid?: unknown } | undefined;
          if (envelope.k !== 'hello' || channel || body?.token !== data?.token) {
            connection.destroy();
            return;
          }
          accepted = true;
          channel = connection;
          // Nobody else may connect now: the socket file goes at once.
          closeServer();
          connection.send({ k: 'hello', body: {} });
          resolveHello(connection);
        },
        closed: (why) => {
          if (!accepted) return;
          lose(new AcpError('ACP_ERR_PROCESS_EXITED', `the channel to the child process of ${ctx.self.path} closed${why ? `: ${why}` : ''}`));
        },
      });
      setTimeout(() => {
        if (!accepted) connection.destroy();
      }, options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS).unref();
    };

    let data: ProcessWorkerData | undefined;

    const cleanUp = async (): Promise<void> => {
      for (const unwatch of watches.values()) unwatch();
      watches.clear();
      if (pid !== undefined && !childExited) {
        killGroup(pid);
        await Promise.race([childExit, sleep(STOP_GRACE_MS)]);
      }
      channel?.destroy();
      closeServer();
    };

    const start = async (): Promise<void> => {
      const dir = options.socketDir;
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      chmodSync(dir, 0o700);
      socketPath = join(dir, `proc-${randomBytes(8).toString('hex')}.sock`);
      if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
        throw new AcpError('ACP_ERR_PROCESS_START_FAILED', `the socket path ${socketPath} is longer than ${MAX_SOCKET_PATH_BYTES} bytes; use a shorter home directory`);
      }
      data = {
        ...isolatedActorData(ctx, system.faultsEnabled, options),
        socketPath,
        token: randomBytes(24).toString('hex'),
      };
      const listening = createServer(onSocket);
      server = listening;
      await new Promise<void>((resolve, reject) => {
        listening.once('error', reject);
        listening.listen(socketPath, () => {
          listening.off('error', reject);
          resolve();
        });
      });
      chmodSync(socketPath, 0o600);
      listening.on('error', (error) => ctx.log.error({ err: error.message }, 'process channel listener failed'));

      const spawned = spawn(process.execPath, [workerEntry], {
        detached: true,
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, [PROCESS_WORKER_ENV]: JSON.stringify(data) },
      });
      child = spawned;
      pid = spawned.pid;
      if (pid !== undefined) trackChild(pid);
      spawned.on('error', (error) => {
        ctx.log.error({ err: error.message }, 'child process failed');
        if (pid === undefined) {
          childExited = true;
          resolveChildExit();
          lose(new AcpError('ACP_ERR_PROCESS_EXITED', `the child process of ${ctx.self.path} could not be spawned: ${error.message}`));
        }
      });
      spawned.on('exit', (code, signal) => {
        childExited = true;
        resolveChildExit();
        if (pid !== undefined) {
          // What the child started is in its process group: it goes with the child. (A VMM's QEMU
          // is not: it runs in a session of its own, outlives its VMM and is adopted by the next.)
          killGroup(pid);
          liveChildren.delete(pid);
          options.onProcess?.(pid, true);
        }
        const how = signal ? `signal ${signal}` : `code ${code}`;
        if (!stopping) ctx.log.error({ childPid: pid, code, signal }, 'child process exited');
        lose(new AcpError('ACP_ERR_PROCESS_EXITED', `the child process ${pid ?? '?'} of ${ctx.self.path} exited with ${how}`));
      });

      const startTimeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
      const connected = await Promise.race([hello, lost, sleep(startTimeoutMs)]);
      if (connected === 'timeout') {
        throw new AcpError('ACP_ERR_PROCESS_START_FAILED', `the child process of ${ctx.self.path} did not connect back within ${startTimeoutMs} ms`);
      }
      const started = await Promise.race([
        new Promise<ProcessReply>((resolve) => {
          settleStart = resolve;
        }),
        lost,
      ]);
      if (!started.ok) {
        throw new AcpError('ACP_ERR_PROCESS_START_FAILED', `${ctx.self.path} failed to start in its child process: ${started.error.message}`, started.error);
      }
    };

    return {
      async started() {
        try {
          await start();
        } catch (error) {
          await cleanUp();
          if (error instanceof AcpError && error.code === 'ACP_ERR_PROCESS_START_FAILED') throw error;
          throw new AcpError('ACP_ERR_PROCESS_START_FAILED', `the child process of ${ctx.self.path} did not start: ${errorMessage(error)}`);
        }
        running = true;
        if (pid !== undefined) options.onProcess?.(pid, false);
      },
      async receive(message, sender) {
        if (message.type === 'process.exited') {
          if (message['nonce'] !== nonce) return undefined;
          const reason = typeof message['reason'] === 'string' ? message['reason'] : 'it exited';
          throw new AcpError('ACP_ERR_ACTOR_CRASHED', `${ctx.self.path} lost its child process: ${reason}`);
        }
        if (lostError) throw lostError;
        const id = nextId++;
        const result = await new Promise<ProcessReply>((resolve, reject) => {
          pending.set(id, { resolve, reject });
          try {
            channel!.send({ k: 'ask', id, body: message, from: formatPrincipal(sender) });
          } catch (error) {
            pending.delete(id);
            reject(new AcpError('ACP_ERR_INTERNAL', `could not send '${message.type}' to the child process: ${errorMessage(error)}`));
          }
        });
        if (result.ok) return result.reply;
        if (result.crash) throw new AcpError('ACP_ERR_ACTOR_CRASHED', result.error.message);
        throw AcpError.fromData(result.error);
      },
      killed() {
        stopping = true;
        if (pid !== undefined && !childExited) killGroup(pid);
        channel?.destroy();
        closeServer();
      },
      async stopping(reason) {
        stopping = true;
        running = false;
        for (const entry of pending.values()) entry.reject(new AcpError('ACP_ERR_ACTOR_STOPPED', `${ctx.self.path} stopped (${reason}) before it answered`));
        pending.clear();
        if (child && pid !== undefined && !childExited && channel?.isOpen) {
          send({ k: 'bye', body: { reason } });
          await Promise.race([childExit, sleep(STOP_GRACE_MS)]);
        }
        await cleanUp();
      },
    };
  };
}
