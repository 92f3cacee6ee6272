/** The vocabulary the relay (system.ts) and an actor's incarnation (local-actor.ts) share. */
import type { ZodType } from 'zod';
import type { AcpError } from './errors.js';
import type { Message, Terminated } from './messages.js';
import type { AuthorityTable, AuthorityTarget } from './authority.js';
import type { ActorPath } from './path.js';
import type { Principal } from './principal.js';
import type { LocalActor } from './local-actor.js';

/** Where an ask's answer goes. Exactly one of the two is called, once. */
export interface Replier {
  resolve(reply: Message): void;
  reject(error: AcpError): void;
}

/** The runtime's own lifecycle steps, which run in the actor's mailbox like any message. */
export interface Internal {
  readonly internal: 'start' | 'stop';
  readonly reason: string;
  readonly done: Replier;
}

/** Everything that ends up in a mailbox. */
export type MailItem = Delivery | Internal;

export function isInternal(item: MailItem): item is Internal {
  return 'internal' in item;
}

export interface Delivery {
  readonly message: Message;
  /** Who sent it, stamped by the runtime from where it came from (see principal.ts). */
  readonly sender: Principal;
  /** Arrived from outside the process: validated against the target's schema. */
  readonly external: boolean;
  readonly reply?: Replier;
}

/** Inspection events: emitted by the one relay and the cells; free when nobody listens. */
export type SystemEvent =
  | { type: 'dead-letter'; path: string; messageType: string; reason: string }
  | { type: 'forbidden'; path: string; messageType: string; sender: string }
  | { type: 'crash'; path: string; generation: number; error: string }
  | { type: 'started'; path: string; generation: number }
  | { type: 'stopped'; path: string; reason: string };

/** How messages for other nodes leave this one (the agent, later); absent means no route. */
export interface RemoteRouter {
  deliver(node: string, path: ActorPath, delivery: Delivery, timeoutMs: number): void;
  /** Death watch on another node's actor; `listener` is told once. Returns the cancel function. */
  watch(node: string, path: ActorPath, listener: (terminated: Terminated) => void): () => void;
}

export interface SpawnOptions {
  /** Schema for messages from outside the process; the universal messages are always accepted. */
  schema?: ZodType;
  /** Who may send which message type (see authority.ts); without it, only actors may send. */
  authority?: AuthorityTable;
  /**
   * Called when the actor crashes. With it, the path stays reserved (state `restarting`) until the
   * owner spawns it again or releases it; without it, a crash releases the path.
   */
  onCrash?: (error: AcpError) => void;
  /** The actor handles the universal messages itself (a proxy for a thread or process). */
  forwardsUniversal?: boolean;
  /**
   * Message types the actor answers with its `read`, outside the mailbox, when nothing from the same
   * sender is queued ahead (see Actor.read).
   */
  reads?: ReadonlySet<string>;
  /** How long `started` may take (default 30 s). */
  startTimeoutMs?: number;
}


/** The relay's record of a path: its generation, live actor, schema, authority and watchers. */
export interface Entry {
  readonly path: string;
  readonly actorPath: ActorPath;
  /** The actor as the authority check names it (one object, not one per message). */
  readonly target: AuthorityTarget;
  generation: number;
  live: LocalActor | undefined;
  schema: ZodType | undefined;
  authority: AuthorityTable | undefined;
  readonly watchers: Set<(terminated: Terminated) => void>;
}
