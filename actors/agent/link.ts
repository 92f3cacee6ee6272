import { sendingThrough, type FrameConnection } from '../../adapters/frame-listener.js';
import { restartDelay } from '../../supervisors/backoff.js';
import { PROTOCOL_VERSION, type Envelope } from '../../runtime/codec.js';
import { AcpError, type ErrorData } from '../../runtime/errors.js';
import type { Logger } from '../../runtime/logger.js';
import type { Message, Terminated } from '../../runtime/messages.js';
import { formatPath, type ActorPath } from '../../runtime/path.js';
import { formatPrincipal } from '../../runtime/principal.js';
import type { Delivery, Replier } from '../../runtime/system.js';
import { realClock, type Clock } from '../../runtime/clock.js';
import { TellPacker } from './tell-packer.js';

export type LinkState = 'idle' | 'connecting' | 'up';

export interface LinkEnv {
  log: Logger;
  heartbeatMs: number;
  maxQueuedFrames: number;
  /** Opens a connection to the peer (dial + hello); resolves with its incarnation. */
  dial(link: PeerLink): Promise<void>;
  /** A tell that cannot be sent: logged and counted as a dead letter, never dropped silently. */
  deadLetter(envelope: Envelope, why: string): void;
  /** Heartbeats, reconnection back-off and request expiry run on it (default: real time). */
  clock?: Clock;
}

interface RemoteWatch {
  readonly path: string;
  readonly listener: (terminated: Terminated) => void;
}

/** Bytes a connection may hold unread before the link queues instead of writing. */
const HIGH_WATER_BYTES = 8 * 1024 * 1024;
const BACKOFF = { initialMs: 100, maxMs: 10_000, factor: 2, jitter: 0.2 };

/**
 * The link to one peer node: one multiplexed connection (ours or theirs), a bounded queue for
 * when it is down or slow, our requests in flight, our death watches on its actors, its
 * incarnation (a new one means it restarted: watchers hear `node-restarted`, and nothing queued
 * for the old one is delivered to the new one), heartbeats and reconnection with backoff.
 */
export class PeerLink {
  state: LinkState = 'idle';
  incarnation: number | undefined;
  lastSeen = 0;
  private connection: FrameConnection | undefined;
  /** Frames waiting to be written, with the incarnation they were meant for (undefined: whichever answers next). */
  private readonly queue: { envelope: Envelope; incarnation: number | undefined }[] = [];
  private readonly pending = new Map<number, { reply: Replier; cancelExpiry: () => void }>();
  private readonly watches = new Map<number, RemoteWatch>();
  private nextId = 1;
  private attempt = 0;
  /** Counts dials: the failure of one that `redialNow` left behind undoes nothing. */
  private dials = 0;
  private retryTimer: (() => void) | undefined;
  private heartbeat: (() => void) | undefined;
  private readonly clock: Clock;
  private draining = false;
  private closed = false;
  /** Packs runs of tells into `tells` frames, when the peer's hello offered them. */
  private packer: TellPacker | undefined;

  constructor(
    readonly node: string,
    private readonly env: LinkEnv,
  ) {
    this.clock = env.clock ?? realClock;
  }

