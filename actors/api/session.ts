import { randomUUID } from 'node:crypto';
import type { FrameConnection, FrameHandler } from '../../adapters/frame-listener.js';
import { PROTOCOL_VERSION, unpackTells, type Envelope, type HelloBody } from '../../runtime/codec.js';
import { AcpError, type ErrorCode } from '../../runtime/errors.js';
import { isMessage, type Message } from '../../runtime/messages.js';
import { childPath, formatPath, parsePath, type ActorPath } from '../../runtime/path.js';
import { relayedBy, type Principal } from '../../runtime/principal.js';
import type { LocalActor, Replier } from '../../runtime/system.js';
import { helloPrincipal } from './session-hello.js';
import { DEFAULT_CLIENT_ASK_TIMEOUT_MS, DEFAULT_SESSION_LIMITS, type SessionLimits, type SessionOptions } from './session-options.js';

const NOT_A_MESSAGE = "the body must be a message: an object with a string 'type' of 1 to 128 characters";

/**
 * One client connection speaking the wire protocol: hello first (with the API key), then tell, ask,
 * watch, ping and bye. Anything else, or anything before a good hello, is refused with an error
 * frame naming the reason, and the connection is closed; other connections are untouched.
 */
export class ApiSession implements FrameHandler {
  private greeted = false;
  private readonly watches = new Map<string | number, () => void>();
  private readonly helloTimer: NodeJS.Timeout;
  private readonly limits: SessionLimits;
  private asksInFlight = 0;
  private ended = false;
  private principal: Principal | undefined;

  constructor(
    private readonly connection: FrameConnection,
    private readonly options: SessionOptions,
  ) {
    this.principal = options.principal;
    this.limits = options.limits ?? DEFAULT_SESSION_LIMITS;
    this.greeted = options.greeted ?? false;
    this.helloTimer = setTimeout(
      () => this.refuse('ACP_ERR_WIRE_NO_HELLO', `no hello within ${options.helloTimeoutMs} ms`),
      options.helloTimeoutMs,
    );
    this.helloTimer.unref();
    if (this.greeted) clearTimeout(this.helloTimer);
  }

  frame(envelope: Envelope): void {
    if (!this.greeted) {
      this.hello(envelope);
      return;
    }
    switch (envelope.k) {
      case 'tell':
        this.tell(envelope);
        return;
      case 'tells':
        this.tells(envelope);
        return;
      case 'ask':
        this.ask(envelope);
        return;
      case 'watch':
        this.watch(envelope);
        return;
      case 'ping':
        this.send({ k: 'pong', id: envelope.id });
        return;
      case 'bye':
        this.connection.close({ v: PROTOCOL_VERSION, k: 'bye' });
        return;
      case 'pong':
      case 'reply':
      case 'error':
      case 'event':
        if (this.options.peer) {
          this.options.peer.frame(envelope);
          return;
        }
        if (envelope.k === 'pong') return;
        this.refuse('ACP_ERR_WIRE_BAD_FRAME', `a client may not send '${envelope.k}' frames here`, envelope.id);
        return;
      case 'hello':
        this.refuse('ACP_ERR_WIRE_BAD_FRAME', `a client may not send '${envelope.k}' frames here`, envelope.id);
        return;
      default: {
        const unreachable: never = envelope.k;
        this.refuse('ACP_ERR_WIRE_BAD_FRAME', `unknown frame kind ${String(unreachable)}`);
      }
    }
  }

