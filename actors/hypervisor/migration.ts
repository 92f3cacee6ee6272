/**
 * Moving a running system to another node (live for QEMU, by state transfer for sim). The source
 * (`migrate`) drives the target's hypervisor through system.incoming, system.incoming-done and,
 * when it fails, system.incoming-abort; the target (`incoming`, `arrived`, `abort`) gets ready for
 * the guest, sees it run, or drops its copy. Never two running copies. Each side walks its phases
 * in migration-table.ts: every step is taken in `receive`, each phase's I/O runs outside (io.ts)
 * and comes back as a message, and each phase's deadline is a timer on the runtime Clock.
 */
import { z } from 'zod';
import type { ActorContext, ActorRef } from '../../runtime/actor.js';
import type { Clock } from '../../runtime/clock.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { isValidName } from '../../runtime/path.js';
import type { NodeConfig } from '../../runtime/config.js';
import { parseHostPort } from '../../adapters/tls.js';
import { isMigrationHost } from '../../adapters/drivers/driver.js';
import { objectKey, type SystemObject } from '../model.js';
import { updateObject } from '../object-update.js';
import type { SystemDisks, SystemStorage } from './disks.js';
import type { SystemEntries } from './entries.js';
import type { GuestIo, Reply } from './io.js';
import { FINAL_PHASES, nextPhase, PHASE_DEADLINES_MS, type MigrationPhase, type MigrationRecord, type MigrationStep } from './migration-table.js';
import type { SystemNics } from './nics.js';
import { viewOf, type Running, type SystemMeta } from './schema.js';
import type { GuestVmms } from './vmms.js';

/** The target's answer to system.incoming: where to send the guest (nothing for a simulated one). */
const incomingReply = z.object({
  type: z.literal('system.incoming'),
  address: z.strictObject({ host: z.string().max(253).refine(isMigrationHost, 'the host must be an IP address or a host name'), port: z.number().int().min(1).max(65535) }).optional(),
});

/** What the target answers to system.incoming-abort. */
const abortReply = z.object({ dropped: z.boolean(), running: z.boolean().optional() });

/** The hypervisor's parts that migration uses. */
export interface MigrationHost {
  readonly ctx: ActorContext;
  readonly node: string;
  readonly cdb: ActorRef;
  readonly config: NodeConfig;
  readonly clock: Clock;
  readonly entries: SystemEntries;
  readonly io: GuestIo;
  readonly vmms: GuestVmms;
  readonly nics: SystemNics;
  readonly disks: SystemDisks;
}

export class Migration {
  /** The askers of migrations in progress here (source: system.migrate's; target: system.incoming's, then system.incoming-done's). */
  private readonly replies = new Map<MigrationRecord, Reply>();

  constructor(private readonly h: MigrationHost) {}

  /** The migration's next phase (refused as the table says), with that phase's deadline armed. */
  private step(systemId: string, entry: Running, record: MigrationRecord, step: MigrationStep): void {
    record.phase = nextPhase(systemId, record, step);
    this.arm(systemId, entry, record);
  }

  /** The deadline of the phase the migration is in now (none for a phase without one); the phase published in the meta. */
  private arm(systemId: string, entry: Running, record: MigrationRecord): void {
    record.cancelDeadline?.();
    record.cancelDeadline = undefined;
    if (FINAL_PHASES.includes(record.phase)) return;
    entry.meta = { ...entry.meta, migration: { role: record.role, phase: record.phase, peer: record.peer } };
    this.h.entries.publish(systemId, entry);
    const deadline = PHASE_DEADLINES_MS[record.phase];
    if (deadline === undefined) return;
    const { phase } = record;
    const epoch = entry.epoch;
    record.cancelDeadline = this.h.clock.setTimer(deadline, () => this.h.ctx.self.tell({ type: 'hypervisor.migration-deadline', id: systemId, epoch, phase }));
  }

  /** The entry's migration, still in `phase`: otherwise the result in hand is stale. */
  private current(entry: Running, record: MigrationRecord, phase: MigrationPhase): boolean {
    return entry.migration === record && record.phase === phase;
  }

  /** The migration is over (either way): its record gone, its deadline off, its phase out of the meta (published by the move that follows). */
  private end(entry: Running, record: MigrationRecord): void {
    record.cancelDeadline?.();
    record.cancelDeadline = undefined;
    if (entry.migration !== record) return;
    delete entry.migration;
    const { migration: _over, ...meta } = entry.meta;
    entry.meta = meta;
    this.replies.delete(record);
  }

