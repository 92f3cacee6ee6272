import { encode } from 'cbor-x';
import { PROTOCOL_VERSION } from '../../runtime/codec.js';
import { SERVICE_TYPES } from '../../actors/model.js';
import { ISSUE_BAD_NAMES, ISSUE_BIGNUM_FRAME, ISSUE_CYCLIC_FRAME } from './hostile-inputs.js';

/**
 * A seeded generator of hostile frames for the fuzz test: the same seed gives the same frames,
 * so a failure is replayed with ACP_FUZZ_SEED.
 */
export class Rng {
  private state: number;

  constructor(readonly seed: number) {
    this.state = seed >>> 0 || 1;
  }

  /** mulberry32: small, fast, and good enough to pick cases. */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let x = this.state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4_294_967_296;
  }

  int(below: number): number {
    return Math.floor(this.next() * below);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  bytes(count: number): Buffer {
    const out = Buffer.alloc(count);
    for (let i = 0; i < count; i += 1) out[i] = this.int(256);
    return out;
  }

  /** A size skewed towards small, sometimes large. */
  size(max: number): number {
    return Math.floor(max ** this.next());
  }
}

export interface FuzzCase {
  readonly kind: string;
  /** Say a good hello before sending `bytes`. */
  readonly greet: boolean;
  readonly bytes: Buffer;
}

export interface FuzzTarget {
  readonly cluster: string;
  readonly node: string;
  readonly apiKey: string;
  /** The canary's key: never written by a case. */
  readonly canaryKey: string;
}

function frame(payload: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length);
  return Buffer.concat([header, payload]);
}

/** A CBOR head: major type, argument. */
function head(major: number, argument: number): Buffer {
  if (argument < 24) return Buffer.from([(major << 5) | argument]);
  if (argument < 0x100) return Buffer.from([(major << 5) | 24, argument]);
  if (argument < 0x10000) return Buffer.from([(major << 5) | 25, argument >> 8, argument & 0xff]);
  const out = Buffer.alloc(5);
  out[0] = (major << 5) | 26;
  out.writeUInt32BE(argument >>> 0, 1);
  return out;
}

const text = (value: string): Buffer => Buffer.concat([head(3, Buffer.byteLength(value)), Buffer.from(value)]);

/** `{v:1, k, id, to, body: <raw>}` with `body` given as raw CBOR bytes. */
function envelopeWithRawBody(kind: string, to: string, body: Buffer, id = 1): Buffer {
  return frame(Buffer.concat([head(5, 5), text('v'), head(0, 1), text('k'), text(kind), text('id'), head(0, id), text('to'), text(to), text('body'), body]));
}

/** Random CBOR items: any major type, any tag, any length claim; nested a little. */
function randomItem(rng: Rng, depth = 0): Buffer {
  const major = rng.int(8);
  const small = rng.int(30);
  switch (major) {
    case 0:
    case 1:
      return rng.chance(0.1) ? Buffer.concat([Buffer.from([(major << 5) | 27]), rng.bytes(8)]) : head(major, rng.size(1 << 20));
    case 2:
    case 3: {
      const length = rng.size(4096);
      const claimed = rng.chance(0.1) ? length + rng.size(1 << 30) : length;
      return Buffer.concat([head(major, claimed), major === 3 ? Buffer.from('x'.repeat(length)) : rng.bytes(length)]);
    }
    case 4:
    case 5: {
      const count = depth > 4 ? 0 : rng.int(5);
      const parts = [rng.chance(0.1) ? Buffer.from([(major << 5) | 31]) : head(major, count)];
      for (let i = 0; i < count * (major === 5 ? 2 : 1); i += 1) parts.push(rng.chance(0.5) && major === 5 && i % 2 === 0 ? text(`k${i}`) : randomItem(rng, depth + 1));
      if (parts[0]!.length === 1 && (parts[0]![0]! & 31) === 31) parts.push(Buffer.from([0xff]));
      return Buffer.concat(parts);
    }
    case 6:
      return Buffer.concat([head(6, rng.pick([0, 1, 2, 3, 4, 5, 21, 27, 28, 29, 64, 72, 258, 259, 0xdfff, 0xe000, 55799, rng.size(1 << 20)])), depth > 4 ? head(0, 1) : randomItem(rng, depth + 1)]);
    default:
      return Buffer.from([0xe0 | (rng.chance(0.5) ? small : rng.pick([20, 21, 22, 23, 24, 25, 26, 27, 31]))]);
  }
}

