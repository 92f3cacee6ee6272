import { ZodError } from 'zod';
import { DeferredReply, type Actor, type ActorContext, type ActorFactory } from './actor.js';
import { isInternal, type Delivery, type Entry, type Internal, type MailItem, type Replier, type SpawnOptions } from './delivery.js';
import { AcpError, errorMessage, isRefusal } from './errors.js';
import type { Logger } from './logger.js';
import { ok, UNIVERSAL_TYPES, type Message } from './messages.js';
import type { Cell } from './nact-cell.js';
import { actorPrincipal, formatPrincipal, type Principal } from './principal.js';
import type { ActorSystem } from './system.js';
import { runUniversal } from './universal.js';
import { describeIssues } from './validate.js';

const DEFAULT_START_TIMEOUT_MS = 30_000;


/** One incarnation of an actor at a path: its cell, its behaviour, and what it has in flight. */
export class LocalActor {
  readonly path: string;
  readonly generation: number;
  /** @internal */
  cell!: Cell<MailItem>;
  private actor: Actor | undefined;
  private readonly inflight = new Set<Delivery>();
  /**
   * With `reads`: how many deliveries from each sender are queued or being handled. A read skips
   * the mailbox only when its sender has none, so it never overtakes that sender's own messages.
   */
  private readonly queuedBySender: Map<string, number> | undefined;
  /** Death watches this actor holds; cancelled when it stops or crashes. */
  private readonly watches = new Set<() => void>();
  private readonly log: Logger;
  /** What this actor's messages carry as their sender. */
  private readonly principal: Principal;
  private state: 'starting' | 'running' | 'stopping' | 'stopped' = 'starting';
  private stopPromise: Promise<void> | undefined;
  private stopDone: Replier | undefined;

  constructor(
    private readonly system: ActorSystem,
    private readonly entry: Entry,
    private readonly factory: ActorFactory,
    private readonly options: SpawnOptions,
    private readonly parent: LocalActor | undefined,
  ) {
    this.path = entry.path;
    this.generation = entry.generation;
    this.log = system.log.child({ path: entry.path });
    this.principal = actorPrincipal(entry.path);
    if (options.reads) this.queuedBySender = new Map();
  }

  get alive(): boolean {
    return this.cell?.isAlive === true && (this.state === 'running' || this.state === 'starting');
  }

