/**
 * What follows a guest that ended unasked, or a VMM that died: a running QEMU is adopted by a new
 * VMM; otherwise the system is crashed (or stopped), and its restart policy decides whether it
 * starts again, within an intensity limit, after a backoff.
 */
import type { ActorContext } from '../../runtime/actor.js';
import { errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { checkIntensity } from '../../supervisors/intensity.js';
import { restartDelay } from '../../supervisors/backoff.js';
import { findGuest } from '../../adapters/drivers/qemu.js';
import { guestFiles } from '../vmm/index.js';
import type { SystemEvent } from './lifecycle.js';
import type { Running, SystemMeta } from './schema.js';
import type { GuestVmms } from './vmms.js';

/** Restart intensity for a system's guest: at most this many restarts in the window, then it stays crashed. */
const MAX_RESTARTS = 3;
const WITHIN_MS = 60_000;
const BACKOFF = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.2 };

/** The hypervisor's parts that the restart policy uses. */
export interface RestartHost {
  readonly ctx: ActorContext;
  readonly home: string;
  readonly vmms: GuestVmms;
  entryFor(id: string): Running | undefined;
  move(id: string, entry: Running, event: SystemEvent, extra?: Partial<SystemMeta>): void;
  publish(id: string, entry: Running): void;
  start(id: string): Promise<Message>;
}

export class RestartPolicy {
  constructor(private readonly h: RestartHost) {}

  /** The guest ended unasked, or its VMM died: crashed, then the restart policy. */
  async exited(systemId: string, crashed: boolean, reason: string, afterFailedRestart = false, vmmDied = false): Promise<void> {
    const { ctx, vmms, move, publish } = this.h;
    const entry = this.h.entryFor(systemId);
    if (!entry) return;
    // A VMM that died leaves its QEMU running (its own session): a new VMM takes it over, and the
    // guest never notices. Only a QEMU that is gone too is a crash.
    if (vmmDied && !entry.arriving && entry.spec.driver === 'qemu' && (entry.state === 'running' || entry.state === 'paused') && findGuest(systemId, guestFiles(this.h.home, systemId).runDir)?.alive) {
      await vmms.stop(systemId, entry, 'its VMM died', 'release');
      try {
        const adopted = await vmms.adopt(systemId, entry);
        entry.meta = { ...entry.meta, pid: adopted.pid, vmmPid: adopted.vmmPid };
        publish(systemId, entry);
        ctx.log.warn({ system: systemId, pid: adopted.pid, vmmPid: adopted.vmmPid, reason }, 'its VMM died; a new VMM adopted the running QEMU');
        return;
      } catch (error) {
        ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'could not adopt the QEMU of a VMM that died; it is stopped');
      }
    }
    if (afterFailedRestart) {
      if (entry.state !== 'crashed') return;
      this.schedule(systemId, entry, reason);
      return;
    }
    if (!['starting', 'running', 'paused', 'migrating'].includes(entry.state)) return;
    await vmms.stop(systemId, entry, 'guest gone');
    if (entry.arriving) {
      // An arrival that failed (QEMU exits when the incoming state cannot be loaded): the
      // system still runs at its source. Never a second copy here by the restart policy.
      entry.arriving = false;
      clearTimeout(entry.retry);
      move(systemId, entry, 'migrated-away', { reason: `arrival failed: ${reason}`, pid: null, vmmPid: null });
      return;
    }
    if (crashed) move(systemId, entry, 'crashed', { reason, pid: null, vmmPid: null });
    else move(systemId, entry, 'stopped', { reason, pid: null, vmmPid: null });
    const policy = entry.spec.restart;
    // An HA system is restarted by the HA service (up to its maxRestart), then relocated by its manager.
    if (entry.spec.ha) return;
    if (policy === 'never' || (policy === 'on-crash' && !crashed)) return;
    this.schedule(systemId, entry, reason);
  }

  /** The restart policy's next try, within the intensity limit, after a backoff. */
  schedule(systemId: string, entry: Running, reason: string): void {
    const { ctx } = this.h;
    const verdict = checkIntensity(entry.restarts, Date.now(), MAX_RESTARTS, WITHIN_MS);
    entry.restarts = [...verdict.window];
    if (verdict.verdict === 'escalate') {
      entry.meta = { ...entry.meta, reason: `${reason}; restarted ${MAX_RESTARTS} times within ${WITHIN_MS / 1000} s, so it stays ${entry.state} (acp system start ${systemId} to try again)` };
      this.h.publish(systemId, entry);
      ctx.log.error({ system: systemId, code: 'ACP_ERR_SUPERVISOR_INTENSITY' }, 'system restarted too often; left as it is');
      return;
    }
    entry.attempt = entry.restarts.length;
    const delay = restartDelay(BACKOFF, entry.attempt, Math.random());
    ctx.log.info({ system: systemId, delayMs: delay, reason }, 'restarting the system per its policy');
    entry.retry = setTimeout(() => ctx.self.tell({ type: 'hypervisor.restart-due', id: systemId, attempt: entry.attempt }), delay);
    entry.retry.unref();
  }

  /** A restart that is due (hypervisor.restart-due): started, unless the system moved on meanwhile. */
  due(systemId: string, attempt: number): void {
    const entry = this.h.entryFor(systemId);
    if (!entry || entry.attempt !== attempt || (entry.state !== 'crashed' && entry.state !== 'stopped')) return;
    void this.h.start(systemId).catch((error: unknown) => {
      this.h.ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'restart failed; the policy tries again');
      void this.exited(systemId, true, `restart failed: ${errorMessage(error)}`, true);
    });
  }
}
