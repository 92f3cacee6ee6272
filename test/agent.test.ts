import test from 'ava';
// Serial: each test boots one to three daemons; all at once on two cores starve one another past
// the connect timeouts, while one after another the file is quicker overall.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createServer as tlsServer, type TLSSocket } from 'node:tls';
import { createCa, fingerprint, verifyIssuedBy } from '../adapters/pki.js';
import { decodeToken, encodeToken } from '../adapters/join-tokens.js';
import { connect } from '../node/client.js';
import { PROTOCOL_VERSION } from '../runtime/codec.js';
import type { Terminated } from '../runtime/messages.js';
import type { NodeStatus } from '../runtime/services.js';
import {
  apiKeyOf,
  askVia,
  cliError,
  cliJson,
  cliOk,
  createToken,
  freePort,
  initNode,
  issue,
  localClient,
  newNodeHome,
  normalizeFingerprint,
  RawTls,
  readSecret,
  secretPath,
  startCluster,
  statusOf,
  tcpAccepts,
  up,
  type ClusterNode,
  type Pong,
} from './helpers/agent.js';
import { eventually, makeHome, runCli, isAlive } from './helpers/node.js';

/** A liveness bound for one remote ask (a regression fails instead of hanging), not a speed check. */
const ASK_MS = 15_000;

async function askCli<T>(from: ClusterNode, path: string, message: object): Promise<T> {
  const { code, value, stderr } = await cliJson<T>(['ask', path, JSON.stringify(message), '--timeout', String(ASK_MS)], from.home);
  if (code !== 0) throw new Error(`acp ask ${path} from ${from.name} exited ${code}: ${JSON.stringify(value)} ${stderr}`);
  return value;
}

function mode(file: string): number {
  return statSync(file).mode & 0o777;
}


interface PeerRow {
  node: string;
  state: string;
  address: string | null;
  incarnation: number | null;
}

// ---------------------------------------------------------------------------------------------
// init / token / join / up

test.serial('init, token create, join, up: pings cross the agents both ways; peers, secrets and keys are right', async (t) => {
  // Every step through the real command line.
  const n1 = await newNodeHome(t, 'n1');
  const n2 = await newNodeHome(t, 'n2');
  const init = await cliJson<{ cluster: string; node: string; agent: string; caFingerprint: string }>(['init', '--cluster', 'lab', '--node', 'n1', '--agent', n1.agent], n1.home);
  t.like(init.value, { cluster: 'lab', node: 'n1', agent: n1.agent, caFingerprint: fingerprint(readSecret(n1.home, 'ca.crt')) });
  const upped1 = await cliJson<{ pid: number; incarnation: number }>(['up', '--detach'], n1.home);
  t.is(upped1.code, 0, upped1.stderr);
  n1.incarnation = upped1.value.incarnation;
  const token = await cliJson<{ token: string; agent: string }>(['token', 'create'], n1.home);
  t.is(token.code, 0, token.stderr);
  t.is(token.value.agent, n1.agent, 'the token answer names where to join');
  const joined = await cliJson<{ cluster: string; node: string; caNode: string; peers: number }>(['join', n1.agent, '--token', token.value.token, '--node', 'n2', '--agent', n2.agent], n2.home);
  t.like(joined.value, { cluster: 'lab', node: 'n2', caNode: 'n1', peers: 1 });
  const upped2 = await cliJson<{ pid: number; incarnation: number }>(['up', '--detach'], n2.home);
  t.is(upped2.code, 0, upped2.stderr);
  n2.incarnation = upped2.value.incarnation;

  const toN2 = await askCli<Pong>(n1, 'acp://lab/n2/framework', { type: 'ping' });
  t.is(toN2.type, 'pong');
  t.is(toN2.path, 'acp://lab/n2/framework');
  t.is(toN2.incarnation, n2.incarnation, "n2's own incarnation answers");
  const toN1 = await askCli<Pong>(n2, 'acp://lab/n1/framework', { type: 'ping' });
  t.is(toN1.type, 'pong');
  t.is(toN1.path, 'acp://lab/n1/framework');
  t.is(toN1.incarnation, n1.incarnation);

  const peers1 = await cliJson<PeerRow[]>(['peers'], n1.home);
  t.is(peers1.code, 0);
  t.like(peers1.value.find((peer) => peer.node === 'n2'), { node: 'n2', state: 'up', address: n2.agent, incarnation: n2.incarnation });
  const peers2 = await cliJson<PeerRow[]>(['peers'], n2.home);
  t.like(peers2.value.find((peer) => peer.node === 'n1'), { node: 'n1', state: 'up', address: n1.agent, incarnation: n1.incarnation });

  for (const name of ['ca.key', 'node.key', 'cluster.key', 'api.key']) t.is(mode(secretPath(n1.home, name)), 0o600, `n1 ${name} is 0600`);
  for (const name of ['node.key', 'cluster.key', 'api.key']) t.is(mode(secretPath(n2.home, name)), 0o600, `n2 ${name} is 0600`);
  t.false(existsSync(secretPath(n2.home, 'ca.key')), 'the joined node holds no CA key');
  t.false(existsSync(secretPath(n2.home, 'tokens.json')), 'nor a token ledger');
  t.is(apiKeyOf(n2.home), apiKeyOf(n1.home), "the joiner's API key is the cluster's");
  t.is(readSecret(n2.home, 'cluster.key'), readSecret(n1.home, 'cluster.key'));
  t.is(readSecret(n2.home, 'ca.crt'), readSecret(n1.home, 'ca.crt'));
  const n2Cert = readSecret(n2.home, 'node.crt');
  t.true(verifyIssuedBy(n2Cert, readSecret(n1.home, 'ca.crt')), "n2's certificate is issued by n1's CA");
  t.not(fingerprint(n2Cert), fingerprint(readSecret(n1.home, 'node.crt')));
});

