import { z, ZodError, type ZodType } from 'zod';
import {
  DEFAULT_ASK_TIMEOUT_MS,
  DeferredReply,
  type Actor,
  type ActorContext,
  type ActorFactory,
  type ActorRef,
  type AskOptions,
  type NodeIdentity,
  type PoolTask,
} from './actor.js';
import { AcpError, errorMessage } from './errors.js';
import type { Logger } from './logger.js';
import {
  ok,
  universalSchema,
  UNIVERSAL_TYPES,
  type Message,
  type Pong,
  type Terminated,
} from './messages.js';
import { CellHost, type Cell } from './nact-cell.js';
import { authorize, universalAuthority, type AuthorityTable } from './authority.js';
import { formatPath, parentPath, PRIMARY, toPath, type ActorPath } from './path.js';
import { actorPrincipal, formatPrincipal, type Principal } from './principal.js';
import type { TaskPool } from './pool.js';
import { describeIssues, validateMessage } from './validate.js';

/** Where an ask's answer goes. Exactly one of the two is called, once. */
export interface Replier {
  resolve(reply: Message): void;
  reject(error: AcpError): void;
}

/** The runtime's own lifecycle steps, which run in the actor's mailbox like any message. */
interface Internal {
  readonly internal: 'start' | 'stop';
  readonly reason: string;
  readonly done: Replier;
}

/** Everything that ends up in a mailbox. */
export type MailItem = Delivery | Internal;

function isInternal(item: MailItem): item is Internal {
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
  /** How long `started` may take (default 30 s). */
  startTimeoutMs?: number;
}

const DEFAULT_START_TIMEOUT_MS = 30_000;

interface Entry {
  readonly path: string;
  readonly actorPath: ActorPath;
  generation: number;
  live: LocalActor | undefined;
  schema: ZodType | undefined;
  authority: AuthorityTable | undefined;
  readonly watchers: Set<(terminated: Terminated) => void>;
}

export interface SystemOptions {
  identity: NodeIdentity;
  log: Logger;
  faults?: boolean;
  pool?: TaskPool;
}

export class ActorSystem {
  readonly identity: NodeIdentity;
  readonly log: Logger;
  readonly faultsEnabled: boolean;
  private readonly cells: CellHost;
  private readonly entries = new Map<string, Entry>();
  private readonly listeners = new Set<(event: SystemEvent) => void>();
  private readonly pool: TaskPool | undefined;
  private deadLetterCount = 0;
  private forbiddenCount = 0;
  private daemonSender: Principal | undefined;
  private remote: RemoteRouter | undefined;
  private primaryResolver: () => string | undefined;
  private shuttingDown = false;
  /** The node is stopping: messages between services that are going away are expected, not news. */
  private quiet = false;

  constructor(options: SystemOptions) {
    this.identity = options.identity;
    this.log = options.log;
    this.faultsEnabled = options.faults ?? false;
    this.pool = options.pool;
    this.cells = new CellHost();
    // A one-node cluster is its own primary; the monitor replaces this once it runs elections.
    this.primaryResolver = () => this.identity.node;
  }

  get deadLetters(): number {
    return this.deadLetterCount;
  }

  /** Messages refused by `authorize` since the daemon started. */
  get forbidden(): number {
    return this.forbiddenCount;
  }

  setRemoteRouter(router: RemoteRouter | undefined): void {
    this.remote = router;
  }

  setPrimaryResolver(resolver: () => string | undefined): void {
    this.primaryResolver = resolver;
  }

