/** The election machine's state, events, env and effects (the step itself is in election.ts). */
import type { AlarmEffect, AlarmView } from './alarms.js';
import type { Member, MonitorConfig, PeerMessage } from './protocol.js';

export type MonitorEvent = { type: 'tick' } | { type: 'receive'; from: string; message: PeerMessage };

export type Role = 'follower' | 'precandidate' | 'candidate' | 'primary';
export type Liveness = 'up' | 'suspect' | 'down';

export interface PeerView {
  lastSeen: number;
  loopDelayMs: number;
  state: Liveness;
  /** When `state` last changed (unset: not since this primary took over). */
  since?: number;
  /** When it turned suspect, within the last `SUSPECT_WINDOW_MS` (a flapping member). */
  suspicions?: number[];
  /** Its wall clock minus the primary's, from its last acknowledgement. */
  skewMs: number;
}

export interface Round {
  round: number;
  sentAt: number;
  acks: string[];
}

export interface MonitorState {
  readonly self: string;
  /** Persisted with `votedFor`. */
  term: number;
  votedFor: string | null;
  role: Role;
  /** The primary of `term`, once known. */
  leader: string | null;
  /**
   * The last primary heard (or this node, while it is primary), and when: a successor starts its
   * failure detection from there, and a gap longer than `quorumLostAfterMs` raises `quorum-lost`.
   */
  lastLeader: string | null;
  lastLeaderAt: number;
  /** No vote for anyone (and no pre-vote) before this time: a promise made to a primary or candidate. */
  promiseUntil: number;
  electionDeadline: number;
  electionStartedAt: number;
  /** Pre-votes or votes gathered in the current attempt (sorted). */
  ballots: string[];
  leaseUntil: number;
  /** When this node last became primary. */
  primarySince: number;
  round: number;
  nextRenewAt: number;
  rounds: Round[];
  peers: Record<string, PeerView>;
  /** The alarms this primary believes open (adopted from the CDB when it took over). */
  alarms: Record<string, true>;
  lastTickAt: number;
  /** This node's own recent event-loop delay, measured from the gaps between ticks. */
  loopDelayMs: number;
}

/** Readings only: everything the machine may know about the world. */
export interface MonitorEnv {
  readonly config: MonitorConfig;
  /** Monotonic milliseconds (never jumps): leases, timeouts. */
  now(): number;
  /** Wall-clock milliseconds: timestamps and the clock-skew check only. */
  wall(): number;
  random(): number;
  /** The cluster's members, from the CDB (sorted by name). */
  members(): readonly Member[];
  /** The alarms open in the CDB, for a new primary to adopt. */
  openAlarms(): readonly AlarmView[];
}

export type Effect =
  | { kind: 'send'; to: string; message: PeerMessage }
  /** Must be durable before any later `send` goes out. */
  | { kind: 'persist'; term: number; votedFor: string | null }
  | { kind: 'log'; line: string }
  /** The lease holder changed (`primary: null`: none known). */
  | { kind: 'primary'; primary: string | null; term: number }
  | AlarmEffect;

export interface StepResult {
  state: MonitorState;
  effects: Effect[];
}

