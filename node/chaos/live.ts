import { parseHostPort } from '../../adapters/tls.js';
import { readApiKey, readConfig, readSecretFile } from '../../adapters/home.js';
import { homePaths } from '../../runtime/config.js';
import { AcpError } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { AcpClient, connect } from '../client.js';
import { isClosed } from '../harness/daemon-view.js';
import { listPrefix } from './writes.js';
import { systemObject, type ChaosCluster, type ChaosSystemSpec } from './target.js';

/**
 * A live cluster as a chaos cluster (`acp chaos run FILE --cluster`), seen from one node's home:
 * the nodes are the cluster's members from its CDB (`object/node/*`, witnesses and removed nodes
 * left out); this node is reached on its socket, the others directly at their agents over TLS
 * with this node's certificate and the cluster's API key (as a script: such connections are not
 * cluster traffic, so an injected partition leaves them working). Every fault is a message to the
 * node's own daemon (`faults.*` on its Framework, admin only, refused with
 * ACP_ERR_FAULTS_DISABLED unless the node runs with `acp up --faults`).
 */

const CONNECT_MS = 1500;
const FAULT_MS = 5000;
const GONE_MS = 10_000;
/** How long a restarted node has to answer after the moment it was due back. */
const BACK_MS = 60_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Member {
  name: string;
  agent?: string;
}

interface Cached {
  connecting: Promise<AcpClient>;
  client?: AcpClient;
}

export class LiveCluster implements ChaosCluster {
  readonly mode = 'cluster' as const;
  readonly names: readonly string[];
  private readonly cached = new Map<string, Cached>();
  /** Killed nodes the scenario restarts: their incarnation when killed, and when they are due back. */
  private readonly comingBack = new Map<string, { incarnation: number; dueAt: number }>();

  private constructor(
    private readonly home: string,
    private readonly self: string,
    private readonly members: ReadonlyMap<string, Member>,
  ) {
    this.names = [...members.keys()];
  }

  /** The cluster of the node at `home`, its members read from its CDB. */
  static async open(home: string): Promise<LiveCluster> {
    const paths = homePaths(home);
    const config = readConfig(paths);
    if (!config) throw new AcpError('ACP_ERR_DAEMON_NOT_RUNNING', `${home} has no config.json: run acp chaos run --cluster on a node of the cluster`);
    const client = await connect({ home });
    try {
      const list = async (prefix: string) => (await client.ask<Message & { records: { key: string; value: unknown }[] }>('cdb', { type: 'cdb.list', prefix, limit: 10_000 }, { timeoutMs: 10_000 })).records;
      const removed = new Set((await list('object/revocation/')).map((record) => record.key.slice('object/revocation/'.length)));
      const members = new Map<string, Member>();
      for (const record of await list('object/node/')) {
        const value = record.value as { name?: string; agent?: string; witness?: boolean };
        if (!value.name || value.witness === true || removed.has(value.name)) continue;
        if (value.name !== config.node && !value.agent) continue;
        members.set(value.name, { name: value.name, ...(value.agent ? { agent: value.agent } : {}) });
      }
      if (!members.has(config.node)) members.set(config.node, { name: config.node });
      const sorted = new Map([...members].sort(([a], [b]) => a.localeCompare(b)));
      return new LiveCluster(home, config.node, sorted);
    } finally {
      await client.close().catch(() => undefined);
    }
  }

  async client(name: string): Promise<AcpClient> {
    const cached = this.cached.get(name);
    if (cached && !(cached.client && isClosed(cached.client))) return cached.connecting;
    cached?.client?.close().catch(() => undefined);
    const entry: Cached = { connecting: this.open(name) };
    this.cached.set(name, entry);
    entry.connecting.then(
      (client) => {
        entry.client = client;
      },
      () => {
        if (this.cached.get(name) === entry) this.cached.delete(name);
      },
    );
    return entry.connecting;
  }

  private async open(name: string): Promise<AcpClient> {
    if (name === this.self) return connect({ home: this.home });
    const member = this.members.get(name);
    if (!member?.agent) throw new AcpError('ACP_ERR_NODE_UNREACHABLE', `no agent address is known for node '${name}'`);
    const paths = homePaths(this.home);
    const config = readConfig(paths)!;
    const { host, port } = parseHostPort(member.agent, `the agent address of ${name}`);
    return AcpClient.connect({
      tls: { host, port, cert: readSecretFile(paths.nodeCert), key: readSecretFile(paths.nodeKey), ca: readSecretFile(paths.caCert), name: this.self },
      apiKey: readApiKey(paths),
      cluster: config.cluster,
      connectTimeoutMs: CONNECT_MS,
      maxFrameBytes: config.api.maxFrameBytes,
    });
  }

