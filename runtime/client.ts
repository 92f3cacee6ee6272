import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { AskOptions, NodeIdentity } from './actor.js';
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder, PROTOCOL_VERSION, type Envelope } from './codec.js';
import { AcpError, type ErrorData } from './errors.js';
import type { Message, Terminated } from './messages.js';
import { formatPath, parsePath, type ActorPath } from './path.js';

export const DEFAULT_CLIENT_TIMEOUT_MS = 30_000;

/** A CDB key prefix, as `watch` takes it. */
export type KeyPrefix = '' | `object/${string}` | `meta/${string}` | `stats/${string}`;

function isKeyPrefix(text: string): boolean {
  return text === '' || /^(object|meta|stats)\//.test(text);
}

/** A remote script's identity: a certificate from the cluster CA whose common name is `name`. */
export interface TlsClientOptions {
  host: string;
  port: number;
  /** PEM texts. */
  cert: string;
  key: string;
  ca: string;
  /** The certificate's common name. */
  name: string;
}

export interface ClientOptions {
  /** The node's Unix socket (local)... */
  socketPath?: string;
  /** ...or its local TCP API port (127.0.0.1)... */
  port?: number;
  /** ...or any node's agent, over TLS with a client certificate (remote). */
  tls?: TlsClientOptions;
  /** The home's (or cluster's) API key... */
  apiKey?: string;
  /** ...or an API token (acp token api create), whose role limits what this client may do. */
  token?: string;
  cluster: string;
  connectTimeoutMs?: number;
  maxFrameBytes?: number;
}

function credentials(options: ClientOptions): { apiKey: string } | { token: string } {
  if (options.token !== undefined) return { token: options.token };
  if (options.apiKey !== undefined) return { apiKey: options.apiKey };
  throw new AcpError('ACP_ERR_WIRE_BAD_KEY', 'connect needs an apiKey or a token');
}

function openSocket(options: ClientOptions): { socket: Socket; ready: string; where: string } {
  if (options.tls) {
    const { tls } = options;
    const socket = tlsConnect({
      host: tls.host,
      port: tls.port,
      cert: tls.cert,
      key: tls.key,
      ca: [tls.ca],
      minVersion: 'TLSv1.3',
      // Any node of the cluster may answer: the CA check is what matters, not the host name.
      checkServerIdentity: () => undefined,
    });
    return { socket, ready: 'secureConnect', where: `${tls.host}:${tls.port}` };
  }
  if (options.port !== undefined) return { socket: netConnect(options.port, '127.0.0.1'), ready: 'connect', where: `127.0.0.1:${options.port}` };
  if (!options.socketPath) throw new AcpError('ACP_ERR_CLI_USAGE', 'connect() needs a socketPath, a port or tls options');
  return { socket: netConnect(options.socketPath), ready: 'connect', where: options.socketPath };
}

/** A ref as a client sees it: `tell` resolves once the node has accepted (routed) the message. */
/** `ref<CdbMessage>('cdb')` types what may be sent: see ServiceMessages in the package's index. */
export interface ClientRef<Accepts extends Message = Message> {
  readonly path: string;
  tell(message: Accepts): Promise<void>;
  ask<Reply extends Message = Message>(message: Accepts, options?: AskOptions): Promise<Reply>;
}

interface Pending {
  resolve(body: unknown): void;
  reject(error: AcpError): void;
  timer?: NodeJS.Timeout;
}

/** A connection to one node's API, speaking the wire protocol. */
export class AcpClient {
  private readonly pending = new Map<number, Pending>();
  private readonly watchers = new Map<number, { path: string; listener: (terminated: Terminated) => void }>();
  private readonly streams = new Map<number, { onEvent(event: Message): void; onError(error: AcpError): void }>();
  private nextId = 1;
  private closedError: AcpError | undefined;

  private constructor(
    private readonly socket: Socket,
    readonly node: NodeIdentity,
  ) {}