function deep(rng: Rng, levels: number): Buffer {
  const open = rng.pick([[0x81], [0xa1, 0x61, 0x61], [0x9f], [0xbf, 0x61, 0x61]]);
  const indefinite = open[0] === 0x9f || open[0] === 0xbf;
  return Buffer.concat([Buffer.from(Array.from({ length: levels }, () => open).flat()), Buffer.from([0x00]), Buffer.alloc(indefinite ? levels : 0, 0xff)]);
}

const WRONG_VALUES: readonly unknown[] = [null, true, 0, -1, 1.5, '', 'x'.repeat(2000), [], {}, [1, [2, [3]]], { a: { b: 'c' } }, Buffer.from([1, 2, 3])];

/**
 * Message types for every service: unknown ones, and known ones with wrong or missing fields.
 * Types that change the node's state for good (shutdown, renew, token, faults) are left out:
 * the invariants are about hostile input, not an operator's own requests.
 */
const KNOWN_TYPES = ['ping', 'status', 'service.info', 'cdb.get', 'cdb.list', 'cdb.put', 'cdb.cas', 'cdb.batch', 'cdb.merge', 'cdb.watch', 'cdb.history', 'cdb.hash', 'cdb.sync', 'cdb.sync.repair', 'cdb.sync.snapshot', 'agent.lookup', 'agent.sign', 'agent.identify', 'api.connections', 'system.start', 'system.stop', 'system.migrate', 'system.incoming', 'vmm.start'];

