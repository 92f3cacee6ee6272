import { OPERATOR } from '../runtime/principal.js';
import test from 'ava';
import type { FrameConnection } from '../adapters/frame-listener.js';
import { behindPackedTells, PeerLink } from '../actors/agent/link.js';
import { SimClock } from '../runtime/sim.js';
import { unpackTells, type Envelope } from '../runtime/codec.js';
import { AcpError } from '../runtime/errors.js';
import { silentLogger } from '../runtime/logger.js';
import type { Message } from '../runtime/messages.js';
import { parsePath } from '../runtime/path.js';
import type { Delivery } from '../runtime/system.js';

/** A connection whose peer reads only when told to: `pending` bytes stay unread until `drain()`. */
class FakeConnection implements FrameConnection {
  readonly id = 'fake';
  readonly sent: Envelope[] = [];
  pending = 0;
  private drainers: (() => void)[] = [];
  send(envelope: Envelope): void {
    this.sent.push(envelope);
  }
  close(): void {}
  get pendingWriteBytes(): number {
    return this.pending;
  }
  onDrain(fn: () => void): void {
    this.drainers.push(fn);
  }
  greeted(): void {}
  drain(): void {
    this.pending = 0;
    const drainers = this.drainers.splice(0);
    for (const fn of drainers) fn();
  }
}

const path = parsePath('acp://lab/n2/echo');

function makeLink(maxQueuedFrames: number, deadLetters: string[] = []) {
  return new PeerLink('n2', {
    log: silentLogger(),
    heartbeatMs: 60_000,
    maxQueuedFrames,
    dial: () => new Promise(() => undefined),
    deadLetter: (envelope, why) => deadLetters.push(`${(envelope.body as Message).type}: ${why}`),
  });
}

function ask(link: PeerLink, n: number): Promise<Message> {
  return new Promise((resolve, reject) => {
    const delivery: Delivery = { message: { type: 'echo', n }, sender: OPERATOR, external: false, reply: { resolve, reject } };
    link.deliver(path, delivery, 5000);
  });
}

test('a slow peer fills the bounded queue; an overflowing ask is refused with ACP_ERR_AGENT_QUEUE_FULL, a tell becomes a dead letter', async (t) => {
  const deadLetters: string[] = [];
  const link = makeLink(3, deadLetters);
  const connection = new FakeConnection();
  link.attach(connection, 1);
  t.teardown(() => link.close());
  connection.pending = 64 * 1024 * 1024; // the peer stopped reading: backpressure
  const queued = [ask(link, 1), ask(link, 2), ask(link, 3)];
  for (const promise of queued) promise.catch(() => undefined);
  t.is(connection.sent.length, 0, 'nothing is written while the socket is backed up');
  t.is(link.queued, 3);
  const overflow = await t.throwsAsync(ask(link, 4), { instanceOf: AcpError });
  t.is(overflow?.code, 'ACP_ERR_AGENT_QUEUE_FULL');
  link.deliver(path, { message: { type: 'lost' }, sender: OPERATOR, external: false }, 5000);
  t.is(deadLetters.length, 1);
  t.regex(deadLetters[0]!, /^lost: .*frames already wait/);
  // The peer reads again: the queue goes out in order.
  connection.drain();
  t.deepEqual(connection.sent.map((envelope) => (envelope.body as { n: number }).n), [1, 2, 3]);
  t.is(link.queued, 0);
});

test('answers settle the asks they answer; a lost connection fails the rest fast', async (t) => {
  const link = makeLink(10);
  const connection = new FakeConnection();
  link.attach(connection, 7);
  t.teardown(() => link.close());
  const first = ask(link, 1);
  const second = ask(link, 2);
  const [a, b] = connection.sent;
  link.frame({ v: 1, k: 'reply', id: a!.id, body: { type: 'echo', n: 1 } });
  t.deepEqual(await first, { type: 'echo', n: 1 });
  t.is(b!.k, 'ask');
  link.detach(connection, 'test');
  const lost = await t.throwsAsync(second, { instanceOf: AcpError });
  t.is(lost?.code, 'ACP_ERR_NODE_UNREACHABLE');
  t.is(link.inFlight, 0);
});

