import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder, PROTOCOL_VERSION, type Envelope } from '../runtime/codec.js';
import { AcpError, errorMessage } from '../runtime/errors.js';
import type { Logger } from '../runtime/logger.js';

/** One accepted connection, as the protocol logic sees it. */
export interface FrameConnection {
  readonly id: string;
  send(envelope: Envelope): void;
  /** Sends `last` (an error or bye) if given, then closes. */
  close(last?: Envelope): void;
}

/** What the protocol logic does with a connection's frames. */
export interface FrameHandler {
  frame(envelope: Envelope): void;
  /** The peer sent something that is not a valid frame; the listener closes after this. */
  badFrame(error: AcpError): void;
  closed(): void;
}

export interface FrameListenerOptions {
  /** A Unix socket path (its directory is made 0700, the socket 0600). */
  socketPath: string;
  maxFrameBytes?: number;
  maxConnections?: number;
  /** A connection whose peer has not read this much pending output is closed. */
  maxPendingWriteBytes?: number;
  log: Logger;
  accept(connection: FrameConnection): FrameHandler;
}

/** Listens for length-prefixed CBOR frames; a bad connection never affects another. */
export class FrameListener {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private nextId = 0;

  constructor(private readonly options: FrameListenerOptions) {}

  get connections(): number {
    return this.sockets.size;
  }

  async listen(): Promise<void> {
    const { socketPath } = this.options;
    mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
    chmodSync(dirname(socketPath), 0o700);
    rmSync(socketPath, { force: true });
    const server = createServer((socket) => this.onSocket(socket));
    server.maxConnections = this.options.maxConnections ?? 1024;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(socketPath, 0o600);
    server.on('error', (error) => this.options.log.error({ err: errorMessage(error) }, 'listener error'));
    this.server = server;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(this.options.socketPath, { force: true });
  }

  private onSocket(socket: Socket): void {
    const id = `c${++this.nextId}`;
    const log = this.options.log;
    const decoder = new FrameDecoder(this.options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES);
    const maxPending = this.options.maxPendingWriteBytes ?? 64 * 1024 * 1024;
    this.sockets.add(socket);
    let open = true;
    const connection: FrameConnection = {
      id,
      send: (envelope) => {
        if (!open) return;
        if (socket.writableLength > maxPending) {
          log.warn({ conn: id, pending: socket.writableLength }, 'closing a connection that does not read its replies');
          socket.destroy();
          return;
        }
        socket.write(encodeFrame(envelope));
      },
      close: (last) => {
        if (!open) return;
        open = false;
        if (last) socket.end(encodeFrame(last));
        else socket.end();
        // A peer that never reads must not keep the socket half-open.
        setTimeout(() => socket.destroy(), 1000).unref();
      },
    };
    let handler: FrameHandler;
    try {
      handler = this.options.accept(connection);
    } catch (error) {
      log.error({ conn: id, err: errorMessage(error) }, 'connection handler failed; closing');
      socket.destroy();
      this.sockets.delete(socket);
      return;
    }
    socket.on('data', (chunk: Buffer) => {
      if (!open) return;
      let envelopes: Envelope[];
      try {
        envelopes = decoder.push(chunk);
      } catch (error) {
        const refusal = AcpError.from(error, 'ACP_ERR_WIRE_BAD_FRAME');
        handler.badFrame(refusal);
        connection.close({ v: PROTOCOL_VERSION, k: 'error', err: refusal.toData() });
        return;
      }
      for (const envelope of envelopes) {
        if (!open) break;
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
      this.sockets.delete(socket);
      if (decoder.pendingBytes > 0) log.info({ conn: id, pendingBytes: decoder.pendingBytes }, 'connection closed mid-frame; partial frame dropped');
      handler.closed();
    });
  }
}
