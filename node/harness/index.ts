import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initCluster } from '../cluster.js';
import { killHomeGuests } from '../../adapters/drivers/qemu.js';
import { connect, type AcpClient } from '../client.js';
import { homePaths } from '../../runtime/config.js';
import type { Message } from '../../runtime/messages.js';
import { isClosed, logTail, nodeStates, readPid, runIn } from './daemon-view.js';
import { resolveOptions, type HarnessCliResult, type HarnessNode, type HarnessOptions, type Resolved } from './options.js';
import { destroyNamespace, destroyNamespaceSync, harnessAvailable, ip, isGone, PREFIX, removeLeftovers, signal } from './net.js';
import { buildSwitchedNetwork, SUBNET } from './topology.js';

export { harnessAvailable } from './net.js';
export type { HarnessCliResult, HarnessNode, HarnessOptions } from './options.js';

/**
 * A multi-node harness on real network namespaces: every node is a real `acpd`, started with
 * `acp up --detach` inside its own namespace, its `eth0` on a bridge in a "switch" namespace that
 * the harness makes (the host's own namespace is never touched). Faults are real: SIGKILL,
 * SIGSTOP, a link set down. Needs root and iproute2: check `harnessAvailable()` first.
 *
 * ```ts
 * const h = await Harness.start({ nodes: ['n1', 'n2', 'n3'] });
 * try {
 *   await h.partition('n3');
 *   ...
 * } finally {
 *   await h.teardown();
 * }
 * ```
 */

const AGENT_PORT = 7480;

type NodeStatus = 'down' | 'running' | 'stopped' | 'killed';

interface NodeState {
  readonly node: HarnessNode;
  /** The bridge-side end of its veth pair, in the switch namespace. */
  readonly port: string;
  status: NodeStatus;
  client?: { pid: number; connecting: Promise<AcpClient>; client?: AcpClient };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Harnesses not torn down yet: the exit handler cleans up after them. */
const live = new Set<Harness>();
let counter = 0;
let handlersInstalled = false;

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const harness of live) harness.destroySync();
  });
  for (const name of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      for (const harness of live) harness.destroySync();
      process.off(name, onSignal);
      // Alone on this signal: die of it as the process would have without us.
      if (process.listenerCount(name) === 0) process.kill(process.pid, name);
    };
    process.on(name, onSignal);
  }
}

export class Harness {
  readonly nodes: HarnessNode[];
  /** `acph-<pid>-<k>`: the prefix of every namespace and home of this harness. */
  readonly id: string;
  /** The namespace holding the bridge(s) (and, with 2 domains, the router). */
  readonly switchNs: string;
  private readonly states = new Map<string, NodeState>();
  /** Every namespace this harness made or was making, switch last: what teardown deletes. */
  private readonly namespaces: string[] = [];
  private tornDown: Promise<void> | undefined;
  private destroyed = false;

  private constructor(private readonly options: Resolved) {
    this.id = `${PREFIX}-${process.pid}-${counter++}`;
    this.switchNs = `${this.id}-sw`;
    this.nodes = options.names.map((name, index) => {
      const domain = options.domainOf(name, index);
      if (domain !== 'a' && domain !== 'b') throw new Error(`domainOf('${name}') must be 'a' or 'b', not ${String(domain)}`);
      const address = `${SUBNET[domain]}.${11 + index}`;
      return { name, ns: `${this.id}-${name}`, address, agent: `${address}:${AGENT_PORT}`, home: '', domain, pid: 0 };
    });
    this.nodes.forEach((node, index) => this.states.set(node.name, { node, port: `p${index}`, status: 'down' }));
  }

  /**
   * Builds the namespaces, bridges and veths, makes a cluster (init on the first node, join for
   * the others) and starts every daemon. On failure it tears down what it made, then throws.
   */
  static async start(options: HarnessOptions = {}): Promise<Harness> {
    const available = harnessAvailable();
    if (!available.ok) throw new Error(`the multi-node harness cannot run on this host: ${available.why}`);
    const harness = new Harness(resolveOptions(options));
    removeLeftovers();
    live.add(harness);
    installExitHandlers();
    try {
      await harness.buildNetwork();
      await harness.buildCluster();
    } catch (error) {
      await harness.teardown();
      throw error;
    }
    return harness;
  }