  get queued(): number {
    return this.queue.length;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  get hasWatches(): boolean {
    return this.watches.size > 0;
  }

  /** Sends a tell or an ask for an actor on the peer. */
  deliver(path: ActorPath, delivery: Delivery, timeoutMs: number): void {
    const to = formatPath(path);
    const from = formatPrincipal(delivery.sender);
    if (!delivery.reply) {
      // Packed only while frames go straight out: anything queued is sent first, in order.
      if (this.packer && this.writable() && this.packer.add(to, from, delivery.message)) return;
      this.enqueue({ v: PROTOCOL_VERSION, k: 'tell', to, body: delivery.message, from }, undefined);
      return;
    }
    const id = this.nextId++;
    const reply = delivery.reply;
    // The asker has its own timer; this one only forgets the entry if no answer ever comes.
    const cancelExpiry = this.clock.setTimer(timeoutMs + 1000, () => this.pending.delete(id));
    this.pending.set(id, { reply, cancelExpiry });
    this.enqueue({ v: PROTOCOL_VERSION, k: 'ask', id, to, body: delivery.message, t: timeoutMs, from }, reply);
  }

  watch(path: ActorPath, listener: (terminated: Terminated) => void): () => void {
    const id = this.nextId++;
    const to = formatPath(path);
    this.watches.set(id, { path: to, listener });
    if (this.state === 'up') this.write({ v: PROTOCOL_VERSION, k: 'watch', id, to });
    else this.ensureConnecting();
    return () => {
      if (this.watches.delete(id) && this.state === 'up') this.write({ v: PROTOCOL_VERSION, k: 'watch', id });
    };
  }

  /**
   * A connection to the peer is up (dialed by us or accepted from it), at this incarnation.
   * `tells`: the peer's hello offered `tells` frames (runs of tells packed into one), this large.
   */
  attach(connection: FrameConnection, incarnation: number, tells?: { maxBytes: number }): void {
    if (this.connection && this.connection !== connection && this.state === 'up') {
      // Keep the connection we have; a second one (both sides dialed at once) only serves the peer.
      return;
    }
    const restarted = this.incarnation !== undefined && this.incarnation !== incarnation;
    if (restarted) this.peerRestarted(incarnation);
    // A run packed for the connection in place goes to it before anything changes (detach has taken it otherwise).
    this.packer?.flush();
    this.incarnation = incarnation;
    this.connection = connection;
    this.packer = tells ? new TellPacker((envelope) => this.connection?.send(envelope), tells.maxBytes) : undefined;
    this.state = 'up';
    this.attempt = 0;
    this.lastSeen = this.clock.now();
    this.retryTimer?.();
    this.retryTimer = undefined;
    this.startHeartbeat();
    // Death watches survive a reconnect to the same incarnation: tell the peer again.
    for (const [id, watch] of this.watches) connection.send({ v: PROTOCOL_VERSION, k: 'watch', id, to: watch.path });
    this.flush();
  }

  /** Sends the tells packed so far: the session answering on the same connection calls it before each frame of its own. */
  flushPacked(): void {
    this.packer?.flush();
  }

  /** Frames can go straight to the connection: it is up, takes more, and nothing waits before them. */
  private writable(): boolean {
    return this.state === 'up' && !this.draining && this.queue.length === 0 && this.connection!.pendingWriteBytes < HIGH_WATER_BYTES;
  }

  /** Writes a frame on the connection, after any tells packed before it. */
  private write(envelope: Envelope): void {
    this.packer?.flush();
    this.connection!.send(envelope);
  }

  /** The connection closed: requests on it fail fast, and the link reconnects if it has work. */
  detach(connection: FrameConnection, why: string): void {
    if (this.connection !== connection) return;
    // Tells packed but not written go back first in the queue, still meant for this incarnation.
    const unsent = this.packer?.take() ?? [];
    this.queue.unshift(...unsent.map(({ to, from, message }): { envelope: Envelope; incarnation: number | undefined } => ({ envelope: { v: PROTOCOL_VERSION, k: 'tell', to, body: message, from }, incarnation: this.incarnation })));
    this.packer = undefined;
    this.connection = undefined;
    this.state = 'idle';
    // A drain awaited on the lost connection never comes: the next one starts without it.
    this.draining = false;
    this.stopHeartbeat();
    this.failPending(`connection to node '${this.node}' lost (${why})`);
    // Asks just failed must not run later: only tells wait for the reconnection.
    for (let index = this.queue.length - 1; index >= 0; index -= 1) if (this.queue[index]!.envelope.k === 'ask') this.queue.splice(index, 1);
    if (this.queue.length > 0 || this.watches.size > 0) this.scheduleReconnect();
  }

  /** Frames from the peer that answer our requests. */
  frame(envelope: Envelope): void {
    this.lastSeen = this.clock.now();
    const id = typeof envelope.id === 'number' ? envelope.id : undefined;
    switch (envelope.k) {
      case 'reply':
        if (id !== undefined) this.settle(id, (reply) => reply.resolve(envelope.body as Message));
        return;
      case 'error':
        if (id !== undefined) this.settle(id, (reply) => reply.reject(AcpError.fromData(envelope.err ?? ({ code: 'ACP_ERR_INTERNAL', kind: 'internal', message: 'error without details' } as ErrorData))));
        return;
      case 'event': {
        const watch = id === undefined ? undefined : this.watches.get(id);
        if (watch && (envelope.body as Message | undefined)?.type === 'terminated') {
          this.watches.delete(id!);
          watch.listener(envelope.body as Terminated);
        }
        return;
      }
      default:
        return;
    }
  }

  /** Any frame from the peer counts as a sign of life. */
  seen(): void {
    this.lastSeen = this.clock.now();
  }

  close(): void {
    this.closed = true;
    this.retryTimer?.();
    this.retryTimer = undefined;
    this.stopHeartbeat();
    this.packer?.flush();
    this.connection?.close({ v: PROTOCOL_VERSION, k: 'bye' });
    this.connection = undefined;
    this.state = 'idle';
    this.failPending(`the agent is stopping`);
    this.failQueued(new AcpError('ACP_ERR_NODE_UNREACHABLE', 'the agent is stopping'));
  }

  private enqueue(envelope: Envelope, reply: Replier | undefined): void {
    if (this.writable()) {
      this.write(envelope);
      return;
    }
    this.packer?.flush();
    if (this.queue.length >= this.env.maxQueuedFrames) {
      const error = new AcpError('ACP_ERR_AGENT_QUEUE_FULL', `${this.queue.length} frames already wait for node '${this.node}'; the message was not sent, retry later`);
      if (reply) {
        this.pending.delete(envelope.id as number);
        reply.reject(error);
      } else {
        this.env.deadLetter(envelope, error.message);
      }
      return;
    }
    this.queue.push({ envelope, incarnation: this.state === 'up' ? this.incarnation : undefined });
    if (this.state === 'up') this.flush();
    else this.ensureConnecting();
  }

  /** Writes queued frames while the socket takes them; waits for drain otherwise (backpressure). */
  private flush(): void {
    const connection = this.connection;
    while (this.state === 'up' && connection && this.queue.length > 0) {
      if (connection.pendingWriteBytes >= HIGH_WATER_BYTES) {
        if (!this.draining) {
          this.draining = true;
          connection.onDrain(() => {
            this.draining = false;
            this.flush();
          });
        }
        return;
      }
      this.write(this.queue.shift()!.envelope);
    }
  }

  /**
   * The peer was heard again after it was down (the CDB's sync heard it): a dial begun during the
   * partition may wait on TCP's retransmissions for seconds, and a reconnection on its back-off
   * for up to 10 s. Both start over now, when the link has work.
   */
  redialNow(): void {
    if (this.closed || this.state === 'up') return;
    if (this.state === 'idle' && this.queue.length === 0 && this.watches.size === 0) return;
    this.retryTimer?.();
    this.retryTimer = undefined;
    this.attempt = 0;
    this.state = 'idle';
    this.ensureConnecting();
  }

  private ensureConnecting(): void {
    if (this.state !== 'idle' || this.closed || this.retryTimer) return;
    this.state = 'connecting';
    const dial = ++this.dials;
    this.env.dial(this).catch((error: unknown) => {
      // An inbound connection may have brought the link up meanwhile, or a newer dial replaced this one: then there is nothing to undo.
      if (this.state !== 'connecting' || dial !== this.dials) return;
      this.state = 'idle';
      const reason = error instanceof Error ? error.message : String(error);
      this.env.log.info({ peer: this.node, err: reason, attempt: this.attempt + 1 }, 'cannot reach peer; will retry');
      this.failQueued(new AcpError('ACP_ERR_NODE_UNREACHABLE', `node '${this.node}' is unreachable: ${reason}`));
      if (this.watches.size > 0) this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    if (this.closed || this.retryTimer) return;
    this.attempt += 1;
    const delay = restartDelay(BACKOFF, this.attempt, this.clock.random());
    this.retryTimer = this.clock.setTimer(delay, () => {
      this.retryTimer = undefined;
      this.ensureConnecting();
    });
  }

  /** Every heartbeatMs: a ping, or, after three silent heartbeats, the connection given up. */
  private startHeartbeat(): void {
    this.stopHeartbeat();
    const beat = () => {
      const connection = this.connection;
      if (!connection) return;
      const silentMs = this.clock.now() - this.lastSeen;
      if (silentMs > this.env.heartbeatMs * 3) {
        this.heartbeat = undefined;
        this.env.log.warn({ peer: this.node, silentMs }, 'peer silent for three heartbeats; reconnecting');
        connection.close();
        this.detach(connection, 'heartbeat timeout');
        return;
      }
      this.write({ v: PROTOCOL_VERSION, k: 'ping' });
      this.heartbeat = this.clock.setTimer(this.env.heartbeatMs, beat);
    };
    this.heartbeat = this.clock.setTimer(this.env.heartbeatMs, beat);
  }

  private stopHeartbeat(): void {
    this.heartbeat?.();
    this.heartbeat = undefined;
  }

  /** The peer came back as a new process: its actors' watchers learn it, and nothing old is replayed. */
  private peerRestarted(incarnation: number): void {
    this.env.log.info({ peer: this.node, from: this.incarnation, to: incarnation }, 'peer restarted');
    for (const [id, watch] of this.watches) {
      this.watches.delete(id);
      watch.listener({ type: 'terminated', path: watch.path, reason: 'node-restarted' });
    }
    // Frames queued while the old incarnation was connected were meant for it: never deliver them to the new one.
    const stale = new AcpError('ACP_ERR_NODE_UNREACHABLE', `node '${this.node}' restarted before the message was sent; it was not delivered to the new incarnation`);
    for (let index = this.queue.length - 1; index >= 0; index -= 1) {
      const entry = this.queue[index]!;
      if (entry.incarnation === undefined || entry.incarnation === incarnation) continue;
      this.queue.splice(index, 1);
      if (entry.envelope.k === 'ask' && typeof entry.envelope.id === 'number') this.settle(entry.envelope.id, (reply) => reply.reject(stale));
      else if (entry.envelope.k === 'tell') this.env.deadLetter(entry.envelope, stale.message);
    }
  }

  private settle(id: number, action: (reply: Replier) => void): void {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    entry.cancelExpiry();
    action(entry.reply);
  }

  private failPending(why: string): void {
    for (const [id, entry] of this.pending) {
      this.pending.delete(id);
      entry.cancelExpiry();
      entry.reply.reject(new AcpError('ACP_ERR_NODE_UNREACHABLE', why));
    }
  }

  private failQueued(error: AcpError): void {
    for (const { envelope } of this.queue.splice(0)) {
      if (envelope.k === 'ask' && typeof envelope.id === 'number') this.settle(envelope.id, (reply) => reply.reject(error));
      else if (envelope.k === 'tell') this.env.deadLetter(envelope, error.message);
    }
  }
}

/**
 * The connection as the session answering on it sees it: each frame of its own (a reply, an
 * event, a pong, an error) goes after the tells the link has packed so far, so nothing this node
 * sends overtakes a tell it sent before (a watcher's `terminated` after the actor's last tells).
 */
export function behindPackedTells(connection: FrameConnection, link: () => PeerLink | undefined): FrameConnection {
  return sendingThrough(connection, (envelope) => {
    link()?.flushPacked();
    connection.send(envelope);
  });
}
