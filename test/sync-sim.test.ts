/**
 * The sync logic (Replicator) driven by a simulator (node/sim/sync.ts): many nodes on a fake
 * network that drops, partitions and restarts, with a fake clock. Fast and deterministic per seed;
 * the same code runs for real between daemons in network namespaces (sync-cluster.test.ts).
 */
import test from 'ava';
import { encode } from 'cbor-x';
import type { StoredRecord } from '../adapters/store.js';
import { ReceiverState, wins } from '../actors/cdb/replication.js';
import { REORDER_GRACE_MS } from '../actors/cdb/sync.js';
import { Sim } from '../node/sim/sync.js';
/** Every node holds the same records, and every acknowledged write is there unless a later version replaced it. */
function assertConverged(t: import('ava').ExecutionContext, sim: Sim, names: readonly string[]): void {
  const [first, ...rest] = names;
  for (const name of rest) {
    const mine = sim.fingerprint(name).split('\n');
    const theirs = new Set(sim.fingerprint(first!).split('\n'));
    const different = mine.filter((line) => !theirs.has(line)).length + [...theirs].filter((line) => !mine.includes(line)).length;
    t.is(different, 0, `${name} differs from ${first} in ${different} record(s)`);
  }
  const store = sim.nodes.get(first!)!.store;
  for (const written of sim.acknowledged) {
    const held = store.get(written.key);
    t.truthy(held, `acknowledged write to ${written.key} is lost`);
    t.false(wins(written, held), `${written.key}: a newer acknowledged version than the one held`);
  }
}

test('three nodes writing concurrently with 10% of sends dropped converge, losing no acknowledged write', async (t) => {
  const sim = new Sim(7);
  const names = ['n1', 'n2', 'n3'];
  for (const name of names) sim.add(name).dropRate = 0.1;
  await sim.run(2000);
  for (let round = 0; round < 300; round += 1) {
    sim.write(names[round % 3]!, `object/system/k${Math.floor(sim.rand() * 60)}`, { round });
    if (round % 10 === 0) await sim.run(20);
  }
  await sim.run(6000);
  assertConverged(t, sim, names);
  t.true(names.every((name) => sim.nodes.get(name)!.replicator.synced));
  t.true(sim.nodes.get('n1')!.replicator.counters.repairsAsked > 0, 'drops were repaired');
});

test('a partitioned node and the rest both write; after healing all converge by last-writer-wins', async (t) => {
  const sim = new Sim(11);
  const names = ['n1', 'n2', 'n3'];
  for (const name of names) sim.add(name);
  await sim.run(2000);
  sim.partitioned.add('n3');
  for (let i = 0; i < 500; i += 1) {
    sim.write('n1', `object/system/k${i % 100}`, { side: 'majority', i });
    sim.write('n3', `object/system/k${(i + 50) % 150}`, { side: 'minority', i });
    if (i % 50 === 0) await sim.run(20);
  }
  await sim.run(3000);
  t.is(sim.nodes.get('n1')!.replicator.membership.state('n3', sim.now), 'down');
  t.not(sim.fingerprint('n3'), sim.fingerprint('n1'));
  sim.partitioned.delete('n3');
  await sim.run(6000);
  assertConverged(t, sim, names);
  // 500 changes from n3, beyond the 200 it keeps: some repair had to come from a snapshot.
  t.true(sim.nodes.get('n1')!.replicator.counters.snapshotsPulled > 1);
});

