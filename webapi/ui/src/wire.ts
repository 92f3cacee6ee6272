/**
 * The wire protocol over /ws, in the browser: 4-byte big-endian length, then a CBOR envelope
 * `{ v, k, id, to, body, err, t }` (runtime/codec.ts). The page's session cookie is its principal,
 * so no hello is sent; every ask passes the node's authority checks as that principal.
 */
import { Encoder } from 'cbor-x';

export interface Message {
  type: string;
  [key: string]: unknown;
}

interface Envelope {
  v: 1;
  k: string;
  id?: string | number;
  to?: string;
  body?: unknown;
  err?: { code: string; kind: string; message: string };
  t?: number;
}

export class WireError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false, int64AsNumber: true } as ConstructorParameters<typeof Encoder>[0]);
const ASK_MS = 60_000;

interface Pending {
  resolve(body: Message): void;
  reject(error: WireError): void;
  timer: number;
}

export class Wire {
  private socket: WebSocket | undefined;
  private buffer = new Uint8Array(0);
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly streams = new Map<number, { onEvent(body: Message): void; onError(error: WireError): void }>();
  private opened: Promise<void> | undefined;
  /** Closed by the page (signed out, or reconnecting with a new Wire): it never opens a socket again. */
  private closed = false;
  /** Called when the socket closes (the page reconnects and re-subscribes). */
  onClose: (reason: string) => void = () => undefined;

  constructor(readonly cluster: string) {}

  connect(): Promise<void> {
    if (this.closed) return Promise.reject(new WireError('ACP_ERR_NODE_UNREACHABLE', 'this connection was closed'));
    if (this.opened) return this.opened;
    this.opened = new Promise((resolve, reject) => {
      const url = new URL('/ws', location.href);
      url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const socket = new WebSocket(url);
      socket.binaryType = 'arraybuffer';
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new WireError('ACP_ERR_NODE_UNREACHABLE', 'the node closed the WebSocket'));
      socket.onmessage = (event) => this.receive(new Uint8Array(event.data as ArrayBuffer));
      socket.onclose = (event) => {
        this.opened = undefined;
        this.socket = undefined;
        const error = new WireError('ACP_ERR_NODE_UNREACHABLE', `connection closed${event.reason ? `: ${event.reason}` : ''}`);
        for (const entry of this.pending.values()) {
          clearTimeout(entry.timer);
          entry.reject(error);
        }
        this.pending.clear();
        for (const stream of this.streams.values()) stream.onError(error);
        this.streams.clear();
        this.onClose(error.message);
      };
      this.socket = socket;
    });
    return this.opened;
  }

  path(node: string, service: string): string {
    return `acp://${this.cluster}/${node}/${service}`;
  }

  async ask<T extends Message = Message>(to: string, body: Message, timeoutMs = ASK_MS): Promise<T> {
    await this.connect();
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = window.setTimeout(() => {
        this.pending.delete(id);
        reject(new WireError('ACP_ERR_TIMEOUT', `no answer to ${body.type} within ${timeoutMs} ms`));
      }, timeoutMs + 1000);
      this.pending.set(id, { resolve: resolve as (body: Message) => void, reject, timer });
      this.send({ v: 1, k: 'ask', id, to, body, t: timeoutMs });
    });
  }

  /** Subscribes to an actor's stream (e.g. cdb.watch): its reply and every event come to onEvent. */
  async subscribe(to: string, body: Message, onEvent: (body: Message) => void, onError: (error: WireError) => void): Promise<() => void> {
    await this.connect();
    const id = this.nextId++;
    this.streams.set(id, { onEvent, onError });
    this.send({ v: 1, k: 'watch', id, to, body });
    return () => {
      if (this.streams.delete(id)) this.send({ v: 1, k: 'watch', id });
    };
  }

  close(): void {
    this.closed = true;
    this.socket?.close();
  }

  private send(envelope: Envelope): void {
    const payload = cbor.encode(envelope) as Uint8Array;
    const frame = new Uint8Array(4 + payload.length);
    new DataView(frame.buffer).setUint32(0, payload.length);
    frame.set(payload, 4);
    this.socket?.send(frame);
  }

  private receive(chunk: Uint8Array): void {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    let offset = 0;
    while (joined.length - offset >= 4) {
      const length = new DataView(joined.buffer, joined.byteOffset + offset).getUint32(0);
      if (joined.length - offset - 4 < length) break;
      const envelope = cbor.decode(joined.subarray(offset + 4, offset + 4 + length)) as Envelope;
      offset += 4 + length;
      this.dispatch(envelope);
    }
    this.buffer = joined.slice(offset);
  }

  private dispatch(envelope: Envelope): void {
    const id = typeof envelope.id === 'number' ? envelope.id : -1;
    const error = envelope.err ? new WireError(envelope.err.code, envelope.err.message) : undefined;
    const pending = this.pending.get(id);
    if (pending) {
      this.pending.delete(id);
      clearTimeout(pending.timer);
      if (error) pending.reject(error);
      else pending.resolve(envelope.body as Message);
      return;
    }
    const stream = this.streams.get(id);
    if (!stream) return;
    if (error) {
      this.streams.delete(id);
      stream.onError(error);
    } else if (envelope.k === 'event') {
      // The stream's last event: its target ended it (it restarted); a new watch is a new stream.
      if ((envelope.body as Message | undefined)?.type === 'watch.ended') this.streams.delete(id);
      stream.onEvent(envelope.body as Message);
    }
  }
}