  /** A phase's deadline passed (hypervisor.migration-deadline): the source fails the migration, the target drops its copy. */
  deadline(systemId: string, epoch: number, phase: string): void {
    const entry = this.h.entries.get(systemId);
    const record = entry?.migration;
    if (!entry || !record || record.phase !== phase || entry.epoch !== epoch) return;
    const why = `its ${phase} phase passed its deadline of ${Math.round((PHASE_DEADLINES_MS[record.phase] ?? 0) / 1000)} s`;
    this.h.ctx.log.warn({ system: systemId, phase, role: record.role }, `migration deadline: ${why}`);
    if (record.role === 'source') this.fail(systemId, entry, record, why);
    else this.drop(systemId, entry, `${record.peer} did not complete the migration: ${why}`, { ok: () => undefined, fail: () => undefined });
  }

  /** The address this node's guests are migrated to: its agent's host. */
  private migrationHost(): string {
    const listen = this.h.config.agent.listen;
    return listen ? parseHostPort(listen, 'the agent address').host : '127.0.0.1';
  }

  /**
   * The host to send a guest to at `to`: the one it named, unless that is a wildcard (its agent
   * listens on every address), then the host this cluster reaches its agent at.
   */
  private async reachable(to: string, host: string): Promise<string> {
    if (host !== '0.0.0.0' && host !== '::') return host;
    const known = await this.h.cdb.ask<Message & { record: { value: { agent?: unknown } } }>({ type: 'cdb.get', key: objectKey('node', to) }).catch(() => undefined);
    const agent = known?.record.value.agent;
    const agentHost = typeof agent === 'string' ? parseHostPort(agent, `the agent address of ${to}`).host : undefined;
    if (agentHost === undefined || !isMigrationHost(agentHost) || agentHost === '0.0.0.0' || agentHost === '::') {
      throw new AcpError('ACP_ERR_NODE_UNREACHABLE', `node '${to}' waits for the guest on every address (${host}) and no address of its agent is known here; give its agent a specific listen address`);
    }
    return agentHost;
  }

  /** Disks (and the CD-ROM) must be on a pool marked shared: the target reads the same volume. */
  private async checkMigratable(systemId: string, spec: SystemObject): Promise<void> {
    for (const disk of [...spec.disks, ...(spec.iso ? [spec.iso] : [])]) {
      const pool = await this.h.cdb.ask<Message & { record: { value: { shared?: boolean } } }>({ type: 'cdb.get', key: objectKey('storage/pool', disk.pool) }).catch(() => undefined);
      if (!pool?.record.value.shared) {
        throw new AcpError('ACP_ERR_SYSTEM_NOT_MIGRATABLE', `system '${systemId}' has a disk on pool '${disk.pool}', which is not marked shared; only systems whose disks are all on shared pools migrate`);
      }
    }
  }

  /** Source side (system.migrate): the guest moved to `to` and this copy gone, or it stays here; `reply` hears which. */
  migrate(systemId: string, to: string, reply: Reply): void {
    const { node, entries, io } = this.h;
    const entry = entries.require(systemId);
    if (!isValidName(to)) throw new AcpError('ACP_ERR_NAME_INVALID', `--to must name a node, not '${to}'`);
    if (to === node) throw new AcpError('ACP_ERR_TARGET_IS_SELF', `system '${systemId}' already runs on ${node}`);
    entries.check(systemId, entry, 'migrate');
    // Refused (its disks not on shared pools) before anything changes.
    io.run('migrate', systemId, () => this.checkMigratable(systemId, entry.spec), (checked) => {
      if (!checked.ok) return reply.fail(checked.error);
      try {
        entries.check(systemId, entry, 'migrate');
      } catch (error) {
        return reply.fail(error);
      }
      this.send(systemId, entry, to, reply);
    });
  }