test.serial('a used join token is refused with ACP_ERR_PKI_TOKEN_USED and the second home gets nothing', async (t) => {
  const ca = await up(await initNode(t, 'n1'));
  const token = await createToken(ca);
  const first = await newNodeHome(t, 'n2');
  await cliOk(['join', ca.agent, '--token', token, '--node', 'n2', '--agent', first.agent], first.home);
  const second = await newNodeHome(t, 'n3');
  const again = await cliError(['join', ca.agent, '--token', token, '--node', 'n3', '--agent', second.agent], second.home);
  t.is(again.code, 1);
  t.is(again.error?.code, 'ACP_ERR_PKI_TOKEN_USED');
  t.false(existsSync(secretPath(second.home, 'node.crt')));
  t.false(existsSync(secretPath(second.home, 'api.key')));
});

test.serial('an expired join token is refused with ACP_ERR_PKI_TOKEN_EXPIRED, by the joiner and by the CA node', async (t) => {
  const ca = await up(await initNode(t, 'n1'));
  const created = await cliJson<{ token: string }>(['token', 'create', '--ttl', '1s'], ca.home);
  t.is(created.code, 0, created.stderr);
  const token = created.value.token;
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const joiner = await newNodeHome(t, 'n2');
  const local = await cliError(['join', ca.agent, '--token', token, '--node', 'n2', '--agent', joiner.agent], joiner.home);
  t.is(local.code, 1);
  t.is(local.error?.code, 'ACP_ERR_PKI_TOKEN_EXPIRED');
  // The same token with its (unsigned) expiry pushed forward passes the joiner's check: the CA
  // node's ledger, which kept its own expiry, must refuse it.
  const refusedBefore = (await statusOf(ca.home)).refusedConnections;
  const stretched = encodeToken({ ...decodeToken(token), expiresAt: Date.now() + 3_600_000 });
  const remote = await cliError(['join', ca.agent, '--token', stretched, '--node', 'n2', '--agent', joiner.agent], joiner.home);
  t.is(remote.code, 1);
  t.is(remote.error?.code, 'ACP_ERR_PKI_TOKEN_EXPIRED');
  t.is((await statusOf(ca.home)).refusedConnections, refusedBefore + 1, 'the CA node counted the refusal');
  t.false(existsSync(secretPath(joiner.home, 'node.crt')));
});

