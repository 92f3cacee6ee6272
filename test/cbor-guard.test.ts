import test, { type ExecutionContext } from 'ava';
import { encode } from 'cbor-x';
import { DEFAULT_MAX_DEPTH, guardCbor } from '../runtime/cbor-guard.js';
import { decodeEnvelope, encodeFrame, FrameDecoder, type Envelope } from '../runtime/codec.js';
import { AcpError } from '../runtime/errors.js';
import { deepMapFrame, hex, ISSUE_BIGNUM_FRAME, ISSUE_CYCLIC_FRAME } from './helpers/hostile-inputs.js';

/** `{v:1, k:'tell', body: <item>}`: a valid envelope head, the body's bytes appended. */
const TELL_HEAD = hex('a3 6176 01 616b 6474656c6c 64626f6479');
const tell = (body: Buffer): Buffer => Buffer.concat([TELL_HEAD, body]);

function refused(t: ExecutionContext, payload: Uint8Array, pattern: RegExp): void {
  const error = t.throws(() => decodeEnvelope(payload), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_WIRE_BAD_FRAME');
  t.regex(error?.message ?? '', pattern);
}

const deepMap = (levels: number): Buffer => deepMapFrame(levels).subarray(4);

test('the bignum of issue 11 is refused at once, naming the tag and its offset', (t) => {
  const started = performance.now();
  const error = t.throws(() => new FrameDecoder().push(ISSUE_BIGNUM_FRAME), { instanceOf: AcpError });
  t.true(performance.now() - started < 50, 'refused without decoding');
  t.is(error?.code, 'ACP_ERR_WIRE_BAD_FRAME');
  t.is(error?.message.startsWith('frame refused: CBOR tag 2 (a bignum) at offset 0'), true, error?.message);
  // Before a hello the length alone is too much.
  const early = new FrameDecoder();
  early.setFrameLimit(64 * 1024, 'the limit before a hello');
  const tooLarge = t.throws(() => early.push(ISSUE_BIGNUM_FRAME), { instanceOf: AcpError });
  t.is(tooLarge?.code, 'ACP_ERR_WIRE_FRAME_TOO_LARGE');
  t.regex(tooLarge?.message ?? '', /before a hello of 65536 bytes/);
});

test('the self-referencing put of issue 11 is refused: shared references are tags', (t) => {
  const error = t.throws(() => new FrameDecoder().push(ISSUE_CYCLIC_FRAME), { instanceOf: AcpError });
  t.regex(error?.message ?? '', /CBOR tag 28 \(a shared reference\) at offset 105/);
});

test('nesting is bounded: 4,000 levels are refused, a real depth passes, the bound is configurable', (t) => {
  refused(t, deepMap(4000), new RegExp(`nesting deeper than ${DEFAULT_MAX_DEPTH} levels`));
  refused(t, deepMap(DEFAULT_MAX_DEPTH), /nesting deeper/);
  t.notThrows(() => decodeEnvelope(deepMap(DEFAULT_MAX_DEPTH - 1)));
  t.throws(() => decodeEnvelope(deepMap(10), { maxDepth: 8, maxItems: 1000 }), { message: /deeper than 8/ });
  const arrays = tell(Buffer.concat([Buffer.alloc(5000, 0x81), hex('00')]));
  refused(t, arrays, /nesting deeper/);
});

test('every tag is refused, named', (t) => {
  const cases: Array<[string, RegExp]> = [
    ['c1 00', /tag 1 \(a date\)/],
    ['c3 41 01', /tag 3 \(a bignum\)/],
    ['d8 1c a0', /tag 28 \(a shared reference\)/],
    ['d8 1d 00', /tag 29 \(a shared reference\)/],
    ['d8 48 41 01', /tag 72 \(a typed array\)/],
    ['d9 0102 80', /tag 258 \(a set\)/],
    ['d9 dfff 80', /tag 57343 \(a record definition\)/],
    ['d9 e000 80', /tag 57344 \(a record reference\)/],
    ['d9 d9f7 a0', /tag 55799/],
    ['db 0000000100000000 00', /tag 4294967296 \(an extension\)/],
  ];
  for (const [body, pattern] of cases) refused(t, tell(hex(body)), pattern);
  // Our own encoder writes these as tags: they never reach the wire from our code, and are refused.
  refused(t, encode({ v: 1, k: 'tell', body: new Date(0) }), /tag 1/);
  refused(t, encode({ v: 1, k: 'tell', body: new Float64Array([1]) }), /typed array/);
  refused(t, encode({ v: 1, k: 'tell', body: new Map([[1, 2]]) }), /tag 259/);
});

test('only the simple values the protocol uses pass; undefined only as a map value', (t) => {
  t.deepEqual(decodeEnvelope(tell(hex('a2 6161 f4 6162 f6'))).body, { a: false, b: null });
  t.deepEqual(decodeEnvelope(tell(hex('a1 6161 f5'))).body, { a: true });
  t.deepEqual(decodeEnvelope(tell(hex('83 f93c00 fa3fc00000 fb3ff8000000000000'))).body, [1, 1.5, 1.5]);
  t.deepEqual(decodeEnvelope(tell(hex('a1 6161 f7'))).body, { a: undefined });
  refused(t, tell(hex('81 f7')), /undefined outside a map value/);
  t.is(decodeEnvelope(tell(hex('f7'))).body, undefined);
  refused(t, tell(hex('f0')), /simple value 16/);
  refused(t, tell(hex('f8 ff')), /simple value 255/);
});

test('malformed structure is refused before cbor-x allocates anything', (t) => {
  refused(t, tell(hex('9b 00000000ffffffff')), /array of 4294967295 entries with only 0 bytes left/);
  refused(t, tell(hex('ba 7fffffff')), /map of 2147483647 entries/);
  refused(t, tell(hex('5a 7fffffff')), /byte string of 2147483647 bytes with only 0 left/);
  refused(t, tell(hex('7a 00100000 6161')), /text string of 1048576 bytes/);
  refused(t, tell(hex('1c')), /reserved additional-information value 28/);
  refused(t, tell(hex('7f 6161 ff')), /indefinite-length text string/);
  refused(t, tell(hex('5f 4161 ff')), /indefinite-length byte string/);
  refused(t, tell(hex('ff')), /a break outside an indefinite-length item/);
  refused(t, tell(hex('a1 01 02')), /map key that is an unsigned integer/);
  refused(t, tell(hex('a1 a0 02')), /map key that is a map/);
  refused(t, tell(hex('a1 695f5f70726f746f5f5f 01')), /'__proto__'/);
  refused(t, tell(hex('1b 0020000000000000')), /beyond ±2\^53/);
  refused(t, tell(hex('bf 6161 ff')), /map key without a value/);
  refused(t, Buffer.concat([tell(hex('00')), hex('00')]), /1 bytes after the envelope/);
  refused(t, tell(hex('82 00')), /array of 2 entries with only 1 bytes left/);
  refused(t, tell(hex('bf 6161')), /ends inside an item/);
  refused(t, Buffer.alloc(0), /an empty frame/);
});

test('what other encoders may write, within the protocol, decodes', (t) => {
  // Indefinite-length arrays and maps, and a 64-bit integer within 2^53 (a number, never a BigInt).
  t.deepEqual(decodeEnvelope(tell(hex('bf 6161 9f 01 02 ff 6162 1b 001fffffffffffff ff'))).body, { a: [1, 2], b: 2 ** 53 - 1 });
  t.deepEqual(decodeEnvelope(tell(hex('3b 001ffffffffffffe'))).body, -(2 ** 53) + 1);
});

test('the items of a frame are bounded', (t) => {
  const body = Buffer.concat([hex('9a 00002710'), Buffer.alloc(10_000, 0)]);
  t.notThrows(() => decodeEnvelope(tell(body), { maxDepth: 64, maxItems: 20_000 }));
  t.throws(() => decodeEnvelope(tell(body), { maxDepth: 64, maxItems: 5_000 }), { message: /more than 5000 items/ });
});

test('everything our encoder writes passes the guard unchanged', (t) => {
  const envelopes: Envelope[] = [
    { v: 1, k: 'ping', id: 1 },
    { v: 1, k: 'reply', id: 'x', body: { type: 'cdb.records', records: [{ key: 'object/node/n1', value: { name: 'n1', n: 2 ** 40, f: -1.25, deep: { a: [[[]]] } }, version: '1.0@n1', origin: 'n1' }] } },
    { v: 1, k: 'tell', body: { bytes: Buffer.from([0, 255]), empty: '', unicode: 'ü€😀', neg: -(2 ** 31) } },
    { v: 1, k: 'error', id: 3, err: { code: 'ACP_ERR_INTERNAL', kind: 'internal', message: 'x' } },
  ];
  for (const envelope of envelopes) {
    const frame = encodeFrame({ ...envelope, to: undefined } as Envelope);
    t.notThrows(() => guardCbor(frame.subarray(4)));
    t.deepEqual(JSON.stringify(decodeEnvelope(frame.subarray(4))), JSON.stringify(envelope));
  }
});

/**
 * Refusing costs time linear in the frame's size: hostile 4 MiB frames of each kind are refused
 * quickly, and 4 times the bytes cost no more than about 4 times the time (with slack for a
 * loaded machine).
 */
test('refusing a frame costs time linear in its size', (t) => {
  const hostile = (size: number): Buffer[] => [
    Buffer.concat([hex('c2 5a'), u32(size), Buffer.alloc(size, 0xff)]),
    tell(Buffer.concat([Buffer.alloc(size, 0x81)])),
    tell(Buffer.concat([hex('9a'), u32(size), Buffer.alloc(size - 1, 0), hex('d8 1c 00')])),
    tell(Buffer.concat([hex('9a'), u32(size / 4), Buffer.from(Array.from({ length: size / 4 - 1 }, () => [0xa1, 0x61, 0x61, 0x00]).flat()), hex('c2 41 01')])),
  ];
  const cost = (size: number): number => {
    let worst = 0;
    for (const frame of hostile(size)) {
      const started = performance.now();
      t.throws(() => decodeEnvelope(frame), { instanceOf: AcpError });
      worst = Math.max(worst, performance.now() - started);
    }
    return worst;
  };
  cost(1 << 18); // warm up
  const small = cost(1 << 20);
  const large = cost(1 << 22);
  t.log(`worst refusal: ${small.toFixed(1)} ms for 1 MiB, ${large.toFixed(1)} ms for 4 MiB`);
  t.true(large < 500, `a 4 MiB frame is refused in ${large.toFixed(1)} ms`);
  t.true(large < small * 8 + 20, 'no worse than linear');
});

function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value);
  return out;
}

test('frames are taken one at a time, each against the limit in force', (t) => {
  const decoder = new FrameDecoder(1 << 20);
  decoder.setFrameLimit(64, 'the limit before a hello');
  const hello = encodeFrame({ v: 1, k: 'hello', body: { a: 1 } });
  const big = encodeFrame({ v: 1, k: 'tell', body: 'x'.repeat(1000) });
  decoder.append(Buffer.concat([hello, big]));
  t.is(decoder.next()?.k, 'hello');
  decoder.setFrameLimit(1 << 20, "this listener's limit");
  t.is(decoder.next()?.k, 'tell');
  t.is(decoder.next(), undefined);
});
