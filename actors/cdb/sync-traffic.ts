/**
 * Counters of CDB sync traffic on one node: payloads (datagrams on multicast, asks on unicast)
 * and their bytes, sent and received, by kind; repair and snapshot exchanges over the agent and
 * their bytes. Shown in `cdb.sync.status`; the simulator keeps the same counters per node.
 */
import type { SyncPayload } from './sync-protocol.js';

export type PayloadKind = SyncPayload['k'];
export const PAYLOAD_KINDS: readonly PayloadKind[] = ['digest', 'batch', 'announce'];

export interface Flow {
  /** Datagrams on multicast, sends over the agent on unicast. */
  count: number;
  bytes: number;
}

export type FlowsByKind = Record<PayloadKind, Flow>;

export interface ExchangeFlow {
  /** Repair answers or snapshot pages received by this node (it asked) and their bytes. */
  received: Flow;
  /** Answers or pages this node served to others and their bytes. */
  served: Flow;
}

export interface SyncTraffic {
  multicast: { sent: FlowsByKind; received: FlowsByKind };
  unicast: { sent: FlowsByKind; received: FlowsByKind };
  repair: ExchangeFlow;
  snapshot: ExchangeFlow;
}

const flow = (): Flow => ({ count: 0, bytes: 0 });
const byKind = (): FlowsByKind => ({ digest: flow(), batch: flow(), announce: flow() });

export function emptyTraffic(): SyncTraffic {
  return {
    multicast: { sent: byKind(), received: byKind() },
    unicast: { sent: byKind(), received: byKind() },
    repair: { received: flow(), served: flow() },
    snapshot: { received: flow(), served: flow() },
  };
}

export type Channel = 'multicast' | 'unicast';

export class TrafficMeter {
  private readonly traffic = emptyTraffic();

  sent(channel: Channel, kind: PayloadKind, bytes: number): void {
    add(this.traffic[channel].sent[kind], bytes);
  }

  received(channel: Channel, kind: PayloadKind, bytes: number): void {
    add(this.traffic[channel].received[kind], bytes);
  }

  exchange(what: 'repair' | 'snapshot', direction: 'received' | 'served', bytes: number): void {
    add(this.traffic[what][direction], bytes);
  }

  /** A copy, safe to hand out. */
  view(): SyncTraffic {
    return structuredClone(this.traffic);
  }
}

function add(into: Flow, bytes: number): void {
  if (!Number.isFinite(bytes) || bytes < 0) throw new RangeError(`a byte count must be a non-negative number, not ${bytes}`);
  into.count += 1;
  into.bytes += bytes;
}

/** Sums of a traffic view: every payload kind of one channel and direction together. */
export function total(flows: FlowsByKind): Flow {
  return PAYLOAD_KINDS.reduce((sum, kind) => ({ count: sum.count + flows[kind].count, bytes: sum.bytes + flows[kind].bytes }), flow());
}

/** `after - before`, flow by flow: the traffic of an interval. */
export function difference(after: SyncTraffic, before: SyncTraffic): SyncTraffic {
  const minus = (a: Flow, b: Flow): Flow => ({ count: a.count - b.count, bytes: a.bytes - b.bytes });
  const kinds = (a: FlowsByKind, b: FlowsByKind): FlowsByKind => ({ digest: minus(a.digest, b.digest), batch: minus(a.batch, b.batch), announce: minus(a.announce, b.announce) });
  const exchange = (a: ExchangeFlow, b: ExchangeFlow): ExchangeFlow => ({ received: minus(a.received, b.received), served: minus(a.served, b.served) });
  return {
    multicast: { sent: kinds(after.multicast.sent, before.multicast.sent), received: kinds(after.multicast.received, before.multicast.received) },
    unicast: { sent: kinds(after.unicast.sent, before.unicast.sent), received: kinds(after.unicast.received, before.unicast.received) },
    repair: exchange(after.repair, before.repair),
    snapshot: exchange(after.snapshot, before.snapshot),
  };
}
