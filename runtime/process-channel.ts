import type { Socket } from 'node:net';
import { encodeFrame, FrameDecoder, PROTOCOL_VERSION, type Envelope } from './codec.js';
import { errorMessage, type ErrorData } from './errors.js';
import type { IsolatedActorData, IsolatedReply } from './isolated-mailbox.js';

/**
 * The parent/child channel of process isolation: length-prefixed CBOR envelopes (runtime/codec.ts)
 * on a private Unix socket. Frames, by direction:
 *
 * - child → parent `hello {token, pid}`; parent → child `hello {}`: the child then starts its actor
 *   and answers `reply`/`error` with id `'start'`.
 * - parent → child `ask {id, body, from}`: one message for the actor (tells travel as asks too, so
 *   a crash is always seen); the child answers `reply {id, body}` or `error {id, err}`, where
 *   `err.details` is `{crash, details}` (a crash or a refusal, like ThreadReply).
 * - child → parent `ask {id, to, body, t}`, `tell {to, body, from}`, `watch {id, to}` and
 *   `watch {id, body: {cancel: true}}`: the child's actor reaching other actors, served with the
 *   parent's system; asks are answered with `reply`/`error` frames.
 * - parent → child `bye {reason}`: run the `stopping` hook, answer `bye` and exit.
 */
export interface ProcessWorkerData extends IsolatedActorData {
  readonly socketPath: string;
  /** Proves to the parent that the connection comes from the child it spawned. */
  readonly token: string;
}

/** The environment variable carrying ProcessWorkerData (JSON) to the child. */
export const PROCESS_WORKER_ENV = 'ACP_PROCESS_WORKER';
/** The frame id of the child's answer to the parent's hello: its actor started, or failed to. */
export const START_ID = 'start';
/** The channel is private and trusted: a larger frame limit than the client listener's. */
export const CHANNEL_MAX_FRAME_BYTES = 64 * 1024 * 1024;
/** Longest Unix socket path Linux and macOS accept (sun_path less its terminator). */

/** An answer from the child: answers and refusals travel as data, so error codes survive. */
export type ProcessReply = IsolatedReply;

/** The `details` of an error frame from the child. */
export interface ChildErrorDetails {
  readonly crash: boolean;
  readonly details?: unknown;
}

/** Wraps an ErrorData for an error frame from the child, with its crash flag. */
export function childErrorData(error: ErrorData, crash: boolean): ErrorData {
  const details: ChildErrorDetails = error.details === undefined ? { crash } : { crash, details: error.details };
  return { ...error, details };
}

/** Reads an error frame from the child back into a ProcessReply. */
export function fromChildError(error: ErrorData): ProcessReply {
  const details = error.details as Partial<ChildErrorDetails> | undefined;
  const crash = typeof details === 'object' && details !== null && details.crash === true;
  const inner: ErrorData = { code: error.code, kind: error.kind, message: error.message };
  if (typeof details === 'object' && details !== null && details.details !== undefined) inner.details = details.details;
  return { ok: false, error: inner, crash };
}

export interface ChannelHandler {
  frame(envelope: Envelope): void;
  /** The socket closed (`why` says so when the channel closed it on a bad frame). */
  closed(why: string | undefined): void;
}

/** One end of the parent/child channel. A bad frame is fatal to the channel: both ends are ours. */
export class ProcessChannel {
  private readonly decoder = new FrameDecoder(CHANNEL_MAX_FRAME_BYTES);
  private open = true;
  private why: string | undefined;

  constructor(
    private readonly socket: Socket,
    handler: ChannelHandler,
  ) {
    socket.on('data', (chunk: Buffer) => {
      if (!this.open) return;
      let envelopes: Envelope[];
      try {
        envelopes = this.decoder.push(chunk);
      } catch (error) {
        this.fail(`bad frame on the process channel: ${errorMessage(error)}`);
        return;
      }
      for (const envelope of envelopes) {
        if (!this.open) break;
        try {
          handler.frame(envelope);
        } catch (error) {
          this.fail(`process channel handler failed: ${errorMessage(error)}`);
        }
      }
    });
    socket.on('error', (error) => {
      this.why ??= errorMessage(error);
    });
    socket.on('close', () => {
      this.open = false;
      handler.closed(this.why);
    });
  }

  get isOpen(): boolean {
    return this.open;
  }

  /** Sends one frame; throws (without closing the channel) when the envelope cannot be encoded. */
  send(envelope: Omit<Envelope, 'v'>): void {
    if (!this.open) return;
    this.socket.write(encodeFrame({ v: PROTOCOL_VERSION, ...envelope }));
  }

  /** Sends `last` if given, then closes gracefully. */
  end(last?: Omit<Envelope, 'v'>): void {
    if (!this.open) return;
    this.open = false;
    if (last) this.socket.end(encodeFrame({ v: PROTOCOL_VERSION, ...last }));
    else this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  destroy(): void {
    this.open = false;
    this.socket.destroy();
  }

  private fail(why: string): void {
    this.why = why;
    this.destroy();
  }
}