  onEvent(listener: (event: SystemEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The path of a service on this node. */
  localPath(...segments: string[]): ActorPath {
    return { cluster: this.identity.cluster, node: this.identity.node, segments };
  }

  /**
   * A ref whose messages carry `sender`. Actors get theirs from their context (stamped with their
   * own path); without a sender, the daemon's own code speaks as the Framework.
   */
  ref(path: string | ActorPath, sender: Principal = this.daemonPrincipal()): ActorRef {
    const actorPath = toPath(path);
    const pathString = formatPath(actorPath);
    return {
      path: pathString,
      tell: (message) => this.send(actorPath, { message, sender, external: false }),
      ask: <Reply extends Message>(message: Message, options?: AskOptions) =>
        this.ask(actorPath, message, { ...options, sender }) as Promise<Reply>,
    };
  }

  /** The daemon's own code (its composition root): the Framework of this node. */
  daemonPrincipal(): Principal {
    this.daemonSender ??= actorPrincipal(formatPath(this.localPath('framework')));
    return this.daemonSender;
  }

  /** Asks with our own correlation and timer: the answer, or a typed AcpError. */
  ask(path: ActorPath, message: Message, options: AskOptions & { external?: boolean; sender?: Principal } = {}): Promise<Message> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_ASK_TIMEOUT_MS;
    return new Promise<Message>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        reject(
          new AcpError(
            'ACP_ERR_ASK_TIMEOUT',
            `no reply from ${formatPath(path)} to '${message.type}' within ${timeoutMs} ms; the actor may be busy or stalled`,
          ),
        );
      }, timeoutMs);
      timer.unref?.();
      const reply: Replier = {
        resolve: (value) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve(value);
        },
        reject: (error) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          reject(error);
        },
      };
      this.send(path, { message, sender: options.sender ?? this.daemonPrincipal(), external: options.external ?? false, reply }, timeoutMs);
    });
  }

  /** The one relay every message goes through. */
  send(path: ActorPath, delivery: Delivery, timeoutMs = DEFAULT_ASK_TIMEOUT_MS): void {
    if (path.cluster !== this.identity.cluster) {
      this.deadLetter(path, delivery, 'node-unreachable', `cluster '${path.cluster}' is not this node's cluster '${this.identity.cluster}'`);
      return;
    }
    const node = path.node === PRIMARY ? this.primaryResolver() : path.node;
    if (node === undefined) {
      this.deadLetter(path, delivery, 'no-primary', 'no monitor holds the primary lease now (no quorum, or an election under way); retry in a few seconds, and see acp cluster status for the voters present and needed');
      return;
    }
    if (node !== this.identity.node) {
      if (this.remote) {
        this.remote.deliver(node, { ...path, node }, delivery, timeoutMs);
      } else {
        this.deadLetter(path, delivery, 'node-unreachable', `no route to node '${node}': this node has no agent connection to it`);
      }
      return;
    }
    const key = formatPath({ ...path, node });
    const entry = this.entries.get(key);
    const live = entry?.live;
    if (!entry || !live) {
      const why = entry ? `${key} is restarting; retry shortly` : `no actor at ${key}`;
      this.deadLetter(path, delivery, 'no-such-actor', why);
      return;
    }
    // Who may send it comes before what it holds: a sender not allowed a type learns only that,
    // whatever fields it sent. A type nobody declared is left to the schema, which names the types.
    const declared = entry.authority?.[delivery.message.type] !== undefined || universalAuthority[delivery.message.type] !== undefined;
    if (delivery.external && !declared && !this.validate(entry, delivery, key)) return;
    const refusal = authorize(delivery.sender, { cluster: this.identity.cluster, node: this.identity.node, path: key }, entry.authority, delivery.message.type);
    if (refusal) {
      this.forbiddenCount += 1;
      this.log.warn({ path: key, messageType: delivery.message.type, sender: formatPrincipal(delivery.sender), reason: refusal.message }, 'message refused: sender not allowed');
      this.emit({ type: 'forbidden', path: key, messageType: delivery.message.type, sender: formatPrincipal(delivery.sender) });
      delivery.reply?.reject(refusal);
      return;
    }
    if (delivery.external && declared && !this.validate(entry, delivery, key)) return;
    if (!live.deliver(delivery)) {
      this.deadLetter(path, delivery, 'no-such-actor', `${key} stopped before the message arrived`);
    }
  }

  /** The target's schema for a message from outside the process; false (and answered) if it fails. */
  private validate(entry: Entry, delivery: Delivery, key: string): boolean {
    const problem = validateMessage(entry.schema, delivery.message, key);
    if (!problem) return true;
    delivery.reply?.reject(problem);
    if (!delivery.reply) this.log.warn({ path: key, messageType: delivery.message.type, reason: problem.message }, 'tell rejected by schema');
    return false;
  }

  /** Spawns an actor at `path`, runs its `started` hook, and returns once it is running. */
  async spawn(path: ActorPath, factory: ActorFactory, options: SpawnOptions = {}): Promise<LocalActor> {
    if (this.shuttingDown) throw new AcpError('ACP_ERR_DAEMON_SHUTTING_DOWN', 'the daemon is shutting down; no new actors start');
    const key = formatPath(path);
    let entry = this.entries.get(key);
    if (entry?.live) throw new AcpError('ACP_ERR_ACTOR_EXISTS', `an actor already lives at ${key}`);
    const parentKey = parentPath(path);
    const parent = parentKey ? this.entries.get(formatPath(parentKey))?.live : undefined;
    if (parentKey && !parent) {
      throw new AcpError('ACP_ERR_NO_SUCH_ACTOR', `cannot spawn ${key}: its parent ${formatPath(parentKey)} is not running`);
    }
    if (!entry) {
      entry = { path: key, actorPath: path, generation: 0, live: undefined, schema: undefined, authority: undefined, watchers: new Set() };
      this.entries.set(key, entry);
    }
    entry.generation += 1;
    entry.schema = options.schema ? z.union([universalSchema, options.schema]) : universalSchema;
    entry.authority = options.authority;
    const actor = new LocalActor(this, entry, factory, options, parent);
    entry.live = actor;
    try {
      await actor.start();
    } catch (error) {
      if (entry.live === actor) entry.live = undefined;
      if (!options.onCrash) this.release(key, `failed to start: ${errorMessage(error)}`);
      throw AcpError.from(error, 'ACP_ERR_SUPERVISOR_START_FAILED');
    }
    this.emit({ type: 'started', path: key, generation: entry.generation });
    return actor;
  }

  /** Whether a live actor is at the path (on this node). */
  isAlive(path: string | ActorPath): boolean {
    return this.entries.get(formatPath(toPath(path)))?.live?.alive ?? false;
  }

  generationOf(path: string | ActorPath): number {
    return this.entries.get(formatPath(toPath(path)))?.generation ?? 0;
  }

  /**
   * Death watch: `listener` gets `{type:'terminated', path, reason}` once the actor stops for good
   * (stopped, or crashed and not restarted). A restart is not a termination. Watching a path with
   * no actor answers at once with reason `no-such-actor`.
   */
  watch(path: string | ActorPath, listener: (terminated: Terminated) => void): () => void {
    const actorPath = toPath(path);
    const node = actorPath.node === PRIMARY ? this.primaryResolver() : actorPath.node;
    if (node !== undefined && node !== this.identity.node && actorPath.cluster === this.identity.cluster) {
      if (this.remote) return this.remote.watch(node, { ...actorPath, node }, listener);
      const key = formatPath(actorPath);
      setImmediate(() => listener({ type: 'terminated', path: key, reason: 'node-unreachable' }));
      return () => undefined;
    }
    const key = formatPath({ ...actorPath, node: node ?? actorPath.node });
    const entry = this.entries.get(key);
    if (!entry) {
      setImmediate(() => listener({ type: 'terminated', path: key, reason: 'no-such-actor' }));
      return () => undefined;
    }
    entry.watchers.add(listener);
    return () => entry.watchers.delete(listener);
  }

  /** Ends the path's reservation: watchers learn it terminated. */
  release(path: string, reason: string): void {
    const entry = this.entries.get(path);
    if (!entry) return;
    if (entry.live?.alive) return;
    this.entries.delete(path);
    this.emit({ type: 'stopped', path, reason });
    const terminated: Terminated = { type: 'terminated', path, reason };
    for (const watcher of entry.watchers) {
      try {
        watcher(terminated);
      } catch (error) {
        this.log.warn({ path, err: errorMessage(error) }, 'a death watcher failed');
      }
    }
  }

  /** @internal The live actors below a path, deepest first. */
  childrenOf(path: string): LocalActor[] {
    const prefix = `${path}/`;
    return [...this.entries.values()]
      .filter((entry) => entry.path.startsWith(prefix) && entry.live)
      .sort((a, b) => b.actorPath.segments.length - a.actorPath.segments.length)
      .map((entry) => entry.live!);
  }

  /** Paths of every actor registered on this node (live or restarting). */
  paths(): string[] {
    return [...this.entries.keys()];
  }

  runTask<Result>(task: PoolTask): Promise<Result> {
    if (!this.pool) return Promise.reject(new AcpError('ACP_ERR_INTERNAL', 'this actor system has no task pool'));
    return this.pool.run<Result>(task);
  }

  /** The node has begun to stop: dead letters from here on are logged at debug, still counted and answered. */
  windingDown(): void {
    this.quiet = true;
  }

  /** Stops every actor still registered (children before parents), then the cell host. */
  async shutdown(reason = 'shutdown', shutdownMs = 5000): Promise<void> {
    this.shuttingDown = true;
    const live = [...this.entries.values()]
      .filter((entry) => entry.live)
      .sort((a, b) => b.actorPath.segments.length - a.actorPath.segments.length);
    for (const entry of live) await entry.live?.stop(reason, shutdownMs);
    for (const key of [...this.entries.keys()]) this.release(key, reason);
    this.cells.stop();
  }

  /** @internal */
  spawnCell(actor: LocalActor, parent: LocalActor | undefined, name: string): Cell<MailItem> {
    return this.cells.spawn<MailItem>(parent?.cell, name, {
      handle: (delivery) => actor.handle(delivery),
      crashed: (error, delivery) => actor.crashed(error, delivery),
      stopped: () => undefined,
    });
  }

  /** @internal */
  emit(event: SystemEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (error) {
        this.log.warn({ err: errorMessage(error) }, 'an inspection listener failed');
      }
    }
  }

  /** @internal A message nobody can take: logged, counted, and an ask is answered at once. */
  deadLetter(path: ActorPath, delivery: Delivery, kind: 'no-such-actor' | 'node-unreachable' | 'actor-stopped' | 'no-primary', why: string): void {
    this.deadLetterCount += 1;
    const pathString = formatPath(path);
    this.log[this.quiet ? 'debug' : 'warn']({ path: pathString, messageType: delivery.message.type, reason: why }, 'dead letter');
    this.emit({ type: 'dead-letter', path: pathString, messageType: delivery.message.type, reason: why });
    const code = kind === 'node-unreachable' ? 'ACP_ERR_NODE_UNREACHABLE' : kind === 'actor-stopped' ? 'ACP_ERR_ACTOR_STOPPED' : kind === 'no-primary' ? 'ACP_ERR_NO_PRIMARY' : 'ACP_ERR_NO_SUCH_ACTOR';
    delivery.reply?.reject(new AcpError(code, why));
  }
}