test('a new incarnation: watchers hear node-restarted, and frames queued for the old one are not sent to the new one', async (t) => {
  const link = makeLink(10);
  const old = new FakeConnection();
  link.attach(old, 1);
  t.teardown(() => link.close());
  const heard: string[] = [];
  link.watch(path, (terminated) => heard.push(terminated.reason));
  old.pending = 64 * 1024 * 1024;
  const stale = ask(link, 1);
  link.detach(old, 'peer died');
  const lostOnDetach = await t.throwsAsync(stale, { instanceOf: AcpError });
  t.is(lostOnDetach?.code, 'ACP_ERR_NODE_UNREACHABLE');
  t.is(link.queued, 0, 'an ask that failed is not kept to be sent later');
  const replacement = new FakeConnection();
  link.attach(replacement, 2);
  t.deepEqual(heard, ['node-restarted']);
  t.false(replacement.sent.some((envelope) => envelope.k === 'ask'), 'nothing meant for incarnation 1 reaches incarnation 2');
  // Sent now, it goes to the new incarnation.
  const fresh = ask(link, 2);
  const sent = replacement.sent.find((envelope) => envelope.k === 'ask')!;
  link.frame({ v: 1, k: 'reply', id: sent.id, body: { type: 'echo', n: 2 } });
  t.deepEqual(await fresh, { type: 'echo', n: 2 });
});

test('heartbeats on a simulated clock: a ping every heartbeat while the peer talks; three silent heartbeats drop the connection, and a link with a watch redials after its back-off', (t) => {
  const clock = new SimClock({ seed: 7 });
  let dials = 0;
  const link = new PeerLink('n2', {
    log: silentLogger(),
    heartbeatMs: 1000,
    maxQueuedFrames: 10,
    dial: () => {
      dials += 1;
      return new Promise(() => undefined);
    },
    deadLetter: () => undefined,
    clock,
  });
  t.teardown(() => link.close());
  const connection = new FakeConnection();
  let closed = false;
  connection.close = () => {
    closed = true;
  };
  link.attach(connection, 1);
  link.watch(path, () => undefined);
  const pings = () => connection.sent.filter((envelope) => envelope.k === 'ping').length;
  // The peer answers within each heartbeat: pings go on, the link stays up.
  for (let beat = 1; beat <= 5; beat += 1) {
    clock.advance(1000);
    link.seen();
  }
  t.is(pings(), 5);
  t.is(link.state, 'up');
  // Silence: the 4th heartbeat without a word gives the connection up.
  clock.advance(3000);
  t.is(link.state, 'up', 'three heartbeats of silence are still tolerated');
  clock.advance(1000);
  t.true(closed);
  t.is(link.state, 'idle');
  t.is(dials, 0, 'the redial waits for its back-off');
  // The first back-off is 100 ms with 20 % jitter.
  clock.advance(79);
  t.is(dials, 0);
  clock.advance(41);
  t.is(dials, 1);
  t.is(link.state, 'connecting');
});

const tell = (link: PeerLink, n: number, to = path, sender: Delivery['sender'] = OPERATOR) => link.deliver(to, { message: { type: 'tell', n }, sender, external: false }, 5000);
const kinds = (connection: FakeConnection) => connection.sent.map((envelope) => envelope.k);
const settled = () => new Promise((resolve) => setImmediate(resolve));

