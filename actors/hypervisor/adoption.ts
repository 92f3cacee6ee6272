/**
 * What a hypervisor does when it starts (after its daemon did, or after it crashed): the guests
 * that outlived it are adopted, orphan QEMUs are stopped cleanly, systems whose guest did not
 * survive say so (recoveryPlan decides, pure), then the autostart systems start in their order.
 * It acts through the hypervisor's own operations (RecoveryHost), inside its actor.
 */
import { join } from 'node:path';
import type { ActorContext, ActorRef } from '../../runtime/actor.js';
import { homePaths } from '../../runtime/config.js';
import { errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { findGuest } from '../../adapters/drivers/qemu.js';
import { guestRunDirs, loadGuestStates } from '../../adapters/guest-state.js';
import type { RecordView } from '../cdb/index.js';
import { metaKey, systemObjectSchema, type SystemObject } from '../model.js';
import { guestFiles } from '../vmm/index.js';
import type { Running, SystemMeta } from './schema.js';
import type { SystemEvent, SystemState } from './lifecycle.js';
import { autostartOrder, LIVE_STATES, recoveryPlan, type RecoveryAction } from './recovery.js';

/** How long an orphan QEMU has to power off before it is quit. */
const ORPHAN_STOP_MS = 10_000;

/** The hypervisor's operations that recovery uses. */
export interface RecoveryHost {
  readonly ctx: ActorContext;
  readonly node: string;
  readonly home: string;
  readonly cdb: ActorRef;
  readonly systems: Map<string, Running>;
  freshEntry(spec: SystemObject, state: SystemState, meta?: SystemMeta): Running;
  adoptGuest(id: string, entry: Running): Promise<{ pid: number | null; vmmPid: number; accelerator: string; status: 'running' | 'paused' }>;
  stopVmm(id: string, entry: Running, reason: string, guest: 'stop' | 'release'): Promise<void>;
  move(id: string, entry: Running, event: SystemEvent, extra?: Partial<SystemMeta>): void;
  publish(id: string, entry: Running): void;
  scheduleRestart(id: string, entry: Running, reason: string): void;
  start(id: string, why?: string): Promise<Message>;
  nicsUp(id: string, spec: SystemObject): Promise<void>;
  /** Stops the guest in the system's VMM (power-off, then quit after `timeoutMs`). */
  vmmStop(id: string, timeoutMs: number): Promise<unknown>;
}

export class GuestRecovery {
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

  /**
   * After the daemon starts: guests that outlived it are adopted (same pid, console and state),
   * QEMUs nobody wants any more are stopped cleanly, systems whose guest did not survive say so,
   * and then the autostart systems start in their order.
   */
  async recover(): Promise<void> {
    // What this node said last: saved in the run dir (the CDB keeps meta in memory only), or
    // the CDB's copy where that is newer (a peer gave it back).
    const metas = new Map<string, SystemMeta>();
    for (const [systemId, saved] of loadGuestStates(join(homePaths(this.h.home).run, 'vmm'))) {
      const meta = saved as Partial<SystemMeta>;
      if (typeof meta.state === 'string' && typeof meta.since === 'string') metas.set(systemId, saved as SystemMeta);
    }
    for (const record of await this.list('meta/system/')) {
      if (!record.key.endsWith(`@${this.h.node}`)) continue;
      const systemId = record.key.slice('meta/system/'.length, -(this.h.node.length + 1));
      const meta = record.value as SystemMeta;
      if (!metas.has(systemId) || metas.get(systemId)!.since < meta.since) metas.set(systemId, meta);
    }
    const objects = new Map<string, SystemObject>();
    for (const record of await this.list('object/system/')) {
      const parsed = systemObjectSchema.safeParse(record.value);
      if (parsed.success) objects.set(record.key.slice('object/system/'.length), parsed.data);
    }
    const actions = recoveryPlan({ node: this.h.node, metas, objects, liveGuests: this.liveGuests() });
    for (const action of actions) {
      if (this.h.systems.get(action.id)) continue;
      await this.carryOut(action, objects.get(action.id), metas.get(action.id)).catch((error: unknown) => this.h.ctx.log.error({ system: action.id, action: action.action, err: errorMessage(error) }, 'recovering a system failed'));
    }
    // The rest (stopped, crashed here before): their state as it was, published again.
    for (const [systemId, meta] of metas) {
      const spec = objects.get(systemId);
      if (this.h.systems.get(systemId) || !spec) continue;
      const entry = this.h.freshEntry(spec, meta.state, meta);
      this.h.systems.set(systemId, entry);
      this.h.publish(systemId, entry);
    }
    await this.autostart(objects);
  }

  private async carryOut(action: RecoveryAction, spec: SystemObject | undefined, meta: SystemMeta | undefined): Promise<void> {
    switch (action.action) {
      case 'adopt': {
        const entry = this.h.freshEntry(spec!, 'defined', meta);
        this.h.systems.set(action.id, entry);
        try {
          const adopted = await this.h.adoptGuest(action.id, entry);
          this.h.move(action.id, entry, 'adopted', { pid: adopted.pid, vmmPid: adopted.vmmPid, accelerator: adopted.accelerator, reason: 'its guest outlived the daemon and was adopted' });
          if (adopted.status === 'paused') this.h.move(action.id, entry, 'pause', { reason: entry.meta.reason });
          this.h.ctx.log.info({ system: action.id, pid: adopted.pid, state: entry.state }, 'adopted a guest that outlived the daemon');
          // Its taps are still there (QEMU holds them): the Network service keeps them for it.
          await this.h.nicsUp(action.id, entry.spec).catch((error: unknown) => this.h.ctx.log.warn({ system: action.id, err: errorMessage(error) }, 'could not re-register the taps of an adopted guest'));
        } catch (error) {
          await this.h.stopVmm(action.id, entry, 'adoption failed', 'stop');
          entry.state = 'running';
          this.h.move(action.id, entry, 'crashed', { reason: `its QEMU outlived the daemon but could not be adopted (${errorMessage(error)}); it was stopped`, pid: null, vmmPid: null });
        }
        return;
      }
      case 'orphan': {
        this.h.ctx.log.warn({ system: action.id, reason: action.why }, 'stopping an orphan QEMU: '.concat(action.why));
        const entry = this.h.freshEntry(spec ?? systemObjectSchema.parse({ name: action.id, driver: 'qemu' }), 'defined', meta);
        try {
          await this.h.adoptGuest(action.id, entry);
          await this.h.vmmStop(action.id, ORPHAN_STOP_MS);
        } finally {
          await this.h.stopVmm(action.id, entry, `orphan: ${action.why}`, 'stop');
        }
        this.h.ctx.log.warn({ system: action.id, reason: action.why }, 'orphan QEMU stopped');
        const key = metaKey('system', action.id, this.h.node);
        if (!spec) await this.h.cdb.ask({ type: 'cdb.delete', key }).catch(() => undefined);
        else if (meta) {
          entry.state = 'running';
          this.h.move(action.id, entry, 'stopped', { reason: `stopped as an orphan: ${action.why}`, pid: null, vmmPid: null });
        }
        return;
      }
      case 'gone': {
        if (!spec) {
          await this.h.cdb.ask({ type: 'cdb.delete', key: metaKey('system', action.id, this.h.node) }).catch(() => undefined);
          return;
        }
        const entry = this.h.freshEntry(spec, 'running', meta);
        this.h.systems.set(action.id, entry);
        this.h.move(action.id, entry, action.state, { reason: action.reason, pid: null, vmmPid: null });
        this.h.ctx.log.warn({ system: action.id, state: action.state, reason: action.reason }, 'a guest did not outlive the daemon');
        if (action.state === 'crashed' && spec.restart !== 'never' && !spec.autostart && !spec.ha) this.h.scheduleRestart(action.id, entry, action.reason);
        return;
      }
    }
  }

  /** The autostart systems, in order, each `startDelayS` after the one before; one running already (adopted) is left as it is. */
  private async autostart(objects: ReadonlyMap<string, SystemObject>): Promise<void> {
    for (const [id, spec] of objects) {
      if (spec.autostart && spec.ha && spec.node === this.h.node) this.h.ctx.log.warn({ system: id }, 'autostart is for non-HA systems; an HA system is started by the HA manager');
    }
    for (const { id, spec } of autostartOrder(objects, this.h.node)) {
      const entry = this.h.systems.get(id);
      if (entry && LIVE_STATES.includes(entry.state)) {
        this.h.ctx.log.info({ system: id, state: entry.state }, 'autostart: it runs already (adopted); not started again');
        continue;
      }
      try {
        await this.h.start(id, 'autostart with its node');
        this.h.ctx.log.info({ system: id, order: spec.startOrder ?? null }, 'autostarted');
      } catch (error) {
        this.h.ctx.log.warn({ system: id, err: errorMessage(error) }, 'autostart failed');
      }
      if (spec.startDelayS) await new Promise((resolve) => setTimeout(resolve, spec.startDelayS! * 1000));
    }
  }

}