const CRASH_CODES = new Set(['ACP_ERR_CHAOS_CRASH', 'ACP_ERR_THREAD_EXITED', 'ACP_ERR_ACTOR_CRASHED']);

/** One incarnation of an actor at a path: its cell, its behaviour, and what it has in flight. */
export class LocalActor {
  readonly path: string;
  readonly generation: number;
  /** @internal */
  cell!: Cell<MailItem>;
  private actor: Actor | undefined;
  private readonly inflight = new Set<Delivery>();
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
    this.inflight.add(delivery);
    if (!this.cell.dispatch(delivery)) {
      this.inflight.delete(delivery);
      return false;
    }
    return true;
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
      const error = caught instanceof ZodError ? new AcpError('ACP_ERR_SCHEMA_REJECTED', `message rejected by ${this.path}: ${describeIssues(caught.issues)}`) : caught;
      if (error instanceof AcpError && !CRASH_CODES.has(error.code)) {
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

/**
 * The messages every actor answers. Shared with the thread host, which runs it on the worker side.
 * `chaos.stall` answers first and then holds the mailbox, so the asker is not held with it.
 */
export async function runUniversal(
  message: Message,
  reply: Replier | undefined,
  system: { identity: NodeIdentity; faultsEnabled: boolean },
  path: string,
  generation: number,
): Promise<Message | void> {
  if (message.type.startsWith('chaos.')) requireFaults(system.faultsEnabled);
  const result = universalSchema.safeParse(message);
  if (!result.success) {
    throw new AcpError('ACP_ERR_SCHEMA_REJECTED', `message rejected by ${path}: ${describeIssues(result.error.issues)}`);
  }
  const parsed = result.data;
  switch (parsed.type) {
    case 'ping': {
      const pong: Pong = { type: 'pong', path, incarnation: system.identity.incarnation, generation };
      return pong;
    }
    case 'chaos.crash':
      throw new AcpError('ACP_ERR_CHAOS_CRASH', `crash injected by chaos${parsed.reason ? `: ${parsed.reason}` : ''}`);
    case 'chaos.stall': {
      reply?.resolve({ type: 'stalling', path, ms: parsed.ms });
      await new Promise((resolve) => setTimeout(resolve, parsed.ms));
      return undefined;
    }
    default: {
      const unreachable: never = parsed;
      return unreachable;
    }
  }
}

function requireFaults(enabled: boolean): void {
  if (!enabled) {
    throw new AcpError(
      'ACP_ERR_FAULTS_DISABLED',
      'fault injection is disabled on this node; restart it with `acp up --faults` to allow chaos commands',
    );
  }
}
