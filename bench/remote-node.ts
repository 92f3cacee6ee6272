/**
 * One node of bench/remote, as its own process: a real daemon (agent included), an echo and a
 * counting actor, and a raw TLS frame echo with the same certificates (the baseline's ceiling).
 * The orchestrator drives it over IPC.
 */
import { readFileSync } from 'node:fs';
import { createServer, connect as tlsConnect, type TLSSocket } from 'node:tls';
import { gatheredWriter } from '../adapters/frame-listener.js';
import { encodeFrame, FrameDecoder, type Envelope } from '../runtime/codec.js';
import { homePaths } from '../runtime/config.js';
import { Daemon } from '../node/daemon.js';
import { messageSchema, type Message } from '../runtime/messages.js';
import { makePath } from '../runtime/path.js';
import { openLoop, type OpenLoopLatency } from './measure.js';

const [home = '', rawPortText = '0'] = process.argv.slice(2);
const rawPort = Number(rawPortText);
const paths = homePaths(home);
const daemon = await Daemon.start({ home, logLevel: 'warn', logFile: paths.logFile });
// Daemon.start returns once the Framework runs; the services (the agent among them) boot behind it.
while (daemon.status().booting || daemon.status().services.some((service) => service.state !== 'running')) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
const tls = { key: readFileSync(paths.nodeKey, 'utf8'), cert: readFileSync(paths.nodeCert, 'utf8'), ca: readFileSync(paths.caCert, 'utf8') };
let told = 0;
// Messages from other nodes are validated: these two accept any message.
await daemon.system.spawn(daemon.system.localPath('echo'), () => ({ receive: (message) => message }), { schema: messageSchema });
await daemon.system.spawn(daemon.system.localPath('counter'), () => ({
  receive: (message) => {
    if (message.type === 'count') return { type: 'count', told };
    told += 1;
    return undefined;
  },
}), { schema: messageSchema });

/** Writes frames as the agent's connections do (attachFrames): no Nagle, the same gathered writes. */
function coalescing(socket: TLSSocket): (envelope: Envelope) => void {
  socket.setNoDelay(true);
  const write = gatheredWriter(socket);
  return (envelope) => write(encodeFrame(envelope));
}

// Raw TLS: echoes every frame (ask) and answers a ping with the number of frames seen (tells).
const raw = createServer({ ...tls, ca: [tls.ca], requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (socket) => {
  const decoder = new FrameDecoder();
  const write = coalescing(socket);
  let seen = 0;
  socket.on('data', (chunk: Buffer) => {
    for (const envelope of decoder.push(chunk)) {
      if (envelope.k === 'ask') write({ v: 1, k: 'reply', id: envelope.id, body: envelope.body });
      else if (envelope.k === 'ping') write({ v: 1, k: 'pong', id: envelope.id, body: { seen } });
      else seen += 1;
    }
  });
  socket.on('error', () => undefined);
});
await new Promise<void>((resolve) => raw.listen(rawPort, '127.0.0.1', () => resolve()));

/** A raw TLS client with request/response matching by id. */
async function rawClient(port: number): Promise<{ send(envelope: Envelope): void; request(envelope: Envelope): Promise<Envelope>; close(): void }> {
  const socket: TLSSocket = tlsConnect({ host: '127.0.0.1', port, ...tls, ca: [tls.ca], minVersion: 'TLSv1.3', checkServerIdentity: () => undefined });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  const waiting = new Map<number, (envelope: Envelope) => void>();
  const decoder = new FrameDecoder();
  socket.on('data', (chunk: Buffer) => {
    for (const envelope of decoder.push(chunk)) {
      const done = waiting.get(envelope.id as number);
      waiting.delete(envelope.id as number);
      done?.(envelope);
    }
  });
  const write = coalescing(socket);
  return {
    send: write,
    request: (envelope) => new Promise((resolve) => {
      waiting.set(envelope.id as number, resolve);
      write(envelope);
    }),
    close: () => socket.destroy(),
  };
}

const body = { type: 'bench', payload: 'x'.repeat(100) };
const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;

async function concurrently(total: number, askers: number, one: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: askers }, async () => {
    while (next < total) await one(next++);
  }));
  return total / seconds(start);
}