test("a peer that offered tells frames gets a run of tells to one actor as one frame, at the end of the job; frames keep their order around it", async (t) => {
  const link = makeLink(10);
  const connection = new FakeConnection();
  link.attach(connection, 1, { maxBytes: 256 * 1024 });
  t.teardown(() => link.close());
  for (let n = 1; n <= 3; n += 1) tell(link, n);
  t.deepEqual(kinds(connection), [], 'held until the job ends');
  const answer = ask(link, 4);
  answer.catch(() => undefined);
  tell(link, 5);
  tell(link, 6, parsePath('acp://lab/n2/other'));
  tell(link, 7);
  await settled();
  // The run of three went before the ask; another target starts a new run; a run of one is a tells frame too.
  t.deepEqual(kinds(connection), ['tells', 'ask', 'tells', 'tells', 'tells']);
  t.deepEqual(unpackTells(connection.sent[0]!.body), [1, 2, 3].map((n) => ({ type: 'tell', n })));
  t.is(connection.sent[0]!.to, 'acp://lab/n2/echo');
  t.is(connection.sent[0]!.from, 'operator');
  t.deepEqual(connection.sent.slice(2).map((envelope) => [envelope.to, (unpackTells(envelope.body)[0] as { n: number }).n]), [['acp://lab/n2/echo', 5], ['acp://lab/n2/other', 6], ['acp://lab/n2/echo', 7]]);
});

test('tells frames: another sender starts a new run, a run is cut before it outgrows the offer, a message too large to pack goes alone as a tell, a peer that offered nothing gets tells; a message changed after it was told goes as it was', async (t) => {
  const link = makeLink(10);
  const connection = new FakeConnection();
  link.attach(connection, 1, { maxBytes: 8 * 1024 });
  t.teardown(() => link.close());
  tell(link, 1);
  tell(link, 2, path, { kind: 'actor', path: 'acp://lab/n1/web' });
  tell(link, 3, path, { kind: 'actor', path: 'acp://lab/n1/web' });
  link.deliver(path, { message: { type: 'big', data: 'x'.repeat(6000) }, sender: OPERATOR, external: false }, 5000);
  for (let n = 10; n < 1000; n += 1) tell(link, n);
  await settled();
  t.deepEqual(kinds(connection).slice(0, 3), ['tells', 'tells', 'tell']);
  t.is(unpackTells(connection.sent[1]!.body).length, 2, "the actor's two tells in one frame");
  t.is((connection.sent[2]!.body as Message).type, 'big');
  const rest = connection.sent.slice(3);
  t.true(rest.length > 1, `990 tells under an 8 KiB offer take more than one frame (${rest.length})`);
  t.true(rest.every((envelope) => envelope.k === 'tells' && (envelope.body as Uint8Array).length <= 8 * 1024 - 4096));
  t.deepEqual(rest.flatMap((envelope) => unpackTells(envelope.body)).map((message) => (message as { n: number }).n), Array.from({ length: 990 }, (_, index) => index + 10));

  const changed = { type: 'tell', n: 1 };
  link.deliver(path, { message: changed, sender: OPERATOR, external: false }, 5000);
  changed.n = 2;
  await settled();
  t.deepEqual(unpackTells(connection.sent.at(-1)!.body), [{ type: 'tell', n: 1 }]);

  const plain = makeLink(10);
  const other = new FakeConnection();
  plain.attach(other, 1);
  t.teardown(() => plain.close());
  for (let n = 1; n <= 3; n += 1) tell(plain, n);
  t.deepEqual(kinds(other), ['tell', 'tell', 'tell'], 'sent at once, one frame each');
});

