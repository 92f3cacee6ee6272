/**
 * A guest's display relayed between nodes, for a management node's UI showing a guest that runs
 * on another node: the agents carry actor messages, so the RFB byte stream travels as them,
 * between the two nodes' webapi actors (every node runs one, management or not):
 *
 * - the viewing node's actor asks the guest node's `webapi.display.open` (a random stream id);
 *   that node connects to the guest's VNC socket and sends what it reads as
 *   `webapi.display.data` asks, one at a time: the next read waits for the answer, which comes
 *   once the browser's WebSocket has room (flow control end to end);
 * - what the browser sends goes as `webapi.display.input`, accepted only from the node that opened
 *   the stream; either end closing sends `webapi.display.close`/`webapi.display.closed`.
 *
 * Who may watch was decided before: the route asked `system.display` (operate) of the guest's
 * hypervisor as the browser's principal. These messages are internal (webapi actors of peers).
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { connectDisplay } from '../adapters/drivers/vnc.js';
import { guestFiles } from '../actors/vmm/index.js';
import type { ActorContext } from '../runtime/actor.js';
import { AcpError, errorMessage } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { parsePath } from '../runtime/path.js';
import type { Principal } from '../runtime/principal.js';

/** What the route gives for a stream it shows: where the guest's bytes go, and how it ends. */
export interface DisplaySink {
  /** Resolves once the browser has room for more. */
  write(data: Uint8Array): Promise<void>;
  close(reason: string): void;
}

/** Reads from the guest's VNC socket are cut to this, to stay well inside a wire frame. */
const CHUNK_BYTES = 64 * 1024;
const DATA_ASK_MS = 30_000;

/** The node a sender speaks from: a peer relaying its own actor, or an actor of this node. */
function senderNode(sender: Principal | undefined, self: string): string | undefined {
  if (sender?.kind === 'node') return sender.node;
  if (sender?.kind === 'actor') return parsePath(sender.path).node === self ? self : undefined;
  return undefined;
}

export class DisplayRelay {
  /** Viewing side: streams this node's browsers watch on other nodes. */
  private readonly sinks = new Map<string, { sink: DisplaySink; node: string }>();
  /** Guest side: streams other nodes watch of guests here. */
  private readonly streams = new Map<string, { socket: Socket; node: string }>();

  constructor(
    private readonly ctx: ActorContext,
    private readonly home: string,
  ) {}

  private webapiOf(node: string) {
    return this.ctx.ref(`acp://${this.ctx.node.cluster}/${node}/webapi`);
  }

  /** Viewing side: opens system `id`'s display on `node` into `sink`; returns the stream's id for input and close. */
  async open(node: string, id: string, sink: DisplaySink): Promise<string> {
    const stream = randomBytes(16).toString('hex');
    this.sinks.set(stream, { sink, node });
    try {
      await this.webapiOf(node).ask({ type: 'webapi.display.open', id, stream }, { timeoutMs: 15_000 });
    } catch (error) {
      this.sinks.delete(stream);
      throw error;
    }
    return stream;
  }

  /** Viewing side: what the browser sent, in order (the caller chains these). */
  input(stream: string, data: Uint8Array): Promise<unknown> {
    const known = this.sinks.get(stream);
    if (!known) return Promise.resolve();
    return this.webapiOf(known.node).ask({ type: 'webapi.display.input', stream, data }, { timeoutMs: 15_000 });
  }

  /** Viewing side: the browser went. */
  close(stream: string): void {
    const known = this.sinks.get(stream);
    if (!known) return;
    this.sinks.delete(stream);
    this.webapiOf(known.node).tell({ type: 'webapi.display.close', stream });
  }

  /** Viewing side, `webapi.display.data`: answered once the browser has room. */
  async data(stream: string, data: Uint8Array): Promise<Message> {
    const known = this.sinks.get(stream);
    if (!known) throw new AcpError('ACP_ERR_SYSTEM_NO_DISPLAY', `display stream ${stream.slice(0, 8)} is closed`);
    await known.sink.write(data);
    return { type: 'webapi.display.taken' };
  }

  /** Viewing side, `webapi.display.closed`: the guest's end went. */
  closed(stream: string, reason: string): void {
    const known = this.sinks.get(stream);
    this.sinks.delete(stream);
    known?.sink.close(reason);
  }

  /** Guest side, `webapi.display.open`: connects to the guest's VNC socket and starts sending. */
  async serve(id: string, stream: string, sender: Principal | undefined): Promise<Message> {
    const node = senderNode(sender, this.ctx.node.node);
    if (!node) throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', 'a display stream is opened by a webapi actor');
    if (this.streams.has(stream)) throw new AcpError('ACP_ERR_SCHEMA_REJECTED', 'that display stream id is taken');
    const socket = await connectDisplay(guestFiles(this.home, id).runDir);
    this.streams.set(stream, { socket, node });
    const viewer = this.webapiOf(node);
    socket.on('data', (chunk: Buffer) => {
      socket.pause();
      const parts: Buffer[] = [];
      for (let offset = 0; offset < chunk.length; offset += CHUNK_BYTES) parts.push(chunk.subarray(offset, offset + CHUNK_BYTES));
      void (async () => {
        for (const part of parts) await viewer.ask({ type: 'webapi.display.data', stream, data: part }, { timeoutMs: DATA_ASK_MS });
      })().then(
        () => socket.resume(),
        (error: unknown) => socket.destroy(error instanceof Error ? error : new Error(String(error))),
      );
    });
    socket.once('error', (error) => this.ctx.log.debug({ system: id, err: errorMessage(error) }, 'relayed display ended'));
    socket.once('close', () => {
      if (this.streams.get(stream)?.socket !== socket) return;
      this.streams.delete(stream);
      viewer.tell({ type: 'webapi.display.closed', stream, reason: 'the guest display closed' });
    });
    this.ctx.log.info({ system: id, viewer: node }, 'display relayed to another node');
    return { type: 'webapi.display.opened', stream };
  }

  /** Guest side, `webapi.display.input`: only from the node that opened the stream. */
  write(stream: string, data: Uint8Array, sender: Principal | undefined): Message {
    const known = this.streams.get(stream);
    if (!known || known.node !== senderNode(sender, this.ctx.node.node)) throw new AcpError('ACP_ERR_SYSTEM_NO_DISPLAY', `no display stream ${stream.slice(0, 8)} opened by that node`);
    known.socket.write(data);
    return { type: 'webapi.display.written' };
  }

  /** Guest side, `webapi.display.close`. */
  stop(stream: string, sender: Principal | undefined): void {
    const known = this.streams.get(stream);
    if (!known || known.node !== senderNode(sender, this.ctx.node.node)) return;
    this.streams.delete(stream);
    known.socket.destroy();
  }

  /** Every stream, both sides, when the service stops. */
  shutdown(): void {
    for (const { socket } of this.streams.values()) socket.destroy();
    this.streams.clear();
    for (const { sink } of this.sinks.values()) sink.close('the web service stopped');
    this.sinks.clear();
  }
}
