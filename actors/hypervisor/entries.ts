/**
 * The hypervisor's systems: one entry per system known on this node (its state machine, spec and
 * meta), moved only by `move` through the state table (lifecycle.ts), each move published (the run
 * dir and the CDB) and each giving the entry a new epoch (io.ts). Called from `receive` only.
 */
import type { ActorContext, ActorRef } from '../../runtime/actor.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import { saveGuestState } from '../../adapters/guest-state.js';
import { metaKey, type SystemObject } from '../model.js';
import { GUEST_HOLDS_STATES, usesOf } from '../system-uses.js';
import { guestFiles } from '../vmm/index.js';
import { next, type SystemEvent, type SystemState } from './lifecycle.js';
import type { Running, SystemMeta, SystemStep } from './schema.js';

const HISTORY_STEPS = 20;
/** States with a guest that a deleted system must not keep. */
const LIVE: readonly SystemState[] = ['starting', 'running', 'paused'];
/** How long, and how many, deletions of systems without an entry here are remembered. */
const DELETION_MEMORY_MS = 15 * 60_000;
const DELETION_MEMORY_MAX = 10_000;

export class SystemEntries {
  private readonly systems = new Map<string, Running>();
  private epochs = 0;
  /** Systems whose object is deleted and whose guest runs here: stopped by the hypervisor at the end of its turn. */
  private readonly deletedLive = new Set<string>();
  /**
   * Deletions seen while this node had no entry for the system, by when (oldest first): an entry
   * made after (a start that read the object before, an arrival, an adoption) is marked at once.
   */
  private readonly deletedUnknown = new Map<string, number>();

  constructor(
    private readonly ctx: ActorContext,
    private readonly home: string,
    private readonly cdb: ActorRef,
  ) {}

  get node(): string {
    return this.ctx.node.node;
  }

  get(systemId: string): Running | undefined {
    return this.systems.get(systemId);
  }

  /** The entry, or ACP_ERR_SYSTEM_BAD_STATE: the system does not run here. */
  require(systemId: string): Running {
    const entry = this.systems.get(systemId);
    if (!entry) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' does not run on node '${this.node}' (it is defined or stopped here); start it first`);
    return entry;
  }

  [Symbol.iterator](): IterableIterator<[string, Running]> {
    return this.systems.entries();
  }

  get size(): number {
    return this.systems.size;
  }

  epochOf(systemId: string): number | undefined {
    return this.systems.get(systemId)?.epoch;
  }

  /** A new epoch for the entry: every I/O begun before is stale from now on. */
  supersede(entry: Running): void {
    entry.epoch = ++this.epochs;
  }

  /** The feed saw `systemId`'s object deleted (`deleted`) or written while no entry was here. */
  noteWithoutEntry(systemId: string, deleted: boolean): void {
    this.deletedUnknown.delete(systemId);
    if (!deleted) return;
    const now = performance.now();
    this.deletedUnknown.set(systemId, now);
    // Kept while an operation begun before it may still make an entry: long past any start's or arrival's I/O.
    for (const [id, at] of this.deletedUnknown) {
      if (now - at < DELETION_MEMORY_MS && this.deletedUnknown.size <= DELETION_MEMORY_MAX) break;
      this.deletedUnknown.delete(id);
    }
  }

  /** A new entry, put in the table (replacing any other of the system); marked if its object was deleted meanwhile. */
  add(systemId: string, spec: SystemObject, state: SystemState, meta?: SystemMeta, extra: Partial<Running> = {}): Running {
    const entry: Running = {
      state,
      spec,
      meta: { ...(meta ?? { pid: null, vmmPid: null, accelerator: null, since: new Date().toISOString(), restarts: 0 }), state, node: this.node },
      restarts: [],
      attempt: 0,
      retry: undefined,
      epoch: ++this.epochs,
      ...extra,
    };
    this.systems.set(systemId, entry);
    if (this.deletedUnknown.has(systemId)) this.markDeleted(systemId, entry);
    return entry;
  }