export function generateCase(rng: Rng, target: FuzzTarget): FuzzCase {
  const services = [...SERVICE_TYPES, 'nobody', 'hypervisor/vmm/fz'];
  const path = (): string => `acp://${target.cluster}/${rng.chance(0.9) ? target.node : rng.pick(['@primary', 'elsewhere', 'n9'])}/${rng.pick(services)}`;
  const fzKey = (): string => `${rng.pick(['meta', 'object', 'stats'])}/${rng.pick(['network', 'node', 'system', 'service/cdb'])}/fz${rng.int(1000)}${rng.chance(0.5) ? `@${target.node}` : ''}`;
  const hello = (overrides: Record<string, unknown> = {}): Buffer => frame(Buffer.from(encode({ v: 1, k: 'hello', body: { cluster: target.cluster, apiKey: target.apiKey, proto: PROTOCOL_VERSION, ...overrides } })));
  const ask = (body: unknown, extra: Record<string, unknown> = {}): Buffer => frame(Buffer.from(encode({ v: 1, k: 'ask', id: rng.int(1 << 20), to: path(), body, ...extra })));
  const kind = rng.pick([
    'random-bytes', 'random-cbor', 'bignum', 'tags', 'shared-ref', 'deep', 'huge-string', 'wrong-field-types',
    'unknown-kind', 'unknown-type', 'bad-fields', 'bad-hello', 'cdb-values', 'truncated', 'many-items', 'issue-inputs',
  ] as const);
  const greet = kind === 'bad-hello' ? false : rng.chance(0.7);
  switch (kind) {
    case 'random-bytes':
      return { kind, greet, bytes: rng.chance(0.5) ? rng.bytes(rng.size(8192)) : frame(rng.bytes(rng.size(8192))) };
    case 'random-cbor':
      return { kind, greet, bytes: frame(randomItem(rng)) };
    case 'bignum': {
      const size = rng.size(512 * 1024);
      return { kind, greet, bytes: envelopeWithRawBody('tell', path(), Buffer.concat([head(6, rng.pick([2, 3])), head(2, size), Buffer.alloc(size, 0xff)])) };
    }
    case 'tags':
      return { kind, greet, bytes: envelopeWithRawBody(rng.pick(['tell', 'ask']), path(), Buffer.concat([head(6, rng.size(1 << 24)), randomItem(rng)])) };
    case 'shared-ref':
      return { kind, greet, bytes: envelopeWithRawBody('ask', `acp://${target.cluster}/${target.node}/cdb`, Buffer.concat([Buffer.from([0xd8, 0x1c]), head(5, 3), text('type'), text('cdb.put'), text('key'), text(fzKey()), text('value'), Buffer.from([0xd8, 0x1d, 0x00])])) };
    case 'deep':
      return { kind, greet, bytes: envelopeWithRawBody('ask', path(), deep(rng, 60 + rng.size(6000))) };
    case 'huge-string': {
      const length = rng.size(2 * 1024 * 1024);
      return { kind, greet, bytes: rng.chance(0.3) ? envelopeWithRawBody('tell', path(), head(3, 0x7fffffff)) : ask({ type: rng.pick(KNOWN_TYPES), key: 'k'.repeat(length), value: 'v'.repeat(length) }) };
    }
    case 'wrong-field-types': {
      const envelope: Record<string, unknown> = { v: 1, k: 'ask', id: 1, to: path(), body: { type: 'ping' } };
      for (const field of ['v', 'k', 'id', 'to', 'body', 'from', 'err', 't']) if (rng.chance(0.4)) envelope[field] = rng.pick(WRONG_VALUES);
      return { kind, greet, bytes: frame(Buffer.from(encode(envelope))) };
    }
    case 'unknown-kind':
      return { kind, greet, bytes: frame(Buffer.from(encode({ v: 1, k: rng.pick(['shout', 'HELLO', '', 'x'.repeat(300), 'tell ']), id: 1, to: path(), body: { type: 'ping' } }))) };
    case 'unknown-type':
      return { kind, greet, bytes: ask({ type: `${rng.pick(services)}.${rng.pick(['nope', 'drop', 'x'.repeat(rng.size(5000))])}` }) };
    case 'bad-fields': {
      const body: Record<string, unknown> = { type: rng.pick(KNOWN_TYPES) };
      for (const field of ['key', 'value', 'prefix', 'limit', 'cursor', 'ops', 'records', 'id', 'to', 'node', 'subscriber', 'expect', 'csr', 'address', 'payload']) if (rng.chance(0.3)) body[field] = rng.pick(WRONG_VALUES);
      return { kind, greet, bytes: rng.chance(0.5) ? ask(body) : frame(Buffer.from(encode({ v: 1, k: rng.pick(['tell', 'watch']), id: 2, to: path(), body }))) };
    }
    case 'bad-hello': {
      const overrides: Record<string, unknown> = rng.pick<Record<string, unknown>>([
        { node: rng.pick(ISSUE_BAD_NAMES) },
        { cluster: rng.pick([...ISSUE_BAD_NAMES, 'other']) },
        { apiKey: rng.pick(WRONG_VALUES) },
        { proto: rng.pick(WRONG_VALUES) },
        { node: 'n'.repeat(rng.size(100_000)) },
        { role: rng.pick(WRONG_VALUES) },
      ]);
      return { kind, greet, bytes: hello(overrides) };
    }
    case 'cdb-values': {
      let value: unknown = rng.chance(0.5) ? Number.NaN : 'leaf';
      for (let i = rng.size(200); i > 0; i -= 1) value = rng.chance(0.5) ? [value] : { a: value };
      const op = rng.pick(['cdb.put', 'cdb.batch', 'cdb.merge'] as const);
      const key = fzKey();
      const body =
        op === 'cdb.put' ? { type: op, key, value } : op === 'cdb.batch' ? { type: op, ops: [{ op: 'put', key, value }] } : { type: op, records: [{ key, value, version: { wall: 1, logical: 0, node: target.node }, origin: target.node }] };
      return { kind, greet, bytes: frame(Buffer.from(encode({ v: 1, k: 'ask', id: 3, to: `acp://${target.cluster}/${target.node}/cdb`, body }))) };
    }
    case 'truncated': {
      const whole = ask({ type: 'ping' });
      return { kind, greet, bytes: whole.subarray(0, 1 + rng.int(whole.length - 1)) };
    }
    case 'many-items': {
      const count = 900_000 + rng.int(300_000);
      return { kind, greet, bytes: envelopeWithRawBody('tell', path(), Buffer.concat([head(4, count), Buffer.alloc(count, 0)])) };
    }
    case 'issue-inputs':
      return { kind, greet, bytes: rng.pick([ISSUE_BIGNUM_FRAME, ISSUE_CYCLIC_FRAME]) };
    default: {
      const unreachable: never = kind;
      return unreachable;
    }
  }
}
