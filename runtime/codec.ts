import { Encoder } from 'cbor-x';
import { z } from 'zod';
import { DEFAULT_CBOR_LIMITS, guardCbor, type CborLimits } from './cbor-guard.js';
import { AcpError, type ErrorData } from './errors.js';

/** Wire protocol version carried in every envelope. */
export const PROTOCOL_VERSION = 1;
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** Before a hello a connection may send only this much per frame (a hello is well under 20 KiB). */
export const DEFAULT_MAX_HELLO_FRAME_BYTES = 64 * 1024;
const HEADER_BYTES = 4;

/** `tells`: a run of tells to one actor from one sender, in one frame (packedTell, unpackTells); sent only to a peer whose hello offered it. */
export const FRAME_KINDS = ['hello', 'tell', 'tells', 'ask', 'reply', 'error', 'ping', 'pong', 'watch', 'event', 'bye'] as const;
export type FrameKind = (typeof FRAME_KINDS)[number];

const errorDataSchema = z.object({
  code: z.string(),
  kind: z.string(),
  message: z.string(),
  details: z.unknown().optional(),
});

/**
 * `{ v, k, id?, to?, from?, body?, err?, t? }`. `t` refines the design's envelope (docs/design.md): the ask timeout in
 * milliseconds, so the server stops waiting when the client does.
 */
export const envelopeSchema = z.object({
  v: z.literal(PROTOCOL_VERSION),
  k: z.enum(FRAME_KINDS),
  id: z.union([z.string().max(128), z.number().int()]).optional(),
  to: z.string().max(1024).optional(),
  from: z.string().max(1024).optional(),
  body: z.unknown().optional(),
  err: errorDataSchema.optional(),
  t: z.number().int().min(1).max(3_600_000).optional(),
});

export interface Envelope {
  v: typeof PROTOCOL_VERSION;
  k: FrameKind;
  id?: string | number;
  to?: string;
  from?: string;
  body?: unknown;
  err?: ErrorData;
  t?: number;
}

export const helloBodySchema = z.object({
  // Names: checked against the naming rule by the session, which says which rule (ACP_ERR_NAME_INVALID).
  cluster: z.string().max(1024),
  node: z.string().max(1024).optional(),
  incarnation: z.number().optional(),
  /** The home's (or cluster's) API key... */
  apiKey: z.string().max(512).optional(),
  /** ...or an API token (`acp token api create`). */
  token: z.string().max(200).optional(),
  proto: z.literal(PROTOCOL_VERSION),
  /** Agents: 'peer' for another node (its connection carries requests both ways), 'client' for a script. */
  role: z.enum(['peer', 'client']).optional(),
  /** Agents: where the sender's own agent listens, so the receiver can reach it later. */
  agent: z.string().max(300).optional(),
  /** Agents: the sender takes `tells` frames, each at most `maxBytes` long. */
  tells: z.object({ maxBytes: z.number().int().min(1024) }).optional(),
});
export type HelloBody = z.infer<typeof helloBodySchema>;

// One encoder per process: plain maps, no shared structures, so any peer can decode any frame.
// int64AsNumber: a 64-bit integer from another encoder decodes to a number, never a BigInt (the
// guard refuses those beyond 2^53).
// (int64AsNumber is a decoder option cbor-x's typings leave out.)
const cborOptions = { useRecords: false, mapsAsObjects: true, tagUint8Array: false, int64AsNumber: true };
const cbor = new Encoder(cborOptions);

/** The bytes of a CBOR head (major type and argument) for `argument`. */
const headBytes = (argument: number): number => (argument < 24 ? 1 : argument < 256 ? 2 : argument < 65536 ? 3 : argument < 2 ** 32 ? 5 : 9);

/**
 * The length of `value` encoded as frames encode it, without encoding it: for plain data (what
 * messages and CDB values are) it follows cbor-x's choices with these options (integers within
 * ±2^32 in the shortest head, other numbers as 64-bit floats, objects as maps with a 2-byte count),
 * and anything else is encoded to be measured. A snapshot page counts its records with it (encoding
 * each to count it was 40% of serving a page); test/codec.test.ts holds it to the encoder.
 */
export function encodedLength(value: unknown): number {
  switch (typeof value) {
    case 'string': {
      const bytes = Buffer.byteLength(value);
      return headBytes(bytes) + bytes;
    }
    case 'number':
      if (!Number.isInteger(value) || value < -(2 ** 32) || value >= 2 ** 32) return 9;
      return headBytes(value < 0 ? -1 - value : value);
    case 'boolean':
    case 'undefined':
      return 1;
    case 'object': {
      if (value === null) return 1;
      if (Array.isArray(value)) {
        let length = headBytes(value.length);
        for (const item of value) length += encodedLength(item);
        return length;
      }
      const prototype: unknown = Object.getPrototypeOf(value);
      if (prototype !== Object.prototype && prototype !== null) break;
      const entries = value as Record<string, unknown>;
      let fields = 0;
      let length = 0;
      for (const key in entries) {
        fields += 1;
        length += encodedLength(key) + encodedLength(entries[key]);
      }
      return (fields < 65536 ? 3 : 5) + length;
    }
    default:
      break;
  }
  return cbor.encode(value).length;
}

