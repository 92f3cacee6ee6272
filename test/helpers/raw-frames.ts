import type { Socket } from 'node:net';
import { encodeFrame, FrameDecoder, type Envelope } from '../../runtime/codec.js';

/** What came back on a raw connection. */
export interface RawFramesResult {
  frames: Envelope[];
  /** The server closed the connection (rather than us giving up waiting). */
  closed: boolean;
  /** The socket errored (a refused TLS handshake, or a reset): kept, since hostile tests expect it. */
  error: NodeJS.ErrnoException | undefined;
}

/**
 * A connection that writes raw bytes and decodes whatever frames the server sends back; never
 * sends anything by itself. The base of the Unix-socket and TLS clients the hostile tests use.
 */
export class RawFrames {
  readonly frames: Envelope[] = [];
  closed = false;
  /** The server has ended its side of the stream. */
  ended = false;
  error: NodeJS.ErrnoException | undefined;
  private readonly decoder = new FrameDecoder(64 * 1024 * 1024);
  private readonly waiters = new Set<() => void>();

  protected constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      try {
        this.frames.push(...this.decoder.push(chunk));
      } catch {
        // The server only sends valid frames; a decode failure shows up as a missing frame.
      }
      this.wake();
    });
    // EPIPE / ECONNRESET after the server gave up on us are expected here: kept, not thrown.
    socket.on('error', (error: NodeJS.ErrnoException) => {
      this.error ??= error;
      this.wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  write(bytes: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  send(envelope: Envelope): void {
    this.write(encodeFrame(envelope));
  }

  /** Half-closes our side (the server sees end of stream). */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** The first frame matching, or undefined if none comes in time (or the socket closes first). */
  async nextFrame(match: (envelope: Envelope) => boolean, timeoutMs: number): Promise<Envelope | undefined> {
    const found = await this.waitFor(() => this.frames.find(match) ?? (this.closed ? null : undefined), timeoutMs);
    return found ?? undefined;
  }

  /** Waits until the server has ended its side (with allowHalfOpen, the socket itself stays open). */
  async untilEnded(timeoutMs: number): Promise<boolean> {
    if (this.ended) return true;
    return (await this.waitFor(() => (this.ended ? true : undefined), timeoutMs)) ?? false;
  }

  /** Waits for the server to close the connection (or the time to run out). */
  async untilClosed(timeoutMs: number): Promise<RawFramesResult> {
    await this.waitFor(() => (this.closed ? true : undefined), timeoutMs);
    return { frames: [...this.frames], closed: this.closed, error: this.error };
  }

  protected waitFor<T>(check: () => T | undefined, timeoutMs: number): Promise<T | undefined> {
    return new Promise((resolve) => {
      const done = (value: T | undefined) => {
        clearTimeout(timer);
        this.waiters.delete(poll);
        resolve(value);
      };
      const poll = () => {
        const value = check();
        if (value !== undefined) done(value);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      this.waiters.add(poll);
      poll();
    });
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}
