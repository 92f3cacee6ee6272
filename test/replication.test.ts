import test, { type ExecutionContext } from 'ava';
import type { StoredRecord } from '../adapters/store.js';
import { compareVersions, HybridClock, type Version } from '../actors/cdb/hlc.js';
import { ChangeStream, ReceiverState, wins, type ChangeBatch, type Digest, type Gap } from '../actors/cdb/replication.js';

const rec = (key: string, wall: number, logical: number, node: string, extra: Partial<StoredRecord> = {}): StoredRecord => ({
  key,
  value: { key, wall, logical, node },
  version: { wall, logical, node },
  origin: node,
  ...extra,
});

/** Sequence numbers carried by a list of batches, in order. */
const seqsOf = (batches: readonly ChangeBatch[]): number[] => batches.flatMap((batch) => batch.records.map((_, index) => batch.firstSeq + index));

// ---------------------------------------------------------------------------------------------
// wins()

test('wins: anything wins over an absent record', (t) => {
  t.true(wins(rec('k', 1, 0, 'a'), undefined));
});

test('wins: a newer wall wins, whatever the logical counter and node', (t) => {
  const older = rec('k', 100, 50, 'z');
  const newer = rec('k', 101, 0, 'a');
  t.true(wins(newer, older));
  t.false(wins(older, newer));
});

test('wins: same wall, higher logical wins', (t) => {
  const low = rec('k', 100, 1, 'z');
  const high = rec('k', 100, 2, 'a');
  t.true(wins(high, low));
  t.false(wins(low, high));
});

test('wins: a full tie on (wall, logical) is broken by node name, the same way from both sides', (t) => {
  const a = rec('k', 100, 3, 'n1');
  const b = rec('k', 100, 3, 'n2');
  // Exactly one direction wins, and it is the greater node name.
  t.true(wins(b, a));
  t.false(wins(a, b));
  t.true(compareVersions(b.version, a.version) > 0);
});

test('wins: an equal version does not win (merging the same record again is a no-op)', (t) => {
  const a = rec('k', 100, 3, 'n1');
  const again = rec('k', 100, 3, 'n1', { value: 'different payload' });
  t.false(wins(a, a));
  t.false(wins(again, a));
});

// ---------------------------------------------------------------------------------------------
// ChangeStream

test('ChangeStream numbers records consecutively across batches', (t) => {
  const stream = new ChangeStream('a', 7);
  t.is(stream.highWater, 0);
  const b1 = stream.next([rec('k1', 1, 0, 'a'), rec('k2', 2, 0, 'a')]);
  const b2 = stream.next([rec('k3', 3, 0, 'a')]);
  const b3 = stream.next([rec('k4', 4, 0, 'a'), rec('k5', 5, 0, 'a'), rec('k6', 6, 0, 'a')]);
  t.deepEqual([b1.firstSeq, b2.firstSeq, b3.firstSeq], [1, 3, 4]);
  t.true([b1, b2, b3].every((batch) => batch.origin === 'a' && batch.incarnation === 7));
  t.is(stream.highWater, 6);
});

test('ChangeStream.repair returns exactly the requested range, split across the original batches', (t) => {
  const stream = new ChangeStream('a', 1);
  const all = Array.from({ length: 6 }, (_, index) => rec(`k${index + 1}`, index + 1, 0, 'a'));
  stream.next(all.slice(0, 2)); // 1-2
  stream.next(all.slice(2, 3)); // 3
  stream.next(all.slice(3, 6)); // 4-6
  const repaired = stream.repair(2, 5);
  t.true(repaired.complete);
  t.deepEqual(seqsOf(repaired.batches), [2, 3, 4, 5]);
  t.deepEqual(
    repaired.batches.map((batch) => [batch.firstSeq, batch.records.length]),
    [
      [2, 1],
      [3, 1],
      [4, 2],
    ],
  );
  // The records carried are the ones originally numbered 2..5.
  t.deepEqual(
    repaired.batches.flatMap((batch) => batch.records.map((record) => record.key)),
    ['k2', 'k3', 'k4', 'k5'],
  );
  t.true(repaired.batches.every((batch) => batch.origin === 'a' && batch.incarnation === 1));
  // A single-element range inside one batch.
  const one = stream.repair(5, 5);
  t.true(one.complete);
  t.deepEqual(seqsOf(one.batches), [5]);
  t.is(one.batches[0]!.records[0]!.key, 'k5');
});

