import test, { type ExecutionContext } from 'ava';
import { compareVersions, formatVersion, HybridClock, parseVersion, type Version } from '../actors/cdb/hlc.js';
import { MemoryTable } from '../actors/cdb/memory.js';
import { cdbSchema, parseCdbMessage } from '../actors/cdb/schema.js';
import { checkPrefix, OBJECT_TYPES, parseKey, parseKeyUncached, SERVICE_TYPES, STORAGE_TYPES, validateObject, type ParsedKey } from '../actors/model.js';
import type { StoredRecord } from '../adapters/store.js';
import { AcpError, type ErrorCode } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';

/** A call that must throw an AcpError with `code` whose message matches every pattern. */
function throwsAcp(t: ExecutionContext, work: () => unknown, code: ErrorCode, ...patterns: RegExp[]): AcpError {
  const error = t.throws(work, { instanceOf: AcpError });
  if (!(error instanceof AcpError)) throw new Error('did not throw an AcpError');
  t.is(error.code, code, error.message);
  for (const pattern of patterns) t.regex(error.message, pattern);
  return error;
}

const key = (text: string): ParsedKey => parseKey(text);

// ---------------------------------------------------------------- parseKey

test('parseKey: every object type parses, with its id and no node', (t) => {
  t.is(OBJECT_TYPES.length, 9 + STORAGE_TYPES.length + SERVICE_TYPES.length);
  for (const type of OBJECT_TYPES) {
    // A volume's id is its pool and its name.
    const id = type === 'storage/volume' ? 'pool-1/web-1.a_b' : 'web-1.a_b';
    const parsed = parseKey(`object/${type}/${id}`);
    t.deepEqual(parsed, { key: `object/${type}/${id}`, kind: 'object', type, id }, type);
    t.false('node' in parsed, type);
  }
});

test('parseKey: every type parses as meta and stats, with the writer node after the last @', (t) => {
  for (const kind of ['meta', 'stats'] as const) {
    for (const type of OBJECT_TYPES) {
      const id = type === 'storage/volume' ? 'p1/x1' : 'x1';
      t.deepEqual(parseKey(`${kind}/${type}/${id}@n1`), { key: `${kind}/${type}/${id}@n1`, kind, type, id, node: 'n1' }, `${kind} ${type}`);
    }
  }
  t.deepEqual(parseKey('meta/service/cdb/n1@n1'), { key: 'meta/service/cdb/n1@n1', kind: 'meta', type: 'service/cdb', id: 'n1', node: 'n1' });
  // A name can be 63 characters, the id and the node alike.
  const long = `a${'b'.repeat(62)}`;
  t.is(parseKey(`stats/node/${long}@${long}`).node, long);
});

