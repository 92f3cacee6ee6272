import { AcpError } from './errors.js';

/**
 * A linear, non-recursive pre-scan of a frame's CBOR, run before cbor-x decodes anything. cbor-x
 * speaks all of CBOR, and some of it costs far more than its size: a bignum (tag 2) is decoded in
 * time that grows much faster than its length, shared references (tags 28/29) make cyclic values
 * nothing downstream can walk, deep nesting exhausts the stack, and a declared length is
 * preallocated before its items are read. The protocol uses none of that, so this scan admits only
 * what our own encoder emits (see codec.ts) and refuses the rest, naming what it found and where.
 * It touches each byte at most once and keeps an explicit stack, so refusing costs time linear in
 * the frame's size and constant stack.
 */

export interface CborLimits {
  /** Containers (maps and arrays) nested inside one another, the envelope itself counting as 1. */
  readonly maxDepth: number;
  /** Data items in one frame (every key, value and element counts). */
  readonly maxItems: number;
}

/** A real envelope nests a few levels (envelope, body, a CDB value of at most 32): far below this. */
export const DEFAULT_MAX_DEPTH = 64;
/** A cdb.merge of 10,000 records is about 200,000 items; a frame of 4 MiB cannot hold many more than this. */
export const DEFAULT_MAX_ITEMS = 1_000_000;
export const DEFAULT_CBOR_LIMITS: CborLimits = { maxDepth: DEFAULT_MAX_DEPTH, maxItems: DEFAULT_MAX_ITEMS };

/** Integers above this cannot be represented exactly as JavaScript numbers. */
const MAX_SAFE_HIGH_WORD = 0x1fffff;
/** `__proto__` as UTF-8: refused as a map key (cbor-x renames it; better to say no). */
const PROTO_KEY = [0x5f, 0x5f, 0x70, 0x72, 0x6f, 0x74, 0x6f, 0x5f, 0x5f];

const MAJOR_NAMES = ['an unsigned integer', 'a negative integer', 'a byte string', 'a text string', 'an array', 'a map', 'a tag', 'a simple value or float'] as const;

/** What a tag is, for the refusal message: the ones a hostile or foreign encoder is likely to send. */
function tagName(tag: number): string {
  if (tag === 0 || tag === 1) return 'a date';
  if (tag === 2 || tag === 3) return 'a bignum';
  if (tag === 4 || tag === 5) return 'a decimal or bigfloat';
  if (tag === 27) return 'a serialised object';
  if (tag === 28 || tag === 29) return 'a shared reference';
  if (tag >= 64 && tag <= 87) return 'a typed array';
  if (tag === 258) return 'a set';
  if (tag === 259) return 'a map with non-text keys';
  if (tag >= 0xdf00 && tag <= 0xdfff) return 'a record definition';
  if (tag >= 0xe000 && tag <= 0xe0ff) return 'a record reference';
  if (tag === 6 || tag === 51) return 'a packed value';
  if (tag === 55799) return 'a self-described CBOR marker';
  return 'an extension';
}

function refuse(what: string, offset: number): never {
  throw new AcpError('ACP_ERR_WIRE_BAD_FRAME', `frame refused: ${what} at offset ${offset}; the protocol uses only maps with text keys, arrays, strings, numbers, booleans and null`);
}

/**
 * Throws ACP_ERR_WIRE_BAD_FRAME unless `bytes` is exactly one CBOR map of the kinds the protocol
 * uses, within `limits`. Allowed: integers up to ±2^53, byte and text strings of definite length,
 * arrays and maps (definite or indefinite), text keys, false, true, null, floats, and undefined as
 * a map value only (our encoder writes absent optional fields that way). No tags at all.
 * Returns how many items it holds (a `tells` frame counts its messages' items against one budget).
 */
