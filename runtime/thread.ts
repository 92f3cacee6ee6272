import { Worker } from 'node:worker_threads';
import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import type { Actor, ActorContext, ActorFactory } from './actor.js';
import { AcpError } from './errors.js';
import type { Principal } from './principal.js';
import type { Message } from './messages.js';
import { isolatedActorData, type IsolatedActorData, type IsolatedReply } from './isolated-mailbox.js';
import type { ActorSystem } from './system.js';

/** A reply from the worker: answers and refusals travel as data, so error codes survive. */
export type ThreadReply = IsolatedReply;

/** The worker side's API, exposed over comlink. */
export interface ThreadWorkerApi {
  start(relay: ThreadRelay): Promise<void>;
  receive(message: Message, sender: Principal): Promise<ThreadReply>;
  stop(reason: string): Promise<void>;
}

/** The main side's API handed to the worker: how its actor reaches other actors. */
export interface ThreadRelay {
  ask(path: string, message: Message, timeoutMs: number | undefined): Promise<ThreadReply>;
  /** The thread's actor speaks with the proxy's path: the parent stamps it, never the worker. */
  tell(path: string, message: Message): void;
  /** Death watch for the worker's actor; `onTerminated` is a comlink proxy. Resolves to a watch id. */
  watch(path: string, onTerminated: (terminated: Message) => void): number;
  unwatch(id: number): void;
}

export type ThreadWorkerData = IsolatedActorData;

const workerEntry = new URL('./thread-worker.js', import.meta.url);

/**
 * Thread isolation: an inline proxy actor, at the service's path and under its supervisor, that
 * runs the real actor in a worker thread behind a comlink-wrapped port. Every message, the
 * universal ones included, is handled in the worker; a crash there, or the worker exiting, crashes
 * the proxy, so the supervisor restarts it (and with it a fresh worker).
 */
export function threadActor(
  system: ActorSystem,
  options: {
    module: string;
    exportName: string;
    logLevel: string;
    logFile: string | undefined;
    /** Told the worker's thread id when it starts, and again (with `exited`) when it exits. */
    onThread?: (threadId: number, exited: boolean) => void;
  },
): ActorFactory {
  return (ctx: ActorContext): Actor => {
    let worker: Worker | undefined;
    let remote: Comlink.Remote<ThreadWorkerApi> | undefined;
    let stopping = false;
    let rejectExited: ((error: AcpError) => void) | undefined;
    const exited = new Promise<never>((_resolve, reject) => {
      rejectExited = reject;
    });
    exited.catch(() => undefined);
    const watches = new Map<number, () => void>();
    let nextWatch = 1;

    const relay: ThreadRelay = {
      ask: (path, message, timeoutMs) =>
        ctx.ref(path).ask(message, timeoutMs === undefined ? {} : { timeoutMs }).then(
          (reply): ThreadReply => ({ ok: true, reply }),
          (error: unknown): ThreadReply => ({ ok: false, error: AcpError.from(error).toData(), crash: false }),
        ),
      tell: (path, message) => ctx.ref(path).tell(message),
      watch: (path, onTerminated) => {
        const id = nextWatch++;
        watches.set(id, system.watch(path, (terminated) => {
          watches.delete(id);
          onTerminated(terminated);
        }));
        return id;
      },
      unwatch: (id) => {
        watches.get(id)?.();
        watches.delete(id);
      },
    };

    return {
      async started() {
        const data: ThreadWorkerData = isolatedActorData(ctx, system.faultsEnabled, options);
        const spawned = new Worker(workerEntry, { workerData: data });
        worker = spawned;
        spawned.on('error', (error) => ctx.log.error({ err: error.message }, 'worker thread failed'));
        const threadId = spawned.threadId;
        spawned.on('exit', (code) => {
          options.onThread?.(threadId, true);
          if (stopping) return;
          const error = new AcpError('ACP_ERR_THREAD_EXITED', `the worker thread of ${ctx.self.path} exited with code ${code}`);
          rejectExited?.(error);
          // Crash the proxy even when it is idle, so the supervisor restarts the service.
          ctx.self.tell({ type: 'thread.exited', code });
        });
        remote = Comlink.wrap<ThreadWorkerApi>(nodeEndpoint(spawned));
        await Promise.race([remote.start(Comlink.proxy(relay)), exited]);
        options.onThread?.(threadId, false);
      },
      async receive(message, sender) {
        if (message.type === 'thread.exited') {
          throw new AcpError('ACP_ERR_THREAD_EXITED', `the worker thread of ${ctx.self.path} exited`);
        }
        const result = await Promise.race([remote!.receive(message, sender), exited]);
        if (result.ok) return result.reply;
        if (result.crash) throw new AcpError('ACP_ERR_ACTOR_CRASHED', result.error.message);
        throw AcpError.fromData(result.error);
      },
      async stopping(reason) {
        stopping = true;
        for (const unwatch of watches.values()) unwatch();
        watches.clear();
        const current = worker;
        if (!current) return;
        try {
          await Promise.race([remote?.stop(reason), exited, new Promise((resolve) => setTimeout(resolve, 2000))]);
        } catch {
          // the worker is gone already
        }
        remote?.[Comlink.releaseProxy]();
        await current.terminate();
      },
    };
  };
}
