/**
 * Runs the Replicator for real inside the CDB actor: authenticated multicast for this domain (or
 * unicast over the agent with --peers, or when the group cannot be joined), the agent for repair,
 * snapshots and gateways, and timers for digests and flushes.
 *
 * The replicator's state changes only in the CDB's `receive`: a datagram, a timer or a peer's
 * identity found by the agent is told to the CDB as a message (`SyncSelfMessage`), and the CDB
 * hands it back to `handle` here, in its mailbox's order with everything else.
 */
import { randomInt } from 'node:crypto';
import { DEFAULT_MULTICAST_PORT, defaultGroup, isIPv4Unicast, MAX_DATAGRAM_BYTES, MulticastChannel, parseMulticast, type MulticastStats } from '../../adapters/multicast.js';
import { parseHostPort } from '../../adapters/tls.js';
import type { StoredRecord } from '../../adapters/store.js';
import type { ActorContext } from '../../runtime/actor.js';
import type { NodeConfig } from '../../runtime/config.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { encodedLength } from '../../runtime/codec.js';
import type { Gap } from './replication.js';
import { mergeInSlices } from './merge-slices.js';
import { TrafficMeter, type SyncTraffic } from './sync-traffic.js';
import {
  REORDER_GRACE_MS,
  repairAnswerSchema,
  Replicator,
  snapshotPageSchema,
  syncPayloadSchema,
  type MemberView,
  type RepairAnswer,
  type SnapshotPage,
  type SnapshotRequest,
  type SyncCounters,
  type SyncPayload,
} from './sync.js';

/** Room in a datagram for the channel's envelope (origin, incarnation, sequence) around a payload. */
const DATAGRAM_PAYLOAD_BYTES = MAX_DATAGRAM_BYTES - 36 - 96;
/** Unicast rides the agent's frames: far larger sends are fine. */
const UNICAST_PAYLOAD_BYTES = 256 * 1024;
const SEND_TIMEOUT_MS = 3000;
export interface SyncSetup {
  config: NodeConfig['sync'];
  clusterKey: string;
  /** This node's agent address (the default multicast interface when it is an IPv4 address). */
  agentAddress?: string;
  faults: boolean;
  /** Every other node named in the CDB (object/node/*) and the seeds. */
  knownNodes(): string[];
  merge(records: readonly StoredRecord[]): Promise<void>;
}

/** What the sync machinery tells its own CDB; accepted from that CDB alone. */
export type SyncSelfMessage =
  | { type: 'cdb.sync.datagram'; payload: unknown; bytes: number }
  | { type: 'cdb.sync.tick' }
  | { type: 'cdb.sync.flush' }
  | { type: 'cdb.sync.repair-due' }
  | { type: 'cdb.sync.identified'; address: string; node: string };

export interface SyncStatus extends Message {
  type: 'cdb.sync.status';
  mode: 'multicast' | 'unicast';
  multicast: { group: string; port: number; interface: string } | null;
  /** Why this node is in unicast mode when it was not asked to be. */
  fallbackReason: string | null;
  peers: string[];
  gateways: { address: string; node: string | null }[];
  synced: boolean;
  dropRate: number;
  /** An injected partition (acp chaos) is on: no sync traffic in or out. */
  partitioned: boolean;
  counters: SyncCounters;
  datagrams: MulticastStats | null;
  /** Payloads and bytes sent and received by kind, and repair and snapshot exchanges over the agent. */
  traffic: SyncTraffic;
}

export class SyncNode {
  readonly replicator: Replicator;
  readonly traffic = new TrafficMeter();
  private channel: MulticastChannel | undefined;
  private mode: 'multicast' | 'unicast' = 'unicast';
  private fallbackReason: string | null = null;
  private multicast: { group: string; port: number; interface: string } | null = null;
  private readonly gatewayNames = new Map<string, string | null>();
  private readonly peerNames = new Map<string, string | null>();
  private ticker: NodeJS.Timeout | undefined;
  private flushScheduled = false;
  /** Durable local changes waiting for the next flush, in commit order. */
  private readonly outbox: StoredRecord[] = [];
  private repairTimer: NodeJS.Timeout | undefined;
  private dropRate = 0;
  private partitioned = false;
  private stopped = false;