  /** Source, preparing then transferring: the target's VMM waits for the guest, and the guest's state goes there. */
  private send(systemId: string, entry: Running, to: string, reply: Reply): void {
    const { ctx, node, entries, io, vmms } = this.h;
    entries.move(systemId, entry, 'migrate', { reason: `migrating to ${to}` });
    const record: MigrationRecord = { role: 'source', phase: 'preparing', peer: to, moved: false };
    entry.migration = record;
    this.replies.set(record, reply);
    this.arm(systemId, entry, record);
    const target = this.target(to);
    const vmm = ctx.ref(vmms.path(systemId));
    const spec = entry.spec;
    const accelerator = entry.meta.accelerator === 'kvm' || entry.meta.accelerator === 'tcg' ? { accelerator: entry.meta.accelerator } : {};
    const prepare = async () => {
      const { state } = await vmm.ask<Message & { state: unknown }>({ type: 'vmm.transferable' });
      const answer = await target.ask({ type: 'system.incoming', id: systemId, spec, from: node, transferred: state, ...accelerator }, { timeoutMs: 120_000 });
      // The target names only an address; the VMM builds the URI, and the stream's TLS checks that `to` answers.
      const incoming = incomingReply.safeParse(answer);
      if (!incoming.success) throw new AcpError('ACP_ERR_SCHEMA_REJECTED', `${to} answered the migration with no valid address to send the guest to: ${incoming.error.issues[0]?.message ?? 'malformed'}`);
      return incoming.data.address ? { ...incoming.data.address, host: await this.reachable(to, incoming.data.address.host) } : undefined;
    };
    io.run('migrate', systemId, prepare, (prepared) => {
      if (!this.current(entry, record, 'preparing')) return;
      if (!prepared.ok) return this.fail(systemId, entry, record, errorMessage(prepared.error));
      this.step(systemId, entry, record, 'prepared');
      const address = prepared.value;
      io.run('migrate', systemId, () => vmm.ask({ type: 'vmm.migrate', target: { node: to, ...(address ? { address } : {}) } }, { timeoutMs: 600_000 }), (transferred) => {
        // Even late (a deadline came first), a finished stream means the target may run the guest.
        if (transferred.ok) record.moved = true;
        if (!this.current(entry, record, 'transferring')) return;
        if (!transferred.ok) return this.fail(systemId, entry, record, errorMessage(transferred.error));
        this.step(systemId, entry, record, 'transferred');
        this.confirm(systemId, entry, record);
      });
    });
  }

  private target(to: string): ActorRef {
    return this.h.ctx.ref(`acp://${this.h.ctx.node.cluster}/${to}/hypervisor`);
  }

  /** Source, confirming: the target runs the guest; only then does the CDB say it lives there. */
  private confirm(systemId: string, entry: Running, record: MigrationRecord): void {
    const { ctx, cdb, io } = this.h;
    const to = record.peer;
    const confirm = async () => {
      const arrived = await this.target(to).ask<Message & SystemMeta>({ type: 'system.incoming-done', id: systemId }, { timeoutMs: 120_000 });
      // Over what the object holds now (an edit made during the move stays), and never over a
      // deletion: a system deleted meanwhile stays deleted, and the target stops its guest.
      const written = await updateObject(cdb, objectKey('system', systemId), (current) => (typeof current === 'object' && current !== null ? { ...current, node: to } : undefined), 5, 15_000);
      if (!written) ctx.log.warn({ system: systemId, to }, 'the system was deleted during its migration; its object is not written again');
      return arrived;
    };
    io.run('migrate', systemId, confirm, (confirmed) => {
      if (!this.current(entry, record, 'confirming')) return;
      if (!confirmed.ok) return this.fail(systemId, entry, record, errorMessage(confirmed.error));
      this.step(systemId, entry, record, 'confirmed');
      this.finish(systemId, entry, record, confirmed.value);
    });
  }