test.serial("a token naming another CA is refused before anything is sent; the CA node's ledger still takes the genuine token", async (t) => {
  const ca = await up(await initNode(t, 'n1'));
  const genuine = await createToken(ca);
  const other = await createCa('lab');
  const forged = encodeToken({ ...decodeToken(genuine), caFingerprint: fingerprint(other.certPem) });
  const joiner = await newNodeHome(t, 'n2');
  const refusedBefore = (await statusOf(ca.home)).refusedConnections;
  const refused = await cliError(['join', ca.agent, '--token', forged, '--node', 'n2', '--agent', joiner.agent], joiner.home);
  t.is(refused.code, 1);
  t.is(refused.error?.code, 'ACP_ERR_PKI_FINGERPRINT_MISMATCH');
  t.false(existsSync(secretPath(joiner.home, 'node.crt')), 'nothing was written');
  // Nothing reached the CA node's join session: no refusal there, and the token (same id and secret) is unspent.
  t.is((await statusOf(ca.home)).refusedConnections, refusedBefore);
  await cliOk(['join', ca.agent, '--token', genuine, '--node', 'n2', '--agent', joiner.agent], joiner.home);
  await up(joiner);
  const pong = await askVia<Pong>(joiner, 'acp://lab/n1/framework', { type: 'ping' });
  t.is(pong.incarnation, ca.incarnation);
});

test.serial('joining through a server with another CA (a man in the middle) sends it nothing', async (t) => {
  const ca = await up(await initNode(t, 'n1'));
  const genuine = await createToken(ca);
  const other = await createCa('lab');
  const impostor = await issue('n1', other.certPem, other.keyPem);
  let connections = 0;
  let bytes = 0;
  const server = tlsServer({ key: impostor.key, cert: `${impostor.cert.trim()}\n${other.certPem.trim()}\n`, minVersion: 'TLSv1.3' }, (socket: TLSSocket) => {
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
    });
    socket.on('error', () => undefined);
  });
  server.on('connection', () => {
    connections += 1;
  });
  server.on('tlsClientError', () => undefined);
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const joiner = await newNodeHome(t, 'n2');
  const refused = await cliError(['join', `127.0.0.1:${port}`, '--token', genuine, '--node', 'n2'], joiner.home);
  t.is(refused.code, 1);
  t.is(refused.error?.code, 'ACP_ERR_PKI_FINGERPRINT_MISMATCH');
  t.is(connections, 1, 'the joiner did reach the impostor');
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.is(bytes, 0, 'not one byte of application data (token, CSR) reached it');
  t.false(existsSync(secretPath(joiner.home, 'node.crt')));
  // The token was never disclosed, so it still works at the real CA node.
  await cliOk(['join', ca.agent, '--token', genuine, '--node', 'n2'], joiner.home);
  t.true(existsSync(secretPath(joiner.home, 'node.crt')));
});

// ---------------------------------------------------------------------------------------------
// Three nodes

test.serial('three nodes: n3 reaches n2 through the peers list of its join, and then n2 reaches n3', async (t) => {
  const [, n2, n3] = await startCluster(t, ['n1', 'n2', 'n3']);
  const toN2 = await askVia<Pong>(n3, 'acp://lab/n2/framework', { type: 'ping' });
  t.is(toN2.path, 'acp://lab/n2/framework');
  t.is(toN2.incarnation, n2.incarnation);
  const toN3 = await askVia<Pong>(n2, 'acp://lab/n3/framework', { type: 'ping' });
  t.is(toN3.path, 'acp://lab/n3/framework');
  t.is(toN3.incarnation, n3.incarnation);
});

// Regression (found by this test, fixed since).
test.serial('three nodes: n2 reaches n3, which joined after it, before n3 ever spoke to n2', async (t) => {
  const [, n2, n3] = await startCluster(t, ['n1', 'n2', 'n3']);
  const toN3 = await askVia<Pong>(n2, 'acp://lab/n3/framework', { type: 'ping' });
  t.is(toN3.path, 'acp://lab/n3/framework');
  t.is(toN3.incarnation, n3.incarnation);
});

// ---------------------------------------------------------------------------------------------
// A peer killed and restarted