  /** Refused with ACP_ERR_SYSTEM_BAD_STATE unless `event` may happen now; a migrating system's refusal names its migration's phase. */
  check(systemId: string, entry: Running, event: SystemEvent): void {
    try {
      next(systemId, entry.state, event);
    } catch (error) {
      const migration = entry.migration;
      if (!migration || !(error instanceof AcpError)) throw error;
      throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `${error.message}; it is the ${migration.role} of a migration ${migration.role === 'source' ? 'to' : 'from'} ${migration.peer}, in phase ${migration.phase}`, { state: entry.state, phase: migration.phase });
    }
  }

  /** Saves the state in the run dir (for the next daemon) and publishes it as the system's meta. */
  publish(systemId: string, entry: Running): void {
    try {
      saveGuestState(guestFiles(this.home, systemId).runDir, entry.meta);
    } catch (error) {
      this.ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'could not save the system state in the run dir');
    }
    this.putMeta(systemId, entry);
  }

  private putMeta(systemId: string, entry: Running): void {
    // While its guest may run, what it holds (the Storage and Network services will not take it away).
    const value = GUEST_HOLDS_STATES.has(entry.state) ? { ...entry.meta, uses: usesOf(entry.spec) } : entry.meta;
    this.cdb.ask({ type: 'cdb.put', key: metaKey('system', systemId, this.node), value }, { timeoutMs: 10_000 }).catch((error: unknown) => {
      this.ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'could not publish the system state');
    });
  }

  /** A system whose object was deleted, and which does not run here: its entry, meta and stats go (its alarms then clear). */
  forget(systemId: string): void {
    const entry = this.systems.get(systemId);
    if (!entry) return;
    entry.retry?.();
    this.systems.delete(systemId);
    this.cdb.ask({ type: 'cdb.delete', key: metaKey('system', systemId, this.node) }).catch(() => undefined);
    this.cdb.ask({ type: 'cdb.delete', key: `stats/system/${systemId}@${this.node}` }).catch(() => undefined);
  }

  /** Every system's meta published again (the CDB restarted and lost what it kept in memory). */
  republish(): void {
    for (const [systemId, entry] of this.systems) this.putMeta(systemId, entry);
  }

  /**
   * The system's object was deleted: forgotten here once nothing runs, and a guest that runs (or
   * comes to run: an adoption, an arrival, a failed migration that keeps it) is to be stopped.
   */
  markDeleted(systemId: string, entry: Running): void {
    entry.objectDeleted = true;
    if (LIVE.includes(entry.state)) this.deletedLive.add(systemId);
  }

  /** The systems `markDeleted` (or a move since) left with a live guest; each given once. */
  takeDeletedLive(): string[] {
    const systems = [...this.deletedLive].filter((systemId) => {
      const entry = this.systems.get(systemId);
      return entry?.objectDeleted === true && LIVE.includes(entry.state);
    });
    this.deletedLive.clear();
    return systems;
  }

  /** The state after `event` (refused as `check` says), with the step in the history, published; a new epoch. */
  move(systemId: string, entry: Running, event: SystemEvent, extra: Partial<SystemMeta> = {}): void {
    this.check(systemId, entry, event);
    entry.state = next(systemId, entry.state, event);
    entry.epoch = ++this.epochs;
    const at = new Date().toISOString();
    entry.meta = { ...entry.meta, ...extra, state: entry.state, since: at, restarts: entry.restarts.length };
    if (!('reason' in extra) && event !== 'crashed') delete entry.meta.reason;
    const step: SystemStep = { at, event, state: entry.state, ...(entry.meta.reason === undefined ? {} : { reason: entry.meta.reason }) };
    entry.meta.history = [...(entry.meta.history ?? []), step].slice(-HISTORY_STEPS);
    this.publish(systemId, entry);
    if (entry.objectDeleted && LIVE.includes(entry.state)) this.deletedLive.add(systemId);
    // A system that no longer runs here has no live stats here (its history goes with them).
    if (entry.state === 'stopped' || entry.state === 'crashed') {
      this.cdb.ask({ type: 'cdb.delete', key: `stats/system/${systemId}@${this.node}` }).catch(() => undefined);
      if (entry.objectDeleted) this.forget(systemId);
    }
  }
}
