/** Worker-thread side of thread isolation: hosts one service actor and answers over comlink. */
import { parentPort, threadId, workerData } from 'node:worker_threads';
import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import type { Actor, ActorContext, ActorRef, ServiceDefinition } from './actor.js';
import { actorPrincipal } from './principal.js';
import { AcpError } from './errors.js';
import { createLogger, type LogLevel } from './logger.js';
import type { Message } from './messages.js';
import { parsePath } from './path.js';
import { mailboxFor } from './isolated-mailbox.js';
import { TaskPool } from './pool.js';
import type { ThreadRelay, ThreadReply, ThreadWorkerApi, ThreadWorkerData } from './thread.js';

const data = workerData as ThreadWorkerData;
const log = createLogger({ level: data.logLevel as LogLevel, file: data.logFile }).child({ path: data.path, thread: threadId });
const identity = { cluster: data.cluster, node: data.node, incarnation: data.incarnation };
const pool = new TaskPool(1);
let actor: Actor | undefined;
const mailbox = mailboxFor(data, log, 'worker thread', () => actor);


function remoteRef(relay: ThreadRelay, path: string): ActorRef {
  return {
    path,
    tell: (message) => relay.tell(path, message),
    ask: async <Reply extends Message>(message: Message, options?: { timeoutMs?: number }) => {
      const result = await relay.ask(path, message, options?.timeoutMs);
      if (!result.ok) throw AcpError.fromData(result.error);
      return result.reply as Reply;
    },
  };
}


const api: ThreadWorkerApi = {
  async start(relay) {
    const module = (await import(data.module)) as Record<string, unknown>;
    const definition = module[data.exportName] as ServiceDefinition<undefined> | undefined;
    if (!definition || typeof definition.create !== 'function') {
      throw new Error(`${data.module} has no service definition named ${data.exportName}`);
    }
    const path = parsePath(data.path);
    const ctx: ActorContext = {
      path,
      self: remoteRef(relay, data.path),
      node: identity,
      log,
      generation: data.generation,
      ref: (target) => remoteRef(relay, typeof target === 'string' ? target : `acp://${target.cluster}/${target.node}/${target.segments.join('/')}`),
      runTask: (task) => pool.run(task),
      watch: (target) => {
        const targetPath = typeof target === 'string' ? target : `acp://${target.cluster}/${target.node}/${target.segments.join('/')}`;
        const onTerminated = Comlink.proxy((terminated: Message) => void api.receive(terminated, actorPrincipal(data.path)));
        const id = relay.watch(targetPath, onTerminated) as unknown as Promise<number>;
        return () => void id.then((watchId) => relay.unwatch(watchId));
      },
    };
    actor = definition.create(ctx, undefined);
    await actor.started?.();
  },
  receive(message, sender) {
    return new Promise<ThreadReply>((resolve) => mailbox.run(message, sender, resolve));
  },
  async stop(reason) {
    await actor?.stopping?.(reason);
    await pool.close();
  },
};

Comlink.expose(api, nodeEndpoint(parentPort!));
