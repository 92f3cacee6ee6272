/**
 * What follows a guest that ended unasked, or a VMM that died: a running QEMU is adopted by a new
 * VMM; otherwise the system is crashed (or stopped), and its restart policy decides whether it
 * starts again, within an intensity limit, after a backoff. Time, chance and timers come from the
 * runtime Clock (real in acpd, simulated in tests), as supervision's do. Called from `receive`.
 */
import type { ActorContext } from '../../runtime/actor.js';
import type { Clock } from '../../runtime/clock.js';
import { errorMessage } from '../../runtime/errors.js';
import { checkIntensity } from '../../supervisors/intensity.js';
import { restartDelay } from '../../supervisors/backoff.js';
import { canHappen, type SystemEvent } from './lifecycle.js';
import type { Running, SystemMeta } from './schema.js';
import type { Reply } from './io.js';

/** Restart intensity for a system's guest: at most this many restarts in the window, then it stays crashed. */
export const MAX_RESTARTS = 3;
export const WITHIN_MS = 60_000;
export const BACKOFF = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.2 };

/** What the restart policy acts through: the hypervisor's entries and operations, and a clock. */
export interface RestartHost {
  readonly log: ActorContext['log'];
  readonly clock: Clock;
  /** Tells the hypervisor (hypervisor.restart-due). */
  tell(message: { type: 'hypervisor.restart-due'; id: string; attempt: number }): void;
  entryFor(id: string): Running | undefined;
  move(id: string, entry: Running, event: SystemEvent, extra?: Partial<SystemMeta>): void;
  publish(id: string, entry: Running): void;
  /** Starts the system (its I/O outside, its answer to `reply` inside receive). */
  start(id: string, reply: Reply): void;
  /** Stops what is left of the guest's VMM, outside the mailbox. */
  cleanUp(id: string, entry: Running, reason: string): void;
  /** Drops a copy that was arriving here (its guest ended before it ran). */
  dropArrival(id: string, entry: Running, reason: string): void;
}

export class RestartPolicy {
  constructor(private readonly h: RestartHost) {}

  /** The guest ended unasked (or its VMM died and its QEMU with it): crashed or stopped, then the policy. */
  gone(systemId: string, crashed: boolean, reason: string): void {
    const { move } = this.h;
    const entry = this.h.entryFor(systemId);
    if (!entry || !['starting', 'running', 'paused', 'migrating'].includes(entry.state)) return;
    if (entry.arriving) {
      // An arrival that failed (QEMU exits when the incoming state cannot be loaded): the
      // system still runs at its source. Never a second copy here by the restart policy.
      this.h.dropArrival(systemId, entry, `arrival failed: ${reason}`);
      return;
    }
    this.h.cleanUp(systemId, entry, 'guest gone');
    // A guest that powered off while starting (its start's answer not in yet) or migrating went where the table allows: crashed.
    move(systemId, entry, crashed || !canHappen(entry.state, 'stopped') ? 'crashed' : 'stopped', { reason, pid: null, vmmPid: null });
    const policy = entry.spec.restart;
    // An HA system is restarted by the HA service (up to its maxRestart), then relocated by its manager.
    if (entry.spec.ha) return;
    // A source that crashed mid-migration: the target may run the guest; never restarted here by policy.
    if (entry.migration?.role === 'source') return;
    if (policy === 'never' || (policy === 'on-crash' && !crashed)) return;
    this.schedule(systemId, entry, reason);
  }

  /** The restart policy's next try, within the intensity limit, after a backoff (on the clock). */
  schedule(systemId: string, entry: Running, reason: string): void {
    const { clock, log } = this.h;
    entry.retry?.();
    entry.retry = undefined;
    const verdict = checkIntensity(entry.restarts, clock.now(), MAX_RESTARTS, WITHIN_MS);
    entry.restarts = [...verdict.window];
    if (verdict.verdict === 'escalate') {
      entry.meta = { ...entry.meta, reason: `${reason}; restarted ${MAX_RESTARTS} times within ${WITHIN_MS / 1000} s, so it stays ${entry.state} (acp system start ${systemId} to try again)` };
      this.h.publish(systemId, entry);
      log.error({ system: systemId, code: 'ACP_ERR_SUPERVISOR_INTENSITY' }, 'system restarted too often; left as it is');
      return;
    }
    entry.attempt = entry.restarts.length;
    const attempt = entry.attempt;
    const delay = restartDelay(BACKOFF, attempt, clock.random());
    log.info({ system: systemId, delayMs: delay, reason }, 'restarting the system per its policy');
    entry.retry = clock.setTimer(delay, () => this.h.tell({ type: 'hypervisor.restart-due', id: systemId, attempt }));
  }

  /** A restart that is due (hypervisor.restart-due): started, unless the system moved on meanwhile. */
  due(systemId: string, attempt: number): void {
    const entry = this.h.entryFor(systemId);
    if (!entry || entry.attempt !== attempt || (entry.state !== 'crashed' && entry.state !== 'stopped')) return;
    entry.retry = undefined;
    this.h.start(systemId, {
      ok: () => undefined,
      // Inside receive: a restart refused before it ran (the CDB away, say) leaves it crashed, and the policy tries again.
      fail: (error) => {
        this.h.log.warn({ system: systemId, err: errorMessage(error) }, 'restart failed; the policy tries again');
        const now = this.h.entryFor(systemId);
        if (now?.state === 'crashed') this.schedule(systemId, now, `restart failed: ${errorMessage(error)}`);
      },
    });
  }
}