test.serial("a peer killed with SIGKILL and restarted: n1's death watch hears node-restarted; asks reach the new incarnation", async (t) => {
  const [n1, n2] = await startCluster(t, ['n1', 'n2']);
  const client = await localClient(t, n1.home);
  const before = await client.ask<Pong>('acp://lab/n2/framework', { type: 'ping' }, { timeoutMs: ASK_MS });
  t.is(before.incarnation, n2.incarnation);
  const heard: Terminated[] = [];
  client.watch('acp://lab/n2/framework', (terminated) => heard.push(terminated));
  // The watch frame goes in order with this ask: once it is answered the watch is in place on n1.
  t.is((await client.ask<Pong>('acp://lab/n2/framework', { type: 'ping' }, { timeoutMs: ASK_MS })).type, 'pong');

  const oldIncarnation = n2.incarnation;
  process.kill(n2.pid, 'SIGKILL');
  await eventually(() => (isAlive(n2.pid) ? undefined : true), 10_000, 'n2 to die');
  t.deepEqual(heard, [], 'no notice while n2 is merely gone');
  await up(n2);
  t.not(n2.incarnation, oldIncarnation);

  // n1 reconnects on its own (it holds a watch); an ask also triggers it. Retry while the link comes back.
  const after = await eventually(async () => {
    const pong = await client.ask<Pong>('acp://lab/n2/framework', { type: 'ping' }, { timeoutMs: 5000 });
    return pong.incarnation === n2.incarnation ? pong : undefined;
  }, 30_000, 'a pong from the new incarnation of n2');
  t.is(after.path, 'acp://lab/n2/framework');
  await eventually(() => (heard.length > 0 ? true : undefined), 15_000, 'the death watch to fire');
  t.deepEqual(heard, [{ type: 'terminated', path: 'acp://lab/n2/framework', reason: 'node-restarted' }]);
  const peers = await client.ask<{ type: string; peers: { node: string; state: string; incarnation: number | null }[] }>('agent', { type: 'agent.peers' });
  t.like(peers.peers.find((peer) => peer.node === 'n2'), { state: 'up', incarnation: n2.incarnation });
  // And the restarted node reaches n1 too.
  t.is((await askVia<Pong>(n2, 'acp://lab/n1/framework', { type: 'ping' })).incarnation, n1.incarnation);
});

// ---------------------------------------------------------------------------------------------
// Certificate renewal

test.serial('acp cert renew on a joined node: a new certificate from the CA node, links keep working, new connections see it', async (t) => {
  const [n1, n2] = await startCluster(t, ['n1', 'n2']);
  t.is((await askVia<Pong>(n1, 'acp://lab/n2/framework', { type: 'ping' })).incarnation, n2.incarnation);
  const oldCert = readSecret(n2.home, 'node.crt');
  const oldKey = readSecret(n2.home, 'node.key');
  const caCert = readSecret(n1.home, 'ca.crt');
  const identity = { cert: readSecret(n1.home, 'node.crt'), key: readSecret(n1.home, 'node.key'), ca: caCert };

  const seenBefore = await RawTls.open(n2.port, identity);
  t.is(normalizeFingerprint(seenBefore.socket.getPeerCertificate().fingerprint256), fingerprint(oldCert), 'before: the old certificate');
  seenBefore.destroy();

  const renewed = await cliJson<{ type: string; node: string; fingerprint: string; notAfter: string }>(['cert', 'renew'], n2.home);
  t.is(renewed.code, 0, renewed.stderr);
  t.is(renewed.value.type, 'agent.renewed');
  t.is(renewed.value.node, 'n2');
  const newCert = readSecret(n2.home, 'node.crt');
  t.is(fingerprint(newCert), renewed.value.fingerprint);
  t.not(fingerprint(newCert), fingerprint(oldCert));
  t.not(readSecret(n2.home, 'node.key'), oldKey, 'a new key too');
  t.is(mode(secretPath(n2.home, 'node.key')), 0o600);
  t.true(verifyIssuedBy(newCert, caCert));
  t.false(existsSync(secretPath(n2.home, 'ca.key')), 'the CA key stayed on n1');

  t.is((await askVia<Pong>(n1, 'acp://lab/n2/framework', { type: 'ping' })).incarnation, n2.incarnation);
  t.is((await askVia<Pong>(n2, 'acp://lab/n1/framework', { type: 'ping' })).incarnation, n1.incarnation);

  const seenAfter = await RawTls.open(n2.port, identity);
  t.teardown(() => seenAfter.destroy());
  t.is(seenAfter.error, undefined);
  t.is(normalizeFingerprint(seenAfter.socket.getPeerCertificate().fingerprint256), fingerprint(newCert), 'a new connection gets the new certificate');
  // The renewed certificate is a working identity for n2 as a client too.
  const asN2 = await RawTls.open(n1.port, { cert: newCert, key: readSecret(n2.home, 'node.key'), ca: caCert });
  t.teardown(() => asN2.destroy());
  asN2.send({ v: PROTOCOL_VERSION, k: 'hello', body: { cluster: 'lab', node: 'n2', role: 'client', apiKey: apiKeyOf(n1.home), proto: PROTOCOL_VERSION } });
  t.is((await asN2.frame())?.k, 'hello');
});

