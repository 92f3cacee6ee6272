/**
 * A system's lifecycle operations on this node: start, stop, pause and resume, restart, stop-all,
 * and a guest that ended unasked. Each is called from `receive`: it checks the state table and
 * moves the entry there, runs its I/O outside (io.ts), and moves the entry again, and answers its
 * asker, when the I/O's result comes back as a message. A result that comes back after the system
 * moved on (a stop during a start, a stop during a pause) is recognised by its epoch.
 */
import type { ActorContext, ActorRef } from '../../runtime/actor.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { findGuest } from '../../adapters/drivers/qemu.js';
import { objectKey, systemObjectSchema, type SystemObject } from '../model.js';
import { guestFiles } from '../vmm/index.js';
import { canHappen } from './lifecycle.js';
import type { SystemDisks, SystemStorage } from './disks.js';
import type { SystemEntries } from './entries.js';
import { deferred, type GuestIo, type Reply } from './io.js';
import type { SystemNics } from './nics.js';
import type { RestartPolicy } from './restart.js';
import { viewOf, type Running } from './schema.js';
import type { GuestVmms } from './vmms.js';

const LIVE = ['starting', 'running', 'paused'];

/** The hypervisor's parts that the operations use. */
export interface OperationsHost {
  readonly ctx: ActorContext;
  readonly home: string;
  readonly cdb: ActorRef;
  readonly entries: SystemEntries;
  readonly io: GuestIo;
  readonly vmms: GuestVmms;
  readonly nics: SystemNics;
  readonly disks: SystemDisks;
  restarts(): RestartPolicy;
  /** Drops a copy arriving here (migration.ts), answering `reply`. */
  dropArrival(id: string, entry: Running, reason: string, reply: Reply): void;
}

export class GuestOperations {
  constructor(private readonly h: OperationsHost) {}

  /** The system's object; an HA system starts only on its HA manager's order (`ha`), wherever the manager placed it. */
  private async readSpec(systemId: string, ha: boolean): Promise<SystemObject> {
    const { cdb, ctx } = this.h;
    const node = ctx.node.node;
    const reply = await cdb.ask<Message & { record: { value: unknown } }>({ type: 'cdb.get', key: objectKey('system', systemId) });
    const spec = systemObjectSchema.parse(reply.record.value);
    if (ha) {
      if (!spec.ha) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' is not an HA system; the HA service starts only HA systems`);
      return spec;
    }
    if (spec.ha) {
      throw haManaged(systemId);
    }
    if (spec.node !== undefined && spec.node !== node) {
      throw new AcpError('ACP_ERR_SYSTEM_WRONG_NODE', `system '${systemId}' is placed on node '${spec.node}', not '${node}'; start it there (acp://${ctx.node.cluster}/${spec.node}/hypervisor)`);
    }
    return spec;
  }

  /**
   * Start: its object read and its disks and NICs made ready (I/O, before anything changes), then
   * `starting` and the VMM launched (I/O), then `running`, or `stopped` with why the start was refused.
   */
  start(systemId: string, reply: Reply, why?: string, ha = false): void {
    const { entries, io, nics, disks } = this.h;
    // Refused at once where the state says so (its I/O would wait behind the system's, a migration's say).
    const before = entries.get(systemId);
    if (before && !canHappen(before.state, 'start')) {
      if (before.spec.ha && !ha) {
        return reply.fail(haManaged(systemId));
      }
      return reply.fail(catching(() => entries.check(systemId, before, 'start')));
    }
    const prepare = async (): Promise<{ spec: SystemObject; storage: SystemStorage }> => {
      const spec = await nics.withMacs(systemId, await this.readSpec(systemId, ha));
      // A disk this node cannot give (its volume missing, its pool not here) refuses the start, before anything changes.
      const storage = await disks.resolve(systemId, spec);
      // A NIC this node cannot give (its network not carried here) refuses the start, before anything changes.
      await nics.up(systemId, spec);
      return { spec, storage };
    };
    io.run('prepare', systemId, prepare, (prepared) => {
      if (!prepared.ok) return reply.fail(prepared.error);
      // Another start, a migration or an adoption may have come first: the state table decides.
      let entry = entries.get(systemId);
      if (entry && !canHappen(entry.state, 'start')) return reply.fail(catching(() => entries.check(systemId, entry!, 'start')));
      entry ??= entries.add(systemId, prepared.value.spec, 'defined');
      // Deleted after the object was read: nothing is started, and the system is forgotten here.
      if (entry.objectDeleted) {
        entries.forget(systemId);
        return reply.fail(new AcpError('ACP_ERR_CDB_NOT_FOUND', `system '${systemId}' was deleted while its start got ready; nothing was started`));
      }
      entry.retry?.();
      entry.retry = undefined;
      entry.spec = prepared.value.spec;
      entry.storage = prepared.value.storage;
      entries.move(systemId, entry, 'start', why === undefined ? {} : { reason: why });
      this.launch(systemId, entry, reply);
    });
  }

