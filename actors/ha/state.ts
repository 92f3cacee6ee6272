/** The HA manager's state, env, events and effects (the step itself is in manager.ts). */
import type { HaConfig, HaMessage, HaNodeSpec, HaNodeState, HaState, HaStatusMessage, HaSystemSpec, Order } from './protocol.js';

export interface SystemStatus {
  state: HaState;
  node: string | null;
  /** For `migrate`: where to. */
  target: string | null;
  /** The node it left for maintenance, to move back to when that ends. */
  home: string | null;
  relocates: number;
  /** Nodes it failed on (excluded when relocating). */
  tried: string[];
  /** The version of its node's orders that first told the node to stop it (request-stop, relocate). */
  stopVersion: number | null;
}

export interface NodeStatus {
  state: HaNodeState;
  /** Reported at least once in this term. */
  reported: boolean;
  lastReport: number;
  /** When this manager last granted the node a lease (its takeover, for a node not heard yet). */
  lastGrant: number;
  applied: number;
  running: string[];
  migrating: string[];
  migrated: string[];
  failed: string[];
  shutdown: HaStatusMessage['shutdown'];
  version: number;
  orders: Order[];
}

export interface ManagerState {
  readonly self: string;
  readonly term: number;
  systems: Record<string, SystemStatus>;
  nodes: Record<string, NodeStatus>;
  /** Systems for which "no node can take it" was logged (not repeated every tick). */
  waiting: string[];
}

/** What is kept in the CDB: the systems' states, read back by the next primary. */
export type PersistedHa = Record<string, Pick<SystemStatus, 'state' | 'node' | 'target' | 'home' | 'relocates' | 'tried'>>;

export interface ManagerEnv {
  readonly config: HaConfig;
  now(): number;
  /** The cluster's members (sorted). */
  members(): readonly string[];
  nodes(): readonly HaNodeSpec[];
  /** The HA systems' objects (sorted by id). */
  systems(): readonly HaSystemSpec[];
}

export type ManagerEffect =
  | { kind: 'send'; to: string; message: HaMessage }
  /** Written (durably, stamped with the term) before any later send. */
  | { kind: 'persist'; term: number; systems: PersistedHa }
  | { kind: 'log'; line: string };

export type ManagerEvent = { type: 'tick' } | { type: 'receive'; from: string; message: HaMessage };
