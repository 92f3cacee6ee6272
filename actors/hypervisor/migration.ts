/**
 * Moving a running system to another node (live for QEMU, by state transfer for sim). The source
 * (`migrate`) drives the target's hypervisor through system.incoming, system.incoming-done and,
 * when it fails, system.incoming-abort; the target (`incoming`, `arrived`, `abort`) gets ready for
 * the guest, sees it run, or drops its copy. Never two running copies.
 */
import { z } from 'zod';
import { replyLater, type ActorContext, type ActorRef } from '../../runtime/actor.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { isValidName } from '../../runtime/path.js';
import type { NodeConfig } from '../../runtime/config.js';
import { parseHostPort } from '../../adapters/tls.js';
import { isMigrationHost } from '../../adapters/drivers/driver.js';
import { objectKey, type SystemObject } from '../model.js';
import { next, type SystemEvent } from './lifecycle.js';
import type { SystemDisks } from './disks.js';
import type { SystemNics } from './nics.js';
import { viewOf, type Running, type SystemMeta } from './schema.js';
import type { GuestVmms } from './vmms.js';

const ARRIVAL_DEADLINE_MS = 15 * 60_000;

/** The target's answer to system.incoming: where to send the guest (nothing for a simulated one). */
const incomingReply = z.object({
  type: z.literal('system.incoming'),
  address: z.strictObject({ host: z.string().max(253).refine(isMigrationHost, 'the host must be an IP address or a host name'), port: z.number().int().min(1).max(65535) }).optional(),
});

/** The hypervisor's parts that migration uses. */
export interface MigrationHost {
  readonly ctx: ActorContext;
  readonly node: string;
  readonly cdb: ActorRef;
  readonly config: NodeConfig;
  readonly systems: Map<string, Running>;
  readonly vmms: GuestVmms;
  readonly nics: SystemNics;
  readonly disks: SystemDisks;
  entryFor(id: string): Running | undefined;
  requireEntry(id: string): Running;
  move(id: string, entry: Running, event: SystemEvent, extra?: Partial<SystemMeta>): void;
  publish(id: string, entry: Running): void;
}

export class Migration {
  constructor(private readonly h: MigrationHost) {}

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

