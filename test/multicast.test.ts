import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import test from 'ava';
import { MulticastChannel } from '../adapters/multicast.js';
import { AcpError } from '../runtime/errors.js';
import { silentLogger } from '../runtime/logger.js';
import { eventually } from './helpers/node.js';

const GROUP = '239.255.77.7';
const KEY = randomBytes(32).toString('hex');

interface Received {
  payload: unknown;
  origin: string;
  incarnation: number;
}

async function channel(t: import('ava').ExecutionContext, port: number, origin: string, options: { key?: string; incarnation?: number } = {}) {
  const received: Received[] = [];
  const sizes: number[] = [];
  const opened = new MulticastChannel({
    group: GROUP,
    port,
    interface: '127.0.0.1',
    clusterKey: options.key ?? KEY,
    origin,
    incarnation: options.incarnation ?? 1,
    log: silentLogger(),
    onPayload: (payload, from) => {
      received.push({ payload, origin: from.origin, incarnation: from.incarnation });
      sizes.push(from.bytes);
    },
  });
  await opened.open();
  t.teardown(() => opened.close());
  return { channel: opened, received, sizes };
}

/** A plain socket on the group: sees every datagram as sent (to replay or to send garbage). */
async function tap(t: import('ava').ExecutionContext, port: number) {
  const seen: Buffer[] = [];
  const socket = createSocket({ type: 'udp4', reuseAddr: true });
  socket.on('message', (datagram) => seen.push(datagram));
  await new Promise<void>((resolve) => socket.bind(port, () => resolve()));
  socket.addMembership(GROUP, '127.0.0.1');
  socket.setMulticastInterface('127.0.0.1');
  t.teardown(() => new Promise<void>((resolve) => socket.close(() => resolve())));
  return { seen, send: (datagram: Buffer) => new Promise<void>((resolve) => socket.send(datagram, port, GROUP, () => resolve())) };
}

const port = () => 40_000 + Math.floor(Math.random() * 20_000);

test('an authenticated datagram reaches the other nodes, not its sender', async (t) => {
  const p = port();
  const n1 = await channel(t, p, 'n1');
  const n2 = await channel(t, p, 'n2');
  const bytes = await n1.channel.send({ type: 'changes', keys: ['object/network/lan'] });
  await eventually(() => (n2.received.length === 1 ? true : undefined), 5000, 'the datagram at n2');
  t.is(n2.sizes[0], bytes, 'the receiver is told the size the sender sent');
  t.true(bytes > 36 && bytes < 200, `a small payload makes a small datagram (${bytes} bytes)`);
  t.deepEqual(n2.received[0], { payload: { type: 'changes', keys: ['object/network/lan'] }, origin: 'n1', incarnation: 1 });
  t.is(n1.received.length, 0);
  t.is(n2.channel.stats.accepted, 1);
});

test('forged, replayed and garbage datagrams are dropped and counted; nothing reaches the handler', async (t) => {
  const p = port();
  const wire = await tap(t, p);
  const n1 = await channel(t, p, 'n1');
  const n2 = await channel(t, p, 'n2');
  const intruder = await channel(t, p, 'n1', { key: randomBytes(32).toString('hex'), incarnation: 9 });
  await n1.channel.send({ n: 1 });
  await eventually(() => (n2.received.length === 1 && wire.seen.length >= 1 ? true : undefined), 5000, 'the genuine datagram');
  await intruder.channel.send({ n: 'forged' });
  await eventually(() => (n2.channel.stats.forged === 1 ? true : undefined), 5000, 'the forged datagram counted');
  await wire.send(wire.seen[0]!);
  await eventually(() => (n2.channel.stats.replayed === 1 ? true : undefined), 5000, 'the replay counted');
  await wire.send(randomBytes(200));
  await wire.send(Buffer.from('ACP1'));
  await eventually(() => (n2.channel.stats.garbage === 2 ? true : undefined), 5000, 'the garbage counted');
  t.deepEqual(n2.received.map((entry) => entry.payload), [{ n: 1 }]);
});

test('a new incarnation starts over; an older incarnation is a replay', async (t) => {
  const p = port();
  const n2 = await channel(t, p, 'n2');
  const second = await channel(t, p, 'n1', { incarnation: 2 });
  await second.channel.send({ from: 'second' });
  await eventually(() => (n2.received.length === 1 ? true : undefined), 5000, 'incarnation 2');
  const first = await channel(t, p, 'n1', { incarnation: 1 });
  await first.channel.send({ from: 'first' });
  await eventually(() => (n2.channel.stats.replayed === 1 ? true : undefined), 5000, 'the stale incarnation dropped');
  const third = await channel(t, p, 'n1', { incarnation: 3 });
  await third.channel.send({ from: 'third' });
  await eventually(() => (n2.received.length === 2 ? true : undefined), 5000, 'incarnation 3, sequence 1 again');
  t.deepEqual(n2.received.map((entry) => [entry.incarnation, entry.payload]), [[2, { from: 'second' }], [3, { from: 'third' }]]);
});

test('a payload too large for one datagram is refused; the fault knob drops outgoing datagrams', async (t) => {
  const p = port();
  const n1 = await channel(t, p, 'n1');
  const n2 = await channel(t, p, 'n2');
  const large = await t.throwsAsync(n1.channel.send({ blob: 'x'.repeat(2000) }), { instanceOf: AcpError });
  t.is(large?.code, 'ACP_ERR_WIRE_FRAME_TOO_LARGE');
  n1.channel.setDropRate(1);
  for (let i = 0; i < 20; i += 1) await n1.channel.send({ i });
  t.is(n1.channel.stats.droppedByFault, 20);
  n1.channel.setDropRate(0);
  await n1.channel.send({ last: true });
  await eventually(() => (n2.received.length === 1 ? true : undefined), 5000, 'the datagram sent after the knob is off');
  t.deepEqual(n2.received[0]?.payload, { last: true });
});