test('ChangeStream.repair of a range beyond what was sent is incomplete', (t) => {
  const stream = new ChangeStream('a', 1);
  stream.next([rec('k1', 1, 0, 'a'), rec('k2', 2, 0, 'a')]);
  const repaired = stream.repair(1, 4);
  t.false(repaired.complete);
  t.deepEqual(seqsOf(repaired.batches), [1, 2]);
});

test('ChangeStream.repair of a range no longer kept says complete:false; the kept part is still repairable', (t) => {
  const stream = new ChangeStream('a', 1, 3);
  stream.next([rec('k1', 1, 0, 'a'), rec('k2', 2, 0, 'a')]); // 1-2, dropped once 4 records are held
  stream.next([rec('k3', 3, 0, 'a'), rec('k4', 4, 0, 'a')]); // 3-4
  t.is(stream.highWater, 4);
  const old = stream.repair(1, 2);
  t.false(old.complete);
  t.deepEqual(old.batches, []);
  const straddling = stream.repair(1, 4);
  t.false(straddling.complete);
  const kept = stream.repair(3, 4);
  t.true(kept.complete);
  t.deepEqual(seqsOf(kept.batches), [3, 4]);
});

// ---------------------------------------------------------------------------------------------
// ReceiverState

const batch = (origin: string, incarnation: number, firstSeq: number, count: number): ChangeBatch => ({
  origin,
  incarnation,
  firstSeq,
  records: Array.from({ length: count }, (_, index) => rec(`${origin}-${firstSeq + index}`, firstSeq + index, 0, origin)),
});

test('ReceiverState accepts in-order batches with no gaps and advances the high-water mark', (t) => {
  const receiver = new ReceiverState('me');
  const first = receiver.receive(batch('a', 1, 1, 2));
  t.is(first.kind, 'accepted');
  t.is(first.records.length, 2);
  t.deepEqual(first.kind === 'accepted' ? first.gaps : undefined, []);
  const second = receiver.receive(batch('a', 1, 3, 3));
  t.is(second.kind, 'accepted');
  t.deepEqual(second.records.map((record) => record.key), ['a-3', 'a-4', 'a-5']);
  t.deepEqual(receiver.digest(), { a: { incarnation: 1, highWater: 5 } });
  t.is(receiver.replays, 0);
});

test('ReceiverState drops a duplicate batch as a replay and counts it', (t) => {
  const receiver = new ReceiverState('me');
  const original = batch('a', 1, 1, 3);
  t.is(receiver.receive(original).kind, 'accepted');
  const again = receiver.receive(original);
  t.is(again.kind, 'replay');
  t.deepEqual(again.records, []);
  t.is(receiver.replays, 1);
  // A partial overlap yields only the fresh records.
  const overlap = receiver.receive(batch('a', 1, 2, 3));
  t.is(overlap.kind, 'accepted');
  t.deepEqual(overlap.records.map((record) => record.key), ['a-4']);
  t.is(receiver.replays, 1);
  t.deepEqual(receiver.digest().a, { incarnation: 1, highWater: 4 });
});