  /** Source side (system.migrate): the guest moved to `to` and this copy gone, or it stays here. */
  async migrate(systemId: string, to: string): Promise<Message> {
    const { ctx, node, cdb, vmms, move } = this.h;
    const entry = this.h.requireEntry(systemId);
    if (!isValidName(to)) throw new AcpError('ACP_ERR_NAME_INVALID', `--to must name a node, not '${to}'`);
    if (to === node) throw new AcpError('ACP_ERR_TARGET_IS_SELF', `system '${systemId}' already runs on ${node}`);
    next(systemId, entry.state, 'migrate');
    await this.checkMigratable(systemId, entry.spec);
    const target = ctx.ref(`acp://${ctx.node.cluster}/${to}/hypervisor`);
    const vmm = ctx.ref(vmms.path(systemId));
    move(systemId, entry, 'migrate', { reason: `migrating to ${to}` });
    let prepared = false;
    let moved = false;
    try {
      const { state } = await vmm.ask<Message & { state: unknown }>({ type: 'vmm.transferable' });
      const accelerator = entry.meta.accelerator === 'kvm' || entry.meta.accelerator === 'tcg' ? { accelerator: entry.meta.accelerator } : {};
      const reply = await target.ask({ type: 'system.incoming', id: systemId, spec: entry.spec, from: node, transferred: state, ...accelerator }, { timeoutMs: 120_000 });
      prepared = true;
      // The target names only an address; the VMM builds the URI, and the stream's TLS checks that `to` answers.
      const incoming = incomingReply.safeParse(reply);
      if (!incoming.success) throw new AcpError('ACP_ERR_SCHEMA_REJECTED', `${to} answered the migration with no valid address to send the guest to: ${incoming.error.issues[0]?.message ?? 'malformed'}`);
      const address = incoming.data.address ? { ...incoming.data.address, host: await this.reachable(to, incoming.data.address.host) } : undefined;
      await vmm.ask({ type: 'vmm.migrate', target: { node: to, ...(address ? { address } : {}) } }, { timeoutMs: 600_000 });
      moved = true;
      const arrived = await target.ask<Message & SystemMeta>({ type: 'system.incoming-done', id: systemId }, { timeoutMs: 120_000 });
      // The target runs it: only now does the CDB say the system lives there, and this copy go.
      await cdb.ask({ type: 'cdb.put', key: objectKey('system', systemId), value: { ...entry.spec, node: to } }, { timeoutMs: 15_000 });
      await vmm.ask({ type: 'vmm.finish-migration' }, { timeoutMs: 30_000 }).catch((error: unknown) => ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'the source copy did not quit cleanly; its VMM is stopped'));
      await vmms.stop(systemId, entry, `migrated to ${to}`);
      move(systemId, entry, 'migrated-away', { reason: `migrated to ${to}`, pid: null, vmmPid: null });
      const { type: _arrived, ...there } = arrived;
      return { ...there, type: 'system.migrated', id: systemId, from: node, to };
    } catch (error) {
      const reason = `migration to ${to} failed: ${errorMessage(error)}`;
      ctx.log.warn({ system: systemId, err: reason }, 'migration failed; the system stays here');
      let abandoned = !prepared;
      if (prepared) {
        abandoned = await target.ask({ type: 'system.incoming-abort', id: systemId, reason }, { timeoutMs: 30_000 }).then(
          () => true,
          () => false,
        );
      }
      if (entry.state !== 'migrating') throw new AcpError('ACP_ERR_VMM_FAILED', `${reason}; ${systemId} is ${entry.state} on ${node}`);
      if (moved && !abandoned) {
        // The target may run it and did not confirm it stopped: never two copies; this one stays paused.
        move(systemId, entry, 'migrated', { reason: `${reason}; ${to} did not confirm it dropped its copy, so this one is left paused` });
        move(systemId, entry, 'pause', { reason: entry.meta.reason });
        throw new AcpError('ACP_ERR_VMM_FAILED', `${reason}; ${systemId} is left paused on ${node} because ${to} may run it: check ${to}, then resume or stop it here`);
      }
      if (moved) await vmm.ask({ type: 'vmm.resume' }).catch(() => undefined);
      move(systemId, entry, 'migrated', { reason });
      throw new AcpError('ACP_ERR_VMM_FAILED', `${reason}; ${systemId} keeps running on ${node}`);
    }
  }

  /** Target side (system.incoming): a VMM ready for the guest, and where to send it. */
  async incoming(systemId: string, spec: SystemObject, from: string, transferred: unknown, guestAccelerator: 'kvm' | 'tcg' | undefined): Promise<Message> {
    const { ctx, node, vmms, move } = this.h;
    const existing = this.h.entryFor(systemId);
    if (existing && !['stopped', 'defined', 'crashed'].includes(existing.state)) {
      throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' is ${existing.state} on ${node} already; it cannot arrive here`);
    }
    if (existing) clearTimeout(existing.retry);
    const entry: Running = {
      arriving: true,
      state: 'migrating',
      spec: { ...spec, ...(spec.node === undefined ? {} : { node }) },
      vmm: undefined,
      meta: { state: 'migrating', node, pid: null, vmmPid: null, accelerator: null, since: new Date().toISOString(), restarts: 0, reason: `arriving from ${from}` },
      restarts: [],
      attempt: 0,
      retry: undefined,
    };
    this.h.systems.set(systemId, entry);
    this.h.publish(systemId, entry);
    try {
      // The taps are here before the guest arrives: it keeps its network across the move; its disks are resolved to this node's files.
      entry.storage = await this.h.disks.resolve(systemId, entry.spec);
      await this.h.nics.up(systemId, entry.spec);
      await vmms.spawn(systemId, entry);
      const ready = await ctx.ref(vmms.path(systemId)).ask<Message & { address?: { host: string; port: number }; pid: number | null; vmmPid: number; accelerator: string }>(
        {
          type: 'vmm.incoming',
          spec: entry.spec,
          host: this.migrationHost(),
          from,
          transferred,
          ...(guestAccelerator ? { accelerator: guestAccelerator } : {}),
          ...entry.storage,
        },
        { timeoutMs: 60_000 },
      );
      entry.meta = { ...entry.meta, pid: ready.pid, vmmPid: ready.vmmPid, accelerator: ready.accelerator };
      // A source that never follows up (it died, say) must not leave this copy waiting for ever.
      entry.retry = setTimeout(() => ctx.self.tell({ type: 'system.incoming-abort', id: systemId, reason: `${from} did not complete the migration within ${ARRIVAL_DEADLINE_MS / 60_000} minutes` }), ARRIVAL_DEADLINE_MS);
      entry.retry.unref();
      return { type: 'system.incoming', id: systemId, ...(ready.address ? { address: ready.address } : {}) };
    } catch (error) {
      await vmms.stop(systemId, entry, 'incoming failed');
      move(systemId, entry, 'migrated-away', { reason: `arrival from ${from} failed: ${errorMessage(error)}` });
      throw error;
    }
  }

  /** Target side (system.incoming-done): answered once the guest runs here. */
  arrived(systemId: string) {
    const { ctx, vmms, move } = this.h;
    const entry = this.h.requireEntry(systemId);
    const arrive = async () => {
      await ctx.ref(vmms.path(systemId)).ask({ type: 'vmm.await-running', timeoutMs: 60_000 }, { timeoutMs: 70_000 });
      clearTimeout(entry.retry);
      entry.arriving = false;
      move(systemId, entry, 'migrated');
      return { type: 'system.arrived', ...viewOf(systemId, entry) };
    };
    return replyLater(arrive());
  }

  /** Target side (system.incoming-abort): only a copy still arriving is dropped; one that runs here already stays. */
  abort(systemId: string, reason: string) {
    const { vmms, move } = this.h;
    const entry = this.h.entryFor(systemId);
    if (!entry || entry.state !== 'migrating' || !entry.arriving) return { type: 'ok', dropped: false };
    entry.arriving = false;
    clearTimeout(entry.retry);
    const abandon = async () => {
      await vmms.stop(systemId, entry, 'migration abandoned');
      move(systemId, entry, 'migrated-away', { reason, pid: null, vmmPid: null });
      return { type: 'ok', dropped: true };
    };
    return replyLater(abandon());
  }
}
