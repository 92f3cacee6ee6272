import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { initCluster } from '../../node/cluster.js';
import { PROTOCOL_VERSION, type Envelope } from '../../runtime/codec.js';
import { homePaths } from '../../runtime/config.js';
import { apiKeyOf, freePort, issue, readSecret, up, type ClusterNode } from './agent.js';
import { isAlive, runCli } from './node.js';
import { RawFrames } from './raw-frames.js';

/**
 * One real daemon (its own process) listening on all three of its doors: the Unix socket, the
 * TCP API on loopback, and the TLS agent; plus a script identity from its CA for the agent.
 */
export interface WireNode {
  readonly node: ClusterNode;
  readonly apiKey: string;
  readonly apiPort: number;
  readonly script: { cert: string; key: string; ca: string };
  readonly listeners: readonly Listener[];
}

export type Listener =
  | { readonly name: 'unix'; readonly path: string }
  | { readonly name: 'tcp'; readonly port: number }
  | { readonly name: 'tls'; readonly port: number; readonly identity?: { cert: string; key: string } };

/**
 * Starts the node. `cleanup` is given what undoes it (t.teardown for one test, or a list run in
 * test.after.always for a daemon a whole file shares).
 */
export async function startWireNode(cleanup: (fn: () => Promise<void>) => void, settings: { helloTimeoutMs?: number } = {}): Promise<WireNode> {
  const home = mkdtempSync(join(tmpdir(), 'acp-test-'));
  const port = await freePort();
  const node: ClusterNode = { name: 'n1', home, port, agent: `127.0.0.1:${port}`, pid: 0, incarnation: 0 };
  cleanup(async () => {
    await runCli(['down'], home, 30_000).catch(() => undefined);
    if (node.pid > 0 && isAlive(node.pid)) process.kill(node.pid, 'SIGKILL');
    rmSync(home, { recursive: true, force: true });
  });
  const apiPort = await freePort();
  const config = { cluster: 'lab', node: 'n1', webapi: { host: '127.0.0.1', port: 0 }, statsMs: 0, api: { port: apiPort, helloTimeoutMs: settings.helloTimeoutMs ?? 10_000 } };
  writeFileSync(homePaths(home).config, JSON.stringify(config));
  await initCluster(node.home, { cluster: 'lab', node: 'n1', agent: node.agent });
  await up(node);
  const ca = readSecret(node.home, 'ca.crt');
  const issued = await issue('script-1', ca, readSecret(node.home, 'ca.key'));
  const script = { ...issued, ca };
  return {
    node,
    apiKey: apiKeyOf(node.home),
    apiPort,
    script,
    listeners: [
      { name: 'unix', path: homePaths(node.home).socket },
      { name: 'tcp', port: apiPort },
      { name: 'tls', port: node.port, identity: { cert: script.cert, key: script.key } },
    ],
  };
}

/** A raw connection to any listener: writes bytes, decodes what comes back. */
export class Wire extends RawFrames {
  static open(listener: Listener, timeoutMs = 10_000): Promise<Wire> {
    return new Promise((resolve, reject) => {
      let socket: Socket;
      if (listener.name === 'unix') socket = netConnect({ path: listener.path });
      else if (listener.name === 'tcp') socket = netConnect({ host: '127.0.0.1', port: listener.port });
      else {
        socket = tlsConnect({
          host: '127.0.0.1',
          port: listener.port,
          minVersion: 'TLSv1.3',
          rejectUnauthorized: false,
          checkServerIdentity: () => undefined,
          ...(listener.identity ?? {}),
        });
      }
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection to the ${listener.name} listener within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      socket.once(listener.name === 'tls' ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new Wire(socket));
      });
    });
  }

  /** Says a good hello (as the script, on the agent) and waits for the answer. */
  async greet(node: WireNode, listener: Listener, timeoutMs = 10_000): Promise<this> {
    this.send(helloFor(node, listener));
    const answer = await this.nextFrame(() => true, timeoutMs);
    if (answer?.k !== 'hello') throw new Error(`hello on ${listener.name} refused: ${JSON.stringify(answer)}`);
    return this;
  }

  private pings = 0;

  /** A ping's round trip in milliseconds (Infinity if no pong within `timeoutMs`). */
  async ping(timeoutMs = 5000): Promise<number> {
    const id = `p${++this.pings}`;
    const started = performance.now();
    this.send({ v: PROTOCOL_VERSION, k: 'ping', id });
    const pong = await this.nextFrame((frame) => frame.k === 'pong' && frame.id === id, timeoutMs);
    return pong ? performance.now() - started : Number.POSITIVE_INFINITY;
  }
}

export function helloFor(node: WireNode, listener: Listener, overrides: Record<string, unknown> = {}): Envelope {
  const script = listener.name === 'tls' && listener.identity ? { node: 'script-1', role: 'client' } : {};
  return { v: PROTOCOL_VERSION, k: 'hello', body: { cluster: 'lab', apiKey: node.apiKey, proto: PROTOCOL_VERSION, ...script, ...overrides } };
}

/** The daemon's resident memory in KiB, from /proc (undefined where there is no /proc). */
export function rssKiB(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}