  node(name: string): HarnessNode {
    return this.state(name).node;
  }

  /** A client on the node's Unix socket, cached; a new one after the daemon restarted or the connection closed. */
  async client(name: string): Promise<AcpClient> {
    const state = this.state(name);
    const pid = readPid(state.node.home) ?? state.node.pid;
    const cached = state.client;
    if (cached && cached.pid === pid && !(cached.client && isClosed(cached.client))) return cached.connecting;
    this.dropClient(state);
    const entry: NonNullable<NodeState['client']> = { pid, connecting: connect({ home: state.node.home }) };
    state.client = entry;
    entry.connecting.then(
      (client) => {
        entry.client = client;
      },
      () => {
        if (state.client === entry) state.client = undefined;
      },
    );
    return entry.connecting;
  }

  /** Runs `acp --home <home> ...args` inside the node's namespace. Never throws: look at the code. */
  cli(name: string, args: string[], timeoutMs = 60_000): Promise<HarnessCliResult> {
    const { node } = this.state(name);
    return runIn(node.ns, node.home, args, timeoutMs);
  }

  /** The arguments of the node's `acp up` (after `--home <home>`): what start and restart run. */
  upArgs(name: string): string[] {
    const { node } = this.state(name);
    const others = this.nodes.filter((other) => other !== node);
    const otherDomain = node.domain === 'a' ? 'b' : 'a';
    const isGateway = this.options.domains === 2 && this.nodes.find((candidate) => candidate.domain === node.domain) === node;
    const remoteGateway = this.nodes.find((candidate) => candidate.domain === otherDomain);
    return [
      'up',
      '--detach',
      '--agent',
      node.agent,
      '--multicast-if',
      node.address,
      ...(this.options.faults ? ['--faults'] : []),
      ...(this.options.unicast && others.length > 0 ? ['--peers', others.map((other) => other.agent).join(',')] : []),
      ...(isGateway && remoteGateway ? ['--gateway', remoteGateway.agent] : []),
      '--log-level',
      this.options.logLevel,
      ...this.options.upArgs(node),
    ];
  }

  /** SIGKILLs the daemon and waits until it is gone. */
  async kill(name: string, timeoutMs = 10_000): Promise<void> {
    const state = this.state(name);
    const { pid } = state.node;
    signal(pid, 'SIGKILL');
    state.status = 'killed';
    this.dropClient(state);
    const deadline = Date.now() + timeoutMs;
    while (!isGone(pid)) {
      if (Date.now() > deadline) throw new Error(`${name}'s daemon (pid ${pid}) is still there ${timeoutMs} ms after SIGKILL`);
      await sleep(20);
    }
  }

  /** `acp down` on the node: a clean stop (its HA systems drained by its shutdown policy); restart() starts it again. */
  async down(name: string, timeoutMs = 200_000): Promise<HarnessCliResult> {
    const state = this.state(name);
    this.dropClient(state);
    const result = await this.cli(name, ['down'], timeoutMs);
    if (result.code === 0) state.status = 'down';
    return result;
  }

  /** SIGSTOP: the daemon freezes, its sockets stay open. */
  stop(name: string): void {
    const state = this.state(name);
    signal(state.node.pid, 'SIGSTOP');
    if (state.status === 'running') state.status = 'stopped';
  }

  /** SIGCONT after stop(). */
  cont(name: string): void {
    const state = this.state(name);
    signal(state.node.pid, 'SIGCONT');
    if (state.status === 'stopped') state.status = 'running';
  }

  /** Cuts the node off: its veth's bridge-side end goes down (its eth0 loses carrier). */
  async partition(name: string): Promise<void> {
    await ip(['-n', this.switchNs, 'link', 'set', this.state(name).port, 'down']);
  }