test('ReceiverState accepts an out-of-order batch, reports the gap, and jumps the high-water mark once it is filled', (t) => {
  const receiver = new ReceiverState('me');
  receiver.receive(batch('a', 1, 1, 1));
  const ahead = receiver.receive(batch('a', 1, 4, 2));
  t.is(ahead.kind, 'accepted');
  t.deepEqual(ahead.records.map((record) => record.key), ['a-4', 'a-5']);
  t.deepEqual(ahead.kind === 'accepted' ? ahead.gaps : undefined, [{ origin: 'a', incarnation: 1, from: 2, to: 3 }]);
  t.deepEqual(receiver.digest().a, { incarnation: 1, highWater: 1 });
  // A duplicate of the out-of-order batch is a replay.
  t.is(receiver.receive(batch('a', 1, 4, 2)).kind, 'replay');
  const fill = receiver.receive(batch('a', 1, 2, 2));
  t.is(fill.kind, 'accepted');
  t.deepEqual(fill.kind === 'accepted' ? fill.gaps : undefined, []);
  t.deepEqual(receiver.digest().a, { incarnation: 1, highWater: 5 });
});

test('ReceiverState reports several gaps in order', (t) => {
  const receiver = new ReceiverState('me');
  receiver.receive(batch('a', 1, 3, 1));
  const outcome = receiver.receive(batch('a', 1, 6, 1));
  t.deepEqual(outcome.kind === 'accepted' ? outcome.gaps : undefined, [
    { origin: 'a', incarnation: 1, from: 1, to: 2 },
    { origin: 'a', incarnation: 1, from: 4, to: 5 },
  ]);
});

test('ReceiverState: a newer incarnation resets the stream; an older one is stale', (t) => {
  const receiver = new ReceiverState('me');
  receiver.receive(batch('a', 1, 1, 5));
  t.deepEqual(receiver.digest().a, { incarnation: 1, highWater: 5 });
  const restarted = receiver.receive(batch('a', 2, 1, 1));
  t.is(restarted.kind, 'accepted');
  t.is(restarted.records.length, 1);
  t.deepEqual(receiver.digest().a, { incarnation: 2, highWater: 1 });
  const stale = receiver.receive(batch('a', 1, 6, 1));
  t.is(stale.kind, 'stale-incarnation');
  t.deepEqual(stale.records, []);
  t.is(receiver.staleIncarnations, 1);
  t.deepEqual(receiver.digest().a, { incarnation: 2, highWater: 1 });
});

test('ReceiverState.digest/missingFrom report exactly the missing ranges, including an origin never seen', (t) => {
  const receiver = new ReceiverState('me');
  receiver.receive(batch('a', 1, 1, 1)); // a: 1
  receiver.receive(batch('a', 1, 4, 1)); // a: 4 (2-3 missing)
  receiver.receive(batch('b', 1, 1, 3)); // b: 1-3
  receiver.receive(batch('c', 2, 1, 2)); // c incarnation 2
  t.deepEqual(receiver.digest(), {
    a: { incarnation: 1, highWater: 1 },
    b: { incarnation: 1, highWater: 3 },
    c: { incarnation: 2, highWater: 2 },
  });
  const peer: Digest = {
    me: { incarnation: 1, highWater: 99 }, // this node's own stream: never asked for
    a: { incarnation: 1, highWater: 6 },
    b: { incarnation: 1, highWater: 3 }, // nothing missing
    c: { incarnation: 1, highWater: 50 }, // older incarnation than known: ignored
    d: { incarnation: 1, highWater: 4 }, // never seen
    e: { incarnation: 1, highWater: 0 }, // never seen but nothing to fetch
  };
  const sortGaps = (gaps: Gap[]) => [...gaps].sort((x, y) => (x.origin === y.origin ? x.from - y.from : x.origin < y.origin ? -1 : 1));
  t.deepEqual(sortGaps(receiver.missingFrom(peer)), [
    { origin: 'a', incarnation: 1, from: 2, to: 3 },
    { origin: 'a', incarnation: 1, from: 5, to: 6 },
    { origin: 'd', incarnation: 1, from: 1, to: 4 },
  ]);
  // A peer with a newer incarnation of c: everything of it is missing.
  t.deepEqual(receiver.missingFrom({ c: { incarnation: 3, highWater: 2 } }), [{ origin: 'c', incarnation: 3, from: 1, to: 2 }]);
  // A peer that knows less than this node: nothing is missing.
  t.deepEqual(receiver.missingFrom({ b: { incarnation: 1, highWater: 2 } }), []);
});

