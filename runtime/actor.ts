import type { ZodType } from 'zod';
import type { Logger } from './logger.js';
import type { Message } from './messages.js';
import type { AuthorityTable } from './authority.js';
import type { ActorPath } from './path.js';
import type { Principal } from './principal.js';

export interface NodeIdentity {
  readonly cluster: string;
  readonly node: string;
  /** One more every time the daemon starts: a counter kept in the home (see adapters/home.ts nextIncarnation). */
  readonly incarnation: number;
}

export interface AskOptions {
  timeoutMs?: number;
}

export const DEFAULT_ASK_TIMEOUT_MS = 5000;

/** A location-transparent handle on an actor: the same calls whether it is local, in a thread or remote. */
export interface ActorRef {
  readonly path: string;
  /** Fire-and-forget; the message carries the sender this ref was made for. */
  tell(message: Message): void;
  ask<Reply extends Message = Message>(message: Message, options?: AskOptions): Promise<Reply>;
}

/** A CPU-heavy task for the shared worker pool: an exported function of a module. */
export interface PoolTask {
  /** The module's file URL (import.meta.url-relative), compiled JavaScript. */
  readonly module: string;
  readonly name: string;
  readonly input: unknown;
}

export interface ActorContext {
  readonly path: ActorPath;
  readonly self: ActorRef;
  readonly node: NodeIdentity;
  readonly log: Logger;
  /** 1 for the first start at this path in this daemon, +1 for each restart. */
  readonly generation: number;
  ref(path: string | ActorPath): ActorRef;
  runTask<Result>(task: PoolTask): Promise<Result>;
  /**
   * Death watch: once the actor at `path` stops for good, this actor receives
   * `{type:'terminated', path, reason}` in its mailbox. Returns a function that cancels the watch.
   */
  watch(path: string | ActorPath): () => void;
}

/**
 * A reply that is not ready yet. `receive` returns one (via `replyLater`) when the answer waits on
 * I/O that must not hold the mailbox, such as a durable write: the next message is handled at once,
 * and the asker gets the promise's value (or its AcpError) when it settles.
 */
export class DeferredReply {
  constructor(readonly promise: Promise<Message | void>) {}
}

export function replyLater(promise: Promise<Message | void>): DeferredReply {
  return new DeferredReply(promise);
}

/**
 * An actor's behaviour. `receive` handles one message at a time, in mailbox order; what it returns
 * answers an ask (`{type:'ok'}` when it returns nothing). Throwing an AcpError refuses the message
 * (the asker gets the error, the actor carries on); throwing anything else is a crash, and the
 * actor's supervisor decides what happens next.
 */
export interface Actor {
  started?(): Promise<void> | void;
  receive(message: Message, sender: Principal): Promise<Message | DeferredReply | void> | Message | DeferredReply | void;
  stopping?(reason: string): Promise<void> | void;
  /**
   * The actor did not stop within its shutdown timeout (its mailbox is stuck, so `stopping` never
   * ran): let go at once of what outlives the process otherwise, such as a child process.
   */
  killed?(): void;
  /**
   * Answers a message of a type the actor was spawned with in `reads` (SpawnOptions), at once and
   * outside the mailbox: a pure, synchronous read of state that every `receive` leaves consistent.
   * The runtime calls it only while the actor runs and only when nothing from the same sender is
   * still queued or being handled, so a sender's read comes after its own earlier messages. A thrown
   * AcpError refuses the read; anything else sends the message through the mailbox instead.
   */
  read?(message: Message, sender: Principal): Message;
}

export type ActorFactory = (ctx: ActorContext) => Actor;

export type Isolation = 'inline' | 'thread' | 'process';

/** What a service module exports: its name, message schema and how to make its actor. */
export interface ServiceDefinition<Deps = undefined> {
  readonly name: string;
  readonly description: string;
  /** Message schema for input from outside the process (the universal messages are added by the runtime). */
  readonly schema: ZodType;
  /** Who may send each message type of the schema (see runtime/authority.ts). */
  readonly authority: AuthorityTable;
  /** Isolation modes this service supports; the first is its default. */
  readonly isolations: readonly Isolation[];
  /** Message types answered by the actor's `read`, outside its mailbox (inline isolation only). */
  readonly reads?: ReadonlySet<string>;
  create(ctx: ActorContext, deps: Deps): Actor;
}
