import { replyLater, type ActorContext, type Actor, type ServiceDefinition } from '../../runtime/actor.js';
import { realClock, type Clock } from '../../runtime/clock.js';
import { AcpError } from '../../runtime/errors.js';
import type { ServiceDeps } from '../../runtime/services.js';
import { ServiceCounters } from '../kit.js';
import { objectKey } from '../model.js';
import { SystemNics } from './nics.js';
import { SystemDisks } from './disks.js';
import { GuestRecovery } from './adoption.js';
import { CdbFeed } from '../cdb-feed.js';
import type { RecordView } from '../cdb/index.js';
import { hypervisorAuthority, hypervisorSchema, viewOf as view } from './schema.js';
import { GuestVmms } from './vmms.js';
import { RestartPolicy } from './restart.js';
import { Migration } from './migration.js';
import { GuestStats } from './stats.js';
import { GuestConsole } from './console.js';
import { SystemEntries } from './entries.js';
import { deferred, GuestIo, noReply } from './io.js';
import { GuestOperations } from './operations.js';

export { hypervisorAuthority, hypervisorSchema, type Running, type SystemMeta, type SystemStep } from './schema.js';

const DEFAULT_STOP_TIMEOUT_MS = 30_000;
/** How long the guest of a deleted system has to power off before it is quit. */
const DELETED_STOP_MS = 10_000;
/** How long a stopping hypervisor waits for the I/O in flight before it stops its VMMs anyway. */
const IDLE_WAIT_MS = 3000;

/** What a test may put in place of the real thing. */
export interface HypervisorOptions {
  /** The restart policy's and the migration deadlines' clock (realClock in acpd). */
  readonly clock?: Clock;
  /** The inline VMM of a simulated guest (createVmm in acpd). */
  readonly simVmm?: (ctx: ActorContext, home: string) => Actor;
}

/**
 * The Hypervisor decides: it holds every local system's state machine, publishes it as meta, and
 * has one VMM per running system at `hypervisor/vmm/<id>` (under a `vmm` parent of their own, so
 * many systems never slow this mailbox: nact copies a parent's children on every message). Real
 * guests get a VMM container (a child process); simulated ones an inline VMM. A guest that ends
 * unasked, or a VMM that dies, marks the system crashed; its restart policy decides what follows.
 * Every entry changes here, in receive: I/O runs outside and reports back as a message (io.ts).
 */