// ---------------------------------------------------------------------------------------------
// Deterministic simulation: 3 nodes, lossy/duplicating/reordering network, anti-entropy repair.

function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  };
}

interface SimNode {
  readonly name: string;
  readonly clock: HybridClock;
  readonly stream: ChangeStream;
  readonly receiver: ReceiverState;
  readonly map: Map<string, StoredRecord>;
}

interface InFlight {
  readonly to: number;
  readonly at: number;
  readonly order: number;
  readonly batch: ChangeBatch;
}

interface SimResult {
  readonly states: ReadonlyArray<ReadonlyArray<readonly [string, StoredRecord]>>;
  readonly winners: ReadonlyMap<string, StoredRecord>;
  readonly writes: number;
  readonly dropped: number;
  readonly duplicated: number;
  readonly replays: number;
  readonly outOfOrderGaps: number;
  readonly repairs: number;
}

function simulate(seed: number, steps = 300): SimResult {
  const random = mulberry32(seed);
  const int = (n: number) => Math.floor(random() * n);
  let time = 1_000_000;
  const skews = [0, 7, -5];
  const names = ['n1', 'n2', 'n3'];
  const nodes: SimNode[] = names.map((name, index) => ({
    name,
    clock: new HybridClock(name, () => time + skews[index]!),
    stream: new ChangeStream(name, 1),
    receiver: new ReceiverState(name),
    map: new Map(),
  }));
  const keys = Array.from({ length: 8 }, (_, index) => `object/network/k${index}`);
  const allWrites: StoredRecord[] = [];
  let queue: InFlight[] = [];
  let order = 0;
  let now = 0;
  let dropped = 0;
  let duplicated = 0;
  let outOfOrderGaps = 0;
  let repairs = 0;

  const apply = (node: SimNode, record: StoredRecord) => {
    node.clock.observe(record.version);
    if (wins(record, node.map.get(record.key))) node.map.set(record.key, record);
  };
  const send = (to: number, batch: ChangeBatch, lossy: boolean) => {
    if (lossy && random() < 0.1) {
      dropped += 1;
      return;
    }
    const copies = lossy && random() < 0.05 ? 2 : 1;
    if (copies === 2) duplicated += 1;
    for (let copy = 0; copy < copies; copy += 1) queue.push({ to, at: now + (lossy ? int(4) : 0), order: order++, batch });
  };
  const deliver = (upTo: number) => {
    const due = queue.filter((item) => item.at <= upTo);
    queue = queue.filter((item) => item.at > upTo);
    // Reorder: delivery order among due messages is shuffled by the PRNG.
    const shuffled = due.map((item) => ({ item, key: random() })).sort((x, y) => x.key - y.key || x.item.order - y.item.order);
    for (const { item } of shuffled) {
      const node = nodes[item.to]!;
      const outcome = node.receiver.receive(item.batch);
      if (outcome.kind !== 'accepted') continue;
      if (outcome.gaps.length > 0) outOfOrderGaps += 1;
      for (const record of outcome.records) apply(node, record);
    }
  };
  const digestOf = (node: SimNode): Digest => ({ ...node.receiver.digest(), [node.name]: { incarnation: node.stream.incarnation, highWater: node.stream.highWater } });
  const antiEntropy = (lossy: boolean) => {
    for (let i = 0; i < nodes.length; i += 1) {
      for (let j = 0; j < nodes.length; j += 1) {
        if (i === j) continue;
        for (const gap of nodes[i]!.receiver.missingFrom(digestOf(nodes[j]!))) {
          const origin = nodes.find((node) => node.name === gap.origin)!;
          const repaired = origin.stream.repair(gap.from, gap.to);
          repairs += 1;
          for (const repairBatch of repaired.batches) send(i, repairBatch, lossy);
        }
      }
    }
  };

  for (let step = 0; step < steps; step += 1) {
    now = step;
    time += 1 + int(3);
    for (let index = 0; index < nodes.length; index += 1) {
      const node = nodes[index]!;
      if (random() < 0.3) continue;
      const count = 1 + int(3);
      const records: StoredRecord[] = [];
      for (let n = 0; n < count; n += 1) {
        const key = keys[int(keys.length)]!;
        const version = node.clock.tick();
        const deleted = random() < 0.2;
        const record: StoredRecord = deleted
          ? { key, value: null, version, origin: node.name, deleted: true }
          : { key, value: { name: key.slice('object/network/'.length), type: 'vlan', vlan: 1 + int(4094) }, version, origin: node.name };
        records.push(record);
        allWrites.push(record);
        apply(node, record);
      }
      const sent = node.stream.next(records);
      for (let to = 0; to < nodes.length; to += 1) if (to !== index) send(to, sent, true);
    }
    deliver(now);
    if (step % 10 === 9) antiEntropy(true);
  }
  // Writes stop: what is in flight lands, then a few lossless repair rounds.
  for (let round = 0; round < 5; round += 1) {
    now += 10;
    deliver(now);
    antiEntropy(false);
    deliver(now);
  }

  const winners = new Map<string, StoredRecord>();
  for (const write of allWrites) {
    const best = winners.get(write.key);
    if (!best || compareVersions(write.version, best.version) > 0) winners.set(write.key, write);
  }
  const states = nodes.map((node) => [...node.map.entries()].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
  return {
    states,
    winners,
    writes: allWrites.length,
    dropped,
    duplicated,
    replays: nodes.reduce((sum, node) => sum + node.receiver.replays, 0),
    outOfOrderGaps,
    repairs,
  };
}

const versionText = (version: Version) => `${version.wall}.${version.logical}@${version.node}`;

function assertConverged(t: ExecutionContext, result: SimResult) {
  // The network really misbehaved.
  t.true(result.writes > 300, `writes: ${result.writes}`);
  t.true(result.dropped > 0, 'some batches were dropped');
  t.true(result.duplicated > 0, 'some batches were duplicated');
  t.true(result.replays > 0, 'duplicates were recognised as replays');
  t.true(result.outOfOrderGaps > 0, 'some batches arrived out of order');
  t.true(result.repairs > 0, 'repair was needed');
  // All three maps are identical: same keys, same versions, same values.
  const [first, second, third] = result.states;
  t.deepEqual(second, first);
  t.deepEqual(third, first);
  // Every write not superseded by a later version is present, on every node.
  const expected = [...result.winners.entries()].sort(([x], [y]) => (x < y ? -1 : 1)).map(([key, record]) => [key, versionText(record.version), record.deleted === true] as const);
  for (const state of result.states) {
    t.deepEqual(
      state.map(([key, record]) => [key, versionText(record.version), record.deleted === true] as const),
      expected,
    );
    for (const [key, record] of state) t.true(record === result.winners.get(key), key);
  }
}

test('simulation: 3 nodes over a lossy, duplicating, reordering network converge to the LWW winners', (t) => {
  assertConverged(t, simulate(42));
});

test('simulation: the same seed gives the same final state', (t) => {
  const one = simulate(1234);
  const two = simulate(1234);
  t.deepEqual(two.states, one.states);
  t.is(two.dropped, one.dropped);
  t.is(two.replays, one.replays);
  assertConverged(t, one);
});

test('simulation: a different seed follows a different run and still converges', (t) => {
  const base = simulate(1234);
  const other = simulate(987_654);
  t.notDeepEqual(other.states, base.states);
  assertConverged(t, other);
});