  /** Source, finishing: the target runs it and the CDB says so; this copy goes. */
  private finish(systemId: string, entry: Running, record: MigrationRecord, arrived: Message & SystemMeta): void {
    const { ctx, node, entries, io, vmms } = this.h;
    const to = record.peer;
    const spec = entry.spec;
    const finish = async () => {
      await ctx.ref(vmms.path(systemId)).ask({ type: 'vmm.finish-migration' }, { timeoutMs: 30_000 }).catch((error: unknown) => ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'the source copy did not quit cleanly; its VMM is stopped'));
      await vmms.stop(systemId, spec, `migrated to ${to}`);
    };
    io.run('migrate', systemId, finish, () => {
      const reply = this.replies.get(record);
      this.step(systemId, entry, record, 'finished');
      this.end(entry, record);
      if (entry.state === 'migrating') entries.move(systemId, entry, 'migrated-away', { reason: `migrated to ${to}`, pid: null, vmmPid: null });
      else entries.publish(systemId, entry);
      const { type: _arrived, ...there } = arrived;
      reply?.ok({ ...there, type: 'system.migrated', id: systemId, from: node, to });
    });
  }

  /**
   * Source, aborting: the target is asked to drop its copy. This copy runs on, unless the guest's
   * state reached the target and the target did not say it dropped it: never two copies, so then
   * this one is left paused.
   */
  private fail(systemId: string, entry: Running, record: MigrationRecord, why: string): void {
    const { ctx, node, entries, io, vmms } = this.h;
    const to = record.peer;
    const reason = `migration to ${to} failed: ${why}`;
    record.reason = reason;
    this.step(systemId, entry, record, 'fail');
    ctx.log.warn({ system: systemId, err: reason }, 'migration failed; the system stays here');
    const abort = async () => {
      const answer = await this.target(to).ask({ type: 'system.incoming-abort', id: systemId, reason }, { timeoutMs: 30_000 }).catch(() => undefined);
      const parsed = abortReply.safeParse(answer);
      return parsed.success ? parsed.data : undefined;
    };
    io.run('migrate', systemId, abort, (aborted) => {
      const reply = this.replies.get(record);
      const answer = aborted.ok ? aborted.value : undefined;
      // The target confirmed it holds no running copy (it dropped one, or never ran one).
      const targetClear = answer !== undefined && (answer.dropped || answer.running === false);
      this.step(systemId, entry, record, 'aborted');
      this.end(entry, record);
      if (entry.state !== 'migrating') {
        entries.publish(systemId, entry);
        return reply?.fail(new AcpError('ACP_ERR_VMM_FAILED', `${reason}; ${systemId} is ${entry.state} on ${node}`));
      }
      if (record.moved && !targetClear) {
        entries.move(systemId, entry, 'migrated', { reason: `${reason}; ${to} did not confirm it dropped its copy, so this one is left paused` });
        entries.move(systemId, entry, 'pause', { reason: entry.meta.reason });
        return reply?.fail(new AcpError('ACP_ERR_VMM_FAILED', `${reason}; ${systemId} is left paused on ${node} because ${to} may run it: check ${to}, then resume or stop it here`));
      }
      // A guest whose state left stays paused at the source until it is resumed (QEMU: cont; harmless when it runs).
      const resume = record.moved ? () => ctx.ref(vmms.path(systemId)).ask({ type: 'vmm.resume' }).then(() => undefined, () => undefined) : async () => undefined;
      io.run('migrate', systemId, resume, () => {
        if (entry.state === 'migrating') entries.move(systemId, entry, 'migrated', { reason });
        reply?.fail(new AcpError('ACP_ERR_VMM_FAILED', `${reason}; ${systemId} keeps running on ${node}`));
      });
    });
  }

  /** Target side (system.incoming): a VMM ready for the guest (I/O), and where to send it, to `reply`. */
  incoming(systemId: string, spec: SystemObject, from: string, transferred: unknown, guestAccelerator: 'kvm' | 'tcg' | undefined, reply: Reply): void {
    const { ctx, node, entries, io, vmms } = this.h;
    const existing = entries.get(systemId);
    if (existing && !['stopped', 'defined', 'crashed'].includes(existing.state)) {
      throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' is ${existing.state} on ${node} already; it cannot arrive here`);
    }
    existing?.retry?.();
    const record: MigrationRecord = { role: 'target', phase: 'incoming', peer: from, moved: false };
    const here = { ...spec, ...(spec.node === undefined ? {} : { node }) };
    const entry = entries.add(systemId, here, 'migrating', { state: 'migrating', node, pid: null, vmmPid: null, accelerator: null, since: new Date().toISOString(), restarts: 0, reason: `arriving from ${from}` }, { arriving: true, migration: record });
    this.replies.set(record, reply);
    this.arm(systemId, entry, record);
    const prepare = async () => {
      // The taps are here before the guest arrives: it keeps its network across the move; its disks are resolved to this node's files.
      const storage: SystemStorage = await this.h.disks.resolve(systemId, here);
      await this.h.nics.up(systemId, here);
      await vmms.spawn(systemId, here);
      const ready = await ctx.ref(vmms.path(systemId)).ask<Message & { address?: { host: string; port: number }; pid: number | null; vmmPid: number; accelerator: string }>(
        { type: 'vmm.incoming', spec: here, host: this.migrationHost(), from, transferred, ...(guestAccelerator ? { accelerator: guestAccelerator } : {}), ...storage },
        { timeoutMs: 60_000 },
      );
      return { storage, ready };
    };
    io.run('arrival', systemId, prepare, (prepared) => {
      const asker = this.replies.get(record);
      if (!this.current(entry, record, 'incoming')) {
        // Dropped meanwhile (a stop, an abort, a deadline): the drop's I/O, after this one, stops what this made.
        return asker?.fail(new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' was dropped on ${node} while it got ready to arrive: ${entry.meta.reason ?? 'dropped'}`));
      }
      if (!prepared.ok) {
        this.replies.delete(record);
        this.drop(systemId, entry, `arrival from ${from} failed: ${errorMessage(prepared.error)}`, { ok: () => undefined, fail: () => undefined });
        return asker?.fail(prepared.error);
      }
      const { storage, ready } = prepared.value;
      entry.storage = storage;
      entry.meta = { ...entry.meta, pid: ready.pid, vmmPid: ready.vmmPid, accelerator: ready.accelerator };
      this.step(systemId, entry, record, 'ready');
      this.replies.delete(record);
      asker?.ok({ type: 'system.incoming', id: systemId, ...(ready.address ? { address: ready.address } : {}) });
    });
  }

  /** Target side (system.incoming-done): answered once the guest runs here. */
  arrived(systemId: string, reply: Reply): void {
    const { ctx, entries, io, vmms } = this.h;
    const entry = entries.require(systemId);
    const record = entry.migration;
    if (!record || !entry.arriving) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' is not arriving on ${this.h.node} (it is ${entry.state}); nothing to complete`, { state: entry.state });
    this.step(systemId, entry, record, 'arrive');
    this.replies.set(record, reply);
    io.run('arrival', systemId, () => ctx.ref(vmms.path(systemId)).ask({ type: 'vmm.await-running', timeoutMs: 60_000 }, { timeoutMs: 70_000 }), (running) => {
      if (!this.current(entry, record, 'arriving')) {
        return reply.fail(new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' was dropped on ${this.h.node} while it arrived: ${entry.meta.reason ?? 'dropped'}`));
      }
      if (!running.ok) {
        this.replies.delete(record);
        this.drop(systemId, entry, `the guest from ${record.peer} did not run here: ${errorMessage(running.error)}`, { ok: () => undefined, fail: () => undefined });
        return reply.fail(running.error);
      }
      this.step(systemId, entry, record, 'arrived');
      this.end(entry, record);
      entry.arriving = false;
      entries.move(systemId, entry, 'migrated');
      reply.ok({ type: 'system.arrived', ...viewOf(systemId, entry) });
    });
  }

  /** Target side (system.incoming-abort): only a copy still arriving is dropped; one that runs here already stays (and says so). */
  abort(systemId: string, reason: string, reply: Reply): void {
    const entry = this.h.entries.get(systemId);
    const record = entry?.migration;
    if (!entry || !record || record.role !== 'target' || !entry.arriving || record.phase === 'dropping') {
      reply.ok({ type: 'ok', dropped: false, running: entry !== undefined && !entry.arriving && (entry.state === 'running' || entry.state === 'paused') });
      return;
    }
    this.drop(systemId, entry, reason, reply);
  }

  /** Target: the copy arriving here dropped (its VMM stopped, I/O), then `stopped`; `reply` hears `{dropped: true}`. */
  drop(systemId: string, entry: Running, reason: string, reply: Reply): void {
    const { entries, io, vmms } = this.h;
    const record = entry.migration;
    if (!record) return reply.fail(new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' is not arriving on ${this.h.node}`));
    this.step(systemId, entry, record, 'drop');
    // Whoever waits on the arrival hears it was dropped (their I/O, before this one, comes back stale).
    entry.arriving = false;
    entry.meta = { ...entry.meta, reason };
    entries.supersede(entry);
    const spec = entry.spec;
    io.run('arrival', systemId, () => vmms.stop(systemId, spec, 'migration abandoned'), () => {
      this.step(systemId, entry, record, 'dropped');
      const waiting = this.replies.get(record);
      this.end(entry, record);
      waiting?.fail(new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' was dropped on ${this.h.node} while it arrived: ${reason}`));
      if (entry.state === 'migrating') entries.move(systemId, entry, 'migrated-away', { reason, pid: null, vmmPid: null });
      else entries.publish(systemId, entry);
      reply.ok({ type: 'ok', dropped: true });
    });
  }
}
