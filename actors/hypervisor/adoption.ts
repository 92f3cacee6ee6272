/**
 * What a hypervisor does when it starts (after its daemon did, or after it crashed): the guests
 * that outlived it are adopted, orphan QEMUs are stopped cleanly, systems whose guest did not
 * survive say so (recoveryPlan decides, pure), then the autostart systems start in their order.
 * What it finds is gathered outside the mailbox (I/O) and comes back as a message; every entry it
 * makes or moves is made or moved in `receive`, as the hypervisor's own operations do.
 */
import { join } from 'node:path';
import type { ActorContext, ActorRef } from '../../runtime/actor.js';
import type { Clock } from '../../runtime/clock.js';
import { homePaths } from '../../runtime/config.js';
import { errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { findGuest } from '../../adapters/drivers/qemu.js';
import { guestRunDirs, loadGuestStates } from '../../adapters/guest-state.js';
import type { RecordView } from '../cdb/index.js';
import { metaKey, systemObjectSchema, type SystemObject } from '../model.js';
import { guestFiles } from '../vmm/index.js';
import type { SystemEntries } from './entries.js';
import type { GuestIo, Reply } from './io.js';
import type { SystemNics } from './nics.js';
import type { RestartPolicy } from './restart.js';
import type { SystemMeta } from './schema.js';
import type { GuestVmms } from './vmms.js';
import { autostartOrder, LIVE_STATES, recoveryPlan, type RecoveryAction } from './recovery.js';

/** How long an orphan QEMU has to power off before it is quit. */
const ORPHAN_STOP_MS = 10_000;
const RECOVER_RETRY_MS = 1000;

/** The hypervisor's parts that recovery uses. */
export interface RecoveryHost {
  readonly ctx: ActorContext;
  readonly home: string;
  readonly cdb: ActorRef;
  readonly clock: Clock;
  readonly entries: SystemEntries;
  readonly io: GuestIo;
  readonly vmms: GuestVmms;
  readonly nics: SystemNics;
  restarts(): RestartPolicy;
  start(id: string, reply: Reply, why?: string): void;
}

/** What the recovery found: the last metas, the objects, and the QEMUs alive in the run dir. */
interface Found {
  metas: Map<string, SystemMeta>;
  objects: Map<string, SystemObject>;
  liveGuests: Set<string>;
}

/** The pseudo-system the gathering I/O runs under (never a system's name: names have no '#'). */
const RECOVERY = '#recovery';

export class GuestRecovery {
  /** Adoptions and orphan stops still out; autostart waits for them. */
  private outstanding = 0;
  private queue: { id: string; spec: SystemObject }[] | undefined;
  /** Guests adopted by this recovery, and whether the Network service has been told. */
  private readonly adopted = new Set<string>();
  private reported = false;

  constructor(private readonly h: RecoveryHost) {}

  /** Lists a CDB prefix (every record, live ones only). */
  private async list(prefix: string): Promise<RecordView[]> {
    return (await this.h.cdb.ask<Message & { records: RecordView[] }>({ type: 'cdb.list', prefix, limit: 10_000 }, { timeoutMs: 15_000 })).records.filter((record) => !record.deleted);
  }

  /** Systems with a QEMU alive in this node's run dir (left by an earlier daemon or VMM). */
  private liveGuests(): Set<string> {
    const dir = join(homePaths(this.h.home).run, 'vmm');
    const found = new Set<string>();
    for (const name of guestRunDirs(dir)) {
      if (findGuest(name, guestFiles(this.h.home, name).runDir)?.alive) found.add(name);
    }
    return found;
  }

  /** What this node said last (the run dir's copy, or the CDB's where newer), what the cluster wants, and what still runs. */
  private async gather(): Promise<Found> {
    const metas = new Map<string, SystemMeta>();
    for (const [systemId, saved] of loadGuestStates(join(homePaths(this.h.home).run, 'vmm'))) {
      const meta = saved as Partial<SystemMeta>;
      if (typeof meta.state === 'string' && typeof meta.since === 'string') metas.set(systemId, saved as SystemMeta);
    }
    const node = this.h.entries.node;
    for (const record of await this.list('meta/system/')) {
      if (!record.key.endsWith(`@${node}`)) continue;
      const systemId = record.key.slice('meta/system/'.length, -(node.length + 1));
      const meta = record.value as SystemMeta;
      if (!metas.has(systemId) || metas.get(systemId)!.since < meta.since) metas.set(systemId, meta);
    }
    const objects = new Map<string, SystemObject>();
    for (const record of await this.list('object/system/')) {
      const parsed = systemObjectSchema.safeParse(record.value);
      if (parsed.success) objects.set(record.key.slice('object/system/'.length), parsed.data);
    }
    return { metas, objects, liveGuests: this.liveGuests() };
  }

  /**
   * After the daemon starts (hypervisor.recover): guests that outlived it are adopted (same pid,
   * console and state), QEMUs nobody wants any more are stopped cleanly, systems whose guest did
   * not survive say so, and then the autostart systems start in their order.
   */
  recover(): void {
    this.h.io.run('recover', RECOVERY, () => this.gather(), (found) => {
      if (!found.ok) {
        this.h.ctx.log.warn({ err: errorMessage(found.error) }, 'could not read the systems to recover yet; retrying');
        this.h.clock.setTimer(RECOVER_RETRY_MS, () => this.h.ctx.self.tell({ type: 'hypervisor.recover' }));
        return;
      }
      const { metas, objects } = found.value;
      const actions = recoveryPlan({ node: this.h.entries.node, metas, objects, liveGuests: found.value.liveGuests });
      const acted = new Set<string>();
      for (const action of actions) {
        if (this.h.entries.get(action.id)) continue;
        acted.add(action.id);
        this.carryOut(action, objects.get(action.id), metas.get(action.id));
      }
      // The rest (stopped, crashed here before): their state as it was, published again.
      for (const [systemId, meta] of metas) {
        const spec = objects.get(systemId);
        if (this.h.entries.get(systemId) || acted.has(systemId) || !spec) continue;
        this.h.entries.publish(systemId, this.h.entries.add(systemId, spec, meta.state, meta));
      }
      this.queue = autostartOrder(objects, this.h.entries.node);
      for (const [id, spec] of objects) {
        if (spec.autostart && spec.ha && spec.node === this.h.entries.node) this.h.ctx.log.warn({ system: id }, 'autostart is for non-HA systems; an HA system is started by the HA manager');
      }
      if (this.outstanding === 0) this.recovered();
    });
  }

  /** One adoption or orphan stop over: once none is out, autostart begins. */
  private settled(): void {
    this.outstanding -= 1;
    if (this.outstanding === 0 && this.queue) this.recovered();
  }

  /** Every adoption and orphan stop is over: the Network service learns which guests were adopted (it frees the taps of the others), and autostart begins. */
  private recovered(): void {
    if (!this.reported) {
      this.reported = true;
      const { ctx, nics } = this.h;
      const adopted = [...this.adopted];
      void nics.adopted(adopted).catch((error: unknown) => ctx.log.warn({ err: errorMessage(error) }, 'could not tell the Network service which guests were adopted; the taps it kept for others go after its own wait'));
    }
    this.autostartNext();
  }

  private carryOut(action: RecoveryAction, spec: SystemObject | undefined, meta: SystemMeta | undefined): void {
    const { ctx, entries, io, vmms } = this.h;
    switch (action.action) {
      case 'adopt': {
        const entry = entries.add(action.id, spec!, 'defined', meta);
        this.outstanding += 1;
        io.run('readopt', action.id, () => vmms.adopt(action.id, entry.spec), (adopted, fresh) => {
          if (adopted.ok && fresh && entry.state === 'defined') this.adopted.add(action.id);
          this.settled();
          if (!fresh || entry.state !== 'defined') return;
          if (adopted.ok) {
            entries.move(action.id, entry, 'adopted', { pid: adopted.value.pid, vmmPid: adopted.value.vmmPid, accelerator: adopted.value.accelerator, reason: 'its guest outlived the daemon and was adopted' });
            if (adopted.value.status === 'paused') entries.move(action.id, entry, 'pause', { reason: entry.meta.reason });
            ctx.log.info({ system: action.id, pid: adopted.value.pid, state: entry.state }, 'adopted a guest that outlived the daemon');
            // Its taps are still there (QEMU holds them): the Network service keeps them for it.
            const spec = entry.spec;
            io.run('cleanup', action.id, () => this.h.nics.up(action.id, spec).catch((error: unknown) => ctx.log.warn({ system: action.id, err: errorMessage(error) }, 'could not re-register the taps of an adopted guest')), () => undefined);
            return;
          }
          const spec = entry.spec;
          io.run('cleanup', action.id, () => vmms.stop(action.id, spec, 'adoption failed', 'stop'), () => undefined);
          entry.state = 'running';
          entries.move(action.id, entry, 'crashed', { reason: `its QEMU outlived the daemon but could not be adopted (${errorMessage(adopted.error)}); it was stopped`, pid: null, vmmPid: null });
        });
        return;
      }
      case 'orphan': {
        ctx.log.warn({ system: action.id, reason: action.why }, 'stopping an orphan QEMU: '.concat(action.why));
        const orphanSpec = spec ?? systemObjectSchema.parse({ name: action.id, driver: 'qemu' });
        const stopOrphan = async () => {
          try {
            await vmms.adopt(action.id, orphanSpec);
            await ctx.ref(vmms.path(action.id)).ask({ type: 'vmm.stop', graceful: true, timeoutMs: ORPHAN_STOP_MS }, { timeoutMs: ORPHAN_STOP_MS + 15_000 });
          } finally {
            await vmms.stop(action.id, orphanSpec, `orphan: ${action.why}`, 'stop');
          }
        };
        this.outstanding += 1;
        io.run('cleanup', action.id, stopOrphan, (stopped) => {
          this.settled();
          if (!stopped.ok) ctx.log.error({ system: action.id, action: action.action, err: errorMessage(stopped.error) }, 'recovering a system failed');
          else ctx.log.warn({ system: action.id, reason: action.why }, 'orphan QEMU stopped');
          if (!spec) {
            this.h.cdb.ask({ type: 'cdb.delete', key: metaKey('system', action.id, entries.node) }).catch(() => undefined);
          } else if (meta && !entries.get(action.id)) {
            const entry = entries.add(action.id, spec, 'running', meta);
            entries.move(action.id, entry, 'stopped', { reason: `stopped as an orphan: ${action.why}`, pid: null, vmmPid: null });
          }
        });
        return;
      }
      case 'gone': {
        if (!spec) {
          this.h.cdb.ask({ type: 'cdb.delete', key: metaKey('system', action.id, entries.node) }).catch(() => undefined);
          return;
        }
        const entry = entries.add(action.id, spec, 'running', meta);
        entries.move(action.id, entry, action.state, { reason: action.reason, pid: null, vmmPid: null });
        ctx.log.warn({ system: action.id, state: action.state, reason: action.reason }, 'a guest did not outlive the daemon');
        if (action.state === 'crashed' && spec.restart !== 'never' && !spec.autostart && !spec.ha) this.h.restarts().schedule(action.id, entry, action.reason);
        return;
      }
    }
  }

  /**
   * The next autostart system (hypervisor.autostart-next), once the one before answered and its
   * `startDelayS` passed; one running already (adopted) is left as it is.
   */
  autostartNext(): void {
    const next = this.queue?.shift();
    if (!next) return;
    const { id, spec } = next;
    const entry = this.h.entries.get(id);
    if (entry && LIVE_STATES.includes(entry.state)) {
      this.h.ctx.log.info({ system: id, state: entry.state }, 'autostart: it runs already (adopted); not started again');
      this.autostartNext();
      return;
    }
    const then = () => {
      if (spec.startDelayS) this.h.clock.setTimer(spec.startDelayS * 1000, () => this.h.ctx.self.tell({ type: 'hypervisor.autostart-next' }));
      else this.autostartNext();
    };
    this.h.start(
      id,
      {
        ok: () => {
          this.h.ctx.log.info({ system: id, order: spec.startOrder ?? null }, 'autostarted');
          then();
        },
        fail: (error) => {
          this.h.ctx.log.warn({ system: id, err: errorMessage(error) }, 'autostart failed');
          then();
        },
      },
      'autostart with its node',
    );
  }
}