  constructor(
    private readonly ctx: ActorContext,
    private setup: SyncSetup,
  ) {
    for (const address of setup.config.gateways) this.gatewayNames.set(address, null);
    for (const address of setup.config.peers) this.peerNames.set(address, null);
    const sync = this;
    this.replicator = new Replicator(
      {
        self: ctx.node.node,
        incarnation: ctx.node.incarnation,
        log: ctx.log,
        now: () => Date.now(),
        get payloadBytes() {
          return sync.mode === 'multicast' ? DATAGRAM_PAYLOAD_BYTES : UNICAST_PAYLOAD_BYTES;
        },
        broadcast: (payload) => this.broadcast(payload),
        forward: (payload) => this.forward(payload),
        get isGateway() {
          return sync.gatewayNames.size > 0;
        },
        repair: async (origin, gap): Promise<RepairAnswer> => {
          const answer = repairAnswerSchema.parse(await this.remote(origin).ask({ type: 'cdb.sync.repair', ...gap }, { timeoutMs: 10_000 }));
          this.traffic.exchange('repair', 'received', encodedLength(answer));
          return answer;
        },
        snapshot: async (node, request): Promise<SnapshotPage> => {
          const page = snapshotPageSchema.parse(await this.remote(node).ask({ type: 'cdb.sync.snapshot', ...request }, { timeoutMs: 30_000 }));
          // Counted at the records' size the server measured (a node from before it did: encoded here).
          this.traffic.exchange('snapshot', 'received', page.bytes ?? encodedLength(page));
          return page;
        },
        merge: (records) => mergeInSlices(records, setup.merge),
        knownNodes: () => this.knownNodes(),
        peerBack: (peer) => ctx.ref(`acp://${ctx.node.cluster}/${ctx.node.node}/agent`).tell({ type: 'agent.peer-heard', node: peer }),
      },
      setup.config,
    );
  }

  private remote(node: string) {
    return this.ctx.ref(`acp://${this.ctx.node.cluster}/${node}/cdb`);
  }

  private knownNodes(): string[] {
    const names = new Set(this.setup.knownNodes());
    for (const node of this.peerNames.values()) if (node) names.add(node);
    names.delete(this.ctx.node.node);
    return [...names].sort();
  }

  async start(): Promise<void> {
    const { config } = this.setup;
    if (config.peers.length > 0) {
      this.mode = 'unicast';
    } else {
      const [group, port] = this.groupAndPort();
      const iface = config.multicastIf ?? this.defaultInterface();
      const channel = new MulticastChannel({
        group,
        port,
        interface: iface,
        clusterKey: this.setup.clusterKey,
        origin: this.ctx.node.node,
        incarnation: this.ctx.node.incarnation,
        log: this.ctx.log,
        onPayload: (payload, from) => this.tellSelf({ type: 'cdb.sync.datagram', payload, bytes: from.bytes }),
      });
      try {
        await channel.open();
        this.channel = channel;
        this.mode = 'multicast';
        this.multicast = { group, port, interface: iface };
        this.ctx.log.info({ group, port, interface: iface }, 'cdb sync: multicast joined');
      } catch (error) {
        this.mode = 'unicast';
        this.fallbackReason = `cannot join multicast group ${group}:${port} on ${iface}: ${errorMessage(error)}`;
        this.ctx.log.warn({ code: 'ACP_ERR_SYNC_NO_MULTICAST', reason: this.fallbackReason }, 'cdb sync falls back to unicast over the agent (use --multicast-if, or --peers for unicast on purpose)');
      }
    }
    if (this.mode === 'unicast' && !this.fallbackReason) this.ctx.log.info({ peers: config.peers }, 'cdb sync: unicast over the agent');
    this.ticker = setInterval(() => this.tellSelf({ type: 'cdb.sync.tick' }), config.digestMs);
    this.ticker.unref();
    this.tellSelf({ type: 'cdb.sync.tick' });
  }