test('parseKey: an empty, over-long or unknown-kind key is ACP_ERR_CDB_BAD_KEY saying so', (t) => {
  throwsAcp(t, () => key(''), 'ACP_ERR_CDB_BAD_KEY', /empty/);
  throwsAcp(t, () => key(`object/network/${'a'.repeat(600)}`), 'ACP_ERR_CDB_BAD_KEY', /longer than 512/);
  for (const bad of ['objects/network/a', 'Object/network/a', 'network/a', '/object/network/a', 'config/node/a']) {
    throwsAcp(t, () => key(bad), 'ACP_ERR_CDB_BAD_KEY', /must start with object\/, meta\/ or stats\//, new RegExp(JSON.stringify(bad).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')));
  }
});

test('parseKey: an unknown type (including unknown storage/ and service/ sub-types) names the type and lists the known ones', (t) => {
  for (const [bad, type] of [
    ['object/vm/a', 'vm'],
    ['object/Network/a', 'Network'],
    ['object/storage/disk/a', 'storage/disk'],
    ['object/service/nosuch/n1', 'service/nosuch'],
    ['meta/storage/a@n1', 'storage/a@n1'],
    ['stats/gpu/a@n1', 'gpu'],
    ['object', ''],
  ] as const) {
    throwsAcp(t, () => key(bad), 'ACP_ERR_CDB_BAD_KEY', new RegExp(`unknown type '${type.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}'`), /types are node, system, network, token, revocation, alarm, alarm-target, storage\/device/);
  }
});

test('parseKey: a missing id, @node on an object key, or a missing/invalid node on meta and stats', (t) => {
  throwsAcp(t, () => key('object/network/'), 'ACP_ERR_CDB_BAD_KEY', /id is missing/);
  throwsAcp(t, () => key('object/network'), 'ACP_ERR_CDB_BAD_KEY', /id is missing/);
  throwsAcp(t, () => key('object/service/cdb'), 'ACP_ERR_CDB_BAD_KEY', /id is missing/);
  throwsAcp(t, () => key('object/network/lan@n1'), 'ACP_ERR_CDB_BAD_KEY', /object keys carry no '@node'/);
  throwsAcp(t, () => key('meta/node/n1'), 'ACP_ERR_CDB_BAD_KEY', /meta keys end with '@<node>'/);
  throwsAcp(t, () => key('stats/node/n1'), 'ACP_ERR_CDB_BAD_KEY', /stats keys end with '@<node>'/);
  throwsAcp(t, () => key('meta/node/n1@'), 'ACP_ERR_CDB_BAD_KEY', /'' is not a valid node name/);
  throwsAcp(t, () => key('meta/node/n1@N1'), 'ACP_ERR_CDB_BAD_KEY', /'N1' is not a valid node name/);
  throwsAcp(t, () => key(`stats/node/n1@${'a'.repeat(64)}`), 'ACP_ERR_CDB_BAD_KEY', /is not a valid node name/);
});

test('parseKey: an invalid id names the id', (t) => {
  for (const [bad, id] of [
    ['object/network/LAN', 'LAN'],
    ['object/network/-lan', '-lan'],
    ['object/network/a/b', 'a/b'],
    ['object/network/a b', 'a b'],
    [`object/network/${'a'.repeat(64)}`, 'a'.repeat(64)],
    ['meta/node/@n1', ''],
    ['meta/node/a@b@n1', 'a@b'],
    ['stats/storage/pool/Big@n1', 'Big'],
  ] as const) {
    throwsAcp(t, () => key(bad), 'ACP_ERR_CDB_BAD_KEY', new RegExp(`id '${id.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}' is not a valid name`));
  }
});

test('checkPrefix: leading parts of a key and the empty prefix pass; anything else is ACP_ERR_CDB_BAD_KEY', (t) => {
  for (const good of ['', 'o', 'object', 'object/', 'object/network/', 'meta/', 'stats/node/n1@']) t.is(checkPrefix(good), good);
  throwsAcp(t, () => checkPrefix('foo/'), 'ACP_ERR_CDB_BAD_KEY', /bad prefix "foo\/"/);
  throwsAcp(t, () => checkPrefix('x'.repeat(513)), 'ACP_ERR_CDB_BAD_KEY', /too long/);
});

// ---------------------------------------------------------------- validateObject

test('validateObject: a valid value of every type passes', (t) => {
  const valid: Record<string, unknown> = {
    node: { name: 'a', cluster: 'lab', agent: '10.0.0.1:7000', labels: { rack: 'r1' } },
    system: { name: 'a', vcpus: 2, memoryMiB: 1024, driver: 'sim', boot: { disk: '/d.img' }, nics: [{ network: 'lan', mac: '52:54:00:12:34:56' }] },
    network: { name: 'a', type: 'bridge', mtu: 1500 },
    'storage/device': { name: 'a', node: 'n1', path: '/dev/sdb', sizeBytes: 1 },
    'storage/pool': { name: 'a', type: 'dir', path: '/var/pool' },
    'storage/share': { name: 'a', type: 'sshfs', server: 'files.lab', path: '/srv' },
    'storage/volume': { name: 'a', pool: 'p', sizeBytes: 1024 },
    revocation: { name: 'a', revokedAt: '2026-11-30T00:00:00.000Z' },
    'alarm-target': { name: 'a', webhook: 'http://127.0.0.1:9000/hook', minSeverity: 'critical', bearer: 'x' },
    ha: { name: 'a', term: 3, by: 'n2', at: '2026-11-30T00:00:00.000Z', systems: { web: { state: 'started', node: 'n1', target: null, home: null, relocates: 0, tried: [] } } },
    chaos: { name: 'a', run: 'run-0a1b2c3d', seq: 7, via: 'n2' },
    alarm: { name: 'a', ...{ rule: 'node-down', subject: 'n3', severity: 'critical', open: true, term: 3, by: 'n2', raisedAt: '2026-11-30T00:00:00.000Z', clearedAt: null, detail: 'silent 1100 ms', history: [] } },
  };
  for (const type of OBJECT_TYPES) {
    if (type === 'token') continue;
    const value = type.startsWith('service/') ? { node: 'a', isolation: 'inline' } : valid[type];
    t.truthy(value, type);
    t.notThrows(() => validateObject(key(type === 'storage/volume' ? 'object/storage/volume/p/a' : `object/${type}/a`), value), type);
  }
  const token = { id: 'abcdef012345', role: 'auditor', hash: 'a'.repeat(64), createdAt: '2026-11-30T00:00:00.000Z', expiresAt: null };
  t.notThrows(() => validateObject(key('object/token/abcdef012345'), token));
});

test('validateObject: system defaults are applied', (t) => {
  const stored = validateObject(key('object/system/vm1'), { name: 'vm1' });
  t.deepEqual(stored, { name: 'vm1', vcpus: 1, memoryMiB: 512, driver: 'qemu', disks: [], nics: [], ha: false, restart: 'on-crash' });
  // Given fields win over defaults.
  t.like(validateObject(key('object/system/vm1'), { name: 'vm1', vcpus: 4, ha: true }), { vcpus: 4, ha: true, memoryMiB: 512 });
  t.like(validateObject(key('object/storage/volume/p/v'), { name: 'v', pool: 'p', sizeBytes: 0 }), { format: 'qcow2' });
  t.like(validateObject(key('object/storage/pool/p'), { name: 'p', type: 'dir', path: '/srv/p' }), { shared: false, content: ['images'] });
});

test('validateObject: a vlan or vpp-vlan network needs a vlan id; the error names the field', (t) => {
  for (const type of ['vlan', 'vpp-vlan']) {
    throwsAcp(t, () => validateObject(key('object/network/v'), { name: 'v', type }), 'ACP_ERR_CDB_BAD_VALUE', /field 'vlan'/, new RegExp(`a ${type} network needs a vlan id`), /object\/network\/v/);
    t.deepEqual(validateObject(key('object/network/v'), { name: 'v', type, vlan: 10 }), { name: 'v', type, vlan: 10 });
  }
  t.notThrows(() => validateObject(key('object/network/b'), { name: 'b', type: 'bridge' }));
  throwsAcp(t, () => validateObject(key('object/network/v'), { name: 'v', type: 'vlan', vlan: 4095 }), 'ACP_ERR_CDB_BAD_VALUE', /field 'vlan'/);
  throwsAcp(t, () => validateObject(key('object/network/v'), { name: 'v', type: 'vlan', vlan: 0 }), 'ACP_ERR_CDB_BAD_VALUE', /field 'vlan'/);
  throwsAcp(t, () => validateObject(key('object/network/v'), { name: 'v', type: 'ovs' }), 'ACP_ERR_CDB_BAD_VALUE', /field 'type'/);
  throwsAcp(t, () => validateObject(key('object/network/v'), { name: 'v', type: 'bridge', mtu: 100 }), 'ACP_ERR_CDB_BAD_VALUE', /field 'mtu'/);
});

test('validateObject: a name (or, for services, a node) that differs from the key id is rejected naming the field', (t) => {
  for (const type of OBJECT_TYPES) {
    if (type.startsWith('service/')) {
      throwsAcp(t, () => validateObject(key(`object/${type}/n1`), { node: 'n2' }), 'ACP_ERR_CDB_BAD_VALUE', /field 'node'/, /'n2' differs from the key's id 'n1'/);
      continue;
    }
    if (type === 'token') {
      const token = { id: 'abcdef012345', role: 'auditor', hash: 'a'.repeat(64), createdAt: '2026-11-30T00:00:00.000Z', expiresAt: null };
      throwsAcp(t, () => validateObject(key('object/token/bbbbbbbbbbbb'), token), 'ACP_ERR_CDB_BAD_VALUE', /field 'id'/, /differs from the key's id 'bbbbbbbbbbbb'/);
      continue;
    }
    const base: Record<string, Record<string, unknown>> = {
      node: {},
      system: {},
      network: { type: 'bridge' },
      'storage/device': { node: 'n1', path: '/dev/x' },
      'storage/pool': { type: 'dir', path: '/p' },
      'storage/share': { type: 'nfs', server: 'files', path: '/s' },
      'storage/volume': { pool: 'p', sizeBytes: 1 },
      revocation: { revokedAt: '2026-11-30T00:00:00.000Z' },
      ha: { term: 1, by: 'n1', at: '2026-11-30T00:00:00.000Z', systems: {} },
      chaos: { run: 'run-0a1b2c3d', seq: 1, via: 'n1' },
      'alarm-target': { webhook: 'https://example.org/hook' },
      alarm: { rule: 'node-down', subject: 'n3', severity: 'critical', open: true, term: 3, by: 'n2', raisedAt: '2026-11-30T00:00:00.000Z', clearedAt: null, detail: 'silent 1100 ms', history: [] },
    };
    if (type === 'storage/volume') {
      throwsAcp(t, () => validateObject(key('object/storage/volume/p/a'), { ...base[type], name: 'b' }), 'ACP_ERR_CDB_BAD_VALUE', /field 'name'/, /'p\/b' differs from the key's id 'p\/a'/);
      continue;
    }
    throwsAcp(t, () => validateObject(key(`object/${type}/a`), { ...base[type], name: 'b' }), 'ACP_ERR_CDB_BAD_VALUE', /field 'name'/, /'b' differs from the key's id 'a'/);
  }
});

test('validateObject: missing, mistyped or unknown fields name the field; a non-object names the value', (t) => {
  throwsAcp(t, () => validateObject(key('object/network/a'), { type: 'bridge' }), 'ACP_ERR_CDB_BAD_VALUE', /field 'name'/);
  throwsAcp(t, () => validateObject(key('object/system/a'), { name: 'a', vcpus: 'two' }), 'ACP_ERR_CDB_BAD_VALUE', /field 'vcpus'/);
  throwsAcp(t, () => validateObject(key('object/system/a'), { name: 'a', nics: [{ network: 'lan', mac: '52:54:00:12:34:ZZ' }] }), 'ACP_ERR_CDB_BAD_VALUE', /field 'nics\.0\.mac'/);
  throwsAcp(t, () => validateObject(key('object/node/a'), { name: 'a', agent: 'nohost' }), 'ACP_ERR_CDB_BAD_VALUE', /field 'agent'/, /HOST:PORT/);
  throwsAcp(t, () => validateObject(key('object/storage/volume/p/a'), { name: 'a', pool: 'p', sizeBytes: -1 }), 'ACP_ERR_CDB_BAD_VALUE', /field 'sizeBytes'/);
  throwsAcp(t, () => validateObject(key('object/network/a'), { name: 'a', type: 'bridge', colour: 'red' }), 'ACP_ERR_CDB_BAD_VALUE', /colour/);
  for (const value of [null, 'a', 3, [1]]) {
    throwsAcp(t, () => validateObject(key('object/network/a'), value), 'ACP_ERR_CDB_BAD_VALUE', /bad network for object\/network\/a: value/);
  }
});

// ---------------------------------------------------------------- HybridClock

test('HybridClock: follows wall time, counts logically within a millisecond', (t) => {
  let now = 1000;
  const clock = new HybridClock('n1', () => now);
  t.deepEqual(clock.tick(), { wall: 1000, logical: 0, node: 'n1' });
  t.deepEqual(clock.tick(), { wall: 1000, logical: 1, node: 'n1' });
  now = 1005;
  t.deepEqual(clock.tick(), { wall: 1005, logical: 0, node: 'n1' });
});

test('HybridClock: stays strictly monotonic when the wall clock goes backwards', (t) => {
  const readings = [5000, 5000, 4000, 3000, 4999, 5000, 5001, 100, 5001, 6000];
  let index = 0;
  const clock = new HybridClock('n1', () => readings[index++]!);
  const versions = readings.map(() => clock.tick());
  for (let i = 1; i < versions.length; i += 1) {
    t.is(compareVersions(versions[i - 1]!, versions[i]!), -1, `${formatVersion(versions[i - 1]!)} < ${formatVersion(versions[i]!)}`);
  }
  // While the clock was behind, versions kept the highest wall time seen.
  t.deepEqual(versions[4], { wall: 5000, logical: 4, node: 'n1' });
  t.deepEqual(versions.at(-1), { wall: 6000, logical: 0, node: 'n1' });
});

test('HybridClock: observe() moves past a remote version, even one from the future or on a tie', (t) => {
  const now = 1000;
  const clock = new HybridClock('n1', () => now);
  clock.tick();
  const future: Version = { wall: 9000, logical: 7, node: 'n2' };
  clock.observe(future);
  const next = clock.tick();
  t.is(compareVersions(next, future), 1);
  t.deepEqual(next, { wall: 9000, logical: 8, node: 'n1' });
  // A tie on (wall, logical) from a node that sorts after this one: the next tick still passes it.
  const tie: Version = { wall: 9000, logical: 8, node: 'zz' };
  clock.observe(tie);
  t.is(compareVersions(clock.tick(), tie), 1);
  // An older version changes nothing.
  const before = clock.tick();
  clock.observe({ wall: 10, logical: 99, node: 'n0' });
  t.deepEqual(clock.tick(), { ...before, logical: before.logical + 1 });
});

test('compareVersions: wall, then logical, then node breaks the tie', (t) => {
  const v = (wall: number, logical: number, node: string): Version => ({ wall, logical, node });
  t.is(compareVersions(v(1, 9, 'z'), v(2, 0, 'a')), -1);
  t.is(compareVersions(v(2, 0, 'a'), v(1, 9, 'z')), 1);
  t.is(compareVersions(v(2, 1, 'a'), v(2, 2, 'a')), -1);
  t.is(compareVersions(v(2, 2, 'n1'), v(2, 2, 'n2')), -1);
  t.is(compareVersions(v(2, 2, 'n2'), v(2, 2, 'n1')), 1);
  t.is(compareVersions(v(2, 2, 'n1'), v(2, 2, 'n1')), 0);
  // Every node picks the same last writer: sorting is total and stable under any input order.
  const versions = [v(5, 0, 'b'), v(5, 0, 'a'), v(4, 3, 'c'), v(5, 1, 'a'), v(4, 3, 'a')];
  const sorted = [...versions].sort(compareVersions).map(formatVersion);
  t.deepEqual(sorted, ['4.3@a', '4.3@c', '5.0@a', '5.0@b', '5.1@a']);
  t.deepEqual([...versions].reverse().sort(compareVersions).map(formatVersion), sorted);
});

test('formatVersion / parseVersion round trip; malformed text is undefined', (t) => {
  for (const version of [
    { wall: 1795616242319, logical: 0, node: 'n1' },
    { wall: 0, logical: 0, node: 'a' },
    { wall: 1, logical: 999_999_999, node: 'node-2.lab_x' },
  ]) {
    const text = formatVersion(version);
    t.deepEqual(parseVersion(text), version, text);
    t.is(compareVersions(parseVersion(text)!, version), 0);
  }
  t.is(formatVersion({ wall: 1795616242319, logical: 3, node: 'n1' }), '1795616242319.3@n1');
  for (const bad of ['', '1.2', '1@n1', '1.2@', '1.2@N1', 'a.2@n1', '-1.2@n1', '1.2@n1 ', '1.2.3@n1', '12345678901234567.0@n1', '1.1234567890@n1']) {
    t.is(parseVersion(bad), undefined, bad);
  }
});

// ---------------------------------------------------------------- MemoryTable

const record = (key: string, wall: number, value: unknown = { v: wall }): StoredRecord => ({ key, value, version: { wall, logical: 0, node: 'n1' }, origin: 'n1' });

test('MemoryTable: bounded in keys (ACP_ERR_CDB_FULL naming the limit); overwrites and freed slots still fit', (t) => {
  const table = new MemoryTable(3, 10);
  table.put(record('meta/node/a@n1', 1));
  table.put(record('meta/node/b@n1', 2));
  table.put(record('stats/node/c@n1', 3));
  t.is(table.size, 3);
  throwsAcp(t, () => table.put(record('meta/node/d@n1', 4)), 'ACP_ERR_CDB_FULL', /limit of 3 keys/, /cdb\.maxMemoryKeys/);
  t.is(table.get('meta/node/d@n1'), undefined);
  t.is(table.size, 3);
  // Overwriting an existing key is no new key.
  table.put(record('meta/node/a@n1', 5, { v: 'new' }));
  t.deepEqual(table.get('meta/node/a@n1')?.value, { v: 'new' });
  t.true(table.delete('meta/node/b@n1'));
  t.false(table.delete('meta/node/b@n1'));
  table.put(record('meta/node/d@n1', 6));
  t.is(table.size, 3);
  t.deepEqual(
    table.range('meta/', undefined, 10).map((entry) => entry.key),
    ['meta/node/a@n1', 'meta/node/d@n1'],
  );
  t.deepEqual(
    table.range('', 'meta/node/a@n1', 1).map((entry) => entry.key),
    ['meta/node/d@n1'],
  );
});

test('MemoryTable: a stats history keeps the last N points, oldest first, across many wraps', (t) => {
  const length = 7;
  const table = new MemoryTable(100, length);
  const key = 'stats/node/n1@n1';
  t.deepEqual(table.history(key), []);
  for (let i = 1; i <= 3; i += 1) table.put(record(key, i));
  t.deepEqual(table.history(key), [1, 2, 3].map((i) => ({ at: i, value: { v: i } })));
  for (let i = 4; i <= 40; i += 1) {
    table.put(record(key, i));
    const expected = Array.from({ length: Math.min(i, length) }, (_, index) => i - Math.min(i, length) + 1 + index);
    t.deepEqual(
      table.history(key).map((point) => point.at),
      expected,
      `after ${i} puts`,
    );
  }
  t.deepEqual(table.history(key).at(-1), { at: 40, value: { v: 40 } });
  // Meta keys keep no history; deleting a stats key drops its history.
  table.put(record('meta/node/n1@n1', 1));
  t.deepEqual(table.history('meta/node/n1@n1'), []);
  table.delete(key);
  t.deepEqual(table.history(key), []);
  table.put(record(key, 50));
  t.deepEqual(table.history(key), [{ at: 50, value: { v: 50 } }]);
});

test('MemoryTable: a history of length 1 keeps only the latest point', (t) => {
  const table = new MemoryTable(10, 1);
  for (let i = 1; i <= 5; i += 1) table.put(record('stats/node/x@n1', i));
  t.deepEqual(table.history('stats/node/x@n1'), [{ at: 5, value: { v: 5 } }]);
});

test('parseCdbMessage: a plain get passes as it is; any other get goes to the schema, which refuses it as the schema alone would', (t) => {
  const plain: Message = { type: 'cdb.get', key: 'object/network/a' };
  t.is<Message, Message>(parseCdbMessage(plain), plain);
  const refusals: [Message, RegExp][] = [
    [{ type: 'cdb.get', key: 'object/network/a', extra: 1 }, /extra/],
    [{ type: 'cdb.get', key: 7 }, /key/],
    [{ type: 'cdb.get' }, /key/],
    [{ type: 'cdb.get', key: '' }, /key/],
    [{ type: 'cdb.get', key: 'k'.repeat(513) }, /key/],
  ];
  for (const [message, names] of refusals) {
    const fast = t.throws(() => parseCdbMessage(message));
    const schema = t.throws(() => cdbSchema.parse(message));
    t.is(fast?.message, schema?.message);
    t.regex(fast?.message ?? '', names);
  }
  const inherited = Object.assign(Object.create({ extra: 1 }) as Message, { type: 'cdb.get', key: 'object/network/a' });
  t.is(t.throws(() => parseCdbMessage(inherited))?.message, t.throws(() => cdbSchema.parse(inherited))?.message, 'an inherited field is refused as the schema refuses it');
});

test('parseKeyUncached (merges) parses as parseKey does, a fresh object each time, and refuses the same keys with the same errors', (t) => {
  for (const good of ['object/system/web-1', 'meta/system/web-1@n2', 'stats/storage/volume/p1/v1@n3', 'object/service/cdb/n1']) {
    t.deepEqual(parseKeyUncached(good), parseKey(good));
    t.not(parseKeyUncached(good), parseKeyUncached(good));
    t.true(Object.isFrozen(parseKey(good)));
  }
  for (const bad of ['', 'object/bogus/x', 'meta/system/web-1', 'object/system/a@n1', `object/network/${'a'.repeat(600)}`]) {
    const cached = t.throws(() => parseKey(bad), { instanceOf: AcpError });
    const uncached = t.throws(() => parseKeyUncached(bad), { instanceOf: AcpError });
    t.is(uncached?.message, cached?.message);
    t.is((uncached as AcpError | undefined)?.code, 'ACP_ERR_CDB_BAD_KEY');
  }
});