test('a healed partition is repaired as soon as the other side is heard, not after the reordering grace', async (t) => {
  const sim = new Sim(13);
  const names = ['n1', 'n2', 'n3'];
  for (const name of names) sim.add(name);
  await sim.run(2000);
  sim.partitioned.add('n3');
  // More than n1 keeps of its stream (200): n3 can only catch up by snapshot.
  for (let i = 0; i < 300; i += 1) sim.write('n1', `object/system/p${i}`, { i });
  await sim.run(3050);
  t.is(sim.nodes.get('n3')!.replicator.membership.state('n1', sim.now), 'down');
  sim.partitioned.delete('n3');
  const healedAt = sim.now;
  // The next digest and heartbeat go out at the next whole second and arrive within 20 ms.
  const heardBy = (Math.floor(healedAt / 1000) + 1) * 1000 + 20;
  await sim.run(3000);
  assertConverged(t, sim, names);
  const pulls = sim.snapshotsAsked.filter((asked) => asked.by === 'n3' && asked.at >= healedAt);
  t.true(pulls.length > 0, 'n3 pulled no snapshot after the heal');
  t.true(pulls[0]!.at <= heardBy, `n3's first pull after the heal at ${healedAt} ms began at ${pulls[0]!.at} ms; n1 was heard again by ${heardBy} ms (the grace for reordering is ${REORDER_GRACE_MS} ms)`);
  // Each side said once that it heard the other again (a real node's agent then redials at once).
  const back = sim.heardBack.filter((heard) => heard.at >= healedAt);
  t.deepEqual(back.filter((heard) => heard.by === 'n3').map((heard) => heard.peer).sort(), ['n1', 'n2']);
  t.deepEqual(back.filter((heard) => heard.peer === 'n3').map((heard) => heard.by).sort(), ['n1', 'n2']);
  t.true(back.every((heard) => heard.at <= heardBy), `heard back at ${back.map((heard) => heard.at).join(', ')} ms, by ${heardBy} ms`);
});

test('a node killed and restarted catches up by snapshot and stream; its last unsent writes reach the others', async (t) => {
  const sim = new Sim(23);
  const names = ['n1', 'n2', 'n3'];
  for (const name of names) sim.add(name);
  await sim.run(2000);
  for (let i = 0; i < 50; i += 1) sim.write('n2', `object/system/before${i}`, { i });
  // Acknowledged (durable) but killed before its flush: nobody has heard of these.
  sim.kill('n2');
  for (let i = 0; i < 200; i += 1) sim.write(i % 2 ? 'n1' : 'n3', `object/system/while${i}`, { i });
  await sim.run(3000);
  t.false(sim.nodes.get('n1')!.store.has('object/system/before0'));
  sim.restart('n2');
  for (let i = 0; i < 20; i += 1) sim.write('n2', `object/system/after${i}`, { i });
  await sim.run(6000);
  assertConverged(t, sim, names);
  t.is(sim.nodes.get('n1')!.replicator.membership.state('n2', sim.now), 'up');
});

test('a node that keeps losing a writer\'s stream pulls each snapshot only from where the last one ended, not all of it again', async (t) => {
  const sim = new Sim(31);
  sim.add('n1');
  sim.add('n2');
  await sim.run(2000);
  // n1 writes 60 records every 100 ms for 20 s, and 90% of what it sends is lost: n2's gaps keep
  // outgrowing what n1 keeps (200), so it catches up by snapshot, again and again.
  sim.nodes.get('n1')!.dropRate = 0.9;
  for (let tick = 0; tick < 200; tick += 1) {
    for (let i = 0; i < 60; i += 1) sim.write('n1', `object/system/k${tick}-${i}`, { tick, i });
    await sim.run(100);
  }
  sim.nodes.get('n1')!.dropRate = 0;
  await sim.run(6000);
  assertConverged(t, sim, ['n1', 'n2']);
  // The first page of each snapshot of n1's records that n2 pulled: where each began.
  const starts = sim.snapshotsAsked.filter((asked) => asked.by === 'n2' && asked.request.origin === 'n1' && asked.request.cursor === undefined).map((asked) => asked.request.since ?? 0);
  t.true(starts.length >= 3, `${starts.length} snapshots of n1's records`);
  // Each begins later than the one before it (less a margin of 5 s), so none pulls all 12,000 records again.
  for (let index = 1; index < starts.length; index += 1) t.true(starts[index]! > starts[index - 1]!, `snapshot ${index + 1} since ${starts[index]}, the one before since ${starts[index - 1]}`);
});

