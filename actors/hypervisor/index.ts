import { replyLater, type ActorContext, type Actor, type ServiceDefinition } from '../../runtime/actor.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import type { ServiceDeps } from '../../runtime/services.js';
import { ServiceClock } from '../kit.js';
import { metaKey, objectKey, systemObjectSchema, type SystemObject } from '../model.js';
import { guestFiles } from '../vmm/index.js';
import { next, type SystemEvent, type SystemState } from './lifecycle.js';
import { SystemNics } from './nics.js';
import { SystemDisks } from './disks.js';
import { GuestRecovery } from './adoption.js';
import { CdbFeed } from '../cdb-feed.js';
import { saveGuestState } from '../../adapters/guest-state.js';
import type { RecordView } from '../cdb/index.js';
import { hypervisorAuthority, hypervisorSchema, viewOf as view, type Running, type SystemMeta, type SystemStep } from './schema.js';
import { GuestVmms } from './vmms.js';
import { RestartPolicy } from './restart.js';
import { Migration } from './migration.js';
import { GuestStats } from './stats.js';
import { GuestConsole } from './console.js';

export { hypervisorAuthority, hypervisorSchema, type Running, type SystemMeta, type SystemStep } from './schema.js';

const HISTORY_STEPS = 20;
const DEFAULT_STOP_TIMEOUT_MS = 30_000;
/** How long the guest of a deleted system has to power off before it is quit. */
const DELETED_STOP_MS = 10_000;
const RECOVER_RETRY_MS = 1000;

/**
 * The Hypervisor decides: it holds every local system's state machine, publishes it as meta, and
 * has one VMM per running system at `hypervisor/vmm/<id>` (under a `vmm` parent of their own, so
 * many systems never slow this mailbox: nact copies a parent's children on every message). Real
 * guests get a VMM container (a child process); simulated ones an inline VMM. A guest that ends
 * unasked, or a VMM that dies, marks the system crashed; its restart policy decides what follows.
 */