  /** Undoes partition(). */
  async heal(name: string): Promise<void> {
    await ip(['-n', this.switchNs, 'link', 'set', this.state(name).port, 'up']);
  }

  /** `acp up --detach` again, in its namespace, with the same flags (after kill()); updates pid. */
  async restart(name: string): Promise<void> {
    await this.up(this.state(name));
  }

  /** Makes the node's CDB sync drop this fraction (0..1) of what it receives (needs --faults). */
  async dropRate(name: string, p: number): Promise<void> {
    await (await this.client(name)).ask('cdb', { type: 'cdb.sync.faults', dropRate: p }, { timeoutMs: 10_000 });
  }

  /**
   * Resolves once every running node (not killed, not stopped) says its CDB is synced and lists
   * every running node as up. A partitioned node counts as running: heal before waiting.
   */
  async waitSynced(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let why = 'not asked yet';
    for (;;) {
      const problem = await this.syncProblem().catch((error: unknown) => (error as Error).message);
      if (problem === undefined) return;
      why = problem;
      if (Date.now() > deadline) throw new Error(`the cluster did not sync within ${timeoutMs} ms: ${why}`);
      await sleep(200);
    }
  }

  /**
   * Kills every daemon (SIGCONT then SIGKILL) and anything else in the namespaces, deletes every
   * namespace (their veths and bridges go with them) and removes the homes. Safe to call twice,
   * and after a start that failed half-way.
   */
  teardown(): Promise<void> {
    this.tornDown ??= this.destroy();
    return this.tornDown;
  }

  /** @internal What the exit handler runs if teardown() was not: the same, synchronously. */
  destroySync(): void {
    if (this.destroyed) return;
    for (const node of this.nodes) {
      if (node.pid > 0) {
        signal(node.pid, 'SIGCONT');
        signal(node.pid, 'SIGKILL');
      }
    }
    for (const ns of this.namespaces) destroyNamespaceSync(ns);
    // Guests outlive their daemons: none outlives the harness.
    for (const node of this.nodes) if (node.home) killHomeGuests(node.home);
    for (const node of this.nodes) if (node.home) rmSync(node.home, { recursive: true, force: true });
    this.destroyed = true;
    live.delete(this);
  }

  // -------------------------------------------------------------------------------------------

  private state(name: string): NodeState {
    const state = this.states.get(name);
    if (!state) throw new Error(`no node '${name}' in this harness (it has ${[...this.states.keys()].join(', ')})`);
    return state;
  }

  private dropClient(state: NodeState): void {
    const cached = state.client;
    state.client = undefined;
    cached?.connecting.then((client) => client.close()).catch(() => undefined);
  }

  private async destroy(): Promise<void> {
    await Promise.all([...this.states.values()].map(async (state) => {
      const cached = state.client;
      state.client = undefined;
      const client = await cached?.connecting.catch(() => undefined);
      await client?.close().catch(() => undefined);
    }));
    for (const node of this.nodes) {
      if (node.pid <= 0) continue;
      signal(node.pid, 'SIGCONT');
      signal(node.pid, 'SIGKILL');
    }
    const deadline = Date.now() + 10_000;
    while (this.nodes.some((node) => node.pid > 0 && !isGone(node.pid)) && Date.now() < deadline) await sleep(20);
    // Nodes first: deleting a node's namespace takes its veth pair with it; then the switch.
    for (const ns of this.namespaces) await destroyNamespace(ns);
    // Guests outlive their daemons: none outlives the harness.
    for (const node of this.nodes) if (node.home) killHomeGuests(node.home);
    for (const node of this.nodes) if (node.home) rmSync(node.home, { recursive: true, force: true });
    for (const state of this.states.values()) state.status = 'down';
    this.destroyed = true;
    live.delete(this);
  }

  private async addNamespace(ns: string): Promise<void> {
    // Recorded first: a namespace half made is still deleted by teardown. Switch last.
    if (ns === this.switchNs) this.namespaces.push(ns);
    else this.namespaces.splice(Math.max(0, this.namespaces.indexOf(this.switchNs)), 0, ns);
    await ip(['netns', 'add', ns]);
    await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
  }