/** `value`'s CBOR behind its 4-byte big-endian length: a frame, or one message of a `tells` body. */
function lengthPrefixed(value: unknown): Buffer {
  const payload = cbor.encode(value);
  const framed = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  framed.writeUInt32BE(payload.length, 0);
  payload.copy(framed, HEADER_BYTES);
  return framed;
}

export function encodeFrame(envelope: Envelope): Buffer {
  return lengthPrefixed(envelope);
}

/** The most a `tells` frame holds, whatever the peer allows: a run is cut there and the rest goes in the next. */
export const TELLS_MAX_BYTES = 256 * 1024;

const tellsOfferSchema = helloBodySchema.shape.tells;

/** What a peer's hello offers for `tells` frames (its `tells` field, checked); undefined: none. */
export function offeredTells(hello: unknown): { maxBytes: number } | undefined {
  if (typeof hello !== 'object' || hello === null) return undefined;
  const parsed = tellsOfferSchema.safeParse((hello as { tells?: unknown }).tells);
  return parsed.success ? parsed.data : undefined;
}

/**
 * One message as a `tells` frame carries it: its CBOR behind a 4-byte length. A `tells` frame's body
 * is a byte string of these, one after another, so the sender encodes each message once (and knows
 * the frame's size as it grows) and the receiver checks each one as it would a tell's body.
 */
export function packedTell(message: unknown): Buffer {
  return lengthPrefixed(message);
}

/**
 * The messages of a `tells` frame's body, in order. Each is scanned like a frame (cbor-guard.ts):
 * its depth within the frame's less the envelope around it, and all of them together within the
 * frame's item limit. Anything malformed refuses the whole frame (ACP_ERR_WIRE_BAD_FRAME, naming
 * which message), before any of it is delivered.
 */
export function unpackTells(packed: unknown, limits: CborLimits = DEFAULT_CBOR_LIMITS): unknown[] {
  if (!(packed instanceof Uint8Array) || packed.length === 0) throw new AcpError('ACP_ERR_WIRE_BAD_FRAME', 'a tells frame carries its messages as a byte string in body');
  const bytes = Buffer.from(packed.buffer, packed.byteOffset, packed.length);
  const inner = { maxDepth: limits.maxDepth - 1, maxItems: limits.maxItems };
  const messages: unknown[] = [];
  for (let offset = 0; offset < bytes.length; ) {
    const which = `message ${messages.length + 1} of a tells frame`;
    if (bytes.length - offset < HEADER_BYTES) throw new AcpError('ACP_ERR_WIRE_BAD_FRAME', `${which} is cut short: ${bytes.length - offset} bytes where a length belongs`);
    const length = bytes.readUInt32BE(offset);
    offset += HEADER_BYTES;
    if (length === 0 || length > bytes.length - offset) throw new AcpError('ACP_ERR_WIRE_BAD_FRAME', `${which} says it is ${length} bytes long, but ${bytes.length - offset} remain`);
    const payload = bytes.subarray(offset, offset + length);
    offset += length;
    try {
      inner.maxItems -= guardCbor(payload, inner);
      messages.push(cbor.decode(payload));
    } catch (error) {
      const shared = inner.maxItems < limits.maxItems ? ` (its messages share the frame's ${limits.maxItems} items)` : '';
      throw new AcpError('ACP_ERR_WIRE_BAD_FRAME', `${which}: ${(error as Error).message}${shared}`);
    }
  }
  return messages;
}

const ENVELOPE_KEYS = new Set(['v', 'k', 'id', 'to', 'from', 'body', 'err', 't']);
const KINDS = new Set<string>(FRAME_KINDS);
const optionalText = (value: unknown, max: number) => value === undefined || (typeof value === 'string' && value.length <= max);

/**
 * The common envelope, checked by hand: every frame passes here, and envelopeSchema's parse was a
 * good part of a frame's cost. Undefined for anything it does not vouch for (an unknown key, an
 * error, a bad field): envelopeSchema then decides, and names what is wrong.
 */
function plainEnvelope(value: unknown): Envelope | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const envelope = value as Record<string, unknown>;
  for (const key in envelope) if (!ENVELOPE_KEYS.has(key)) return undefined;
  if (envelope.v !== PROTOCOL_VERSION || typeof envelope.k !== 'string' || !KINDS.has(envelope.k) || envelope.err !== undefined) return undefined;
  const { id, t } = envelope;
  if (id !== undefined && !(typeof id === 'string' ? id.length <= 128 : Number.isSafeInteger(id))) return undefined;
  if (!optionalText(envelope.to, 1024) || !optionalText(envelope.from, 1024)) return undefined;
  if (t !== undefined && !(Number.isSafeInteger(t) && (t as number) >= 1 && (t as number) <= 3_600_000)) return undefined;
  return envelope as unknown as Envelope;
}