  private async fault<Reply extends Message>(name: string, message: Message): Promise<Reply> {
    const client = await this.client(name);
    return client.ask<Reply>('framework', message, { timeoutMs: FAULT_MS });
  }

  async createSystem(system: ChaosSystemSpec): Promise<void> {
    const value = systemObject(system);
    const client = await this.client(this.self);
    try {
      await client.ask('cdb', { type: 'cdb.cas', key: `object/system/${system.id}`, value, expect: null }, { timeoutMs: 10_000 });
    } catch (error) {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_CONFLICT') {
        throw new AcpError('ACP_ERR_CDB_CONFLICT', `system '${system.id}' already exists in this cluster: a chaos run creates its scenario's systems itself; rename it in the scenario, or acp system rm ${system.id}`);
      }
      throw error;
    }
  }

  async kill(name: string, restartAfterMs: number | undefined): Promise<void> {
    const client = await this.client(name);
    const { incarnation } = await client.ask<Message & { incarnation: number }>('framework', { type: 'status' }, { timeoutMs: FAULT_MS });
    const killedAt = Date.now();
    await client.ask('framework', { type: 'faults.kill', ...(restartAfterMs === undefined ? {} : { restartAfterMs }) }, { timeoutMs: FAULT_MS });
    if (restartAfterMs !== undefined) this.comingBack.set(name, { incarnation, dueAt: killedAt + restartAfterMs });
    // Gone once its connection closes (the helper's SIGKILL) or it answers as another incarnation.
    const deadline = Date.now() + GONE_MS;
    while (Date.now() < deadline) {
      if (isClosed(client)) return;
      const answer = await client.ask<Message & { incarnation: number }>('framework', { type: 'status' }, { timeoutMs: 300 }).catch(() => undefined);
      if (answer && answer.incarnation !== incarnation) return;
      await sleep(50);
    }
    throw new AcpError('ACP_ERR_NODE_UNREACHABLE', `node '${name}' still answers ${GONE_MS} ms after it was asked to die (faults.kill)`);
  }

  async restart(name: string): Promise<void> {
    const due = this.comingBack.get(name);
    if (!due) {
      throw new AcpError('ACP_ERR_CHAOS_SCENARIO', `'restart ${name}': on a live cluster a node comes back only after a 'kill ${name}' earlier in the scenario (its kill arranges the restart)`);
    }
    const deadline = Math.max(Date.now(), due.dueAt) + BACK_MS;
    for (;;) {
      try {
        const client = await this.client(name);
        const status = await client.ask<Message & { incarnation: number; booting: boolean }>('framework', { type: 'status' }, { timeoutMs: 1000 });
        if (status.incarnation !== due.incarnation && !status.booting) {
          this.comingBack.delete(name);
          return;
        }
      } catch {
        // Not back yet.
      }
      if (Date.now() > deadline) throw new AcpError('ACP_ERR_NODE_UNREACHABLE', `node '${name}' did not come back within ${BACK_MS} ms of when its restart was due; see its log (acpd.log, fault-helper.log)`);
      await sleep(200);
    }
  }

  async stop(name: string, ms: number): Promise<void> {
    await this.fault(name, { type: 'faults.stop', ms });
    await sleep(ms);
  }

  async partition(name: string): Promise<void> {
    await this.fault(name, { type: 'faults.partition', on: true });
  }

  async heal(name: string): Promise<void> {
    await this.fault(name, { type: 'faults.partition', on: false });
  }

  async dropRate(name: string, rate: number): Promise<void> {
    await this.fault(name, { type: 'faults.drop', rate });
  }

  /** Removes the run's systems (their guests are stopped) and writes, then closes every connection. */
  async cleanup(systems: readonly string[], prefix: string, log: (line: string) => void): Promise<void> {
    try {
      const client = await this.client(this.self);
      for (const id of systems) {
        await client.ask('cdb', { type: 'cdb.delete', key: `object/system/${id}` }, { timeoutMs: 10_000 }).catch((error: unknown) => log(`could not remove system ${id}: ${(error as Error).message}`));
      }
      for (const record of await listPrefix(client, prefix, 10_000)) {
        await client.ask('cdb', { type: 'cdb.delete', key: record.key }, { timeoutMs: 10_000 }).catch(() => undefined);
      }
    } catch (error) {
      log(`cleanup on ${this.self} failed: ${(error as Error).message}`);
    }
    for (const entry of this.cached.values()) entry.client?.close().catch(() => undefined);
    this.cached.clear();
  }
}
