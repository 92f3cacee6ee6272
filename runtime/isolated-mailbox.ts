import { DeferredReply, type Actor, type ActorContext, type NodeIdentity } from './actor.js';
import type { Principal } from './principal.js';
import { AcpError, isRefusal, type ErrorData } from './errors.js';
import type { Logger } from './logger.js';
import { UNIVERSAL_TYPES, type Message } from './messages.js';
import { runUniversal } from './system.js';

/** An answer crossing out of a worker thread or child process: refusals keep their code as data. */
export type IsolatedReply =
  | { readonly ok: true; readonly reply: Message | undefined }
  | { readonly ok: false; readonly error: ErrorData; readonly crash: boolean };

/** What a worker thread or child process needs to host one actor. */
export interface IsolatedActorData {
  readonly module: string;
  readonly exportName: string;
  readonly path: string;
  readonly cluster: string;
  readonly node: string;
  readonly incarnation: number;
  readonly generation: number;
  readonly faultsEnabled: boolean;
  readonly logLevel: string;
  readonly logFile: string | undefined;
}

export interface IsolatedMailboxOptions {
  readonly identity: NodeIdentity;
  readonly faultsEnabled: boolean;
  readonly path: string;
  readonly generation: number;
  readonly log: Logger;
  /** 'worker thread' or 'child process', for the log. */
  readonly where: string;
  actor(): Actor | undefined;
}

/**
 * The mailbox of an actor isolated in a worker thread or a child process: one message at a time,
 * the universal messages handled here, deferred replies answered when they settle, and the first
 * answer wins (`chaos.stall` answers at once, then holds the mailbox).
 */
export class IsolatedMailbox {
  private tail: Promise<void> = Promise.resolve();

  constructor(private readonly options: IsolatedMailboxOptions) {}

  run(message: Message, sender: Principal, answer: (reply: IsolatedReply) => void): void {
    let answered = false;
    const settle = (reply: IsolatedReply) => {
      if (answered) return;
      answered = true;
      answer(reply);
    };
    const { identity, faultsEnabled, path, generation } = this.options;
    const replier = {
      resolve: (reply: Message) => settle({ ok: true, reply }),
      reject: (error: AcpError) => settle(this.toReply(error)),
    };
    this.tail = this.tail.then(async () => {
      try {
        const reply = UNIVERSAL_TYPES.has(message.type)
          ? await runUniversal(message, replier, { identity, faultsEnabled }, path, generation)
          : await this.options.actor()!.receive(message, sender);
        if (reply instanceof DeferredReply) {
          // Answered when it settles; the mailbox goes on now.
          reply.promise.then(
            (value) => settle({ ok: true, reply: value ?? undefined }),
            (error: unknown) => settle({ ok: false, error: AcpError.from(error).toData(), crash: false }),
          );
          return;
        }
        settle({ ok: true, reply: reply ?? undefined });
      } catch (error) {
        settle(this.toReply(error));
      }
    });
  }

  /** A refusal stays a refusal; anything else is a crash, logged here (see isRefusal). */
  toReply(error: unknown): IsolatedReply {
    if (isRefusal(error)) return { ok: false, error: error.toData(), crash: false };
    const crash = AcpError.from(error, 'ACP_ERR_ACTOR_CRASHED');
    this.options.log.error({ err: crash.message }, `actor crashed in its ${this.options.where}`);
    return { ok: false, error: crash.toData(), crash: true };
  }
}

/** The data for an isolated host, from the proxy's context (the parent side of thread and process isolation). */
export function isolatedActorData(
  ctx: ActorContext,
  faultsEnabled: boolean,
  options: { module: string; exportName: string; logLevel: string; logFile: string | undefined },
): IsolatedActorData {
  return {
    module: options.module,
    exportName: options.exportName,
    path: ctx.self.path,
    cluster: ctx.node.cluster,
    node: ctx.node.node,
    incarnation: ctx.node.incarnation,
    generation: ctx.generation,
    faultsEnabled,
    logLevel: options.logLevel,
    logFile: options.logFile,
  };
}

/** The mailbox for the actor an isolated host runs, from the data it was started with. */
export function mailboxFor(data: IsolatedActorData, log: Logger, where: string, actor: () => Actor | undefined): IsolatedMailbox {
  return new IsolatedMailbox({
    identity: { cluster: data.cluster, node: data.node, incarnation: data.incarnation },
    faultsEnabled: data.faultsEnabled,
    path: data.path,
    generation: data.generation,
    log,
    where,
    actor,
  });
}
