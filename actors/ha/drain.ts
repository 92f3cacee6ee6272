/**
 * A clean node shutdown's drain of its HA systems, by the node's shutdown policy: `migrate` moves
 * them to other nodes (the primary orders the migrations), `freeze` and `failover` stop them here
 * (the primary then keeps them frozen until the node is back, or recovers them elsewhere at once,
 * with no fence wait: the node said they are stopped). `conditional` is `freeze` when the host
 * reboots, `failover` when it powers off, and nothing when only acpd stops: its HA guests then run
 * on until the fence guard ends them and the primary recovers them, as after a crash of the daemon.
 *
 * The drain is done once no HA guest is left here and the primary has been told so in two reports,
 * or when its time is up (what is left is named in the answer).
 */
import type { HaStatusMessage, ShutdownPolicy } from './protocol.js';
import type { HostShutdown } from '../../adapters/host-shutdown.js';

export type DrainPolicy = NonNullable<HaStatusMessage['shutdown']>;

/** How long a drain may take: a migration per system, or a graceful stop (30 s) with a margin. */
export const DRAIN_MS: Record<DrainPolicy, number> = { migrate: 120_000, freeze: 45_000, failover: 45_000 };
/** Reports that must reach the primary after the last HA guest left, so it knows before the lease lapses. */
const REPORTS_AFTER_EMPTY = 2;

export function drainPolicyOf(configured: ShutdownPolicy, host: HostShutdown): DrainPolicy | null {
  if (configured !== 'conditional') return configured;
  return host === 'reboot' ? 'freeze' : host === 'poweroff' ? 'failover' : null;
}

/** The answer to ha.drain. */
export type HaDrained = {
  type: 'ha.drained';
  configured: ShutdownPolicy;
  /** What was carried out (null: nothing, the guests stay as they are). */
  policy: DrainPolicy | null;
  /** HA guests that ran here when the drain began. */
  had: string[];
  /** Of those, still here when it ended (its time ran out, or no node could take them). */
  left: string[];
  ms: number;
  why: string;
};

export interface Drain {
  readonly configured: ShutdownPolicy;
  readonly policy: DrainPolicy;
  readonly startedAt: number;
  readonly deadline: number;
  readonly had: string[];
  reportsAfterEmpty: number;
}

export function startDrain(configured: ShutdownPolicy, policy: DrainPolicy, now: number, guests: readonly string[]): Drain {
  return { configured, policy, startedAt: now, deadline: now + DRAIN_MS[policy], had: [...guests], reportsAfterEmpty: 0 };
}

/** Counts a report sent to the primary (only those sent once no HA guest was left count). */
export function reported(drain: Drain, guests: readonly string[]): void {
  if (guests.length === 0) drain.reportsAfterEmpty += 1;
}

/**
 * The drain's answer once it is over, or null while it goes on. `othersOnline`: whether any other
 * voting node is there to take migrated systems (with none, a migrate drain ends at once).
 */
export function drainOutcome(drain: Drain, guests: readonly string[], now: number, othersOnline: boolean): HaDrained | null {
  const answer = (why: string): HaDrained => ({ type: 'ha.drained', configured: drain.configured, policy: drain.policy, had: drain.had, left: [...guests], ms: Math.round(now - drain.startedAt), why });
  if (guests.length === 0 && drain.reportsAfterEmpty >= REPORTS_AFTER_EMPTY) {
    return answer(drain.had.length === 0 ? 'no HA system ran here' : drain.policy === 'migrate' ? 'every HA system migrated away' : `every HA system stopped (${drain.policy})`);
  }
  if (drain.policy === 'migrate' && !othersOnline && guests.length > 0) return answer('no other node is there to take them: they stay, and the fence guard ends them when the lease lapses');
  if (now >= drain.deadline) return answer(`not done within ${DRAIN_MS[drain.policy] / 1000} s`);
  return null;
}