  private tellSelf(message: SyncSelfMessage): void {
    if (!this.stopped) this.ctx.self.tell(message);
  }

  /** A message from `tellSelf`, now in the CDB's mailbox order. */
  handle(message: SyncSelfMessage): void {
    if (this.stopped) return;
    switch (message.type) {
      case 'cdb.sync.datagram':
        return this.fromNetwork(message.payload, 'domain', message.bytes);
      case 'cdb.sync.tick':
        return this.tick();
      case 'cdb.sync.flush':
        return this.flush();
      case 'cdb.sync.repair-due':
        this.repairTimer = undefined;
        return this.replicator.repairAll();
      case 'cdb.sync.identified':
        for (const names of [this.peerNames, this.gatewayNames]) if (names.has(message.address)) names.set(message.address, message.node);
        this.ctx.log.info({ address: message.address, node: message.node }, 'cdb sync: peer identified');
        return;
      default: {
        const unreachable: never = message;
        return unreachable;
      }
    }
  }

  private groupAndPort(): [string, number] {
    const text = this.setup.config.multicast;
    if (!text) return [defaultGroup(this.ctx.node.cluster), DEFAULT_MULTICAST_PORT];
    const { group, port } = parseMulticast(text);
    return [group, port];
  }

  private defaultInterface(): string {
    const host = this.setup.agentAddress ? parseHostPort(this.setup.agentAddress, 'the agent address').host : undefined;
    return host && isIPv4Unicast(host) ? host : '0.0.0.0';
  }

  private tick(): void {
    this.resolveNames();
    this.flush();
    this.replicator.tick();
  }

  /** Finds the node names behind --peers and --gateway addresses (the agent dials and asks). */
  private resolveNames(): void {
    const agent = this.ctx.ref(this.ctx.self.path.replace(/\/cdb$/, '/agent'));
    for (const names of [this.peerNames, this.gatewayNames]) {
      for (const [address, node] of names) {
        if (node) continue;
        agent.ask<Message & { node: string }>({ type: 'agent.identify', address }, { timeoutMs: 5000 }).then(
          (reply) => this.tellSelf({ type: 'cdb.sync.identified', address, node: reply.node }),
          (error: unknown) => this.ctx.log.debug({ address, err: errorMessage(error) }, 'cdb sync: peer not reachable yet'),
        );
      }
    }
  }

