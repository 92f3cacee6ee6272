import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect as netConnect, createServer as netServer } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { ExecutionContext } from 'ava';
import { createCsr, signCsr } from '../../adapters/pki.js';
import { initCluster, joinCluster } from '../../node/cluster.js';
import { startDetached } from '../../cli/control.js';
import { connect, type AcpClient } from '../../node/client.js';
import type { Envelope } from '../../runtime/codec.js';
import { homePaths } from '../../runtime/config.js';
import type { ErrorData } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import type { NodeStatus } from '../../runtime/services.js';
import { isAlive, makeHome, runCli, type CliResult, type HomeOptions } from './node.js';
import { RawFrames, type RawFramesResult } from './raw-frames.js';

/**
 * A free TCP port on loopback: the agent's address must be known before it listens (peers and
 * join tokens name it), so port 0 will not do. Taken below the kernel's ephemeral range
 * (32768+), where the nodes' own outgoing connections take theirs: bound, released, then used.
 * Test files run in parallel processes, and a port is free only until its daemon binds it, so each
 * pick is also claimed in a file naming the process that holds it; a claim whose process is gone
 * is taken over.
 */
export async function freePort(): Promise<number> {
  mkdirSync(PORT_CLAIMS, { recursive: true });
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (!claimPort(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const server = netServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error(`no free, unclaimed port between 20000 and 32000 on 127.0.0.1 (claims in ${PORT_CLAIMS})`);
}

const PORT_CLAIMS = join(tmpdir(), 'acp-test-ports');

function claimPort(port: number): boolean {
  const file = join(PORT_CLAIMS, String(port));
  try {
    writeFileSync(file, String(process.pid), { flag: 'wx' });
    return true;
  } catch {
    let holder: string;
    try {
      holder = readFileSync(file, 'utf8');
    } catch {
      return false;
    }
    // An empty claim is one being written: held.
    if (holder === '' || isAlive(Number(holder))) return false;
    rmSync(file, { force: true });
    return claimPort(port);
  }
}

export function secretPath(home: string, name: string): string {
  return join(homePaths(home).secrets, name);
}

export function readSecret(home: string, name: string): string {
  return readFileSync(secretPath(home, name), 'utf8');
}

export function apiKeyOf(home: string): string {
  return readSecret(home, 'api.key').trim();
}

/** Runs `acp` and fails loudly (with its output) unless it exits 0. */
export async function cliOk(args: readonly string[], home: string, timeoutMs = 60_000): Promise<CliResult> {
  const result = await runCli(args, home, timeoutMs);
  if (result.code !== 0) throw new Error(`acp ${args.join(' ')} exited ${result.code}: ${result.stderr.trim()} ${result.stdout.trim()}`);
  return result;
}

/**
 * Runs `acp --json ...` and parses its single line of output. `stderr` also carries that line when
 * the command failed (with --json the error is printed on stdout), so `t.is(r.code, 0, r.stderr)`
 * names why.
 */
export async function cliJson<T>(args: readonly string[], home: string, timeoutMs = 60_000): Promise<{ code: number; value: T; stderr: string }> {
  const result = await runCli(['--json', ...args], home, timeoutMs);
  let value: T;
  try {
    value = JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`acp --json ${args.join(' ')} printed no JSON (exit ${result.code}): ${result.stdout.trim()} ${result.stderr.trim()}`);
  }
  return { code: result.code, value, stderr: result.code === 0 ? result.stderr : `${result.stderr}${result.stdout}`.trim() };
}

/** The error code of a failed `acp --json` command. */
export async function cliError(args: readonly string[], home: string, timeoutMs = 60_000): Promise<{ code: number; error: ErrorData | undefined }> {
  const { code, value } = await cliJson<{ error?: ErrorData }>(args, home, timeoutMs);
  return { code, error: value.error };
}

export interface ClusterNode {
  name: string;
  home: string;
  port: number;
  agent: string;
  /** Of the running daemon (updated by `up`). */
  pid: number;
  incarnation: number;
}

/** A home for `node` with an agent address chosen, not yet initialised. */
export async function newNodeHome(t: ExecutionContext, name: string, options: HomeOptions = {}): Promise<ClusterNode> {
  const home = makeHome(t, { ...options, node: name });
  const port = await freePort();
  return { name, home, port, agent: `127.0.0.1:${port}`, pid: 0, incarnation: 0 };
}

/**
 * Starts the node's daemon detached, as `acp up --detach` does (called in-process: one process
 * fewer per daemon on a 2-core machine), and records its pid and incarnation.
 */
export async function up(node: ClusterNode): Promise<ClusterNode> {
  const status = await startDetached({ home: node.home, faults: false }, []);
  node.pid = status.pid;
  node.incarnation = status.incarnation;
  return node;
}

/** `acp init` (in-process): the CA node of cluster lab. */
export async function initNode(t: ExecutionContext, name: string, options: HomeOptions = {}): Promise<ClusterNode> {
  const node = await newNodeHome(t, name, options);
  await initCluster(node.home, { cluster: 'lab', node: name, agent: node.agent });
  return node;
}

/** `acp token create` (in-process): asks the CA node's agent for a join token. */
export async function createToken(ca: ClusterNode, ttlMs = 3_600_000): Promise<string> {
  const client = await connect({ home: ca.home });
  try {
    return (await client.ask<Message & { token: string }>('agent', { type: 'agent.token', ttlMs })).token;
  } finally {
    await client.close();
  }
}

/** `acp join` (in-process) through the CA node, with a fresh token. */
export async function joinNode(t: ExecutionContext, ca: ClusterNode, name: string, options: HomeOptions = {}): Promise<ClusterNode> {
  const node = await newNodeHome(t, name, options);
  await joinCluster(node.home, ca.agent, await createToken(ca), { node: name, agent: node.agent });
  return node;
}

/** init (first name, the CA node) + up, then token / join / up for each other name, in order. */
export async function startCluster(t: ExecutionContext, names: readonly string[], options: HomeOptions = {}): Promise<ClusterNode[]> {
  const [first, ...rest] = names;
  if (!first) throw new Error('a cluster needs a node');
  const ca = await up(await initNode(t, first, options));
  const nodes = [ca];
  for (const name of rest) nodes.push(await up(await joinNode(t, ca, name, options)));
  return nodes;
}

/** Asks through a node's local socket (a fresh client each time). */
export async function askVia<T extends Message>(node: ClusterNode, path: string, message: Message, timeoutMs = 15_000): Promise<T> {
  const client = await connect({ home: node.home });
  try {
    return await client.ask<T>(path, message, { timeoutMs });
  } finally {
    await client.close();
  }
}

/** A client on a node's Unix socket, closed after the test. */
export async function localClient(t: ExecutionContext, home: string): Promise<AcpClient> {
  const client = await connect({ home });
  t.teardown(() => client.close());
  return client;
}

export async function statusOf(home: string): Promise<NodeStatus> {
  const client = await connect({ home });
  try {
    return await client.ask<NodeStatus>('framework', { type: 'status' }, { timeoutMs: 5000 });
  } finally {
    await client.close();
  }
}

export interface Pong extends Message {
  type: 'pong';
  path: string;
  incarnation: number;
}

/** A certificate and key for `name` from a CA (PEM), valid now unless told otherwise. */
export async function issue(name: string, caCertPem: string, caKeyPem: string, validity: { notBefore?: Date; notAfter?: Date } = {}): Promise<{ cert: string; key: string }> {
  const { csrPem, keyPem } = await createCsr(name);
  return { cert: signCsr({ csrPem, caCertPem, caKeyPem, node: name, ...validity }), key: keyPem };
}

export function normalizeFingerprint(value: string): string {
  return value.replace(/:/g, '').toLowerCase();
}

// ---------------------------------------------------------------------------------------------
// A raw TLS connection to an agent

export interface TlsIdentity {
  cert?: string;
  key?: string;
  /** The CA the client trusts the server with; absent: the server is not checked. */
  ca?: string;
}

/** What came back on a raw agent connection. */
export type RawTlsResult = RawFramesResult;

/**
 * A TLS connection speaking raw bytes to an agent: decodes what the server sends, never sends
 * anything by itself.
 */
export class RawTls extends RawFrames {
  declare readonly socket: TLSSocket;

  /** Resolves once the handshake is done from the client's side, or with the handshake error. */
  static open(port: number, identity: TlsIdentity, timeoutMs = 10_000): Promise<RawTls> {
    return new Promise((resolve) => {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port,
        minVersion: 'TLSv1.3',
        ...(identity.cert && identity.key ? { cert: identity.cert, key: identity.key } : {}),
        ...(identity.ca ? { ca: [identity.ca], rejectUnauthorized: true } : { rejectUnauthorized: false }),
        checkServerIdentity: () => undefined,
      });
      const raw = new RawTls(socket);
      const timer = setTimeout(() => {
        raw.error ??= Object.assign(new Error('handshake timed out'), { code: 'TEST_TIMEOUT' });
        socket.destroy();
        resolve(raw);
      }, timeoutMs);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        resolve(raw);
      });
      socket.once('close', () => {
        clearTimeout(timer);
        resolve(raw);
      });
    });
  }

  /** The first frame matching, or undefined if none comes in time (or the socket closes first). */
  frame(match: (envelope: Envelope) => boolean = () => true, timeoutMs = 5000): Promise<Envelope | undefined> {
    return this.nextFrame(match, timeoutMs);
  }

  override untilClosed(timeoutMs = 5000): Promise<RawTlsResult> {
    return super.untilClosed(timeoutMs);
  }
}