export function createHypervisor(ctx: ActorContext, deps: ServiceDeps): Actor {
  const { paths } = deps;
  const node = ctx.node.node;
  const clock = new ServiceClock();
  const cdb = ctx.ref(ctx.self.path.replace(/\/hypervisor$/, '/cdb'));
  const systems = new Map<string, Running>();
  const nics = new SystemNics(ctx, cdb);
  const disks = new SystemDisks(ctx);
  const entryFor = (systemId: string): Running | undefined => systems.get(systemId);

  const requireEntry = (systemId: string): Running => {
    const entry = entryFor(systemId);
    if (!entry) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' does not run on node '${node}' (it is defined or stopped here); start it first`);
    return entry;
  };

  const publish = (systemId: string, entry: Running) => {
    try {
      saveGuestState(guestFiles(paths.home, systemId).runDir, entry.meta);
    } catch (error) {
      ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'could not save the system state in the run dir');
    }
    cdb.ask({ type: 'cdb.put', key: metaKey('system', systemId, node), value: entry.meta }, { timeoutMs: 10_000 }).catch((error: unknown) => {
      ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'could not publish the system state');
    });
  };

  const move = (systemId: string, entry: Running, event: SystemEvent, extra: Partial<SystemMeta> = {}) => {
    entry.state = next(systemId, entry.state, event);
    const at = new Date().toISOString();
    entry.meta = { ...entry.meta, ...extra, state: entry.state, since: at, restarts: entry.restarts.length };
    if (!('reason' in extra) && event !== 'crashed') delete entry.meta.reason;
    const step: SystemStep = { at, event, state: entry.state, ...(entry.meta.reason === undefined ? {} : { reason: entry.meta.reason }) };
    entry.meta.history = [...(entry.meta.history ?? []), step].slice(-HISTORY_STEPS);
    publish(systemId, entry);
    // A system that no longer runs here has no live stats here (its history goes with them).
    if (entry.state === 'stopped' || entry.state === 'crashed') {
      cdb.ask({ type: 'cdb.delete', key: `stats/system/${systemId}@${node}` }).catch(() => undefined);
    }
  };

  /** The system's object; an HA system starts only on its HA manager's order (`ha`), wherever the manager placed it. */
  const readSpec = async (systemId: string, ha = false): Promise<SystemObject> => {
    const reply = await cdb.ask<Message & { record: { value: unknown } }>({ type: 'cdb.get', key: objectKey('system', systemId) });
    const spec = systemObjectSchema.parse(reply.record.value);
    if (ha) {
      if (!spec.ha) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' is not an HA system; the HA service starts only HA systems`);
      return spec;
    }
    if (spec.ha) {
      throw new AcpError('ACP_ERR_SYSTEM_HA_MANAGED', `system '${systemId}' is HA: the HA manager places and starts it (acp ha status shows where it runs); its object's haState says whether it runs`);
    }
    if (spec.node !== undefined && spec.node !== node) {
      throw new AcpError('ACP_ERR_SYSTEM_WRONG_NODE', `system '${systemId}' is placed on node '${spec.node}', not '${node}'; start it there (acp://${ctx.node.cluster}/${spec.node}/hypervisor)`);
    }
    return spec;
  };

  const vmms = new GuestVmms({ ctx, deps, nics, disks, move });
  const vmmPath = (systemId: string) => vmms.path(systemId);
  const stopVmm = (systemId: string, entry: Running, reason: string, guest: 'stop' | 'release' = 'stop') => vmms.stop(systemId, entry, reason, guest);
  const restarts = new RestartPolicy({ ctx, home: paths.home, vmms, entryFor, move, publish, start: (systemId) => start(systemId) });
  const migration = new Migration({ ctx, node, cdb, config: deps.config, systems, vmms, nics, disks, entryFor, requireEntry, move, publish });
  const stats = new GuestStats({ ctx, node, cdb, systems, vmms, disks });
  const guestConsole = new GuestConsole({ ctx, node, home: paths.home, vmms, requireEntry });

  /** Until when this node may run HA guests (see system.ha-fence); -Infinity: the HA service never fed its guard. */
  let haFenceUntil = -Infinity;
  let haFenceSet = false;
  const fenceHaGuests = () => {
    if (!haFenceSet || performance.now() < haFenceUntil) return;
    for (const [systemId, entry] of systems) {
      if (!entry.spec.ha || entry.arriving || !['starting', 'running', 'paused'].includes(entry.state)) continue;
      const why = 'fenced: its HA lease and fence timeout are over';
      ctx.log.warn({ system: systemId, reason: why }, 'stopping an HA guest: this node no longer holds its HA lease');
      void stop(systemId, true, 0, why).catch((error: unknown) => ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'fencing an HA guest failed'));
    }
  };

  const freshEntry = (spec: SystemObject, state: SystemState, meta?: SystemMeta): Running => ({
    state,
    spec,
    vmm: undefined,
    meta: { ...(meta ?? { pid: null, vmmPid: null, accelerator: null, since: new Date().toISOString(), restarts: 0 }), state, node },
    restarts: [],
    attempt: 0,
    retry: undefined,
  });

  const recovery = new GuestRecovery({
    ctx,
    node,
    home: paths.home,
    cdb,
    systems,
    freshEntry,
    adoptGuest: (systemId, entry) => vmms.adopt(systemId, entry),
    stopVmm,
    move,
    publish,
    scheduleRestart: (systemId, entry, reason) => restarts.schedule(systemId, entry, reason),
    start: (systemId, why) => start(systemId, why),
    nicsUp: (systemId, spec) => nics.up(systemId, spec),
    vmmStop: (systemId, timeoutMs) => ctx.ref(vmmPath(systemId)).ask({ type: 'vmm.stop', graceful: true, timeoutMs }, { timeoutMs: timeoutMs + 15_000 }),
  });

  /** A system object deleted while its guest runs here: the guest is stopped, with the reason. */
  const feed = new CdbFeed(ctx, 'object/system/', (records: readonly RecordView[]) => {
    for (const record of records) {
      if (!record.deleted) continue;
      const systemId = record.key.slice('object/system/'.length);
      const entry = entryFor(systemId);
      if (!entry || !['starting', 'running', 'paused'].includes(entry.state)) continue;
      const why = `its object ${record.key} was deleted`;
      ctx.log.warn({ system: systemId, reason: why }, 'stopping the guest of a deleted system');
      void stop(systemId, false, DELETED_STOP_MS, why).catch((error: unknown) => ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'stopping the guest of a deleted system failed'));
    }
  });

  const start = async (systemId: string, why?: string, ha = false): Promise<Message> => {
    const spec = await nics.withMacs(systemId, await readSpec(systemId, ha));
    // A disk this node cannot give (its volume missing, its pool not here) refuses the start, before anything changes.
    const storage = await disks.resolve(systemId, spec);
    // A NIC this node cannot give (its network not carried here) refuses the start, before anything changes.
    await nics.up(systemId, spec);
    let entry = entryFor(systemId);
    if (!entry) {
      entry = { state: 'defined', spec, vmm: undefined, meta: { state: 'defined', node, pid: null, vmmPid: null, accelerator: null, since: new Date().toISOString(), restarts: 0 }, restarts: [], attempt: 0, retry: undefined };
      systems.set(systemId, entry);
    }
    clearTimeout(entry.retry);
    entry.spec = spec;
    entry.storage = storage;
    move(systemId, entry, 'start', why === undefined ? {} : { reason: why });
    await vmms.launch(systemId, entry);
    return { type: 'system.started', id: systemId, ...entry.meta };
  };

  const stop = async (systemId: string, force: boolean, timeoutMs: number, why?: string): Promise<Message> => {
    const entry = requireEntry(systemId);
    clearTimeout(entry.retry);
    // A copy still arriving (its source never followed up, say): dropped, as an abort would.
    if (entry.arriving) {
      entry.arriving = false;
      await stopVmm(systemId, entry, 'arrival stopped');
      move(systemId, entry, 'migrated-away', { reason: 'stopped while arriving', pid: null, vmmPid: null });
      return { type: 'system.stopped', id: systemId, ...entry.meta };
    }
    // A crashed system waiting for its restart: stopping it cancels the restart.
    if (entry.state === 'crashed') {
      move(systemId, entry, 'stopped');
      return { type: 'system.stopped', id: systemId, ...entry.meta };
    }
    move(systemId, entry, 'stop');
    try {
      if (entry.vmm) await ctx.ref(vmmPath(systemId)).ask({ type: 'vmm.stop', graceful: !force, timeoutMs }, { timeoutMs: timeoutMs + 15_000 });
    } catch (error) {
      ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'the VMM did not stop cleanly; its container is stopped');
    }
    await stopVmm(systemId, entry, 'system stopped');
    move(systemId, entry, 'stopped', { pid: null, vmmPid: null, ...(why === undefined ? {} : { reason: why }) });
    return { type: 'system.stopped', id: systemId, ...entry.meta };
  };

  /** Pause or resume: checked against the state now, done by the VMM, answered later (never holding this mailbox). */
  const guestCommand = (systemId: string, event: 'pause' | 'resume', command: string, answer: string) => {
    const entry = requireEntry(systemId);
    next(systemId, entry.state, event);
    return replyLater(
      ctx
        .ref(vmmPath(systemId))
        .ask({ type: command }, { timeoutMs: 15_000 })
        .then(() => {
          move(systemId, entry, event);
          return { type: answer, ...view(systemId, entry) };
        }),
    );
  };

  return {
    async started() {
      await vmms.spawnParent();
      // Not awaited: the watch retries by itself, and the node's boot need not wait for it.
      void feed.start();
      ctx.self.tell({ type: 'hypervisor.recover' });
      stats.start(deps.config.statsMs);
    },
    async receive(message) {
      clock.handled += 1;
      const fed = feed.handle(message);
      if (fed !== false) return fed === true ? undefined : fed;
      fenceHaGuests();
      const parsed = hypervisorSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return { ...clock.info('hypervisor', 'Hypervisor', ctx), systems: systems.size };
        // Starting and stopping wait on a guest: answered later, so they never hold this mailbox.
        case 'system.start':
          return replyLater(start(parsed.id));
        case 'system.ha-fence':
          haFenceSet = true;
          haFenceUntil = parsed.until;
          return undefined;
        case 'system.ha-start':
          if (!haFenceSet || performance.now() >= haFenceUntil) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `cannot start HA system '${parsed.id}' on ${node}: this node holds no HA lease now`);
          return replyLater(start(parsed.id, `ordered by the HA manager (term ${parsed.term})`, true));
        case 'system.stop':
          return replyLater(stop(parsed.id, parsed.force ?? false, parsed.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS));
        case 'system.pause':
          return guestCommand(parsed.id, 'pause', 'vmm.pause', 'system.paused');
        case 'system.resume':
          return guestCommand(parsed.id, 'resume', 'vmm.resume', 'system.resumed');
        case 'system.reset': {
          const entry = requireEntry(parsed.id);
          if (entry.state !== 'running' && entry.state !== 'paused') throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `cannot reset system '${parsed.id}': it is ${entry.state} (reset needs running, paused)`);
          return replyLater(ctx.ref(vmmPath(parsed.id)).ask({ type: 'vmm.reset' }, { timeoutMs: 15_000 }).then(() => ({ type: 'system.reset', ...view(parsed.id, entry) })));
        }
        case 'system.restart': {
          const entry = requireEntry(parsed.id);
          const restart = async () => {
            if (entry.state === 'running' || entry.state === 'paused') await stop(parsed.id, false, DEFAULT_STOP_TIMEOUT_MS);
            return start(parsed.id);
          };
          return replyLater(restart());
        }
        case 'system.status': {
          if (parsed.id !== undefined) return { type: 'system.status', systems: [view(parsed.id, requireEntry(parsed.id))] };
          return { type: 'system.status', systems: [...systems].map(([systemId, entry]) => view(systemId, entry)) };
        }
        case 'system.console':
          return guestConsole.read(parsed.id, parsed.offset, parsed.maxBytes);
        case 'system.console.input':
          return guestConsole.input(parsed.id, parsed.data);
        case 'system.display':
          return guestConsole.display(parsed.id);
        case 'system.disk-change': {
          const entry = requireEntry(parsed.id);
          if (entry.state !== 'running' && entry.state !== 'paused') throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `cannot change a disk of system '${parsed.id}' while it is ${entry.state} on ${node} (running or paused only)`);
          return replyLater(ctx.ref(vmmPath(parsed.id)).ask({ type: 'vmm.disk-change', volume: parsed.volume, change: parsed.change }, { timeoutMs: 70_000 }).then(() => ({ type: 'system.disk-changed', id: parsed.id, node, volume: parsed.volume })));
        }
        case 'system.migrate':
          return replyLater(migration.migrate(parsed.id, parsed.to));
        case 'system.incoming':
          return replyLater(migration.incoming(parsed.id, parsed.spec, parsed.from, parsed.transferred, parsed.accelerator));
        case 'system.incoming-done':
          return migration.arrived(parsed.id);
        case 'system.incoming-abort':
          return migration.abort(parsed.id, parsed.reason);
        case 'hypervisor.guest-exited':
          void restarts.exited(parsed.id, parsed.crashed, parsed.reason, false, parsed.vmmDied ?? false).catch((error: unknown) => ctx.log.warn({ system: parsed.id, err: errorMessage(error) }, 'handling a guest exit failed'));
          return undefined;
        case 'hypervisor.recover':
          void recovery.recover().catch((error: unknown) => {
            ctx.log.warn({ err: errorMessage(error) }, 'could not read the systems to recover yet; retrying');
            setTimeout(() => ctx.self.tell({ type: 'hypervisor.recover' }), RECOVER_RETRY_MS).unref();
          });
          return undefined;
        case 'system.stop-all': {
          // HA systems are left to the HA service: they go by the node's shutdown policy when it stops (actors/ha/drain.ts).
          const live = [...systems].filter(([, entry]) => ['starting', 'running', 'paused'].includes(entry.state) && !entry.arriving && entry.spec.ha !== true).map(([systemId]) => systemId);
          const stopAll = async () => {
            const results = await Promise.allSettled(live.map((systemId) => stop(systemId, false, parsed.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS, 'stopped with its node (acp down --stop-systems)')));
            const failed = results.flatMap((result, index) => (result.status === 'rejected' ? [{ id: live[index]!, error: errorMessage(result.reason) }] : []));
            return { type: 'system.stopped-all', stopped: live.filter((systemId) => !failed.some((failure) => failure.id === systemId)), failed };
          };
          return replyLater(stopAll());
        }
        case 'hypervisor.restart-due':
          restarts.due(parsed.id, parsed.attempt);
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
      for (const entry of systems.values()) clearTimeout(entry.retry);
      // QEMU guests outlive the daemon (their meta still says where they are; the next daemon
      // adopts them); a copy still arriving is dropped; simulated guests go with the daemon.
      await Promise.all(
        [...systems].map(async ([systemId, entry]) => {
          const outlives = entry.spec.driver === 'qemu' && !entry.arriving && (entry.state === 'running' || entry.state === 'paused');
          await stopVmm(systemId, entry, reason, outlives ? 'release' : 'stop');
          if (entry.spec.driver === 'sim' && (entry.state === 'running' || entry.state === 'paused')) {
            move(systemId, entry, 'stopped', { reason: 'the daemon stopped; a simulated guest does not outlive it', pid: null, vmmPid: null });
          }
        }),
      );
      await vmms.stopParent(reason);
    },
  };
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