  /**
   * Local changes, durable (called when their commit lands, which may be outside the mailbox):
   * queued in commit order and handed to the replicator by the next `cdb.sync.flush`, batched with
   * their neighbours.
   */
  committed(records: readonly StoredRecord[]): void {
    if (records.length === 0 || this.stopped) return;
    this.outbox.push(...records);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    this.tellSelf({ type: 'cdb.sync.flush' });
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.outbox.length > 0) this.replicator.local(this.outbox.splice(0));
    this.replicator.flush();
  }

  /**
   * A payload from the multicast group (`bytes`: the datagram's size), or from a peer or gateway
   * over the agent (counted at the size of its CBOR encoding).
   */
  fromNetwork(raw: unknown, via: 'domain' | 'gateway', bytes?: number): void {
    const parsed = syncPayloadSchema.safeParse(raw);
    if (!parsed.success) {
      this.replicator.counters.errors += 1;
      this.ctx.log.debug({ via }, 'cdb sync: malformed payload dropped');
      return;
    }
    if (bytes !== undefined) this.traffic.received('multicast', parsed.data.k, bytes);
    else this.traffic.received('unicast', parsed.data.k, encodedLength(raw));
    const news = this.replicator.receive(parsed.data, via);
    if (news === 'back') {
      clearTimeout(this.repairTimer);
      this.repairTimer = undefined;
      this.replicator.repairAll();
    } else if (news === 'gap' && !this.repairTimer) {
      this.repairTimer = setTimeout(() => this.tellSelf({ type: 'cdb.sync.repair-due' }), REORDER_GRACE_MS);
    }
  }

  private dropped(): boolean {
    if (this.partitioned) return true;
    return this.dropRate > 0 && randomInt(1_000_000) < this.dropRate * 1_000_000;
  }

  private broadcast(payload: SyncPayload): void {
    if (this.stopped) return;
    if (this.channel) {
      this.channel.send(payload).then((bytes) => {
        if (bytes > 0) this.traffic.sent('multicast', payload.k, bytes);
      }, (error: unknown) => {
        this.replicator.counters.errors += 1;
        this.ctx.log.debug({ err: errorMessage(error) }, 'cdb sync: multicast send failed');
      });
      return;
    }
    for (const node of this.domainPeers()) this.sendTo(node, payload, false);
  }

  /**
   * Unicast destinations. With gateways the cluster spans domains, and the CDB knows nodes of the
   * other one too: then only the --peers given are this domain, the rest is the gateways' work.
   */
  private domainPeers(): string[] {
    if (this.gatewayNames.size === 0) return this.knownNodes();
    return [...this.peerNames.values()].filter((node): node is string => node !== null && node !== this.ctx.node.node);
  }

  private forward(payload: SyncPayload): void {
    for (const node of this.gatewayNames.values()) if (node) this.sendTo(node, payload, true);
  }

  /** Unicast over the agent: an ask, so an unreachable peer costs a timeout, not a dead letter per send. */
  private sendTo(node: string, payload: SyncPayload, relay: boolean): void {
    if (this.dropped()) return;
    this.traffic.sent('unicast', payload.k, encodedLength(payload));
    this.remote(node)
      .ask({ type: 'cdb.sync', payload, ...(relay ? { relay: true } : {}) }, { timeoutMs: SEND_TIMEOUT_MS })
      .catch((error: unknown) => this.ctx.log.debug({ peer: node, err: errorMessage(error) }, 'cdb sync: unicast send failed'));
  }

  setDropRate(rate: number): void {
    if (!this.setup.faults) throw new AcpError('ACP_ERR_FAULTS_DISABLED', 'fault injection needs a daemon started with --faults');
    this.dropRate = Math.min(1, Math.max(0, rate));
    this.channel?.setDropRate(this.dropRate);
  }

  /** An injected partition: no datagram out or in, no unicast send (the agent cuts the rest). */
  setPartitioned(on: boolean): void {
    if (!this.setup.faults) throw new AcpError('ACP_ERR_FAULTS_DISABLED', 'fault injection needs a daemon started with --faults');
    this.partitioned = on;
    this.channel?.setPartitioned(on);
  }

  serveRepair(gap: Gap): Message & RepairAnswer {
    const answer = this.replicator.serveRepair(gap);
    this.traffic.exchange('repair', 'served', encodedLength(answer));
    return { type: 'cdb.sync.repaired', ...answer };
  }

  /** A snapshot page served to a peer (encoded by the agent; counted at its records' CBOR size). */
  servedSnapshot(page: SnapshotPage): void {
    this.traffic.exchange('snapshot', 'served', page.bytes ?? encodedLength(page));
  }

  members(): MemberView[] {
    return this.replicator.members(this.knownNodes());
  }

  status(): SyncStatus {
    return {
      type: 'cdb.sync.status',
      mode: this.mode,
      multicast: this.multicast,
      fallbackReason: this.fallbackReason,
      peers: this.mode === 'unicast' ? this.domainPeers() : [],
      gateways: [...this.gatewayNames].map(([address, node]) => ({ address, node })),
      synced: this.replicator.synced,
      dropRate: this.dropRate,
      partitioned: this.partitioned,
      counters: { ...this.replicator.counters },
      datagrams: this.channel ? { ...this.channel.stats } : null,
      traffic: this.traffic.view(),
    };
  }

  /** The cluster key was rotated: multicast is signed and checked with the new one from now on. */
  rekey(clusterKey: string): void {
    this.setup = { ...this.setup, clusterKey };
    this.channel?.setKey(clusterKey);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.replicator.stop();
    clearInterval(this.ticker);
    clearTimeout(this.repairTimer);
    await this.channel?.close();
  }
}

export type { SnapshotRequest };