/** Resolves when a plain TCP connect to the port succeeds (true) or is refused (false). */
export function tcpAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * A stand-in for another node of the cluster: a TLS connection with a certificate from the
 * cluster's CA for `name`, a peer hello with the cluster key, and asks that say which of its own
 * actors they come from (as a real node's agent relays them).
 */
export class FakePeer {
  private nextId = 1;

  private constructor(
    readonly name: string,
    private readonly raw: RawTls,
    /** The node's answer to the peer hello. */
    readonly hello: Envelope,
  ) {}

  /** Sends a frame as it is. */
  send(envelope: Envelope): void {
    this.raw.send(envelope);
  }

  /** Every frame the node sent so far, the hello answer first. */
  get received(): readonly Envelope[] {
    return this.raw.frames;
  }

  /** What came back until the node closed the connection. */
  untilClosed(timeoutMs = 5000): Promise<RawTlsResult> {
    return this.raw.untilClosed(timeoutMs);
  }

  static async connect(t: ExecutionContext, target: ClusterNode, name: string): Promise<FakePeer> {
    const identity = await issue(name, readSecret(target.home, 'ca.crt'), readSecret(target.home, 'ca.key'));
    const raw = await RawTls.open(target.port, identity);
    t.teardown(() => raw.destroy());
    raw.send({ v: 1, k: 'hello', body: { cluster: 'lab', node: name, incarnation: 1, apiKey: apiKeyOf(target.home), proto: 1, role: 'peer' } });
    const hello = await raw.frame((envelope) => envelope.k === 'hello' || envelope.k === 'error', 10_000);
    if (hello?.k !== 'hello') throw new Error(`the peer hello was not answered: ${JSON.stringify(hello?.err ?? 'nothing')}`);
    return new FakePeer(name, raw, hello);
  }

  /** Asks `path` as `from` (an actor path on this fake node, or operator); the reply or the error frame. */
  async ask(path: string, message: Message, from: string, timeoutMs = 10_000): Promise<Envelope> {
    const id = this.nextId++;
    this.raw.send({ v: 1, k: 'ask', id, to: path, body: message, t: timeoutMs, from });
    const answer = await this.raw.frame((envelope) => envelope.id === id && (envelope.k === 'reply' || envelope.k === 'error'), timeoutMs);
    if (!answer) throw new Error(`no answer to ${message.type} within ${timeoutMs} ms`);
    return answer;
  }
}
