/** The monitors' vocabulary: members, timings and the messages between monitors (see election.ts). */
import { z } from 'zod';

export interface Member {
  readonly name: string;
  /** 1 (the default) or 0 for a node that follows but never votes or stands. */
  readonly votes: 0 | 1;
  /** A vote-only member: it votes but never stands for election (a two-node cluster's third vote). */
  readonly witness?: boolean;
}

export interface MonitorConfig {
  /** How often the env steps the machine with a `tick`. */
  readonly tickMs: number;
  /** How often a primary renews its lease with every member. */
  readonly renewMs: number;
  /** How long a member's promise lasts after it acknowledged a primary or granted a vote. */
  readonly leaseMs: number;
  /** The primary's lease ends this much before the promises (clock-rate drift, scheduling). */
  readonly leaseMarginMs: number;
  readonly electionMinMs: number;
  readonly electionMaxMs: number;
  readonly suspectAfterMs: number;
  readonly downAfterMs: number;
  /** The most event-loop delay a member's reports may add to its allowed silence. */
  readonly maxStallCreditMs: number;
  /** A member whose wall clock differs more than this from the primary's raises `clock-skew`. */
  readonly maxClockSkewMs: number;
  /**
   * A new primary that last knew one (itself or another) longer ago than this raises
   * `quorum-lost`: a failover takes under 4 s with the defaults, so a longer gap means no
   * majority of voters could elect anyone.
   */
  readonly quorumLostAfterMs: number;
}

/** Defaults: a dead node is down in 1.0-1.3 s; a dead primary is replaced in about 1.5-2.5 s. */
export const defaultMonitorConfig: MonitorConfig = {
  tickMs: 100,
  renewMs: 200,
  leaseMs: 1000,
  leaseMarginMs: 150,
  electionMinMs: 1200,
  electionMaxMs: 1800,
  suspectAfterMs: 500,
  downAfterMs: 1000,
  maxStallCreditMs: 5000,
  maxClockSkewMs: 1000,
  quorumLostAfterMs: 5000,
};

const term = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const ms = z.number().finite().min(0).max(1e15);

/** What monitors send each other, checked like everything from the network. */
export const peerMessageSchema = z.discriminatedUnion('type', [
  /** "Would you vote for me in `term`?" Nobody changes state on it. */
  z.strictObject({ type: z.literal('monitor.prevote'), term }),
  z.strictObject({ type: z.literal('monitor.prevote-reply'), term, granted: z.boolean() }),
  z.strictObject({ type: z.literal('monitor.vote'), term }),
  z.strictObject({ type: z.literal('monitor.vote-reply'), term, granted: z.boolean() }),
  /** The primary's lease renewal; `wall` and `loopDelayMs` feed clock-skew and failure detection. */
  z.strictObject({ type: z.literal('monitor.renew'), term, round: term, wall: ms, loopDelayMs: ms }),
  /** `ok: false` refuses a renewal from an older term, naming the newer one. */
  z.strictObject({ type: z.literal('monitor.ack'), term, round: term, ok: z.boolean(), wall: ms, loopDelayMs: ms }),
]);
export type PeerMessage = z.infer<typeof peerMessageSchema>;
export const PEER_MESSAGE_TYPES = ['monitor.prevote', 'monitor.prevote-reply', 'monitor.vote', 'monitor.vote-reply', 'monitor.renew', 'monitor.ack'] as const;

