import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { createCa, createCsr, fingerprint } from '../adapters/pki.js';
import { encodeToken, mintToken } from '../adapters/join-tokens.js';
import { initCluster, joinCluster } from '../node/cluster.js';
import { connect, type AcpClient } from '../node/client.js';
import { DEFAULT_MAX_HELLO_FRAME_BYTES, encodeFrame, packedTell, PROTOCOL_VERSION, type Envelope } from '../runtime/codec.js';
import { homePaths } from '../runtime/config.js';
import { AcpError, type ErrorCode } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import type { NodeStatus } from '../runtime/services.js';
import { apiKeyOf, askVia, createToken, FakePeer, freePort, issue, RawTls, readSecret, statusOf, up, type ClusterNode, type Pong, type RawTlsResult } from './helpers/agent.js';
import { eventually, runCli } from './helpers/node.js';

/**
 * One small cluster for the whole file: n1 (holds the CA, agent listening) and n2 (joined through
 * n1). The tests run serially so each can count the refusals its connections cause.
 */
const HELLO_TIMEOUT_MS = 800;
/** How long a raw connection waits for the server (a liveness bound, not a speed check). */
const WAIT_MS = 5000;

let n1: ClusterNode;
let n2: ClusterNode;
let caCert: string;
let caKey: string;
/** A valid identity from the cluster CA for a script. */
let script: { cert: string; key: string };

const homes: string[] = [];

function nodeHome(name: string): Promise<ClusterNode> {
  const home = mkdtempSync(join(tmpdir(), 'acp-test-'));
  homes.push(home);
  writeFileSync(join(home, 'config.json'), JSON.stringify({ cluster: 'lab', node: name, webapi: { host: '127.0.0.1', port: 0 }, api: { helloTimeoutMs: HELLO_TIMEOUT_MS } }));
  return freePort().then((port) => ({ name, home, port, agent: `127.0.0.1:${port}`, pid: 0, incarnation: 0 }));
}

test.before(async () => {
  n1 = await nodeHome('n1');
  await initCluster(n1.home, { cluster: 'lab', node: 'n1', agent: n1.agent });
  await up(n1);
  n2 = await nodeHome('n2');
  await joinCluster(n2.home, n1.agent, await createToken(n1), { node: 'n2', agent: n2.agent });
  await up(n2);
  caCert = readSecret(n1.home, 'ca.crt');
  caKey = readSecret(n1.home, 'ca.key');
  script = await issue('script-1', caCert, caKey);
});