  badFrame(error: AcpError): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.helloTimer);
    this.options.log.warn({ conn: this.connection.id, code: error.code, reason: error.message }, 'connection refused: bad frame');
    this.options.onRefused?.(error.code);
  }

  closed(): void {
    this.ended = true;
    clearTimeout(this.helloTimer);
    for (const unwatch of this.watches.values()) unwatch();
    this.watches.clear();
  }

  private hello(envelope: Envelope): void {
    if (envelope.k !== 'hello') {
      this.refuse('ACP_ERR_WIRE_NO_HELLO', `expected hello first, got '${envelope.k}'`, envelope.id);
      return;
    }
    const identity = this.options.system.identity;
    let principal: Principal;
    try {
      principal = helloPrincipal(envelope.body, this.options, identity.cluster);
    } catch (error) {
      const refusal = AcpError.from(error, 'ACP_ERR_WIRE_BAD_HELLO');
      this.refuse(refusal.code, refusal.message);
      return;
    }
    this.principal = principal;
    clearTimeout(this.helloTimer);
    this.greeted = true;
    // Only now may the peer send frames as large as the listener allows.
    this.connection.greeted();
    this.send({
      k: 'hello',
      body: {
        cluster: identity.cluster,
        node: identity.node,
        incarnation: identity.incarnation,
        proto: PROTOCOL_VERSION,
        ...(principal.kind === 'token' ? { token: { id: principal.id, role: principal.role } } : {}),
        ...(this.options.tells && principal.kind === 'node' ? { tells: { maxBytes: this.options.tells.maxBytes } } : {}),
      },
    });
    this.options.onGreeted?.(envelope.body as HelloBody & Record<string, unknown>);
  }

  /**
   * The sender of one request: the connection's principal, or whom a peer relays for. A token is
   * checked again on every request, so a revoked one stops at once. Undefined: refused and answered.
   */
  private senderOf(envelope: Envelope): Principal | undefined {
    const principal = this.principal;
    try {
      if (!principal) throw new AcpError('ACP_ERR_WIRE_NO_HELLO', 'no hello yet');
      this.options.stillValid?.();
      if (principal.kind === 'token') {
        this.options.tokens?.check(principal.id);
        if (!this.options.tokens) throw new AcpError('ACP_ERR_AUTH_BAD_TOKEN', 'this listener does not take API tokens');
        return principal;
      }
      if (principal.kind === 'node' && this.options.peer) return relayedBy(principal.node, typeof envelope.from === 'string' ? envelope.from : undefined);
      return principal;
    } catch (error) {
      const refusal = AcpError.from(error, 'ACP_ERR_AUTH_FORBIDDEN');
      if (refusal.code === 'ACP_ERR_AUTH_BAD_TOKEN') {
        this.refuse(refusal.code, refusal.message, envelope.id);
      } else {
        this.options.log.warn({ conn: this.connection.id, code: refusal.code, reason: refusal.message }, 'request refused');
        this.sendError(envelope.id, refusal);
      }
      return undefined;
    }
  }

  private tell(envelope: Envelope): void {
    const sender = this.senderOf(envelope);
    if (!sender) return;
    const path = this.pathOf(envelope);
    if (path) this.route(path, [envelope.body], sender, envelope.id);
  }

  /**
   * A run of tells to one actor from one sender (a peer's agent packs them): every message is
   * unpacked and checked before any is delivered, then each goes on exactly as its own tell would,
   * in order. A frame this session was not offered, or one that does not unpack, is a bad frame.
   */
  private tells(envelope: Envelope): void {
    const offered = this.options.tells;
    if (!offered || this.principal?.kind !== 'node') {
      this.refuse('ACP_ERR_WIRE_BAD_FRAME', "this connection was not offered 'tells' frames; send each message as a tell");
      return;
    }
    if (envelope.body instanceof Uint8Array && envelope.body.length > offered.maxBytes) {
      this.refuse('ACP_ERR_WIRE_BAD_FRAME', `a tells frame of ${envelope.body.length} bytes of messages is more than the ${offered.maxBytes} this connection was offered`);
      return;
    }
    let messages: unknown[];
    try {
      messages = unpackTells(envelope.body, offered.limits);
    } catch (error) {
      this.refuse('ACP_ERR_WIRE_BAD_FRAME', AcpError.from(error).message);
      return;
    }
    const sender = this.senderOf(envelope);
    if (!sender) return;
    const path = this.pathOf(envelope);
    if (!path) return;
    this.route(path, messages, sender, envelope.id);
  }

  /**
   * Tells have no reply, but a refusal while routing one (not a message, its schema, no such
   * actor) is reported on the frame's id: the first refusal of a frame, so a frame of many cannot
   * make the node write an error for each (the others are dropped, as a refused tell is, and the
   * daemon's log has them). What happens later (the actor refusing or crashing) stays on the node.
   */
  private route(path: ActorPath, bodies: readonly unknown[], sender: Principal, id: string | number | undefined): void {
    let routing = true;
    let answered = false;
    const refused = (error: AcpError) => {
      if (!routing || answered) return;
      answered = true;
      this.sendError(id, error);
    };
    const reply: Replier = { resolve: () => undefined, reject: refused };
    for (const body of bodies) {
      if (isMessage(body)) this.options.system.send(path, { message: body, sender, external: true, reply });
      else refused(new AcpError('ACP_ERR_SCHEMA_REJECTED', NOT_A_MESSAGE));
    }
    routing = false;
  }

  private ask(envelope: Envelope): void {
    if (envelope.id === undefined) {
      this.sendError(undefined, new AcpError('ACP_ERR_WIRE_BAD_FRAME', 'an ask needs an id to answer to'));
      return;
    }
    const sender = this.senderOf(envelope);
    if (!sender) return;
    const target = this.target(envelope);
    if (!target) return;
    const id = envelope.id;
    if (this.asksInFlight >= this.limits.maxAsksInFlight) {
      this.sendError(id, new AcpError('ACP_ERR_API_LIMIT', `this connection already has ${this.asksInFlight} asks in flight (api.maxAsksInFlight); wait for answers before sending more`));
      return;
    }
    this.asksInFlight += 1;
    this.options.system
      .ask(target.path, target.message, { timeoutMs: envelope.t ?? DEFAULT_CLIENT_ASK_TIMEOUT_MS, external: true, sender })
      .then(
        (body) => this.send({ k: 'reply', id, body }),
        (error: unknown) => this.sendError(id, AcpError.from(error)),
      )
      .finally(() => {
        this.asksInFlight -= 1;
      });
  }

  /**
   * `watch` without a body is a death watch on `to`; with a body it subscribes to `to`'s stream:
   * the body is asked of the target with `subscriber` set to an actor that forwards what it is
   * told as event frames. If the target crashes or stops, the stream ends with an explicit
   * `{type:'watch.ended', resubscribe:true}` event, never silence.
   */
  private watch(envelope: Envelope): void {
    if (envelope.id !== undefined && envelope.to === undefined && envelope.body === undefined) {
      // A watch frame naming only an id cancels that watch.
      this.watches.get(envelope.id)?.();
      this.watches.delete(envelope.id);
      return;
    }
    if (envelope.id === undefined || typeof envelope.to !== 'string') {
      this.sendError(envelope.id, new AcpError('ACP_ERR_WIRE_BAD_FRAME', "a watch needs an id and a 'to' path"));
      return;
    }
    if (!this.watches.has(envelope.id) && this.watches.size >= this.limits.maxWatches) {
      this.sendError(envelope.id, new AcpError('ACP_ERR_API_LIMIT', `this connection already holds ${this.watches.size} watches (api.maxWatches); cancel some before adding more`));
      return;
    }
    const sender = this.senderOf(envelope);
    if (!sender) return;
    if (envelope.body !== undefined) {
      const target = this.target(envelope);
      if (target) void this.subscribe(envelope.id, target.path, target.message, envelope.t, sender);
      return;
    }
    let path;
    try {
      path = parsePath(envelope.to);
    } catch (error) {
      this.sendError(envelope.id, AcpError.from(error));
      return;
    }
    const id = envelope.id;
    this.watches.get(id)?.();
    const unwatch = this.options.system.watch(path, (terminated) => {
      this.watches.delete(id);
      this.send({ k: 'event', id, body: terminated });
    });
    this.watches.set(id, unwatch);
  }

  private async subscribe(id: string | number, path: ActorPath, message: Message, timeoutMs: number | undefined, sender: Principal): Promise<void> {
    const system = this.options.system;
    const targetKey = formatPath(path);
    // Unique across connections, listeners and restarts of the api service.
    const subscriberPath = childPath(system.localPath('api'), `watch-${randomUUID()}`);
    let subscriber: LocalActor | undefined;
    let ended = false;
    const end = (body: Message | undefined) => {
      if (ended) return;
      ended = true;
      offEvents();
      this.watches.delete(id);
      void subscriber?.stop('watch ended', 1000);
      if (body) this.send({ k: 'event', id, body });
    };
    const offEvents = system.onEvent((event) => {
      if ((event.type === 'crash' || event.type === 'stopped') && event.path === targetKey) {
        end({ type: 'watch.ended', path: targetKey, reason: event.type === 'crash' ? 'actor-restarted' : 'actor-stopped', resubscribe: true });
      }
    });
    this.watches.get(id)?.();
    this.watches.set(id, () => end(undefined));
    try {
      subscriber = await system.spawn(subscriberPath, () => ({
        receive: (event) => {
          this.send({ k: 'event', id, body: event });
        },
      }));
      if (ended) {
        void subscriber.stop('watch ended', 1000);
        return;
      }
      const reply = await system.ask(path, { ...message, subscriber: formatPath(subscriberPath) }, {
        timeoutMs: timeoutMs ?? DEFAULT_CLIENT_ASK_TIMEOUT_MS,
        external: true,
        sender,
      });
      if (!ended) this.send({ k: 'event', id, body: reply });
    } catch (error) {
      end(undefined);
      this.sendError(id, AcpError.from(error));
    }
  }

  private target(envelope: Envelope): { path: ActorPath; message: Message } | undefined {
    const path = this.pathOf(envelope);
    if (!path) return undefined;
    const message = this.messageOf(envelope.body, envelope.id);
    return message ? { path, message } : undefined;
  }

  /** The frame's `to`, parsed; undefined (and answered) when it has none or a bad one. */
  private pathOf(envelope: Envelope): ActorPath | undefined {
    try {
      if (typeof envelope.to !== 'string') throw new AcpError('ACP_ERR_WIRE_BAD_FRAME', `a ${envelope.k} needs a 'to' path`);
      return parsePath(envelope.to);
    } catch (error) {
      this.sendError(envelope.id, AcpError.from(error));
      return undefined;
    }
  }

  /** The body as a message; undefined (and answered on `id`) when it is not one. */
  private messageOf(body: unknown, id: string | number | undefined): Message | undefined {
    if (isMessage(body)) return body;
    this.sendError(id, new AcpError('ACP_ERR_SCHEMA_REJECTED', NOT_A_MESSAGE));
    return undefined;
  }

  private refuse(code: ErrorCode, reason: string, id?: string | number): void {
    // One refusal per connection: the hello timer must not refuse it again while it closes.
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.helloTimer);
    this.options.log.warn({ conn: this.connection.id, code, reason }, 'connection refused');
    this.options.onRefused?.(code);
    const error = new AcpError(code, reason).toData();
    this.connection.close(id === undefined ? { v: PROTOCOL_VERSION, k: 'error', err: error } : { v: PROTOCOL_VERSION, k: 'error', id, err: error });
  }

  private sendError(id: string | number | undefined, error: AcpError): void {
    this.send(id === undefined ? { k: 'error', err: error.toData() } : { k: 'error', id, err: error.toData() });
  }

  private send(envelope: Omit<Envelope, 'v'>): void {
    if (this.ended) return;
    this.connection.send({ v: PROTOCOL_VERSION, ...envelope });
  }
}