test('membership: a silent node turns suspect, then down, at the configured timings; a new heartbeat brings it back', async (t) => {
  const sim = new Sim(3);
  for (const name of ['n1', 'n2']) sim.add(name);
  await sim.run(2000);
  const n1 = sim.nodes.get('n1')!.replicator;
  t.is(n1.membership.state('n2', sim.now), 'up');
  sim.kill('n2');
  const killedAt = sim.now;
  const seen: { at: number; state: string }[] = [];
  while (sim.now - killedAt < 4000) {
    await sim.run(100);
    const state = n1.membership.state('n2', sim.now);
    if (seen.at(-1)?.state !== state) seen.push({ at: sim.now - killedAt, state });
  }
  t.deepEqual(
    seen.map((entry) => entry.state),
    ['up', 'suspect', 'down'],
  );
  const lastHeard = n1.membership.lastHeard('n2')!.at - killedAt;
  // Sampled every 100 ms: down no later than 2.5 s after its last heartbeat (plus one sample).
  t.true(seen.find((entry) => entry.state === 'down')!.at - lastHeard <= 2600, 'down within 2.5 s of its last heartbeat');
  sim.restart('n2');
  await sim.run(1500);
  t.is(n1.membership.state('n2', sim.now), 'up');
  const view = n1.members(['n2']).find((member) => member.node === 'n2')!;
  t.is(view.incarnation, sim.nodes.get('n2')!.incarnation);
});

test('a record too large for a datagram is announced and fetched by repair', async (t) => {
  const sim = new Sim(5);
  for (const name of ['n1', 'n2']) sim.add(name);
  await sim.run(1500);
  const big = sim.write('n1', 'object/system/big', { blob: 'x'.repeat(5000) });
  sim.write('n1', 'object/system/small', { ok: true });
  await sim.run(300);
  t.deepEqual(sim.nodes.get('n2')!.store.get('object/system/big')?.version, big.version);
  t.is(sim.nodes.get('n1')!.replicator.counters.announced, 1);
});

test('two domains joined by a gateway pair converge; relayed copies are replays, not new changes', async (t) => {
  const sim = new Sim(13);
  sim.add('a1', { domain: 'a', gateway: true });
  sim.add('a2', { domain: 'a' });
  sim.add('b1', { domain: 'b', gateway: true });
  sim.add('b2', { domain: 'b' });
  await sim.run(2000);
  for (let i = 0; i < 100; i += 1) {
    sim.write('a2', `object/system/a${i % 30}`, { i });
    sim.write('b2', `object/system/b${i % 30}`, { i });
    sim.write('a1', `object/system/shared${i % 10}`, { from: 'a1', i });
    sim.write('b1', `object/system/shared${i % 10}`, { from: 'b1', i });
    if (i % 10 === 0) await sim.run(30);
  }
  await sim.run(5000);
  assertConverged(t, sim, ['a1', 'a2', 'b1', 'b2']);
  // a2 hears b2 through the gateways only: b2's changes were re-published into domain a.
  t.true(sim.nodes.get('a1')!.replicator.counters.relayed > 0);
  t.is(sim.nodes.get('a2')!.replicator.membership.state('b2', sim.now), 'up');
});

test('records whose merge failed are pulled again, so a node that could not write them still converges', async (t) => {
  const sim = new Sim(29);
  for (const name of ['n1', 'n2']) sim.add(name);
  await sim.run(1500);
  sim.nodes.get('n2')!.failMerges = 3;
  for (let i = 0; i < 30; i += 1) sim.write('n1', `object/system/m${i}`, { i });
  await sim.run(4000);
  t.is(sim.nodes.get('n2')!.failMerges, 0, 'merges did fail');
  assertConverged(t, sim, ['n1', 'n2']);
  t.true(sim.nodes.get('n2')!.replicator.synced);
});

test('a change numbered after a later one (out of version order), lost in flight, still reaches a peer after its origin restarts', async (t) => {
  const sim = new Sim(41);
  const names = ['n1', 'n2'];
  for (const name of names) sim.add(name);
  await sim.run(2000);
  const n1 = sim.nodes.get('n1')!;
  // The object put: versioned now, its fsync still under way.
  const object: StoredRecord = { key: 'object/system/vm1', value: { vcpus: 2 }, version: n1.clock.tick(), origin: 'n1' };
  n1.store.set(object.key, object);
  sim.acknowledged.push(object);
  await sim.run(10); // wall time moves on (the simulator's steps stay aligned)
  // A heartbeat (memory only) written meanwhile goes out first.
  const heartbeat: StoredRecord = { key: 'meta/node/n1@n1', value: { incarnation: n1.incarnation }, version: n1.clock.tick(), origin: 'n1' };
  n1.store.set(heartbeat.key, heartbeat);
  n1.replicator.local([heartbeat]);
  n1.replicator.flush();
  await sim.run(20);
  // The object is durable now and goes out; its datagram is lost, and n1 dies before its next digest.
  n1.dropRate = 1;
  n1.replicator.local([object]);
  n1.replicator.flush();
  await sim.run(20);
  sim.kill('n1');
  const restarted = sim.restart('n1');
  restarted.dropRate = 0;
  await sim.run(8000);
  t.truthy(sim.nodes.get('n1')!.store.get(object.key), 'n1 has it on disk');
  t.truthy(sim.nodes.get('n2')!.store.get(object.key), 'n2 receives the acknowledged object');
});

