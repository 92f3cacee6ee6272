/**
 * HA's vocabulary: the timings, what the HA manager (on the primary, manager.ts) and each node's
 * local manager (local.ts) know of systems and nodes, and the two messages between them.
 *
 * A node's local manager reports to the primary every `reportMs` (`ha.status`, numbered); the
 * primary answers each report with a grant (`ha.grant`) stamped with its term, carrying the full
 * list of orders for that node. A grant is the node's lease: it runs HA systems until `leaseMs`
 * after it SENT the report the grant answers. The primary counts from when it sent the grant (later
 * in real time), so the node's lease always ends before the primary's reckoning of it.
 */
import { z } from 'zod';

export interface HaConfig {
  /** How often the env steps both machines with a tick. */
  readonly tickMs: number;
  /** How often a local manager reports (and asks for its lease to be renewed). */
  readonly reportMs: number;
  /** A node's lease on running HA systems, counted from when it sent the report a grant answers. */
  readonly leaseMs: number;
  /** A local manager stops its HA systems this long before its lease ends. */
  readonly stopAheadMs: number;
  /** The fence guard kills the node's HA guests when not fed for this long. */
  readonly fenceTimeoutMs: number;
  /** How often a local manager feeds its fence guard while it holds its lease. */
  readonly feedMs: number;
  /** Added to lease + fence timeout before the primary recovers a silent node's systems (clock-rate drift, scheduling). */
  readonly marginMs: number;
  /** A node not heard from for this long is `unknown` to the HA manager. */
  readonly unknownAfterMs: number;
}

/**
 * Defaults: a dead node's HA systems are recovered about 5.8 s after its last report (lease 3.5 s
 * + guard 2 s + margin 0.3 s); when the dead node was the primary, add the election (1.5-2.9 s,
 * from which the new primary counts). The lease outlasts an election, so a primary's death does not
 * make every node stop its HA systems while the next primary is elected.
 */
export const defaultHaConfig: HaConfig = {
  tickMs: 100,
  reportMs: 200,
  leaseMs: 3500,
  stopAheadMs: 200,
  fenceTimeoutMs: 2000,
  feedMs: 1000,
  marginMs: 300,
  unknownAfterMs: 1000,
};

/** pve-ha-manager's states, per system. */
export const HA_STATES = ['started', 'request-stop', 'stopped', 'fence', 'recovery', 'migrate', 'relocate', 'freeze', 'error'] as const;
export type HaState = (typeof HA_STATES)[number];
export const HA_NODE_STATES = ['online', 'maintenance', 'unknown', 'fence', 'gone'] as const;
export type HaNodeState = (typeof HA_NODE_STATES)[number];

/** What happens to a node's HA systems when it shuts down cleanly (pve's shutdown_policy). */
export const SHUTDOWN_POLICIES = ['conditional', 'migrate', 'freeze', 'failover'] as const;
export type ShutdownPolicy = (typeof SHUTDOWN_POLICIES)[number];

/** An HA system as the objects in the CDB describe it (the HA part of object/system/<id>). */
export interface HaSystemSpec {
  readonly id: string;
  readonly memoryMiB: number;
  readonly vcpus: number;
  /** 'stopped' when the operator stopped it. */
  readonly want: 'started' | 'stopped';
  /** The node the object names, if any: where it is first placed. */
  readonly node?: string | undefined;
  /** Node affinity: node -> priority (higher first). */
  readonly prefer?: Readonly<Record<string, number>> | undefined;
  /** Only the preferred nodes, never others. */
  readonly strict?: boolean | undefined;
  /** Systems this one never shares a node with. */
  readonly antiAffinity?: readonly string[] | undefined;
  /** Restarts on the same node after a crash (default 1). */
  readonly maxRestart?: number | undefined;
  /** Moves to other nodes after the restarts are used up (default 1). */
  readonly maxRelocate?: number | undefined;
}

/** A node as the HA manager places on it. */
export interface HaNodeSpec {
  readonly name: string;
  readonly memoryMiB: number;
  readonly vcpus: number;
  readonly maintenance: boolean;
}

const term = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const id = z.string().min(1).max(63);

export const orderSchema = z.strictObject({
  system: id,
  want: z.enum(['started', 'stopped', 'migrate']),
  /** For `migrate`: where to. */
  target: id.optional(),
  maxRestart: count,
});
export type Order = z.infer<typeof orderSchema>;

/** What the HA managers send each other, checked like everything from the network. */
export const haMessageSchema = z.discriminatedUnion('type', [
  /** A local manager's report: what runs here, what failed for good, which orders it applied. */
  z.strictObject({
    type: z.literal('ha.status'),
    term,
    seq: count,
    applied: count,
    running: z.array(id).max(4096),
    migrating: z.array(id).max(4096),
    /** Guests it migrated away under their current order: gone from here, handed to the target. */
    migrated: z.array(id).max(4096),
    failed: z.array(id).max(4096),
    shutdown: z.enum(['migrate', 'freeze', 'failover']).nullable(),
  }),
  /** The primary's answer: the lease for report `seq`, and the node's orders (version `version`). */
  z.strictObject({ type: z.literal('ha.grant'), term, seq: count, version: count, orders: z.array(orderSchema).max(4096) }),
]);
export type HaMessage = z.infer<typeof haMessageSchema>;
export type HaStatusMessage = Extract<HaMessage, { type: 'ha.status' }>;
export type HaGrantMessage = Extract<HaMessage, { type: 'ha.grant' }>;
export const HA_MESSAGE_TYPES = ['ha.status', 'ha.grant'] as const;
