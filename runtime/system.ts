import { z } from 'zod';
import { DEFAULT_ASK_TIMEOUT_MS, type ActorFactory, type ActorRef, type AskOptions, type NodeIdentity, type PoolTask } from './actor.js';
import { authorize, universalAuthority } from './authority.js';
import type { Delivery, Entry, MailItem, RemoteRouter, Replier, SpawnOptions, SystemEvent } from './delivery.js';
import { AcpError, errorMessage } from './errors.js';
import { LocalActor } from './local-actor.js';
import type { Logger } from './logger.js';
import { universalSchema, type Message, type Terminated } from './messages.js';
import { CellHost, type Cell } from './nact-cell.js';
import { formatPath, makePath, parentPath, PRIMARY, toPath, type ActorPath } from './path.js';
import { actorPrincipal, formatPrincipal, type Principal } from './principal.js';
import type { TaskPool } from './pool.js';
import { validateMessage } from './validate.js';

export type { Delivery, MailItem, RemoteRouter, Replier, SpawnOptions, SystemEvent } from './delivery.js';
export { LocalActor } from './local-actor.js';
export { runUniversal } from './universal.js';

export interface SystemOptions {
  identity: NodeIdentity;
  log: Logger;
  faults?: boolean;
  pool?: TaskPool;
}

/**
 * The node's actor system: the registry of paths (generation, live actor, schema, authority,
 * watchers) and the one relay every message passes (`send`: @primary, remote routing, schema,
 * authority, dead letters). An actor's incarnation is a `LocalActor` (local-actor.ts).
 */
export class ActorSystem {
  readonly identity: NodeIdentity;
  readonly log: Logger;
  readonly faultsEnabled: boolean;
  private readonly cells: CellHost;
  private readonly entries = new Map<string, Entry>();
  /** Parent path → the paths registered directly below it: stopping a subtree reads only that subtree. */
  private readonly childKeys = new Map<string, Set<string>>();
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

  /** The node holding the primary lease now, as this node's monitor sees it (undefined: none). */
  primary(): string | undefined {
    return this.primaryResolver();
  }

  onEvent(listener: (event: SystemEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The path of a service on this node: its names checked, frozen, its text kept (see makePath). */
  localPath(...segments: string[]): ActorPath {
    return makePath(this.identity.cluster, this.identity.node, ...segments);
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
      let timer: NodeJS.Timeout | undefined;
      const reply: Replier = {
        resolve: (value) => {
          if (settled) return;
          settled = true;
          if (timer) clearTimeout(timer);
          resolve(value);
        },
        reject: (error) => {
          if (settled) return;
          settled = true;
          if (timer) clearTimeout(timer);
          reject(error);
        },
      };
      this.send(path, { message, sender: options.sender ?? this.daemonPrincipal(), external: options.external ?? false, reply }, timeoutMs);
      // Answered already (a read outside the mailbox, a refusal, a dead letter): no timer to arm.
      if (settled) return;
      timer = setTimeout(() => {
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
        // The path as given when it names the node (formatPath's cache keeps its text); a copy only for @primary.
        this.remote.deliver(node, path.node === node ? path : { ...path, node }, delivery, timeoutMs);
      } else {
        this.deadLetter(path, delivery, 'node-unreachable', `no route to node '${node}': this node has no agent connection to it`);
      }
      return;
    }
    // The path as given keeps its formatted text (formatPath's cache); a copy would be formatted anew.
    const key = formatPath(path.node === node ? path : { ...path, node });
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
    const refusal = authorize(delivery.sender, entry.target, entry.authority, delivery.message.type);
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
      entry = { path: key, actorPath: path, target: { cluster: this.identity.cluster, node: this.identity.node, path: key }, generation: 0, live: undefined, schema: undefined, authority: undefined, watchers: new Set() };
      this.entries.set(key, entry);
      if (parentKey) {
        const parent = formatPath(parentKey);
        let siblings = this.childKeys.get(parent);
        if (!siblings) {
          siblings = new Set();
          this.childKeys.set(parent, siblings);
        }
        siblings.add(key);
      }
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
    const parent = parentPath(entry.actorPath);
    if (parent) {
      const parentKey = formatPath(parent);
      const siblings = this.childKeys.get(parentKey);
      siblings?.delete(path);
      if (siblings?.size === 0) this.childKeys.delete(parentKey);
    }
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
    const below: Entry[] = [];
    const pending = [path];
    for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
      for (const child of this.childKeys.get(next) ?? []) {
        pending.push(child);
        const entry = this.entries.get(child);
        if (entry?.live) below.push(entry);
      }
    }
    return below.sort((a, b) => b.actorPath.segments.length - a.actorPath.segments.length).map((entry) => entry.live!);
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