  static async connect(options: ClientOptions): Promise<AcpClient> {
    const { socket, ready, where } = openSocket(options);
    const decoder = new FrameDecoder(options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES);
    const timeoutMs = options.connectTimeoutMs ?? 5000;
    const first = await new Promise<Envelope>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new AcpError('ACP_ERR_NODE_UNREACHABLE', `no answer on ${where} within ${timeoutMs} ms`));
      }, timeoutMs);
      const fail = (error: AcpError) => {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      };
      socket.once('error', (error: NodeJS.ErrnoException) => {
        if (options.tls) {
          // A TLS refusal is about the certificate or the address, not about a daemon being down.
          fail(new AcpError('ACP_ERR_NODE_UNREACHABLE', `cannot reach the agent at ${where}: ${error.code ?? error.message}; check the address, and that the certificate is from the cluster's CA and valid`));
          return;
        }
        const why = error.code === 'ENOENT' || error.code === 'ECONNREFUSED' ? 'no daemon is listening there; start one with `acp up`' : error.message;
        fail(new AcpError('ACP_ERR_DAEMON_NOT_RUNNING', `cannot connect to ${where}: ${why}`));
      });
      socket.once(ready, () => {
        const identity = options.tls ? { node: options.tls.name, role: 'client' } : {};
        socket.write(encodeFrame({ v: PROTOCOL_VERSION, k: 'hello', body: { cluster: options.cluster, ...credentials(options), proto: PROTOCOL_VERSION, ...identity } }));
      });
      const onData = (chunk: Buffer) => {
        try {
          const [envelope] = decoder.push(chunk);
          if (!envelope) return;
          clearTimeout(timer);
          socket.off('data', onData);
          resolve(envelope);
        } catch (error) {
          fail(AcpError.from(error, 'ACP_ERR_WIRE_BAD_FRAME'));
        }
      };
      socket.on('data', onData);
      socket.once('close', () => fail(new AcpError('ACP_ERR_WIRE_CLOSED', `${where} closed the connection during hello`)));
    });
    if (first.k === 'error' && first.err) {
      socket.destroy();
      throw AcpError.fromData(first.err);
    }
    const body = first.body as { cluster?: string; node?: string; incarnation?: number } | undefined;
    if (first.k !== 'hello' || !body?.node || !body.cluster) {
      socket.destroy();
      throw new AcpError('ACP_ERR_WIRE_BAD_HELLO', `unexpected answer to hello: '${first.k}'`);
    }
    const client = new AcpClient(socket, { cluster: body.cluster, node: body.node, incarnation: body.incarnation ?? 0 });
    socket.removeAllListeners('close');
    socket.removeAllListeners('error');
    // Frames are handed on in the order the node sent them. A reply settles its ask's promise, whose
    // continuation runs later; an event right behind it in the same read would reach its listener
    // first. So once a reply has been settled, what follows waits for the next turn of the loop.
    const backlog: Envelope[] = [];
    let draining = false;
    const drain = () => {
      draining = false;
      let settled = false;
      while (backlog.length > 0) {
        if (settled && backlog[0]!.k === 'event') {
          draining = true;
          setImmediate(drain);
          return;
        }
        const envelope = backlog.shift()!;
        try {
          client.onFrame(envelope);
        } catch (error) {
          backlog.length = 0;
          client.fail(AcpError.from(error, 'ACP_ERR_WIRE_BAD_FRAME'));
          socket.destroy();
          return;
        }
        if (envelope.k === 'reply' || envelope.k === 'pong' || envelope.k === 'error') settled = true;
      }
    };
    socket.on('data', (chunk: Buffer) => {
      try {
        backlog.push(...decoder.push(chunk));
      } catch (error) {
        client.fail(AcpError.from(error, 'ACP_ERR_WIRE_BAD_FRAME'));
        socket.destroy();
        return;
      }
      if (!draining) drain();
    });
    socket.on('error', (error) => client.fail(new AcpError('ACP_ERR_WIRE_CLOSED', `connection error: ${error.message}`)));
    socket.on('close', () => client.fail(new AcpError('ACP_ERR_WIRE_CLOSED', 'the node closed the connection')));
    return client;
  }

  /** Resolves a path: a full `acp://` path, or a service path on the connected node (`framework`, `hypervisor/vmm/x`). */
  resolve(path: string | ActorPath): ActorPath {
    if (typeof path !== 'string') return path;
    if (path.startsWith('acp://')) return parsePath(path);
    return parsePath(`acp://${this.node.cluster}/${this.node.node}/${path.replace(/^\/+/, '')}`);
  }

  ref<Accepts extends Message = Message>(path: string | ActorPath): ClientRef<Accepts> {
    const target = this.resolve(path);
    return {
      path: formatPath(target),
      tell: (message) => this.tell(target, message),
      ask: <Reply extends Message>(message: Accepts, options?: AskOptions) => this.ask<Reply>(target, message, options),
    };
  }

  ask<Reply extends Message = Message>(path: string | ActorPath, message: Message, options: AskOptions = {}): Promise<Reply> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_CLIENT_TIMEOUT_MS;
    const to = formatPath(this.resolve(path));
    return this.request<Reply>({ k: 'ask', to, body: message, t: timeoutMs }, timeoutMs + 1000);
  }

  /** Sends a tell, then a ping: frames are handled in order, so the pong proves it was accepted. */
  async tell(path: string | ActorPath, message: Message): Promise<void> {
    const to = formatPath(this.resolve(path));
    const id = this.nextId++;
    const refused = new Promise<never>((_resolve, reject) => {
      this.pending.set(id, { resolve: () => undefined, reject });
    });
    refused.catch(() => undefined);
    this.send({ v: PROTOCOL_VERSION, k: 'tell', id, to, body: message });
    try {
      await Promise.race([this.request({ k: 'ping' }, 10_000), refused]);
    } finally {
      this.pending.delete(id);
    }
  }

  /**
   * `watch('meta/')` (a CDB key prefix: '', or starting with object/, meta/ or stats/) streams the
   * records under it, then every change, to `listener` (cdb.snapshot, cdb.events, and watch.ended
   * if the CDB restarts). `watch(path)` (an actor path) is a death watch: `listener` is told once,
   * with `{type:'terminated'}`. Both return the cancel function.
   */
  watch(prefix: KeyPrefix, listener: (event: Message) => void): () => void;
  watch(path: string | ActorPath, listener: (terminated: Terminated) => void): () => void;
  watch(target: string | ActorPath, listener: (event: Terminated) => void): () => void {
    if (typeof target === 'string' && isKeyPrefix(target)) {
      const stream = this.subscribe('cdb', { type: 'cdb.watch', prefix: target }, (event) => listener(event as Terminated));
      return () => stream.cancel();
    }
    const path = target;
    const id = this.nextId++;
    const to = formatPath(this.resolve(path));
    this.watchers.set(id, { path: to, listener });
    this.send({ v: PROTOCOL_VERSION, k: 'watch', id, to });
    return () => {
      // A watch frame with only the id cancels it on the node too.
      if (this.watchers.delete(id) && !this.closedError) this.send({ v: PROTOCOL_VERSION, k: 'watch', id });
    };
  }

  /**
   * Subscribes to an actor's stream: `message` (for example `{type:'cdb.watch', prefix}`) is asked
   * of the actor with a subscriber the node makes for this connection; its reply and everything
   * the actor then sends arrive at `onEvent`, in order. A stream that ends on the node's side ends
   * with `{type:'watch.ended', resubscribe}`. `cancel` ends it from this side.
   */
  subscribe(path: string | ActorPath, message: Message, onEvent: (event: Message) => void, onError: (error: AcpError) => void = () => undefined): { cancel(): void } {
    const id = this.nextId++;
    this.streams.set(id, { onEvent, onError });
    this.send({ v: PROTOCOL_VERSION, k: 'watch', id, to: formatPath(this.resolve(path)), body: message });
    return {
      cancel: () => {
        if (!this.streams.delete(id) || this.closedError) return;
        this.send({ v: PROTOCOL_VERSION, k: 'watch', id });
      },
    };
  }

  async close(): Promise<void> {
    if (this.closedError) return;
    this.closedError = new AcpError('ACP_ERR_WIRE_CLOSED', 'the client closed the connection');
    await new Promise<void>((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end(encodeFrame({ v: PROTOCOL_VERSION, k: 'bye' }));
      setTimeout(() => {
        this.socket.destroy();
        resolve();
      }, 1000).unref();
    });
  }

  private request<Reply>(envelope: Omit<Envelope, 'v' | 'id'>, timeoutMs: number): Promise<Reply> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new AcpError('ACP_ERR_ASK_TIMEOUT', `no answer from the node within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: (body) => resolve(body as Reply), reject, timer });
      this.send({ v: PROTOCOL_VERSION, ...envelope, id });
    });
  }

  private send(envelope: Envelope): void {
    this.socket.write(encodeFrame(envelope));
  }

  private onFrame(envelope: Envelope): void {
    const id = typeof envelope.id === 'number' ? envelope.id : undefined;
    switch (envelope.k) {
      case 'reply':
      case 'pong':
        if (id !== undefined) this.settle(id, (pending) => pending.resolve(envelope.body));
        return;
      case 'error': {
        const error = AcpError.fromData(envelope.err ?? ({ code: 'ACP_ERR_INTERNAL', kind: 'internal', message: 'error without details' } as ErrorData));
        const stream = id === undefined ? undefined : this.streams.get(id);
        if (stream) {
          this.streams.delete(id!);
          stream.onError(error);
        } else if (id !== undefined) {
          // An error for an id nobody waits on any more (a tell already accepted) concerns only that id.
          this.settle(id, (pending) => pending.reject(error));
        } else {
          this.fail(error);
        }
        return;
      }
      case 'event':
        if (id !== undefined && this.streams.has(id)) {
          const stream = this.streams.get(id)!;
          const body = envelope.body as Message;
          if (body?.type === 'watch.ended') this.streams.delete(id);
          stream.onEvent(body);
          return;
        }
        if (id !== undefined) {
          const listener = this.watchers.get(id);
          this.watchers.delete(id);
          listener?.listener(envelope.body as Terminated);
        }
        return;
      case 'ping':
        this.send({ v: PROTOCOL_VERSION, k: 'pong', id: envelope.id });
        return;
      case 'bye':
      case 'hello':
      case 'tell':
      case 'tells':
      case 'ask':
      case 'watch':
        return;
      default: {
        const unreachable: never = envelope.k;
        return unreachable;
      }
    }
  }

  private settle(id: number, action: (pending: Pending) => void): void {
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    action(pending);
  }

  private fail(error: AcpError): void {
    this.closedError ??= error;
    // Death watches end too: the node can no longer tell, so say so rather than stay silent.
    for (const [id, watch] of this.watchers) {
      this.watchers.delete(id);
      watch.listener({ type: 'terminated', path: watch.path, reason: `node-unreachable: ${error.message}` });
    }
    for (const [id, stream] of this.streams) {
      this.streams.delete(id);
      stream.onError(error);
    }
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(error);
    }
  }
}