async function measure(peer: string, peerRawPort: number): Promise<Record<string, unknown>> {
  const system = daemon.system;
  const remoteEcho = system.ref(makePath(system.identity.cluster, peer, 'echo'));
  const remoteCounter = system.ref(makePath(system.identity.cluster, peer, 'counter'));
  const localEcho = system.ref(system.localPath('echo'));
  const localCounter = system.ref(system.localPath('counter'));
  const rawPeer = await rawClient(peerRawPort);
  let id = 1;
  await remoteEcho.ask(body, { timeoutMs: 10_000 }); // the link is up before anything is timed
  const results: Record<string, unknown> = {};

  // Alternating rounds: raw TLS, then the agent, then (for asks) a local ask, again and again, so
  // load from elsewhere on a shared machine falls on every side alike. Each entry: one rate per round.
  const rounds = 7;
  const series: Record<string, number[]> = {};
  const record = (name: string, value: number) => (series[name] ??= []).push(value);
  const tells = 20_000;
  let counted = (await remoteCounter.ask<Message & { told: number }>({ type: 'count' }, { timeoutMs: 30_000 })).told;
  for (let round = 0; round < rounds; round += 1) {
    let start = process.hrtime.bigint();
    for (let i = 0; i < tells; i += 1) rawPeer.send({ v: 1, k: 'tell', body });
    await rawPeer.request({ v: 1, k: 'ping', id: id++ });
    record('rawTellsPerSecond', tells / seconds(start));
    start = process.hrtime.bigint();
    for (let i = 0; i < tells; i += 1) remoteCounter.tell(body);
    for (;;) {
      const reply = await remoteCounter.ask<Message & { told: number }>({ type: 'count' }, { timeoutMs: 30_000 });
      if (reply.told >= counted + tells) {
        counted = reply.told;
        break;
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    record('tellsPerSecond', tells / seconds(start));
    // The same tells into this node's own counter (the same actor, a local sender: no wire, no schema check).
    start = process.hrtime.bigint();
    const localBefore = (await localCounter.ask<Message & { told: number }>({ type: 'count' })).told;
    for (let i = 0; i < tells; i += 1) localCounter.tell(body);
    const localAfter = (await localCounter.ask<Message & { told: number }>({ type: 'count' })).told;
    if (localAfter < localBefore + tells) throw new Error(`the local counter saw ${localAfter - localBefore} of ${tells} tells`);
    record('localTellsPerSecond', tells / seconds(start));
    for (const askers of [1, 64]) {
      const total = askers === 1 ? 500 : 4000;
      record(`rawAsks${askers}`, await concurrently(total, askers, () => rawPeer.request({ v: 1, k: 'ask', id: id++, body })));
      record(`asks${askers}`, await concurrently(total, askers, () => remoteEcho.ask(body, { timeoutMs: 30_000 })));
      record(`localAsks${askers}`, await concurrently(total, askers, () => localEcho.ask(body, { timeoutMs: 30_000 })));
    }
  }
  results.series = series;
  // Open loop at 1,000/s (latency from each request's scheduled time): raw TLS, the agent and a
  // local ask in turn, round after round, so a burst of load from elsewhere falls on one round of
  // each rather than on the one run that is reported.
  const rate = 1000;
  const latencyRounds = 5;
  const latencies: { raw: OpenLoopLatency[]; agent: OpenLoopLatency[]; local: OpenLoopLatency[] } = { raw: [], agent: [], local: [] };
  await openLoop(rate, 1000, () => remoteEcho.ask(body, { timeoutMs: 30_000 })); // warm-up, not counted
  for (let round = 0; round < latencyRounds; round += 1) {
    latencies.raw.push(await openLoop(rate, 2000, () => rawPeer.request({ v: 1, k: 'ask', id: id++, body })));
    latencies.agent.push(await openLoop(rate, 2000, () => remoteEcho.ask(body, { timeoutMs: 30_000 })));
    latencies.local.push(await openLoop(rate, 2000, () => localEcho.ask(body, { timeoutMs: 30_000 })));
  }
  results.latencies = latencies;
  results.rate = rate;
  rawPeer.close();
  return results;
}

process.on('message', (command: { cmd: 'measure'; peer: string; peerRawPort: number } | { cmd: 'stop' }) => {
  if (command.cmd === 'measure') {
    measure(command.peer, command.peerRawPort).then(
      (results) => process.send?.({ results }),
      (error: unknown) => process.send?.({ error: (error as Error).message }),
    );
  } else {
    raw.close();
    void daemon.stop('bench over').then(() => process.exit(0));
  }
});
process.send?.({ ready: true });
