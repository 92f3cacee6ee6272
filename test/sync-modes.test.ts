/**
 * The other two ways a cluster syncs, on real daemons in network namespaces: unicast only (no
 * multicast, as in most clouds), and two L2 domains (two bridges behind a router, multicast
 * cannot cross) joined by a pair of L3 gateways.
 */
import test from 'ava';
import { Harness, harnessAvailable } from '../node/harness/index.js';
import { eventually } from './helpers/node.js';
import { assertNoAcknowledgedWriteLost, converged, members, put, syncStatus } from './helpers/sync.js';
import { runsWhen } from './helpers/requires.js';

const available = harnessAvailable();

if (!available.ok) {
  // Skipped, saying what is missing (a skipped test's body does not run, so the reason is in its title).
  runsWhen(available.why)(`sync modes: unicast and gateways (network namespaces): skipped, ${available.why}`, () => undefined);
} else {
  test.serial('unicast-only mode (--peers): writes on every node reach every node; a killed node is seen down, and catches up after restart', async (t) => {
    t.timeout(180_000);
    const nodes = ['u1', 'u2', 'u3'];
    const h = await Harness.start({ nodes, unicast: true });
    t.teardown(() => h.teardown());
    await h.waitSynced(60_000);
    for (const node of nodes) {
      const status = await syncStatus(h, node);
      t.is(status.mode, 'unicast', `${node} syncs by unicast`);
      t.is(status.multicast, null);
      t.is(status.datagrams, null, `${node} sends no datagrams`);
      t.deepEqual(status.peers, nodes.filter((other) => other !== node));
      t.true(status.traffic.unicast.sent.digest.count > 0 && status.traffic.unicast.received.digest.bytes > 0, `${node} counts digests sent and received over the agent`);
      t.is(status.traffic.multicast.sent.digest.count, 0);
    }
    const writes = (await Promise.all(nodes.map(async (node) => {
      const done = [];
      for (let i = 0; i < 30; i += 1) done.push(await put(h, node, `u${i % 20}`, { by: node, i: String(i) }));
      return done;
    }))).flat();
    await converged(h, nodes);
    for (const node of nodes) await assertNoAcknowledgedWriteLost(t, h, node, writes);

    await h.kill('u3');
    await eventually(async () => ((await members(h, 'u1')).find((member) => member.node === 'u3')?.state === 'down' ? true : undefined), 10_000, 'u1 to see u3 down');
    for (let i = 0; i < 20; i += 1) writes.push(await put(h, 'u1', `while${i}`, { while: 'u3 down' }));
    await h.restart('u3');
    await converged(h, nodes);
    await assertNoAcknowledgedWriteLost(t, h, 'u3', writes);
  });

  test.serial('two L2 domains joined by one gateway pair: changes cross in both directions, once, and every node sees every other up', async (t) => {
    t.timeout(180_000);
    // a1, b1 are the gateways (the first node of each domain); a2, b2 only reach their own domain by multicast.
    const nodes = ['a1', 'b1', 'a2', 'b2'];
    const h = await Harness.start({ nodes, domains: 2, domainOf: (name) => (name.startsWith('a') ? 'a' : 'b') });
    t.teardown(() => h.teardown());
    await h.waitSynced(60_000);
    const gatewayA = await syncStatus(h, 'a1');
    t.is(gatewayA.mode, 'multicast');
    t.deepEqual(gatewayA.gateways.map((gateway) => gateway.node), ['b1']);
    t.deepEqual((await syncStatus(h, 'a2')).gateways, []);

    const writes = [];
    for (let i = 0; i < 25; i += 1) {
      writes.push(await put(h, 'a2', `from-a${i}`, { domain: 'a' }));
      writes.push(await put(h, 'b2', `from-b${i}`, { domain: 'b' }));
      writes.push(await put(h, i % 2 ? 'a2' : 'b2', `both${i % 5}`, { i: String(i) }));
    }
    const common = await converged(h, nodes);
    t.is(common.records, 55);
    for (const node of nodes) await assertNoAcknowledgedWriteLost(t, h, node, writes);

    // a2 hears b2 only through the gateways: relayed, not looped back.
    const seenFromA2 = await eventually(async () => {
      const view = await members(h, 'a2');
      return view.every((member) => member.state === 'up') ? view : undefined;
    }, 10_000, 'a2 to see every node up');
    t.deepEqual(seenFromA2.map((member) => member.node), ['a1', 'a2', 'b1', 'b2']);
    const a1 = await syncStatus(h, 'a1');
    const b1 = await syncStatus(h, 'b1');
    t.true(a1.counters.relayed > 0 && b1.counters.relayed > 0, 'both gateways relayed');
    // Nothing came back around as new: each domain's own changes returning would be replays at the gateway at most.
    const a2 = await syncStatus(h, 'a2');
    t.is(a2.counters.staleIncarnations, 0);
  });
}