test.after.always(async () => {
  for (const home of homes) {
    await runCli(['down'], home, 30_000).catch(() => undefined);
    for (const node of [n1, n2]) {
      if (node?.home === home && node.pid > 0) {
        try {
          process.kill(node.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    rmSync(home, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Helpers

function hello(body: Record<string, unknown>): Envelope {
  return { v: PROTOCOL_VERSION, k: 'hello', body };
}

function scriptHello(overrides: Record<string, unknown> = {}): Envelope {
  return hello({ cluster: 'lab', node: 'script-1', role: 'client', apiKey: apiKeyOf(n1.home), proto: PROTOCOL_VERSION, ...overrides });
}

function header(length: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32BE(length, 0);
  return bytes;
}

async function refusals(node: ClusterNode): Promise<number> {
  return (await statusOf(node.home)).refusedConnections;
}

/** Connects with `identity`, writes `bytes` (if any), and collects what comes back until the server closes. */
async function exchange(port: number, identity: { cert?: string; key?: string }, bytes?: Buffer, timeoutMs = WAIT_MS): Promise<RawTlsResult> {
  const connection = await RawTls.open(port, { ...identity, ca: caCert });
  if (bytes && !connection.closed) connection.write(bytes);
  const result = await connection.untilClosed(timeoutMs);
  connection.destroy();
  return result;
}

/** One error frame with `code`, no hello answer, and the server closed the connection. */
function assertRefused(t: ExecutionContext, result: RawTlsResult, code: ErrorCode): void {
  t.true(result.closed, 'the server closes the connection');
  const errors = result.frames.filter((frame) => frame.k === 'error');
  t.is(errors.length, 1, `one error frame, got ${JSON.stringify(result.frames)}`);
  t.is(errors[0]?.err?.code, code);
  t.false(result.frames.some((frame) => frame.k === 'hello'), 'no hello answer');
}

/** The daemon logged `text` (the detached daemon's log file). */
async function logged(node: ClusterNode, text: string): Promise<string> {
  return eventually(() => {
    const log = readFileSync(homePaths(node.home).logFile, 'utf8');
    return log.includes(text) ? log : undefined;
  }, WAIT_MS, `'${text}' in the log of ${node.name}`);
}

/** A remote script over n1's agent: asks n2 (through the peer link) and n1; every service is still up, none restarted. */
async function assertHealthy(t: ExecutionContext, node: ClusterNode): Promise<NodeStatus> {
  const client: AcpClient = await connect({ tls: { host: '127.0.0.1', port: n1.port, cert: script.cert, key: script.key, ca: caCert, name: 'script-1' }, apiKey: apiKeyOf(n1.home), cluster: 'lab' });
  try {
    // A peer dial that lost a race with a loaded machine is retried by the link: allow a few attempts.
    const pong = await eventually(() => client.ask<Pong>('acp://lab/n2/framework', { type: 'ping' }, { timeoutMs: WAIT_MS }), 15_000, 'a pong from n2 through n1');
    t.is(pong.incarnation, n2.incarnation);
    t.is((await client.ask<Pong>('framework', { type: 'ping' }, { timeoutMs: WAIT_MS })).incarnation, n1.incarnation);
  } finally {
    await client.close();
  }
  t.is((await askVia<Pong>(n2, 'acp://lab/n1/framework', { type: 'ping' })).incarnation, n1.incarnation, 'the peer link works from n2 as well');
  const status = await statusOf(node.home);
  t.is(status.incarnation, node.incarnation, 'the daemon did not restart');
  t.deepEqual(
    status.services.filter((service) => service.restarts !== 0 || service.state !== 'running').map((service) => `${service.name}: ${service.state}, ${service.restarts} restarts`),
    [],
    'every service runs and none restarted',
  );
  return status;
}

// ---------------------------------------------------------------------------------------------
// No certificate

test.serial('a non-CA node refuses a connection without a client certificate with ACP_ERR_AGENT_BAD_CERT', async (t) => {
  const before = await refusals(n2);
  const result = await exchange(n2.port, {}, encodeFrame(scriptHello()));
  assertRefused(t, result, 'ACP_ERR_AGENT_BAD_CERT');
  t.is(await refusals(n2), before + 1);
  await logged(n2, 'agent connection refused: no client certificate');
  await assertHealthy(t, n2);
});

test.serial('the CA node refuses a certless connection that says nothing, after helloTimeoutMs, with ACP_ERR_AGENT_BAD_CERT', async (t) => {
  const before = await refusals(n1);
  const started = Date.now();
  const result = await exchange(n1.port, {}, undefined, HELLO_TIMEOUT_MS + WAIT_MS);
  const waited = Date.now() - started;
  assertRefused(t, result, 'ACP_ERR_AGENT_BAD_CERT');
  t.regex(result.frames[0]?.err?.message ?? '', /join hello/);
  // A lower bound only: it must not give up before its configured timeout.
  t.true(waited >= HELLO_TIMEOUT_MS - 20, `closed after ${waited} ms`);
  t.is(await refusals(n1), before + 1);
  await logged(n1, 'join refused');
  await assertHealthy(t, n1);
});

test.serial('the CA node refuses certless garbage: a frame that is no join hello (BAD_CERT), bytes that are no frame (BAD_FRAME)', async (t) => {
  const before = await refusals(n1);
  const notHello = await exchange(n1.port, {}, encodeFrame({ v: PROTOCOL_VERSION, k: 'ask', id: 1, to: 'acp://lab/n1/agent', body: { type: 'agent.token' } }));
  assertRefused(t, notHello, 'ACP_ERR_AGENT_BAD_CERT');
  // Undecodable bytes never reach the join session's own checks: the frame layer refuses them.
  const payload = Buffer.concat([Buffer.from([0xff]), randomBytes(63)]);
  const garbage = await exchange(n1.port, {}, Buffer.concat([header(payload.length), payload, randomBytes(2000)]));
  assertRefused(t, garbage, 'ACP_ERR_WIRE_BAD_FRAME');
  t.is(await refusals(n1), before + 2);
  await assertHealthy(t, n1);
});

test.serial('the CA node refuses a join hello whose token it never minted, and one for another cluster', async (t) => {
  const before = await refusals(n1);
  const join = (token: string, cluster = 'lab') =>
    encodeFrame(hello({ cluster, proto: PROTOCOL_VERSION, node: 'intruder', join: { token, csr: '-----BEGIN CERTIFICATE REQUEST-----\nx\n-----END CERTIFICATE REQUEST-----\n' } }));
  const unknown = await exchange(n1.port, {}, join(encodeToken(mintToken('lab', fingerprint(caCert), 3_600_000))));
  assertRefused(t, unknown, 'ACP_ERR_PKI_BAD_TOKEN');
  const otherCluster = await exchange(n1.port, {}, join(encodeToken(mintToken('lab', fingerprint(caCert), 3_600_000)), 'elsewhere'));
  assertRefused(t, otherCluster, 'ACP_ERR_WIRE_BAD_HELLO');
  t.is(await refusals(n1), before + 2);
  await assertHealthy(t, n1);
});

// ---------------------------------------------------------------------------------------------
// Bad certificates

test.serial('a certificate from another CA is refused: no hello answer ever comes', async (t) => {
  const other = await createCa('lab');
  const foreign = await issue('script-1', other.certPem, other.keyPem);
  const before = await refusals(n1);
  const connection = await RawTls.open(n1.port, { ...foreign, ca: caCert });
  connection.send(scriptHello());
  const result = await connection.untilClosed();
  connection.destroy();
  t.false(result.frames.some((frame) => frame.k === 'hello'), 'no hello answer');
  t.true(result.closed, 'the connection is closed');
  if (result.frames.length > 0) {
    // The server took the handshake and refused at the frame level.
    t.deepEqual(result.frames.map((frame) => frame.err?.code), ['ACP_ERR_AGENT_BAD_CERT']);
    t.is(await refusals(n1), before + 1);
    await logged(n1, 'certificate not accepted');
  } else {
    t.truthy(result.error, 'or the handshake failed');
  }
  await assertHealthy(t, n1);
});

test.serial('an expired certificate from the right CA is refused with ACP_ERR_AGENT_BAD_CERT (CERT_HAS_EXPIRED)', async (t) => {
  const day = 24 * 3_600_000;
  const expired = await issue('script-1', caCert, caKey, { notBefore: new Date(Date.now() - 3 * day), notAfter: new Date(Date.now() - day) });
  const before = await refusals(n1);
  const result = await exchange(n1.port, expired, encodeFrame(scriptHello()));
  assertRefused(t, result, 'ACP_ERR_AGENT_BAD_CERT');
  t.regex(result.frames[0]?.err?.message ?? '', /CERT_HAS_EXPIRED/);
  t.is(await refusals(n1), before + 1);
  await logged(n1, 'CERT_HAS_EXPIRED');
  await assertHealthy(t, n1);
});

test.serial('a certificate that is not valid yet is refused with ACP_ERR_AGENT_BAD_CERT (CERT_NOT_YET_VALID)', async (t) => {
  const day = 24 * 3_600_000;
  const early = await issue('script-1', caCert, caKey, { notBefore: new Date(Date.now() + day), notAfter: new Date(Date.now() + 3 * day) });
  const before = await refusals(n1);
  const result = await exchange(n1.port, early, encodeFrame(scriptHello()));
  assertRefused(t, result, 'ACP_ERR_AGENT_BAD_CERT');
  t.regex(result.frames[0]?.err?.message ?? '', /CERT_NOT_YET_VALID/);
  t.is(await refusals(n1), before + 1);
  await assertHealthy(t, n1);
});

test.serial("a valid certificate whose name is not the hello's node is refused with ACP_ERR_AGENT_NODE_MISMATCH", async (t) => {
  const before = await refusals(n1);
  // A script certificate claiming to be node n2 (as a peer), and one whose hello names no node.
  const asPeer = await exchange(n1.port, script, encodeFrame(scriptHello({ node: 'n2', role: 'peer', incarnation: 1, agent: '127.0.0.1:1' })));
  assertRefused(t, asPeer, 'ACP_ERR_AGENT_NODE_MISMATCH');
  const { node: _omitted, ...anonymous } = (scriptHello().body ?? {}) as Record<string, unknown>;
  const nameless = await exchange(n1.port, script, encodeFrame(hello(anonymous)));
  assertRefused(t, nameless, 'ACP_ERR_AGENT_NODE_MISMATCH');
  t.is(await refusals(n1), before + 2);
  await logged(n1, 'ACP_ERR_AGENT_NODE_MISMATCH');
  // The impostor hello did not touch n1's link to n2 nor the address it has for n2.
  const peers = await askVia<Message & { peers: { node: string; address: string | null }[] }>(n1, 'agent', { type: 'agent.peers' });
  t.deepEqual(peers.peers.map((peer) => [peer.node, peer.address]), [['n2', n2.agent]]);
  await assertHealthy(t, n1);
});

// ---------------------------------------------------------------------------------------------
// Valid certificate, bad protocol

test.serial('a valid certificate with a wrong API key is refused with ACP_ERR_WIRE_BAD_KEY', async (t) => {
  const before = await refusals(n1);
  const result = await exchange(n1.port, script, encodeFrame(scriptHello({ apiKey: randomBytes(32).toString('hex') })));
  assertRefused(t, result, 'ACP_ERR_WIRE_BAD_KEY');
  t.is(await refusals(n1), before + 1);
  await assertHealthy(t, n1);
});

test.serial('garbage bytes after the TLS handshake are refused with ACP_ERR_WIRE_BAD_FRAME', async (t) => {
  const before = await refusals(n1);
  const payload = Buffer.concat([Buffer.from([0xff]), randomBytes(63)]);
  const result = await exchange(n1.port, script, Buffer.concat([header(payload.length), payload, randomBytes(4000)]));
  assertRefused(t, result, 'ACP_ERR_WIRE_BAD_FRAME');
  // Pure random bytes: whatever the first four say, the connection is refused (before hello, frames past the hello limit are too large).
  const bytes = randomBytes(4096);
  const announced = bytes.readUInt32BE(0);
  const expected: ErrorCode = announced > DEFAULT_MAX_HELLO_FRAME_BYTES ? 'ACP_ERR_WIRE_FRAME_TOO_LARGE' : announced <= bytes.length - 4 ? 'ACP_ERR_WIRE_BAD_FRAME' : 'ACP_ERR_WIRE_NO_HELLO';
  const random = await exchange(n1.port, script, bytes, HELLO_TIMEOUT_MS + WAIT_MS);
  assertRefused(t, random, expected);
  // The case one CI run drew by chance (1 in 256): a length within the frame limit but past the hello limit.
  const pastHello = Buffer.concat([header(DEFAULT_MAX_HELLO_FRAME_BYTES + 1), randomBytes(1024)]);
  assertRefused(t, await exchange(n1.port, script, pastHello), 'ACP_ERR_WIRE_FRAME_TOO_LARGE');
  t.is(await refusals(n1), before + 3);
  await assertHealthy(t, n1);
});

test.serial('a frame header announcing 100 MiB is refused with ACP_ERR_WIRE_FRAME_TOO_LARGE, before and after hello', async (t) => {
  const before = await refusals(n1);
  const oversized = Buffer.concat([header(100 * 1024 * 1024), randomBytes(1024)]);
  const first = await exchange(n1.port, script, oversized);
  assertRefused(t, first, 'ACP_ERR_WIRE_FRAME_TOO_LARGE');
  t.regex(first.frames[0]?.err?.message ?? '', /104857600/);
  // The same after a good hello.
  const greeted = await RawTls.open(n1.port, { ...script, ca: caCert });
  greeted.send(scriptHello());
  t.is((await greeted.frame())?.k, 'hello');
  greeted.write(oversized);
  const after = await greeted.untilClosed();
  greeted.destroy();
  t.true(after.closed);
  t.deepEqual(after.frames.slice(1).map((frame) => frame.err?.code), ['ACP_ERR_WIRE_FRAME_TOO_LARGE']);
  // And without a certificate, on the CA node's join path.
  const certless = await exchange(n1.port, {}, oversized);
  assertRefused(t, certless, 'ACP_ERR_WIRE_FRAME_TOO_LARGE');
  t.is(await refusals(n1), before + 3);
  await assertHealthy(t, n1);
});

test.serial('a client with a valid certificate that never says hello is closed after helloTimeoutMs with ACP_ERR_WIRE_NO_HELLO', async (t) => {
  const before = await refusals(n1);
  const started = Date.now();
  const result = await exchange(n1.port, script, undefined, HELLO_TIMEOUT_MS + WAIT_MS);
  const waited = Date.now() - started;
  assertRefused(t, result, 'ACP_ERR_WIRE_NO_HELLO');
  t.true(waited >= HELLO_TIMEOUT_MS - 20, `closed after ${waited} ms`);
  t.is(await refusals(n1), before + 1);
  await assertHealthy(t, n1);
});

// ---------------------------------------------------------------------------------------------
// A burst

/** Opens one TLS connection of the given kind and drops it; resolves once our side is closed. */
function dropOne(kind: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: n1.port,
      minVersion: 'TLSv1.3',
      ca: [caCert],
      checkServerIdentity: () => undefined,
      // 0: dropped as soon as TCP connects (mid-handshake); 1: a valid client certificate; 2: none (the CA node's join path).
      ...(kind === 1 ? { cert: script.cert, key: script.key } : {}),
    });
    socket.on('error', () => undefined);
    if (kind === 0) socket.once('connect', () => socket.destroy());
    else socket.once('secureConnect', () => socket.destroy());
    socket.once('close', () => resolve());
  });
}

// 1,000 TLS connection attempts in batches of 50: a third dropped right away (mid-handshake), two
// thirds dropped right after a full TLS 1.3 handshake, with and without a client certificate.
test.serial('1,000 connection attempts in a burst leave the daemon healthy; none counts as a refusal', async (t) => {
  const before = await statusOf(n1.home);
  const agentBefore = await askVia<Message & { peers: number }>(n1, 'agent', { type: 'service.info' });
  let attempts = 0;
  for (let batch = 0; batch < 20; batch += 1) {
    await Promise.all(Array.from({ length: 50 }, (_, index) => dropOne((batch * 50 + index) % 3)));
    attempts += 50;
  }
  t.is(attempts, 1000);
  const status = await assertHealthy(t, n1);
  t.is(status.refusedConnections, before.refusedConnections, 'a client that goes away is not a refusal');
  const agentAfter = await askVia<Message & { peers: number }>(n1, 'agent', { type: 'service.info' });
  t.is(agentAfter.peers, agentBefore.peers, 'no peer link was made for any of them');
  // A legit client still gets answers over the agent.
  const client = await connect({ tls: { host: '127.0.0.1', port: n1.port, cert: script.cert, key: script.key, ca: caCert, name: 'script-1' }, apiKey: apiKeyOf(n1.home), cluster: 'lab' });
  t.teardown(() => client.close());
  t.is((await client.ask<NodeStatus>('framework', { type: 'status' }, { timeoutMs: WAIT_MS })).node, 'n1');
});

// ---------------------------------------------------------------------------------------------
// Authorization: what a script certificate may not do (found in review)

test.serial("a script certificate cannot get another node's certificate, mint a token or renew a node, directly or relayed", async (t) => {
  const viaN1 = await connect({ tls: { host: '127.0.0.1', port: n1.port, cert: script.cert, key: script.key, ca: caCert, name: 'script-1' }, apiKey: apiKeyOf(n1.home), cluster: 'lab' });
  const viaN2 = await connect({ tls: { host: '127.0.0.1', port: n2.port, cert: script.cert, key: script.key, ca: caCert, name: 'script-1' }, apiKey: apiKeyOf(n1.home), cluster: 'lab' });
  t.teardown(async () => {
    await viaN1.close();
    await viaN2.close();
  });
  const { csrPem } = await createCsr('n2');
  // Relayed by n2 to the CA node: the request still comes from the script, not from n2.
  const relayed = await t.throwsAsync(viaN2.ask('acp://lab/n1/agent', { type: 'agent.sign', csr: csrPem }, { timeoutMs: WAIT_MS }), { instanceOf: AcpError });
  t.is(relayed?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  const direct = await t.throwsAsync(viaN1.ask('agent', { type: 'agent.sign', csr: csrPem }, { timeoutMs: WAIT_MS }), { instanceOf: AcpError });
  t.is(direct?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  const token = await t.throwsAsync(viaN1.ask('agent', { type: 'agent.token', ttlMs: 60_000 }, { timeoutMs: WAIT_MS }), { instanceOf: AcpError });
  t.is(token?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  const renew = await t.throwsAsync(viaN2.ask('agent', { type: 'agent.renew' }, { timeoutMs: WAIT_MS }), { instanceOf: AcpError });
  t.is(renew?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  await assertHealthy(t, n1);
});

test.serial("a node this agent has not met is found by its object in the CDB, not only by asking the CA node (which may be the node that is down)", async (t) => {
  // A node n2 never talked to, which n1 (the CA node) does not know either: only the CDB has its address.
  const port = await freePort();
  await askVia(n2, 'cdb', { type: 'cdb.put', key: 'object/node/ghost', value: { name: 'ghost', cluster: 'lab', agent: `127.0.0.1:${port}` } });
  const error = await askVia(n2, 'acp://lab/ghost/framework', { type: 'ping' }, 10_000).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  t.true(error instanceof AcpError, `not an AcpError: ${String(error)}`);
  t.is((error as AcpError).code, 'ACP_ERR_NODE_UNREACHABLE');
  // It dialled the address from the CDB (nothing listens there) instead of knowing no address.
  t.regex((error as AcpError).message, new RegExp(`127\\.0\\.0\\.1:${port}`));
  t.notRegex((error as AcpError).message, /no agent address is known/);
  await askVia(n2, 'cdb', { type: 'cdb.delete', key: 'object/node/ghost' });
});

test.serial("tells frames: a peer node is offered them and its messages are told in order; a script is not, and n1 packs a script's plain tells for n2; a malformed message or a frame past the offer is refused whole and closes only its connection", async (t) => {
  const put = (name: string, seq: number) => ({ type: 'cdb.put', key: `object/chaos/${name}`, value: { name, run: 'tells', seq, via: 'n1' } });
  const tells = (to: string, parts: Buffer[]): Envelope => ({ v: PROTOCOL_VERSION, k: 'tells', to, from: 'operator', body: Buffer.concat(parts) });
  const client = await connect({ home: n2.home });
  t.teardown(() => client.close());
  const seqOf = async (key: string) => (await client.ask<Message & { record: { value: { seq: number } } }>('cdb', { type: 'cdb.get', key }).catch(() => undefined))?.record.value.seq;
  const missing = async (key: string) => {
    const local = await connect({ home: n1.home });
    try {
      return await local.ask('cdb', { type: 'cdb.get', key }).then(() => 'found', (error: unknown) => (error instanceof AcpError ? error.code : String(error)));
    } finally {
      await local.close();
    }
  };

  // A script: no offer. Its plain tells for n2 go through n1's link to n2, which packs them (n2 offered): they land in order.
  const script_ = await RawTls.open(n1.port, { ...script, ca: caCert });
  t.teardown(() => script_.destroy());
  script_.send(scriptHello());
  const scriptAnswer = await script_.frame();
  t.is(scriptAnswer?.k, 'hello');
  t.is((scriptAnswer?.body as { tells?: unknown }).tells, undefined, 'a script is not offered tells frames');
  for (const seq of [1, 2, 3]) script_.send({ v: PROTOCOL_VERSION, k: 'tell', to: 'acp://lab/n2/cdb', body: put('tells-there', seq) });
  await eventually(async () => ((await seqOf('object/chaos/tells-there')) === 3 ? true : undefined), 10_000, "the script's three writes relayed to n2's CDB, the last one last");
  script_.send(tells('acp://lab/n1/cdb', [packedTell(put('tells-script', 1))]));
  const scriptRefusal = (await script_.untilClosed()).frames.find((frame) => frame.k === 'error');
  t.is(scriptRefusal?.err?.code, 'ACP_ERR_WIRE_BAD_FRAME');
  t.regex(scriptRefusal?.err?.message ?? '', /not offered 'tells' frames; send each message as a tell/);
  t.is(await missing('object/chaos/tells-script'), 'ACP_ERR_CDB_NOT_FOUND');

  // A peer node: offered, and its run lands in order.
  const peer = await FakePeer.connect(t, n1, 'n7');
  const offer = (peer.hello.body as { tells?: { maxBytes: number } }).tells;
  t.true(offer !== undefined && offer.maxBytes >= 8192, `the peer hello's answer offers tells frames: ${JSON.stringify(peer.hello.body)}`);
  peer.send(tells('acp://lab/n1/cdb', [1, 2, 3].map((seq) => packedTell(put('tells-here', seq)))));
  await eventually(async () => ((await seqOf('object/chaos/tells-here')) === 3 ? true : undefined), 10_000, "the peer's three writes, the last one last");

  // A frame whose second message is not CBOR the protocol allows: refused whole, the first message not told either.
  const bad = await FakePeer.connect(t, n1, 'n8');
  bad.send(tells('acp://lab/n1/cdb', [packedTell(put('tells-refused', 1)), Buffer.from([0, 0, 0, 2, 0xc1, 0xa0])]));
  const refusal = (await bad.untilClosed()).frames.find((frame) => frame.k === 'error');
  t.is(refusal?.err?.code, 'ACP_ERR_WIRE_BAD_FRAME');
  t.regex(refusal?.err?.message ?? '', /message 2 of a tells frame: frame refused: CBOR tag 1/);
  t.is(await missing('object/chaos/tells-refused'), 'ACP_ERR_CDB_NOT_FOUND');
  // More bytes of messages than offered: refused before any is read.
  const large = await FakePeer.connect(t, n1, 'n9');
  const many = Array.from({ length: Math.ceil(offer!.maxBytes / 60) + 10 }, (_, index) => packedTell(put('tells-large', index + 1)));
  large.send(tells('acp://lab/n1/cdb', many));
  const tooLarge = (await large.untilClosed()).frames.find((frame) => frame.k === 'error');
  t.is(tooLarge?.err?.code, 'ACP_ERR_WIRE_BAD_FRAME');
  t.regex(tooLarge?.err?.message ?? '', /more than the \d+ this connection was offered/);
  t.is(await missing('object/chaos/tells-large'), 'ACP_ERR_CDB_NOT_FOUND');
  // Messages the target refuses (a type the CDB does not take): one error for the frame, not one each.
  const errorsBefore = peer.received.filter((frame) => frame.k === 'error').length;
  peer.send(tells('acp://lab/n1/cdb', Array.from({ length: 50 }, () => packedTell({ type: 'cdb.nope' }))));
  peer.send({ v: PROTOCOL_VERSION, k: 'ping', id: 99 });
  await eventually(() => (peer.received.some((frame) => frame.k === 'pong' && frame.id === 99) ? true : undefined), 5000, 'the pong behind the refused frame');
  const errors = peer.received.filter((frame) => frame.k === 'error').slice(errorsBefore);
  t.deepEqual(errors.map((frame) => frame.err?.code), ['ACP_ERR_UNKNOWN_MESSAGE']);
  // The first peer's connection was not touched by the others' refusals.
  peer.send(tells('acp://lab/n1/cdb', [7, 8].map((seq) => packedTell(put('tells-here', seq)))));
  await eventually(async () => ((await seqOf('object/chaos/tells-here')) === 8 ? true : undefined), 10_000, "more writes on the first peer's connection");
  await assertHealthy(t, n1);
});