test('a node that starts while cut off is not synced until it has pulled a snapshot, and then has records of earlier incarnations', async (t) => {
  const sim = new Sim(47);
  for (const name of ['n1', 'n2']) sim.add(name);
  await sim.run(2000);
  sim.write('n1', 'object/system/old', { v: 1 });
  await sim.run(1000);
  sim.kill('n1');
  sim.restart('n1');
  await sim.run(3000);
  sim.partitioned.add('n3');
  sim.add('n3');
  await sim.run(4000);
  t.false(sim.nodes.get('n3')!.replicator.synced, 'cut off, n3 has pulled nothing: not synced');
  sim.partitioned.delete('n3');
  await sim.run(10_000);
  t.true(sim.nodes.get('n3')!.replicator.synced, 'n3 says it is synced');
  assertConverged(t, sim, ['n1', 'n2', 'n3']);
});

test('an announce is relayed once, not around and around a ring of redundant gateways', async (t) => {
  const sim = new Sim(53);
  sim.add('a1', { domain: 'a', gateway: true });
  sim.add('a2', { domain: 'a', gateway: true });
  sim.add('a3', { domain: 'a' });
  sim.add('b1', { domain: 'b', gateway: true });
  sim.add('b2', { domain: 'b', gateway: true });
  await sim.run(2000);
  sim.write('a3', 'object/system/big', { blob: 'x'.repeat(5000) });
  const a1 = sim.nodes.get('a1')!.replicator;
  const relayedBefore = a1.counters.relayed;
  const inFlight = () => (sim as unknown as { queue: unknown[] }).queue.length;
  const growth: number[] = [];
  // No digest falls in this window (it is 20..220 ms past a whole second): only the announce travels.
  for (let step = 0; step < 20; step += 1) {
    await sim.run(10);
    growth.push(inFlight());
  }
  t.log(`payloads in flight every 10 ms: ${growth.join(' ')}; a1 relayed ${a1.counters.relayed - relayedBefore}`);
  t.true(a1.counters.relayed - relayedBefore < 10, `a1 relayed ${a1.counters.relayed - relayedBefore} payloads in 200 ms`);
});

test('a digest claiming a huge high-water mark costs no more than a small one', (t) => {
  const receiver = new ReceiverState('me');
  receiver.receive({ origin: 'n1', incarnation: 1, firstSeq: 1, records: [{ key: 'object/system/a', value: {}, version: { wall: 1, logical: 0, node: 'n1' }, origin: 'n1' }] });
  const started = performance.now();
  receiver.missingFrom({ n1: { incarnation: 1, highWater: 30_000_000 } });
  const ms = performance.now() - started;
  // 2**53 would take years; every peer's digest repeats this each second.
  t.true(ms < 20, `one digest with highWater 3e7 took ${ms.toFixed(0)} ms of event loop`);
});

test('in a cluster too large for one digest, each digest is a slice that fits a datagram; 60 nodes with drops still converge', async (t) => {
  const sim = new Sim(31);
  const names = Array.from({ length: 60 }, (_, index) => `n${index + 1}`);
  for (const name of names) sim.add(name).dropRate = 0.05;
  await sim.run(3000);
  for (let i = 0; i < 120; i += 1) {
    sim.write(names[i % names.length]!, `object/system/k${i % 40}`, { i });
    if (i % 12 === 0) await sim.run(20);
  }
  await sim.run(8000);
  assertConverged(t, sim, names);
  // What a whole digest would take, against what was sent (the channel's limit is 1,400 bytes).
  const whole = encode(sim.nodes.get('n1')!.replicator.digest()).length;
  t.true(whole > 1400, `a whole digest of 60 nodes would be ${whole} bytes`);
  t.true(sim.largestDigest <= 1400, `the largest digest sent was ${sim.largestDigest} bytes`);
  // One digest per node per second, counted at both ends.
  const n1 = sim.nodes.get('n1')!.traffic.view();
  t.true(n1.multicast.sent.digest.count >= 10 && n1.multicast.sent.digest.count <= 12, `n1 sent ${n1.multicast.sent.digest.count} digests in 11.2 s`);
  t.true(n1.multicast.received.digest.count > 50 * 10, `n1 heard ${n1.multicast.received.digest.count} digests`);
});