export function createHypervisor(ctx: ActorContext, deps: ServiceDeps, options: HypervisorOptions = {}): Actor {
  const { paths } = deps;
  const node = ctx.node.node;
  const clock = options.clock ?? realClock;
  const info = new ServiceCounters();
  const cdb = ctx.ref(ctx.self.path.replace(/\/hypervisor$/, '/cdb'));
  const entries = new SystemEntries(ctx, paths.home, cdb);
  const io = new GuestIo(ctx.self, (systemId) => entries.epochOf(systemId));
  const nics = new SystemNics(ctx, cdb);
  const disks = new SystemDisks(ctx);
  const vmms = new GuestVmms({ ctx, deps, nics, disks, ...(options.simVmm ? { simVmm: options.simVmm } : {}) });
  const migration = new Migration({ ctx, node, cdb, config: deps.config, clock, entries, io, vmms, nics, disks });
  const ops: GuestOperations = new GuestOperations({
    ctx,
    home: paths.home,
    cdb,
    entries,
    io,
    vmms,
    nics,
    disks,
    restarts: () => restarts,
    dropArrival: (systemId, entry, reason, reply) => migration.drop(systemId, entry, reason, reply),
  });
  const restarts: RestartPolicy = new RestartPolicy({
    log: ctx.log,
    clock,
    tell: (message) => ctx.self.tell(message),
    entryFor: (systemId) => entries.get(systemId),
    move: (systemId, entry, event, extra) => entries.move(systemId, entry, event, extra),
    publish: (systemId, entry) => entries.publish(systemId, entry),
    start: (systemId, reply) => ops.start(systemId, reply),
    cleanUp: (systemId, entry, reason) => ops.cleanUp(systemId, entry, reason),
    dropArrival: (systemId, entry, reason) => migration.drop(systemId, entry, reason, noReply()),
  });
  const stats = new GuestStats({ ctx, node, cdb, systems: entries, vmms, disks });
  const guestConsole = new GuestConsole({ ctx, node, home: paths.home, vmms, requireEntry: (systemId) => entries.require(systemId) });
  const recovery = new GuestRecovery({ ctx, home: paths.home, cdb, clock, entries, io, vmms, nics, restarts: () => restarts, start: (systemId, reply, why) => ops.start(systemId, reply, why) });

  /** Until when this node may run HA guests (see system.ha-fence); -Infinity: the HA service never fed its guard. */
  let haFenceUntil = -Infinity;
  let haFenceSet = false;
  const fenceHaGuests = () => {
    if (!haFenceSet || performance.now() < haFenceUntil) return;
    for (const [systemId, entry] of entries) {
      if (!entry.spec.ha || entry.arriving || !['starting', 'running', 'paused'].includes(entry.state)) continue;
      const why = 'fenced: its HA lease and fence timeout are over';
      ctx.log.warn({ system: systemId, reason: why }, 'stopping an HA guest: this node no longer holds its HA lease');
      ops.stopUnasked(systemId, true, 0, why, 'fencing an HA guest');
    }
  };

  /**
   * A system object deleted: its guest, if it runs here, is stopped, with the reason; then (or at
   * once) the system is forgotten here, its meta too (a crashed one's alarm stayed open for good).
   */
  const feed = new CdbFeed(ctx, 'object/system/', (records: readonly RecordView[]) => {
    for (const record of records) {
      const systemId = record.key.slice('object/system/'.length);
      const entry = entries.get(systemId);
      if (!entry) {
        entries.noteWithoutEntry(systemId, record.deleted === true);
        continue;
      }
      // Made again under the same id: this entry is the system's again.
      if (!record.deleted) {
        entry.objectDeleted = false;
        continue;
      }
      // Not running and nothing under way: forgotten now. Else once it has stopped (entries.move).
      if (['defined', 'stopped', 'crashed'].includes(entry.state) && !io.busy(systemId)) {
        entries.forget(systemId);
        continue;
      }
      // Stopped at the end of this turn if it runs, else once it comes to run (stopDeletedGuests).
      entries.markDeleted(systemId, entry);
    }
  }, () => {
    ctx.log.info({ systems: entries.size }, 'the cdb restarted: every system state published again');
    entries.republish();
  });

  /** Guests of deleted systems (entries.markDeleted, or one that came to run since) are stopped. */
  const stopDeletedGuests = () => {
    for (const systemId of entries.takeDeletedLive()) {
      const why = `its object ${objectKey('system', systemId)} was deleted`;
      ctx.log.warn({ system: systemId, reason: why }, 'stopping the guest of a deleted system');
      ops.stopUnasked(systemId, false, DELETED_STOP_MS, why, 'stopping the guest of a deleted system');
    }
  };

  /** An operation answered when its I/O is over (deferred), or refused at once (thrown). */
  const answered = (operation: (reply: ReturnType<typeof deferred>) => void) => {
    const answer = deferred();
    operation(answer);
    return answer.reply;
  };

  const actor: Actor = {
    async started() {
      await vmms.spawnParent();
      // Not awaited: the watch retries by itself, and the node's boot need not wait for it.
      void feed.start();
      ctx.self.tell({ type: 'hypervisor.recover' });
      stats.start(deps.config.statsMs);
    },
    async receive(message) {
      info.handled += 1;
      const fed = feed.handle(message);
      if (fed !== false) return fed === true ? undefined : fed;
      fenceHaGuests();
      const parsed = hypervisorSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return { ...info.info('hypervisor', 'Hypervisor', ctx), systems: entries.size };
        // Starting and stopping wait on a guest: answered later, so they never hold this mailbox.
        case 'system.start':
          return answered((reply) => ops.start(parsed.id, reply));
        case 'system.ha-fence':
          haFenceSet = true;
          haFenceUntil = parsed.until;
          return undefined;
        case 'system.ha-start':
          if (!haFenceSet || performance.now() >= haFenceUntil) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `cannot start HA system '${parsed.id}' on ${node}: this node holds no HA lease now`);
          return answered((reply) => ops.start(parsed.id, reply, `ordered by the HA manager (term ${parsed.term})`, true));
        case 'system.stop':
          return answered((reply) => ops.stop(parsed.id, parsed.force ?? false, parsed.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS, reply));
        case 'system.pause':
          return answered((reply) => ops.command(parsed.id, 'pause', 'system.paused', reply));
        case 'system.resume':
          return answered((reply) => ops.command(parsed.id, 'resume', 'system.resumed', reply));
        // No state changes: the VMM's answer is passed on.
        case 'system.reset': {
          const entry = entries.require(parsed.id);
          if (entry.state !== 'running' && entry.state !== 'paused') throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `cannot reset system '${parsed.id}': it is ${entry.state} (reset needs running, paused)`);
          return replyLater(ctx.ref(vmms.path(parsed.id)).ask({ type: 'vmm.reset' }, { timeoutMs: 15_000 }).then(() => ({ type: 'system.reset', ...view(parsed.id, entry) })));
        }
        case 'system.restart':
          return answered((reply) => ops.restart(parsed.id, DEFAULT_STOP_TIMEOUT_MS, reply));
        case 'system.status': {
          // `at`: when this node answered, so that a reader comparing nodes' answers knows which moment each is about.
          const at = new Date().toISOString();
          if (parsed.id !== undefined) return { type: 'system.status', at, systems: [view(parsed.id, entries.require(parsed.id))] };
          return { type: 'system.status', at, systems: [...entries].map(([systemId, entry]) => view(systemId, entry)) };
        }
        case 'system.console':
          return guestConsole.read(parsed.id, parsed.offset, parsed.maxBytes);
        case 'system.console.input':
          return guestConsole.input(parsed.id, parsed.data);
        case 'system.display':
          return guestConsole.display(parsed.id);
        case 'system.disk-change': {
          const entry = entries.require(parsed.id);
          if (entry.state !== 'running' && entry.state !== 'paused') throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `cannot change a disk of system '${parsed.id}' while it is ${entry.state} on ${node} (running or paused only)`);
          return replyLater(ctx.ref(vmms.path(parsed.id)).ask({ type: 'vmm.disk-change', volume: parsed.volume, change: parsed.change }, { timeoutMs: 70_000 }).then(() => ({ type: 'system.disk-changed', id: parsed.id, node, volume: parsed.volume })));
        }
        case 'system.migrate':
          return answered((reply) => migration.migrate(parsed.id, parsed.to, reply));
        case 'system.incoming':
          return answered((reply) => migration.incoming(parsed.id, parsed.spec, parsed.from, parsed.transferred, parsed.accelerator, reply));
        case 'system.incoming-done':
          return answered((reply) => migration.arrived(parsed.id, reply));
        case 'system.incoming-abort':
          return answered((reply) => migration.abort(parsed.id, parsed.reason, reply));
        case 'hypervisor.migration-deadline':
          migration.deadline(parsed.id, parsed.epoch, parsed.phase);
          return undefined;
        case 'hypervisor.guest-exited':
          ops.exited(parsed.id, parsed.crashed, parsed.reason, parsed.vmmDied ?? false);
          return undefined;
        case 'hypervisor.recover':
          recovery.recover();
          return undefined;
        case 'hypervisor.autostart-next':
          recovery.autostartNext();
          return undefined;
        case 'system.stop-all':
          return replyLater(ops.stopAll(parsed.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS, 'stopped with its node (acp down --stop-systems)'));
        case 'hypervisor.restart-due':
          restarts.due(parsed.id, parsed.attempt);
          return undefined;
        case 'hypervisor.prepare-done':
        case 'hypervisor.launch-done':
        case 'hypervisor.stop-done':
        case 'hypervisor.command-done':
        case 'hypervisor.cleanup-done':
        case 'hypervisor.readopt-done':
        case 'hypervisor.migrate-done':
        case 'hypervisor.arrival-done':
        case 'hypervisor.recover-done':
          io.settle(parsed);
          return undefined;
        default: {
          const unreachable: never = parsed;
          return unreachable;
        }
      }
    },
    async stopping(reason) {
      stats.stop();
      feed.stop();
      for (const [, entry] of entries) {
        entry.retry?.();
        entry.migration?.cancelDeadline?.();
      }
      // QEMU guests outlive the daemon (their meta still says where they are; the next daemon
      // adopts them); a copy still arriving is dropped; simulated guests go with the daemon.
      // No more receive: what is moved here is moved on the way out, after the I/O in flight (a while at most).
      await new Promise<void>((resolve) => {
        const cancel = clock.setTimer(IDLE_WAIT_MS, resolve);
        void io.idle().then(() => {
          cancel();
          resolve();
        });
      });
      await Promise.all(
        [...entries].map(async ([systemId, entry]) => {
          const outlives = entry.spec.driver === 'qemu' && !entry.arriving && (entry.state === 'running' || entry.state === 'paused');
          await vmms.stop(systemId, entry.spec, reason, outlives ? 'release' : 'stop');
          if (entry.spec.driver === 'sim' && (entry.state === 'running' || entry.state === 'paused')) {
            entries.move(systemId, entry, 'stopped', { reason: 'the daemon stopped; a simulated guest does not outlive it', pid: null, vmmPid: null });
          }
        }),
      );
      await vmms.stopParent(reason);
    },
  };
  // Whatever a message changed, a deleted system's guest does not stay running past its turn.
  const handle = actor.receive.bind(actor);
  actor.receive = async (message, sender) => {
    try {
      return await handle(message, sender);
    } finally {
      stopDeletedGuests();
    }
  };
  return actor;
}

export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'hypervisor',
  description: 'Hypervisor: runs systems in VMMs and holds their state machines',
  schema: hypervisorSchema,
  authority: hypervisorAuthority,
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new Error('the hypervisor runs inline only');
    return createHypervisor(ctx, deps);
  },
};