  private launch(systemId: string, entry: Running, reply: Reply): void {
    const { entries, io, vmms } = this.h;
    io.run('launch', systemId, () => vmms.launch(systemId, entry.spec, entry.storage), (launched, fresh) => {
      if (!fresh || entry.state !== 'starting') {
        // Stopped (or crashed) while starting: the stop's I/O, after this one, stops what it launched.
        return reply.fail(new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' was ${entry.state === 'crashed' ? 'crashed' : 'stopped'} while it was starting; it is ${entry.state}`, { state: entry.state }));
      }
      if (!launched.ok) {
        // A refused start is not a crash: nothing ran. The launch left no VMM behind.
        entries.move(systemId, entry, 'start-failed', { reason: `start failed: ${errorMessage(launched.error)}`, pid: null, vmmPid: null });
        return reply.fail(launched.error);
      }
      const { pid, vmmPid, accelerator } = launched.value;
      entries.move(systemId, entry, 'started', { pid, vmmPid, accelerator });
      reply.ok({ type: 'system.started', id: systemId, ...entry.meta });
    });
  }

  /** Stop: `stopping` now, the guest stopped and its VMM gone (I/O), then `stopped`. Refused at once where the state table says so. */
  stop(systemId: string, force: boolean, timeoutMs: number, reply: Reply, why?: string): void {
    const { ctx, entries, io, vmms } = this.h;
    const entry = entries.require(systemId);
    const stopped = () => reply.ok({ type: 'system.stopped', id: systemId, ...entry.meta });
    // A copy still arriving (its source never followed up, say): dropped, as an abort would.
    if (entry.arriving) {
      this.h.dropArrival(systemId, entry, 'stopped while arriving', { ok: stopped, fail: (error) => reply.fail(error) });
      return;
    }
    // A crashed system waiting for its restart: stopping it cancels the restart.
    if (entry.state === 'crashed') {
      entry.retry?.();
      entry.retry = undefined;
      entries.move(systemId, entry, 'stopped');
      return stopped();
    }
    entries.move(systemId, entry, 'stop');
    entry.retry?.();
    entry.retry = undefined;
    const spec = entry.spec;
    const halt = async () => {
      try {
        // Read when the I/O runs: a start's launch before this one may have made the VMM.
        if (vmms.has(systemId)) await ctx.ref(vmms.path(systemId)).ask({ type: 'vmm.stop', graceful: !force, timeoutMs }, { timeoutMs: timeoutMs + 15_000 });
      } catch (error) {
        ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'the VMM did not stop cleanly; its container is stopped');
      }
      await vmms.stop(systemId, spec, 'system stopped');
    };
    io.run('stop', systemId, halt, (halted) => {
      if (entry.state === 'stopping') entries.move(systemId, entry, 'stopped', { pid: null, vmmPid: null, ...(why === undefined ? {} : { reason: why }) });
      if (!halted.ok) return reply.fail(halted.error);
      if (entry.state !== 'stopped') return reply.fail(new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' became ${entry.state} while it was stopping`, { state: entry.state }));
      stopped();
    });
  }

  /**
   * Pause or resume: checked against the state table now, done by the VMM (I/O), and moved when the
   * VMM answers. If the system moved on meanwhile (a stop came), the command still happened: its
   * asker is told so, and the later move stands.
   */
  command(systemId: string, event: 'pause' | 'resume', answer: 'system.paused' | 'system.resumed', reply: Reply): void {
    const { ctx, entries, io, vmms } = this.h;
    const entry = entries.require(systemId);
    entries.check(systemId, entry, event);
    io.run('command', systemId, () => ctx.ref(vmms.path(systemId)).ask({ type: `vmm.${event}` }, { timeoutMs: 15_000 }), (done, fresh) => {
      if (!done.ok) return reply.fail(done.error);
      if (fresh) entries.move(systemId, entry, event);
      reply.ok({ type: answer, ...viewOf(systemId, entry) });
    });
  }

  /** Restart: stopped (when it runs), then started; one answer, the start's. */
  restart(systemId: string, stopTimeoutMs: number, reply: Reply): void {
    const entry = this.h.entries.require(systemId);
    if (entry.state !== 'running' && entry.state !== 'paused') {
      this.start(systemId, reply);
      return;
    }
    this.stop(systemId, false, stopTimeoutMs, { ok: () => this.start(systemId, reply), fail: (error) => reply.fail(error) });
  }

  /** Every non-HA system running here stopped, each as system.stop would; answered once all are. */
  stopAll(timeoutMs: number, why: string): Promise<Message> {
    // HA systems are left to the HA service: they go by the node's shutdown policy when it stops (actors/ha/drain.ts).
    const live = [...this.h.entries].filter(([, entry]) => LIVE.includes(entry.state) && !entry.arriving && entry.spec.ha !== true).map(([systemId]) => systemId);
    const stops = live.map((systemId) => {
      const answer = deferred();
      try {
        this.stop(systemId, false, timeoutMs, answer, why);
      } catch (error) {
        answer.fail(error);
      }
      return answer.promise;
    });
    return Promise.allSettled(stops).then((results) => {
      const failed = results.flatMap((result, index) => (result.status === 'rejected' ? [{ id: live[index]!, error: errorMessage(result.reason) }] : []));
      return { type: 'system.stopped-all', stopped: live.filter((systemId) => !failed.some((failure) => failure.id === systemId)), failed };
    });
  }

  /** A stop nobody asked for (a fence, a deleted object): logged, never thrown. */
  stopUnasked(systemId: string, force: boolean, timeoutMs: number, why: string, what: string): void {
    const fail = (error: unknown) => this.h.ctx.log.warn({ system: systemId, err: errorMessage(error) }, `${what} failed`);
    try {
      this.stop(systemId, force, timeoutMs, { ok: () => undefined, fail }, why);
    } catch (error) {
      fail(error);
    }
  }

  /**
   * The guest ended unasked, or its VMM died. A VMM that died leaves its QEMU running (its own
   * session): a new VMM takes it over (I/O), and the guest never notices. Only a QEMU that is gone
   * too is a crash (the restart policy's).
   */
  exited(systemId: string, crashed: boolean, reason: string, vmmDied: boolean): void {
    const { ctx, entries, io, vmms } = this.h;
    const entry = entries.get(systemId);
    if (!entry) return;
    const live = entry.state === 'running' || entry.state === 'paused';
    if (!(vmmDied && !entry.arriving && entry.spec.driver === 'qemu' && live && findGuest(systemId, guestFiles(this.h.home, systemId).runDir)?.alive)) {
      this.h.restarts().gone(systemId, crashed, reason);
      return;
    }
    const spec = entry.spec;
    const readopt = async () => {
      await vmms.stop(systemId, spec, 'its VMM died', 'release');
      return vmms.adopt(systemId, spec);
    };
    io.run('readopt', systemId, readopt, (adopted, fresh) => {
      if (!fresh) return;
      if (!adopted.ok) {
        ctx.log.warn({ system: systemId, err: errorMessage(adopted.error) }, 'could not adopt the QEMU of a VMM that died; it is stopped');
        this.h.restarts().gone(systemId, crashed, reason);
        return;
      }
      entry.meta = { ...entry.meta, pid: adopted.value.pid, vmmPid: adopted.value.vmmPid };
      entries.publish(systemId, entry);
      ctx.log.warn({ system: systemId, pid: adopted.value.pid, vmmPid: adopted.value.vmmPid, reason }, 'its VMM died; a new VMM adopted the running QEMU');
    });
  }

  /** What is left of a guest that is gone (its VMM, taps, a QEMU that outlived its VMM), stopped outside the mailbox. */
  cleanUp(systemId: string, entry: Running, reason: string): void {
    const spec = entry.spec;
    this.h.io.run('cleanup', systemId, () => this.h.vmms.stop(systemId, spec, reason), () => undefined);
  }
}

/** The refusal of a hand start of an HA system. */
function haManaged(systemId: string): AcpError {
  return new AcpError('ACP_ERR_SYSTEM_HA_MANAGED', `system '${systemId}' is HA: the HA manager places and starts it (acp ha status shows where it runs); its object's haState says whether it runs`);
}

/** The AcpError `check` throws, as a value. */
function catching(check: () => void): unknown {
  try {
    check();
  } catch (error) {
    return error;
  }
  return new AcpError('ACP_ERR_INTERNAL', 'a state check that should have refused did not');
}