test('seeded sweep: 4 nodes writing faster than a stream is kept, with drops, partitions and a restart, converge with no acknowledged write lost (40 seeds)', async (t) => {
  // Replay one seed with ACP_SYNC_SEED=N.
  const seeds = process.env.ACP_SYNC_SEED ? [Number(process.env.ACP_SYNC_SEED)] : Array.from({ length: 40 }, (_, index) => 1000 + index);
  let snapshots = 0;
  for (const seed of seeds) {
    const sim = new Sim(seed);
    const names = ['n1', 'n2', 'n3', 'n4'];
    for (const name of names) sim.add(name).dropRate = sim.rand() * 0.3;
    await sim.run(2000);
    // 30 phases of 1 s: each writes up to 40 records on random nodes (more than the 200 a node
    // keeps of its stream over a few phases), and may cut a node off, heal one, or restart one.
    for (let phase = 0; phase < 30; phase += 1) {
      const roll = sim.rand();
      const name = names[Math.floor(sim.rand() * names.length)]!;
      if (roll < 0.15) sim.partitioned.add(name);
      else if (roll < 0.35) sim.partitioned.delete(name);
      else if (roll < 0.38 && sim.nodes.get(name)!.up) {
        sim.kill(name);
        await sim.run(100);
        sim.restart(name);
      }
      const writes = Math.floor(sim.rand() * 40);
      for (let i = 0; i < writes; i += 1) {
        const writer = names[Math.floor(sim.rand() * names.length)]!;
        if (sim.nodes.get(writer)!.up) sim.write(writer, `object/system/k${Math.floor(sim.rand() * 300)}`, { seed, phase, i });
      }
      await sim.run(1000);
    }
    sim.partitioned.clear();
    for (const name of names) sim.nodes.get(name)!.dropRate = 0;
    await sim.run(15_000);
    if (new Set(names.map((name) => sim.fingerprint(name))).size !== 1) t.fail(`seed ${seed}: the nodes differ (replay: ACP_SYNC_SEED=${seed})`);
    assertConverged(t, sim, names);
    snapshots += names.reduce((sum, name) => sum + sim.nodes.get(name)!.replicator.counters.snapshotsPulled, 0);
    if (!names.every((name) => sim.nodes.get(name)!.replicator.synced)) t.fail(`seed ${seed}: not every node synced (replay: ACP_SYNC_SEED=${seed})`);
  }
  t.log(`${seeds.length} seeds, ${snapshots} snapshots pulled in all`);
  t.true(snapshots > seeds.length, 'the sweep hardly needed a snapshot: it does not test catch-up');
});

test('an origin that died is repaired from the peers that have its changes; each node keeps at most 4 of them per origin, not every peer\'s view', async (t) => {
  const sim = new Sim(29);
  const names = ['n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7'];
  for (const name of names) sim.add(name);
  await sim.run(2000);
  sim.partitioned.add('n7');
  for (let i = 0; i < 300; i += 1) {
    sim.write('n1', `object/system/k${i}`, { i });
    if (i % 50 === 0) await sim.run(20);
  }
  await sim.run(2000);
  sim.kill('n1');
  sim.partitioned.delete('n7');
  await sim.run(8000);
  const alive = names.filter((name) => name !== 'n1');
  assertConverged(t, sim, alive);
  t.is(sim.fingerprint('n7').split('\n').filter((line) => line.startsWith('object/system/')).length, 300, "n7 has all of n1's 300 records");
  const fromPeers = sim.snapshotsAsked.filter((asked) => asked.by === 'n7' && asked.source !== 'n1');
  t.true(fromPeers.length > 0, "n7 pulled n1's records from a peer while n1 was down");
  for (const name of alive) {
    const holders = sim.nodes.get(name)!.replicator.holdersOf('n1');
    t.true(holders.length >= 1 && holders.length <= 4, `${name} keeps ${holders.length} holders of n1`);
    t.false(holders.includes(name));
  }
});
