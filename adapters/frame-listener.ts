import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex, Writable } from 'node:stream';
import { dirname } from 'node:path';
import { DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_HELLO_FRAME_BYTES, encodeFrame, FrameDecoder, PROTOCOL_VERSION, type Envelope } from '../runtime/codec.js';
import type { CborLimits } from '../runtime/cbor-guard.js';
import { AcpError, errorMessage } from '../runtime/errors.js';
import type { Logger } from '../runtime/logger.js';

/** How many more turns a corked socket may wait while frames keep coming, and how much it may gather. */
const MAX_TURNS_CORKED = 16;
const FLUSH_BYTES = 64 * 1024;

/**
 * Writes to `socket` gathered into few writes (one TLS record batch, one syscall each): the socket
 * is corked at the first write and uncorked after the turn of the event loop is over, or, while
 * writes keep coming turn after turn, a few turns later (at most MAX_TURNS_CORKED, or once
 * FLUSH_BYTES wait). Answers that come a turn apart (a mailbox that took one message a turn, asks
 * answered by different actors, replies after I/O) were each their own TLS record and syscall: a
 * third of the answering daemon's time under 64 askers. A turn in which nothing more was written
 * ends the wait, so a lone frame waits one turn more than it did.
 */
export function gatheredWriter(socket: Writable): (bytes: Buffer) => void {
  let corked = false;
  let writtenSinceCheck = 0;
  let turnsWaited = 0;
  const check = () => {
    if (writtenSinceCheck > 0 && turnsWaited < MAX_TURNS_CORKED && socket.writableLength < FLUSH_BYTES) {
      writtenSinceCheck = 0;
      turnsWaited += 1;
      setImmediate(check);
      return;
    }
    corked = false;
    writtenSinceCheck = 0;
    turnsWaited = 0;
    socket.uncork();
  };
  return (bytes) => {
    if (!corked) {
      corked = true;
      socket.cork();
      setImmediate(check);
    }
    writtenSinceCheck += 1;
    socket.write(bytes);
  };
}

/** One connection, as the protocol logic sees it. */
export interface FrameConnection {
  readonly id: string;
  send(envelope: Envelope): void;
  /** Sends `last` (an error or bye) if given, then closes. */
  close(last?: Envelope): void;
  /** Bytes written but not yet taken by the peer (for backpressure). */
  readonly pendingWriteBytes: number;
  /** Calls `fn` once the socket has drained its write buffer. */
  onDrain(fn: () => void): void;
  /** The peer said a good hello: its frames may now be as large as the listener allows. */
  greeted(): void;
}

/** The same connection, each frame sent through `send` (which decides whether and when it goes on to the connection). */
export function sendingThrough(connection: FrameConnection, send: (envelope: Envelope) => void): FrameConnection {
  return {
    get id() {
      return connection.id;
    },
    send,
    close: (last) => connection.close(last),
    get pendingWriteBytes() {
      return connection.pendingWriteBytes;
    },
    onDrain: (fn) => connection.onDrain(fn),
    greeted: () => connection.greeted(),
  };
}

/** What the protocol logic does with a connection's frames. */
export interface FrameHandler {
  frame(envelope: Envelope): void;
  /** The peer sent something that is not a valid frame; the connection closes after this. */
  badFrame(error: AcpError): void;
  closed(): void;
}

export interface FrameSocketOptions extends Partial<CborLimits> {
  maxFrameBytes?: number;
  /**
   * Frames before a hello may be at most this large (listeners: the peer is nobody yet). Absent:
   * no separate limit (a connection we dialed, whose peer we chose).
   */
  maxHelloFrameBytes?: number;
  /** A connection whose peer has not read this much pending output is closed. */
  maxPendingWriteBytes?: number;
  log: Logger;
}

/**
 * Speaks length-prefixed CBOR frames on any byte stream (Unix, TCP, TLS, a WebSocket's): a bad frame or a
 * failing handler closes only this connection, with an error frame naming the reason.
 */
