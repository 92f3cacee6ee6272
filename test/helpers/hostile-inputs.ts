/** Hostile inputs shared by the codec, listener and fuzz tests (issue 11's, byte for byte). */

export const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');

/** One CBOR bignum (tag 2) of 160 KiB, sent before any hello: cbor-x took seconds to decode it. */
export const ISSUE_BIGNUM_FRAME = Buffer.concat([hex('00028006 c2 5a00028000'), Buffer.alloc(163_840, 0xff)]);

/**
 * After a hello: an ask of `cdb.put` to meta/network/fzcyclic@wirefuzz whose value refers to itself
 * through CBOR's shared-reference tags (28/29). Its `to` names the node `wirefuzz`.
 */
export const ISSUE_CYCLIC_FRAME = hex(
  '00000076a6617601616b6361736b626964182d62746f78186163703a2f2f6c6f63616c2f7769726566757a7a2f63646264626f6479a36474797065676364622e707574636b6579781e6d6574612f6e6574776f726b2f667a6379636c6963407769726566757a7a6576616c7565d81ca16161d81d006174191388',
);

/** The bad node names of issue 11's hellos. */
export const ISSUE_BAD_NAMES = ['', '\u0000', '"', 'A', '*'];

function frameOf(payload: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length);
  return Buffer.concat([header, payload]);
}

/** A tell whose body is `{a:{a:{...0}}}`, `levels` maps deep (issue 11 used 4,000). */
export function deepMapFrame(levels: number): Buffer {
  const head = hex('a3 6176 01 616b 6474656c6c 64626f6479');
  return frameOf(Buffer.concat([head, Buffer.from(Array.from({ length: levels }, () => [0xa1, 0x61, 0x61]).flat()), hex('00')]));
}

/** The same depth as an ask of cdb.put to `key` at `to`, answered on `id`. */
export function deepPutFrame(levels: number, to: string, key: string, id: number): Buffer {
  const enc = (text: string): Buffer => {
    const bytes = Buffer.from(text);
    if (bytes.length < 24) return Buffer.concat([Buffer.from([0x60 + bytes.length]), bytes]);
    return Buffer.concat([Buffer.from([0x78, bytes.length]), bytes]);
  };
  const head = Buffer.concat([
    hex('a5'), enc('v'), hex('01'), enc('k'), enc('ask'), enc('id'), Buffer.from([0x19, id >> 8, id & 0xff]), enc('to'), enc(to),
    enc('body'), hex('a3'), enc('type'), enc('cdb.put'), enc('key'), enc(key), enc('value'),
  ]);
  return frameOf(Buffer.concat([head, Buffer.from(Array.from({ length: levels }, () => [0xa1, 0x61, 0x61]).flat()), hex('00')]));
}