// ---------------------------------------------------------------------------------------------
// API on local TCP

test.serial('up --api-port serves the API on loopback TCP', async (t) => {
  const home = makeHome(t, { node: 'n1' });
  const port = await freePort();
  await cliOk(['up', '--detach', '--api-port', String(port)], home);
  const client = await connect({ port, apiKey: apiKeyOf(home), cluster: 'lab' });
  t.teardown(() => client.close());
  t.is(client.node.node, 'n1');
  const status = await client.ask<NodeStatus>('framework', { type: 'status' }, { timeoutMs: 5000 });
  t.is(status.node, 'n1');
  const wrongKey = await t.throwsAsync(connect({ port, apiKey: 'x'.repeat(64), cluster: 'lab' }));
  t.is((wrongKey as { code?: string } | undefined)?.code, 'ACP_ERR_WIRE_BAD_KEY');
});

for (const detach of [true, false]) {
  test.serial(`up --api-bind 0.0.0.0${detach ? ' --detach' : ''} is refused with a message about loopback; no daemon starts`, async (t) => {
    const home = makeHome(t, { node: 'n1' });
    const port = await freePort();
    const result = await runCli(['up', ...(detach ? ['--detach'] : []), '--api-bind', '0.0.0.0', '--api-port', String(port)], home, 30_000);
    t.true(result.code === 1 || result.code === 2, `exit code ${result.code}`);
    t.regex(result.stderr, /loopback/);
    t.false(existsSync(`${home}/run/acpd.pid`) && isAlive(Number(readFileSync(`${home}/run/acpd.pid`, 'utf8'))), 'no daemon process');
    t.false(await tcpAccepts(port), 'nothing listens on the port');
    await t.throwsAsync(connect({ home }));
  });
}

// ---------------------------------------------------------------------------------------------
// Remote script client

test.serial('a remote script with a certificate from the CA asks through n1 agent: pong from n2, status from n1', async (t) => {
  const [n1, n2] = await startCluster(t, ['n1', 'n2']);
  const caCert = readSecret(n1.home, 'ca.crt');
  const { cert, key } = await issue('script-1', caCert, readSecret(n1.home, 'ca.key'));
  const client = await connect({ tls: { host: '127.0.0.1', port: n1.port, cert, key, ca: caCert, name: 'script-1' }, apiKey: apiKeyOf(n1.home), cluster: 'lab' });
  t.teardown(() => client.close());
  t.is(client.node.node, 'n1');
  t.is(client.node.incarnation, n1.incarnation);
  const pong = await client.ask<Pong>('acp://lab/n2/framework', { type: 'ping' }, { timeoutMs: ASK_MS });
  t.is(pong.type, 'pong');
  t.is(pong.path, 'acp://lab/n2/framework');
  t.is(pong.incarnation, n2.incarnation);
  const status = await client.ask<NodeStatus>('framework', { type: 'status' }, { timeoutMs: ASK_MS });
  t.is(status.node, 'n1');
  t.is(status.incarnation, n1.incarnation);
  // A script is not a node: n1 lists no peer for it.
  const peers = await cliJson<PeerRow[]>(['peers'], n1.home);
  t.deepEqual(peers.value.map((peer) => peer.node), ['n2']);
});

// ---------------------------------------------------------------------------------------------
// Node names

// Regression (found by this test, fixed since).
test.serial('a second join under the name of an existing (idle) node is refused and does not move its address', async (t) => {
  const [n1, n2] = await startCluster(t, ['n1', 'n2']);
  const impostor = await newNodeHome(t, 'n2');
  const token = await createToken(n1);
  const refused = await cliError(['join', n1.agent, '--token', token, '--node', 'n2', '--agent', impostor.agent], impostor.home);
  const peers = await askVia<{ type: string; peers: PeerRow[] }>(n1, 'agent', { type: 'agent.peers' });
  t.is(peers.peers.find((peer) => peer.node === 'n2')?.address, n2.agent, "n1 still routes n2's traffic to n2");
  t.is(refused.code, 1);
  t.is(refused.error?.code, 'ACP_ERR_WIRE_BAD_HELLO');
  t.false(existsSync(secretPath(impostor.home, 'node.crt')));
});