export function attachFrames(socket: Duplex, id: string, options: FrameSocketOptions, accept: (connection: FrameConnection) => FrameHandler): FrameConnection | undefined {
  const { log } = options;
  const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const limits = { ...(options.maxDepth === undefined ? {} : { maxDepth: options.maxDepth }), ...(options.maxItems === undefined ? {} : { maxItems: options.maxItems }) };
  const decoder = new FrameDecoder(maxFrameBytes, limits);
  if (options.maxHelloFrameBytes !== undefined && options.maxHelloFrameBytes < maxFrameBytes) {
    decoder.setFrameLimit(options.maxHelloFrameBytes, 'the limit before a hello');
  }
  const maxPending = options.maxPendingWriteBytes ?? 64 * 1024 * 1024;
  let open = true;
  const writeGathered = gatheredWriter(socket);
  const connection: FrameConnection = {
    id,
    send: (envelope) => {
      if (!open) return;
      if (socket.writableLength > maxPending) {
        log.warn({ conn: id, pending: socket.writableLength }, 'closing a connection that does not read what it is sent');
        socket.destroy();
        return;
      }
      writeGathered(encodeOrRefusal(envelope, id, log));
    },
    close: (last) => {
      if (!open) return;
      open = false;
      if (last) socket.end(encodeFrame(last));
      else socket.end();
      // A peer that never reads must not keep the socket half-open.
      setTimeout(() => socket.destroy(), 1000).unref();
    },
    get pendingWriteBytes() {
      return socket.writableLength;
    },
    onDrain: (fn) => {
      if (socket.writableLength === 0) fn();
      else socket.once('drain', fn);
    },
    greeted: () => decoder.setFrameLimit(maxFrameBytes, "this listener's limit"),
  };
  let handler: FrameHandler;
  try {
    handler = accept(connection);
  } catch (error) {
    log.error({ conn: id, err: errorMessage(error) }, 'connection handler failed; closing');
    socket.destroy();
    return undefined;
  }
  socket.on('data', (chunk: Buffer) => {
    if (!open) return;
    decoder.append(chunk);
    // One frame at a time: the handler sees the hello (and raises the limit) before the next
    // frame's length is checked, so a client may send its first request right behind its hello.
    while (open) {
      let envelope: Envelope | undefined;
      try {
        envelope = decoder.next();
      } catch (error) {
        const refusal = AcpError.from(error, 'ACP_ERR_WIRE_BAD_FRAME');
        handler.badFrame(refusal);
        connection.close({ v: PROTOCOL_VERSION, k: 'error', err: refusal.toData() });
        return;
      }
      if (!envelope) return;
      try {
        handler.frame(envelope);
      } catch (error) {
        log.error({ conn: id, err: errorMessage(error) }, 'frame handler failed; closing the connection');
        connection.close({ v: PROTOCOL_VERSION, k: 'error', err: AcpError.from(error).toData() });
      }
    }
  });
  socket.on('error', (error) => log.debug({ conn: id, err: errorMessage(error) }, 'connection error'));
  socket.on('close', () => {
    open = false;
    if (decoder.pendingBytes > 0) log.info({ conn: id, pendingBytes: decoder.pendingBytes }, 'connection closed mid-frame; partial frame dropped');
    handler.closed();
  });
  return connection;
}

/**
 * Encodes a frame; one that cannot be encoded (a value no CBOR can carry, or one too deep for the
 * stack) becomes an error frame on the same id, so the request it answers is never left silent.
 */
function encodeOrRefusal(envelope: Envelope, id: string, log: Logger): Buffer {
  try {
    return encodeFrame(envelope);
  } catch (error) {
    log.error({ conn: id, kind: envelope.k, err: errorMessage(error) }, 'a frame could not be encoded; sending an error in its place');
    const err = new AcpError('ACP_ERR_INTERNAL', `the ${envelope.k} could not be encoded (${errorMessage(error)}); the node's log has the details`).toData();
    return encodeFrame(envelope.id === undefined ? { v: PROTOCOL_VERSION, k: 'error', err } : { v: PROTOCOL_VERSION, k: 'error', id: envelope.id, err });
  }
}

export interface FrameListenerOptions extends FrameSocketOptions {
  /** A Unix socket path (its directory is made 0700, the socket 0600)... */
  socketPath?: string;
  /** ...or a TCP address. */
  host?: string;
  port?: number;
  maxConnections?: number;
  accept(connection: FrameConnection): FrameHandler;
}

/** Listens for frame connections on a Unix socket or a TCP port; a bad connection never affects another. */
export class FrameListener {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private nextId = 0;

  constructor(private readonly options: FrameListenerOptions) {}

  get connections(): number {
    return this.sockets.size;
  }

  /** The bound TCP port (for port 0). */
  get port(): number | undefined {
    const address = this.server?.address();
    return typeof address === 'object' && address ? address.port : undefined;
  }

  async listen(): Promise<void> {
    const { socketPath } = this.options;
    if (socketPath) {
      mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
      chmodSync(dirname(socketPath), 0o700);
      rmSync(socketPath, { force: true });
    }
    const server = createServer((socket) => this.onSocket(socket));
    server.maxConnections = this.options.maxConnections ?? 1024;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const ready = () => {
        server.off('error', reject);
        resolve();
      };
      if (socketPath) server.listen(socketPath, ready);
      else server.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', ready);
    });
    if (socketPath) chmodSync(socketPath, 0o600);
    server.on('error', (error) => this.options.log.error({ err: errorMessage(error) }, 'listener error'));
    this.server = server;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    if (this.options.socketPath) rmSync(this.options.socketPath, { force: true });
  }

  private onSocket(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    const options = { maxHelloFrameBytes: DEFAULT_MAX_HELLO_FRAME_BYTES, ...this.options };
    const attached = attachFrames(socket, `c${++this.nextId}`, options, (connection) => this.options.accept(connection));
    if (!attached) this.sockets.delete(socket);
  }
}