/**
 * Decodes and validates one envelope payload (without its length prefix). The bytes are scanned
 * first (cbor-guard.ts): CBOR the protocol does not use is refused before cbor-x decodes anything.
 */
export function decodeEnvelope(payload: Uint8Array, limits: CborLimits = DEFAULT_CBOR_LIMITS): Envelope {
  guardCbor(payload, limits);
  let value: unknown;
  try {
    value = cbor.decode(payload);
  } catch (error) {
    throw new AcpError('ACP_ERR_WIRE_BAD_FRAME', `frame is not valid CBOR: ${(error as Error).message}`);
  }
  const plain = plainEnvelope(value);
  if (plain !== undefined) return plain;
  const parsed = envelopeSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? `field '${issue.path.join('.')}'` : 'envelope';
    throw new AcpError('ACP_ERR_WIRE_BAD_FRAME', `frame is not a valid envelope: ${where}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data as Envelope;
}

/**
 * Streaming decoder: feed it socket chunks, get whole envelopes. Handles frames split across chunks
 * and many frames in one chunk. The announced length is checked against the limit before any
 * buffer for the payload is allocated.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  /** Where the unread bytes of chunks[0] begin. */
  private offset = 0;
  private buffered = 0;
  private readonly limits: CborLimits;
  /** Why the limit is what it is, for the refusal (e.g. "before a hello"). */
  private limitReason = "this listener's limit";

  /**
   * `maxFrameBytes` may change between frames (a listener raises it once a connection has said a
   * good hello): frames are taken one at a time with `next()`, so each is checked against the limit
   * in force when its turn comes.
   */
  constructor(
    public maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES,
    limits: Partial<CborLimits> = {},
  ) {
    this.limits = { ...DEFAULT_CBOR_LIMITS, ...limits };
  }

  /** Sets the frame limit for the frames not yet taken, and what the refusal calls it. */
  setFrameLimit(maxFrameBytes: number, reason: string): void {
    this.maxFrameBytes = maxFrameBytes;
    this.limitReason = reason;
  }

  /** Returns the complete envelopes in `chunk` and earlier leftovers; throws AcpError on a bad frame. */
  push(chunk: Buffer): Envelope[] {
    this.append(chunk);
    const envelopes: Envelope[] = [];
    for (let envelope = this.next(); envelope; envelope = this.next()) envelopes.push(envelope);
    return envelopes;
  }

  /** Buffers a chunk; take its frames with `next()`. */
  append(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** The next complete envelope, or undefined until more bytes arrive; throws AcpError on a bad frame. */
  next(): Envelope | undefined {
    if (this.buffered < HEADER_BYTES) return undefined;
    const length = this.peekLength();
    if (length > this.maxFrameBytes) {
      throw new AcpError('ACP_ERR_WIRE_FRAME_TOO_LARGE', `frame of ${length} bytes exceeds ${this.limitReason} of ${this.maxFrameBytes} bytes`);
    }
    if (this.buffered < HEADER_BYTES + length) return undefined;
    this.advance(HEADER_BYTES);
    return decodeEnvelope(this.consume(length), this.limits);
  }

  /** Bytes held for a frame not yet complete. */
  get pendingBytes(): number {
    return this.buffered;
  }

  private peekLength(): number {
    const first = this.chunks[0]!;
    if (first.length - this.offset >= HEADER_BYTES) return first.readUInt32BE(this.offset);
    return this.consume(HEADER_BYTES, true).readUInt32BE(0);
  }

  /**
   * Takes `count` bytes off the front (or only looks, with `peek`), copying only when they span
   * chunks. The front chunk is read from `offset` on, so taking a frame allocates nothing but the
   * view of its payload.
   */
  private consume(count: number, peek = false): Buffer {
    if (count === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (first.length - this.offset >= count) {
      const out = first.subarray(this.offset, this.offset + count);
      if (!peek) this.advance(count);
      return out;
    }
    const out = Buffer.allocUnsafe(count);
    let filled = 0;
    let index = 0;
    let from = this.offset;
    while (filled < count) {
      const chunk = this.chunks[index]!;
      const take = Math.min(chunk.length - from, count - filled);
      chunk.copy(out, filled, from, from + take);
      filled += take;
      index += 1;
      from = 0;
    }
    if (!peek) this.advance(count);
    return out;
  }

  /** Drops `count` bytes off the front. */
  private advance(count: number): void {
    this.buffered -= count;
    let left = count;
    while (left > 0) {
      const first = this.chunks[0]!;
      const rest = first.length - this.offset;
      if (rest > left) {
        this.offset += left;
        return;
      }
      left -= rest;
      this.chunks.shift();
      this.offset = 0;
    }
  }
}