export function guardCbor(bytes: Uint8Array, limits: CborLimits = DEFAULT_CBOR_LIMITS): number {
  const length = bytes.length;
  // Per open container: items still expected (-1: indefinite, ends with a break), items seen, is a map.
  const remaining: number[] = [];
  const seen: number[] = [];
  const isMap: boolean[] = [];
  let depth = 0;
  let items = 0;
  let pos = 0;
  let started = false;
  for (;;) {
    // Close every definite container that has all its items.
    while (depth > 0 && remaining[depth - 1] === 0) depth -= 1;
    if (depth === 0 && started) break;
    if (pos >= length) refuse(started ? 'the frame ends inside an item' : 'an empty frame', pos);
    const offset = pos;
    const initial = bytes[pos]!;
    const major = initial >> 5;
    const info = initial & 0x1f;
    if (initial === 0xff) {
      if (depth === 0 || remaining[depth - 1] !== -1) refuse('a break outside an indefinite-length item', offset);
      if (isMap[depth - 1] && seen[depth - 1]! % 2 === 1) refuse('a map key without a value', offset);
      pos += 1;
      depth -= 1;
      continue;
    }
    items += 1;
    if (items > limits.maxItems) refuse(`more than ${limits.maxItems} items`, offset);
    const inMap = depth > 0 && isMap[depth - 1] === true;
    const isKey = inMap && seen[depth - 1]! % 2 === 0;
    if (depth > 0) {
      seen[depth - 1]! += 1;
      if (remaining[depth - 1]! > 0) remaining[depth - 1]! -= 1;
    }
    if (!started) {
      started = true;
      // A tag is named by the switch below, with its number.
      if (major !== 5 && major !== 6) throw new AcpError('ACP_ERR_WIRE_BAD_FRAME', `frame is not a valid envelope: envelope: ${MAJOR_NAMES[major]} where a map belongs`);
    }
    if (isKey && major !== 3) refuse(`a map key that is ${MAJOR_NAMES[major]}, not a text string`, offset);
    // The argument: a count, a length or a value, in the initial byte or the 1, 2, 4 or 8 after it.
    let argument = info;
    let high = 0;
    pos += 1;
    if (info >= 24 && info <= 27) {
      const size = 1 << (info - 24);
      if (pos + size > length) refuse('the frame ends inside an item head', offset);
      if (size === 1) argument = bytes[pos]!;
      else if (size === 2) argument = (bytes[pos]! << 8) | bytes[pos + 1]!;
      else if (size === 4) argument = readUint32(bytes, pos);
      else {
        high = readUint32(bytes, pos);
        argument = high * 0x1_0000_0000 + readUint32(bytes, pos + 4);
      }
      pos += size;
    } else if (info >= 28 && info <= 30) {
      refuse(`a reserved additional-information value ${info} (in ${MAJOR_NAMES[major]})`, offset);
    }
    const indefinite = info === 31;
    switch (major) {
      case 0:
      case 1:
        if (indefinite) refuse(`an indefinite-length ${MAJOR_NAMES[major]!.replace(/^an? /, '')}`, offset);
        if (high > MAX_SAFE_HIGH_WORD) refuse('an integer beyond ±2^53 (not exactly representable)', offset);
        break;
      case 2:
      case 3:
        // cbor-x cannot decode indefinite-length strings, and our encoder never writes them.
        if (indefinite) refuse(`an indefinite-length ${MAJOR_NAMES[major]!.replace(/^an? /, '')}`, offset);
        if (argument > length - pos) refuse(`${MAJOR_NAMES[major]} of ${argument} bytes with only ${length - pos} left in the frame`, offset);
        if (isKey && argument === PROTO_KEY.length && PROTO_KEY.every((byte, index) => bytes[pos + index] === byte)) refuse("the map key '__proto__'", offset);
        pos += argument;
        break;
      case 4:
      case 5: {
        if (depth + 1 > limits.maxDepth) refuse(`nesting deeper than ${limits.maxDepth} levels`, offset);
        // Every item takes at least a byte: a count that cannot fit is refused before anything is allocated.
        const needed = major === 5 ? argument * 2 : argument;
        if (!indefinite && needed > length - pos) refuse(`${MAJOR_NAMES[major]} of ${argument} entries with only ${length - pos} bytes left in the frame`, offset);
        remaining[depth] = indefinite ? -1 : needed;
        seen[depth] = 0;
        isMap[depth] = major === 5;
        depth += 1;
        break;
      }
      case 6:
        refuse(`CBOR tag ${argument} (${tagName(argument)})`, offset);
        break;
      case 7:
        if (info === 20 || info === 21 || info === 22 || info === 25 || info === 26 || info === 27) break;
        if (info === 23 && inMap && !isKey) break;
        if (info === 23) refuse('undefined outside a map value', offset);
        refuse(`the simple value ${info === 24 ? argument : info}`, offset);
        break;
      default:
        refuse(`an unknown major type ${major}`, offset);
    }
  }
  if (pos !== length) refuse(`${length - pos} bytes after the envelope`, pos);
  return items;
}

function readUint32(bytes: Uint8Array, pos: number): number {
  return bytes[pos]! * 0x100_0000 + ((bytes[pos + 1]! << 16) | (bytes[pos + 2]! << 8) | bytes[pos + 3]!);
}
