import { packedTell, PROTOCOL_VERSION, type Envelope } from '../../runtime/codec.js';
import type { Message } from '../../runtime/messages.js';

/** Room kept in a `tells` frame for its envelope: `to` and `from` are at most 1,024 characters each. */
const ENVELOPE_ROOM = 4096;

/** A tell taken back unsent: where it was going, from whom, what. */
export interface UnsentTell {
  to: string;
  from: string;
  message: Message;
}

/**
 * Packs a run of tells to one actor from one sender into one `tells` frame: each message is
 * encoded once as it comes, and the run goes out as one frame when something else must be sent
 * (the link flushes it first, so frames keep their order), when the next tell is for another actor
 * or from another sender, when it would outgrow the peer's offer, or at the end of the current
 * job (a microtask). A run of one is a `tells` frame too: its message was encoded when told, as a
 * plain tell's would have been when sent. The receiver does per frame what it
 * did per tell (decode the envelope, find the sender and the target), so a burst costs it less.
 */
export class TellPacker {
  private run: { to: string; from: string; parts: Buffer[]; messages: Message[]; bytes: number } | undefined;
  private scheduled = false;
  private readonly room: number;

  constructor(
    private readonly send: (envelope: Envelope) => void,
    maxBytes: number,
  ) {
    this.room = maxBytes - ENVELOPE_ROOM;
  }

  /** Tells packed and not sent yet. */
  get pending(): number {
    return this.run?.messages.length ?? 0;
  }

  /** Packs a tell; false when it does not pack (too large alone, or not encodable): the caller sends it as a tell. */
  add(to: string, from: string, message: Message): boolean {
    let part: Buffer;
    try {
      part = packedTell(message);
    } catch {
      return false;
    }
    if (part.length > this.room) return false;
    const run = this.run;
    if (run && (run.to !== to || run.from !== from || run.bytes + part.length > this.room)) this.flush();
    const open = (this.run ??= { to, from, parts: [], messages: [], bytes: 0 });
    open.parts.push(part);
    open.messages.push(message);
    open.bytes += part.length;
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(() => {
        this.scheduled = false;
        this.flush();
      });
    }
    return true;
  }

  /** Sends the open run now, as encoded when each was told (a message changed afterwards goes as it was). */
  flush(): void {
    const run = this.run;
    if (!run) return;
    this.run = undefined;
    this.send({ v: PROTOCOL_VERSION, k: 'tells', to: run.to, from: run.from, body: run.parts.length === 1 ? run.parts[0] : Buffer.concat(run.parts, run.bytes) });
  }

  /** The open run's tells, taken back unsent, in order (the connection went away before they were written). */
  take(): UnsentTell[] {
    const run = this.run;
    this.run = undefined;
    return run ? run.messages.map((message) => ({ to: run.to, from: run.from, message })) : [];
  }
}