test('tells packed when the connection is lost wait in the queue, first, for the same incarnation: sent on a reconnection to it, dead letters if the peer restarted', async (t) => {
  const deadLetters: string[] = [];
  const link = makeLink(10, deadLetters);
  const first = new FakeConnection();
  link.attach(first, 1, { maxBytes: 256 * 1024 });
  t.teardown(() => link.close());
  tell(link, 1);
  tell(link, 2);
  link.detach(first, 'closed');
  await settled();
  t.deepEqual(kinds(first), [], 'nothing written after the connection went');
  t.is(link.queued, 2);
  tell(link, 3);
  const second = new FakeConnection();
  link.attach(second, 1, { maxBytes: 256 * 1024 });
  t.deepEqual(second.sent.map((envelope) => (envelope.body as { n: number }).n), [1, 2, 3], 'in the order told');

  tell(link, 4);
  link.detach(second, 'closed');
  link.attach(new FakeConnection(), 2, { maxBytes: 256 * 1024 });
  t.deepEqual(deadLetters.map((line) => line.split(':')[0]), ['tell']);
  t.regex(deadLetters[0]!, /restarted before the message was sent/);
});

test('a connection lost while waiting for the peer to drain: the next connection packs and flushes again; frames the session answers with go after the packed tells', async (t) => {
  const link = makeLink(10);
  const first = new FakeConnection();
  link.attach(first, 1, { maxBytes: 256 * 1024 });
  t.teardown(() => link.close());
  first.pending = 64 * 1024 * 1024;
  tell(link, 1);
  t.is(link.queued, 1, 'queued behind backpressure');
  link.detach(first, 'closed');
  const second = new FakeConnection();
  link.attach(second, 1, { maxBytes: 256 * 1024 });
  t.deepEqual(second.sent.map((envelope) => (envelope.body as { n: number }).n), [1], 'the queue went out on the new connection');
  tell(link, 2);
  tell(link, 3);
  // The session answering on this connection sends through behindPackedTells: its frame waits for nothing, but goes after the tells.
  behindPackedTells(second, () => link).send({ v: 1, k: 'event', id: 7, body: { type: 'terminated' } });
  t.deepEqual(kinds(second), ['tell', 'tells', 'event']);
  t.deepEqual(unpackTells(second.sent[1]!.body), [2, 3].map((n) => ({ type: 'tell', n })));
});

test('a peer heard again: a dial stuck since the partition and a reconnection waiting out its back-off start over at once; the old dial failing late fails nothing', async (t) => {
  const clock = new SimClock({ seed: 3 });
  const dials: { reject: (error: Error) => void }[] = [];
  const link = new PeerLink('n2', {
    log: silentLogger(),
    heartbeatMs: 60_000,
    maxQueuedFrames: 10,
    dial: () => new Promise<void>((_resolve, reject) => dials.push({ reject })),
    deadLetter: () => undefined,
    clock,
  });
  t.teardown(() => link.close());
  // A dial begun during the partition hangs (TCP retransmits its SYN for seconds).
  const answer = ask(link, 1);
  t.is(dials.length, 1);
  t.is(link.state, 'connecting');
  link.redialNow();
  t.is(dials.length, 2, 'a new dial, not behind the stuck one');
  dials[0]!.reject(new Error('connect ETIMEDOUT'));
  await settled();
  t.is(link.state, 'connecting', 'the stuck dial failing late undoes nothing');
  t.is(link.queued, 1, 'the ask still waits for the new dial');
  const connection = new FakeConnection();
  link.attach(connection, 1);
  t.deepEqual(connection.sent.map((envelope) => envelope.k), ['ask']);
  link.frame({ v: 1, k: 'reply', id: connection.sent[0]!.id, body: { type: 'echoed' } });
  t.like(await answer, { type: 'echoed' });
  // Lost again with a watch: the reconnection waits out a back-off, unless the peer is heard.
  link.watch(path, () => undefined);
  link.detach(connection, 'closed');
  t.is(link.state, 'idle');
  clock.advance(50);
  t.is(dials.length, 2, 'still in its back-off');
  link.redialNow();
  t.is(dials.length, 3);
  t.is(link.state, 'connecting');
  // A link with nothing to send and nothing watched does not dial because a peer was heard.
  const quiet = makeLink(10);
  t.teardown(() => quiet.close());
  quiet.redialNow();
  t.is(quiet.state, 'idle');
});