  /** @internal */
  async start(): Promise<void> {
    const name = this.entry.actorPath.segments.at(-1)!;
    this.cell = this.system.spawnCell(this, this.parent, name);
    const startMs = this.options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<Message>((resolve, reject) => {
        this.dispatchInternal({ internal: 'start', reason: 'start', done: { resolve, reject } });
        // A start that never settles must not hold its supervisor (and so `acp down`) forever.
        timer = setTimeout(() => {
          reject(new AcpError('ACP_ERR_SUPERVISOR_START_FAILED', `${this.path} did not start within ${startMs} ms`));
          this.abandonStart(`did not start within ${startMs} ms`);
        }, startMs);
      });
    } finally {
      clearTimeout(timer);
    }
    if (this.state === 'starting') this.state = 'running';
  }

  /** A failed or abandoned start: the cell goes, what was queued fails fast, the hook cleans up. */
  private abandonStart(why: string): void {
    this.state = 'stopped';
    this.cell.stop();
    this.finish('ACP_ERR_ACTOR_STOPPED', `${this.path} failed to start: ${why}`);
    Promise.resolve()
      .then(() => this.actor?.stopping?.(`start failed: ${why}`))
      .catch((error: unknown) => this.log.warn({ err: errorMessage(error) }, 'stopping hook failed after a failed start'));
  }

  /** @internal Queues a delivery; false when the cell is gone. */
  deliver(delivery: Delivery): boolean {
    if (!this.alive) return false;
    if (this.queuedBySender && this.answerRead(delivery)) return true;
    this.inflight.add(delivery);
    this.countQueued(delivery, 1);
    if (!this.cell.dispatch(delivery)) {
      this.inflight.delete(delivery);
      this.countQueued(delivery, -1);
      return false;
    }
    return true;
  }

  /**
   * A read (a type in `reads`, asked of a running actor with `read`, from a sender with nothing
   * queued here) is answered now, outside the mailbox. False: it goes through the mailbox.
   */
  private answerRead(delivery: Delivery): boolean {
    const { message, reply } = delivery;
    if (!reply || this.state !== 'running' || !this.actor?.read || !this.options.reads!.has(message.type)) return false;
    const queued = this.queuedBySender!;
    if (queued.size > 0 && queued.has(formatPrincipal(delivery.sender))) return false;
    let answer: Message;
    try {
      answer = this.actor.read(message, delivery.sender);
    } catch (caught) {
      const error = caught instanceof ZodError ? new AcpError('ACP_ERR_SCHEMA_REJECTED', `message rejected by ${this.path}: ${describeIssues(caught.issues)}`) : caught;
      if (!isRefusal(error)) return false;
      reply.reject(error);
      return true;
    }
    reply.resolve(answer);
    return true;
  }

  private countQueued(delivery: Delivery, change: 1 | -1): void {
    const counts = this.queuedBySender;
    if (!counts) return;
    const sender = formatPrincipal(delivery.sender);
    const count = (counts.get(sender) ?? 0) + change;
    if (count > 0) counts.set(sender, count);
    else counts.delete(sender);
  }

  /**
   * Stops the actor: its children first, then its `stopping` hook runs in the mailbox; messages
   * queued behind it are refused fast (asks with actor-stopped, tells as dead letters). After
   * `shutdownMs` the cell is stopped regardless. With `keepPath` the path stays reserved (restart).
   */
  stop(reason: string, shutdownMs: number, keepPath = false): Promise<void> {
    this.stopPromise ??= this.doStop(reason, shutdownMs, keepPath);
    return this.stopPromise;
  }

  private async doStop(reason: string, shutdownMs: number, keepPath: boolean): Promise<void> {
    // Children stop before their parent, deepest first, and their paths are released.
    for (const child of this.system.childrenOf(this.path)) await child.stop(`parent stopped: ${reason}`, shutdownMs);
    const wasLive = this.state !== 'stopped';
    if (wasLive) this.state = 'stopping';
    if (this.cell.isAlive && wasLive) {
      let timer: NodeJS.Timeout | undefined;
      const graceful = new Promise<Message>((resolve, reject) => {
        this.stopDone = { resolve, reject };
        if (!this.cell.dispatch({ internal: 'stop', reason, done: { resolve, reject } })) resolve(ok);
      });
      const timeout = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), shutdownMs);
      });
      const outcome = await Promise.race([graceful.then(() => 'ok' as const, () => 'ok' as const), timeout]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        this.log.warn({ shutdownMs, reason }, 'did not stop within its shutdown timeout; killed');
        // Its stopping hook never ran: what it holds outside this process goes now.
        try {
          this.actor?.killed?.();
        } catch (error) {
          this.log.warn({ err: errorMessage(error) }, 'killing the actor failed');
        }
      }
      this.cell.stop();
    }
    this.finish('ACP_ERR_ACTOR_STOPPED', `${this.path} stopped (${reason}) before it answered`);
    if (this.entry.live === this) this.entry.live = undefined;
    if (!keepPath) this.system.release(this.path, reason);
  }

  /** @internal Runs in the cell's mailbox, one at a time. */
  async handle(item: MailItem): Promise<void> {
    if (isInternal(item)) {
      await this.handleInternal(item);
      return;
    }
    const delivery = item;
    this.inflight.delete(delivery);
    if (!this.queuedBySender) return this.handleDelivery(delivery);
    try {
      await this.handleDelivery(delivery);
    } finally {
      this.countQueued(delivery, -1);
    }
  }

  private async handleDelivery(delivery: Delivery): Promise<void> {
    if (this.state !== 'running') {
      this.system.deadLetter(this.entry.actorPath, delivery, 'actor-stopped', `${this.path} is stopping`);
      return;
    }
    const { message } = delivery;
    try {
      let reply: Message | DeferredReply | void;
      if (UNIVERSAL_TYPES.has(message.type) && !this.options.forwardsUniversal) {
        reply = await runUniversal(message, delivery.reply, this.system, this.path, this.generation);
      } else {
        reply = await this.actor!.receive(message, delivery.sender);
      }
      if (reply instanceof DeferredReply) {
        this.settleLater(reply, delivery);
        return;
      }
      delivery.reply?.resolve(reply ?? ok);
    } catch (caught) {
      // A message that fails the actor's own schema (a ZodError from parse) is refused, not a crash:
      // internal senders are not validated on the way in, and must not be able to crash a service.
      // An internal failure (ACP_ERR_INTERNAL, or anything not an AcpError) is a crash: the actor's
      // state may be wrong, so its supervisor restarts it rather than it answering on.
      const error = caught instanceof ZodError ? new AcpError('ACP_ERR_SCHEMA_REJECTED', `message rejected by ${this.path}: ${describeIssues(caught.issues)}`) : caught;
      if (isRefusal(error)) {
        if (delivery.reply) delivery.reply.reject(error);
        else this.log.warn({ messageType: message.type, code: error.code, reason: error.message }, 'tell refused');
        return;
      }
      delivery.reply?.reject(
        new AcpError('ACP_ERR_ACTOR_CRASHED', `${this.path} crashed handling '${message.type}': ${errorMessage(error)}`),
      );
      throw error;
    }
  }

  /** A deferred reply answers the asker when it settles; a failure there is a refusal, not a crash. */
  private settleLater(deferred: DeferredReply, delivery: Delivery): void {
    deferred.promise.then(
      (value) => delivery.reply?.resolve(value ?? ok),
      (error: unknown) => {
        const refusal = AcpError.from(error);
        if (delivery.reply) delivery.reply.reject(refusal);
        else this.log.warn({ messageType: delivery.message.type, code: refusal.code, reason: refusal.message }, 'deferred work for a tell failed');
      },
    );
  }

  private async handleInternal(item: Internal): Promise<void> {
    if (item.internal === 'start') {
      const ctx = this.context();
      try {
        this.actor = this.factory(ctx);
        await this.actor.started?.();
        item.done.resolve(ok);
      } catch (error) {
        item.done.reject(AcpError.from(error, 'ACP_ERR_SUPERVISOR_START_FAILED'));
        this.abandonStart(errorMessage(error));
      }
      return;
    }
    try {
      await this.actor?.stopping?.(item.reason);
    } catch (error) {
      this.log.warn({ err: errorMessage(error) }, 'stopping hook failed');
    }
    item.done.resolve(ok);
  }

  /** @internal The cell crashed (it is already stopped). */
  crashed(error: unknown, delivery: MailItem | undefined): void {
    if (this.state === 'stopped') return;
    const wasStopping = this.state === 'stopping';
    this.state = 'stopped';
    // A stop queued behind the crash was dropped with the cell: it is done now.
    this.stopDone?.resolve(ok);
    if (delivery && isInternal(delivery)) delivery.done.reject(AcpError.from(error, 'ACP_ERR_ACTOR_CRASHED'));
    const reason = errorMessage(error);
    this.log.error({ generation: this.generation, err: reason }, 'actor crashed');
    this.system.emit({ type: 'crash', path: this.path, generation: this.generation, error: reason });
    this.finish('ACP_ERR_ACTOR_CRASHED', `${this.path} crashed before it answered: ${reason}`);
    // Released however the hook fails, synchronously or not.
    Promise.resolve()
      .then(() => this.actor?.stopping?.(`crashed: ${reason}`))
      .catch((hookError: unknown) => this.log.warn({ err: errorMessage(hookError) }, 'stopping hook failed after a crash'));
    for (const child of this.system.childrenOf(this.path)) void child.stop(`parent crashed: ${reason}`, 1000);
    if (this.entry.live === this) this.entry.live = undefined;
    if (wasStopping) return;
    if (this.options.onCrash) {
      this.options.onCrash(AcpError.from(error, 'ACP_ERR_ACTOR_CRASHED'));
    } else {
      this.system.release(this.path, `crashed: ${reason}`);
    }
  }

  /** Fails fast whatever was queued but never handled, and drops this actor's death watches. */
  private finish(code: 'ACP_ERR_ACTOR_CRASHED' | 'ACP_ERR_ACTOR_STOPPED', message: string): void {
    for (const unwatch of this.watches) unwatch();
    this.watches.clear();
    const pending = [...this.inflight];
    this.inflight.clear();
    this.queuedBySender?.clear();
    for (const delivery of pending) {
      if (delivery.reply) delivery.reply.reject(new AcpError(code, message));
      else this.system.deadLetter(this.entry.actorPath, delivery, 'actor-stopped', message);
    }
  }

  private dispatchInternal(item: Internal): void {
    if (!this.cell.dispatch(item)) item.done.reject(new AcpError('ACP_ERR_ACTOR_STOPPED', `${this.path} is not running`));
  }

  private context(): ActorContext {
    const system = this.system;
    return {
      path: this.entry.actorPath,
      self: system.ref(this.entry.actorPath, this.principal),
      node: system.identity,
      log: this.log,
      generation: this.generation,
      ref: (path) => system.ref(path, this.principal),
      runTask: (task) => system.runTask(task),
      watch: (path) => {
        const unwatch = system.watch(path, (terminated) => {
          if (this.alive) this.deliver({ message: terminated, sender: this.principal, external: false });
        });
        this.watches.add(unwatch);
        return () => {
          this.watches.delete(unwatch);
          unwatch();
        };
      },
    };
  }
}