  private async buildNetwork(): Promise<void> {
    const ports = this.nodes.map((node) => ({ node, port: this.state(node.name).port }));
    await buildSwitchedNetwork(this.switchNs, this.options.domains === 2, ports, (ns) => this.addNamespace(ns));
  }

  private makeHome(node: HarnessNode): void {
    node.home = mkdtempSync(join(tmpdir(), `${this.id}-${node.name}-`));
    // As test/helpers/node.ts makeHome: the web UI takes an ephemeral port, so daemons coexist.
    const config = { cluster: this.options.cluster, node: node.name, webapi: { host: '127.0.0.1', port: 0 }, services: {} };
    writeFileSync(join(node.home, 'config.json'), JSON.stringify(config));
  }

  private async buildCluster(): Promise<void> {
    const [first, ...rest] = this.nodes;
    if (!first) throw new Error('a harness needs at least one node');
    for (const node of this.nodes) this.makeHome(node);
    await initCluster(first.home, { cluster: this.options.cluster, node: first.name, agent: first.agent });
    await this.up(this.state(first.name));
    const witnessTokens = new Map<string, string>();
    for (const node of rest) {
      const ca = await this.client(first.name);
      const { token } = await ca.ask<Message & { token: string }>('agent', { type: 'agent.token', ttlMs: 3_600_000 }, { timeoutMs: 15_000 });
      if (this.options.witnesses.includes(node.name)) {
        witnessTokens.set(node.name, token);
        continue;
      }
      const joined = await this.cli(node.name, ['join', first.agent, '--token', token, '--node', node.name, '--agent', node.agent]);
      if (joined.code !== 0) throw new Error(`${node.name}: acp join ${first.agent} exited ${joined.code}: ${joined.stderr.trim()} ${joined.stdout.trim()}`);
    }
    for (const node of rest) {
      const token = witnessTokens.get(node.name);
      // A witness joins and starts in one command: acp witness up ADDRESS --token T (then plain acp up on a restart).
      await this.up(this.state(node.name), token === undefined ? undefined : ['witness', ...this.upArgs(node.name), first.agent, '--token', token, '--node', node.name]);
    }
  }

  private async up(state: NodeState, command?: string[]): Promise<void> {
    const { node } = state;
    const args = command ?? this.upArgs(node.name);
    const result = await this.cli(node.name, args, 90_000);
    if (result.code !== 0) {
      throw new Error(`${node.name}: acp ${args.join(' ')} exited ${result.code}: ${result.stderr.trim()} ${result.stdout.trim()}\n--- last lines of ${homePaths(node.home).logFile}:\n${logTail(node.home)}`);
    }
    const pid = readPid(node.home);
    if (pid === undefined) throw new Error(`${node.name}: acp up returned but ${homePaths(node.home).pidfile} names no pid`);
    node.pid = pid;
    state.status = 'running';
    this.dropClient(state);
  }

  /** Why the cluster is not synced yet, or undefined when it is. */
  private async syncProblem(): Promise<string | undefined> {
    const running = [...this.states.values()].filter((state) => state.status === 'running').map((state) => state.node.name);
    for (const name of running) {
      const client = await this.client(name);
      const status = await client.ask<Message & { synced?: boolean }>('cdb', { type: 'cdb.sync.status' }, { timeoutMs: 3000 });
      if (status.synced !== true) return `${name} is not synced (${JSON.stringify(status)})`;
      const reply = await client.ask<Message & { nodes?: unknown }>('cdb', { type: 'cdb.nodes' }, { timeoutMs: 3000 });
      const states = nodeStates(reply.nodes);
      for (const other of running) {
        if (states.get(other) !== 'up') return `${name} sees ${other} as ${states.get(other) ?? 'unknown'}`;
      }
    }
    return undefined;
  }
}

/** `cdb.nodes`' list (`[{node|name, state}]`) or map (`{name: {state}}`) as name → state. */
