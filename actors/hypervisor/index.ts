import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { replyLater, type ActorContext, type Actor, type ServiceDefinition } from '../../runtime/actor.js';
import type { AuthorityTable } from '../../runtime/authority.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { isValidName, nameSchema, parsePath } from '../../runtime/path.js';
import { processActor } from '../../runtime/process.js';
import type { ServiceDeps } from '../../runtime/services.js';
import type { LocalActor } from '../../runtime/system.js';
import { checkIntensity } from '../../supervisors/intensity.js';
import { parseHostPort } from '../../adapters/tls.js';
import { limitProcess, releaseCgroup } from '../../adapters/cgroup.js';
import { isMigrationHost } from '../../adapters/drivers/driver.js';
import { findGuest, killGuest } from '../../adapters/drivers/qemu.js';
import { probeAccelerator, type AcceleratorProbe } from '../../adapters/drivers/accelerator.js';
import { guestImage, GUEST_READY_LINE } from '../../adapters/guest-image.js';
import { restartDelay } from '../../supervisors/backoff.js';
import { serviceInfoSchema, ServiceClock } from '../kit.js';
import { metaKey, objectKey, systemObjectSchema, type SystemObject } from '../model.js';
import { createVmm, guestFiles, vmmAuthority, vmmModule, vmmSchema } from '../vmm/index.js';
import type { CpuSample, StatsOutput } from '../../adapters/stats-task.js';
import { next, type SystemEvent, type SystemState } from './lifecycle.js';
import { SystemNics } from './nics.js';
import { SystemDisks, type DiskStats, type SystemStorage } from './disks.js';
import { GuestRecovery } from './adoption.js';
import { CdbFeed } from '../cdb-feed.js';
import { readConsole, saveGuestState } from '../../adapters/guest-state.js';
import type { RecordView } from '../cdb/index.js';

const id = nameSchema;

export const hypervisorSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  z.strictObject({ type: z.literal('system.start'), id }),
  /** The HA service's start of an HA system here, on an order of its HA manager (any node: the manager places it). */
  z.strictObject({ type: z.literal('system.ha-start'), id, term: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) }),
  /**
   * The HA service fed its fence guard: until `until` (this process's performance.now()) this node
   * may run HA guests. Past it, every HA guest here is stopped before anything else is answered, as
   * the guard kills a QEMU guest: a daemon that was frozen never reports an HA guest running once
   * its lease and fence timeout are over (a simulated guest has no process for the guard to kill).
   */
  z.strictObject({ type: z.literal('system.ha-fence'), until: z.number().finite() }),
  z.strictObject({ type: z.literal('system.stop'), id, force: z.boolean().optional(), timeoutMs: z.number().int().min(0).max(600_000).optional() }),
  z.strictObject({ type: z.literal('system.pause'), id }),
  z.strictObject({ type: z.literal('system.resume'), id }),
  z.strictObject({ type: z.literal('system.restart'), id }),
  /** A hard reset of the guest (the power button's reset), without stopping its VMM. */
  z.strictObject({ type: z.literal('system.reset'), id }),
  /** This node's systems (or one), with their states. */
  z.strictObject({ type: z.literal('system.status'), id: id.optional() }),
  /** Part of a system's serial console log on this node, from `offset` (bytes). */
  /** What a console's user typed (the web UI's xterm), for the guest's serial port on this node. */
  z.strictObject({ type: z.literal('system.console.input'), id, data: z.string().min(1).max(4096) }),
  z.strictObject({ type: z.literal('system.console'), id, offset: z.number().int().min(0).default(0), maxBytes: z.number().int().min(1).max(1024 * 1024).default(64 * 1024) }),
  /** Whether the web UI may show this system's display here (operator: VNC carries keys and mouse). */
  z.strictObject({ type: z.literal('system.display'), id }),
  /** From a Storage service: grow a disk of a running guest, or take or drop a qcow2 snapshot of it (QMP). */
  z.strictObject({
    type: z.literal('system.disk-change'),
    id,
    volume: z.string().max(127),
    change: z.discriminatedUnion('action', [
      z.strictObject({ action: z.literal('resize'), sizeBytes: z.number().int().min(1).max(2 ** 53 - 1) }),
      z.strictObject({ action: z.enum(['snapshot-create', 'snapshot-delete']), snapshot: nameSchema }),
    ]),
  }),
  /** Move a running system to another node (live for QEMU, by state transfer for sim). */
  z.strictObject({ type: z.literal('system.migrate'), id, to: nameSchema }),
  /** Migration, target side: get ready for the guest, then see it run (or give up). */
  /** The guest keeps its accelerator: QEMU migrates between like and like. */
  z.strictObject({ type: z.literal('system.incoming'), id, spec: systemObjectSchema, from: nameSchema, transferred: z.unknown(), accelerator: z.enum(['kvm', 'tcg']).optional() }),
  z.strictObject({ type: z.literal('system.incoming-done'), id }),
  z.strictObject({ type: z.literal('system.incoming-abort'), id, reason: z.string().max(1000) }),
  z.strictObject({ type: z.literal('hypervisor.guest-exited'), id, generation: z.number().int(), crashed: z.boolean(), reason: z.string().max(1000), vmmDied: z.boolean().optional() }),
  /** Stop every system running here (acp down --stop-systems), each as system.stop would. */
  z.strictObject({ type: z.literal('system.stop-all'), timeoutMs: z.number().int().min(0).max(600_000).optional() }),
  /** After the daemon starts: adopt the guests that outlived it, settle the rest, then autostart. */
  z.strictObject({ type: z.literal('hypervisor.recover') }),
  z.strictObject({ type: z.literal('hypervisor.restart-due'), id, attempt: z.number().int() }),
]);

/** The target's answer to system.incoming: where to send the guest (nothing for a simulated one). */
const incomingReply = z.object({
  type: z.literal('system.incoming'),
  address: z.strictObject({ host: z.string().max(253).refine(isMigrationHost, 'the host must be an IP address or a host name'), port: z.number().int().min(1).max(65535) }).optional(),
});

/** A system's meta (`meta/system/<id>@<node>`): where its state machine is. */
export interface SystemMeta {
  state: SystemState;
  node: string;
  /** The guest's process (QEMU's), and its VMM container's. */
  pid: number | null;
  vmmPid: number | null;
  accelerator: string | null;
  since: string;
  restarts: number;
  reason?: string;
  /** The last lifecycle steps here, oldest first (acp system log). */
  history?: SystemStep[];
}

/** One lifecycle step of a system on a node. */
export interface SystemStep {
  at: string;
  event: SystemEvent;
  state: SystemState;
  reason?: string;
}

const HISTORY_STEPS = 20;

/** A system's state machine on this node, with its VMM. */
export interface Running {
  state: SystemState;
  /** The target side of a migration, until the guest runs here. */
  arriving?: boolean;
  spec: SystemObject;
  /** Its disks' files here, resolved by the Storage service before the guest starts or arrives. */
  storage?: SystemStorage;
  vmm: LocalActor | undefined;
  meta: SystemMeta;
  restarts: number[];
  attempt: number;
  retry: NodeJS.Timeout | undefined;
}

/** Restart intensity for a system's guest: at most this many restarts in the window, then it stays crashed. */
const MAX_RESTARTS = 3;
const WITHIN_MS = 60_000;
const BACKOFF = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.2 };
const DEFAULT_STOP_TIMEOUT_MS = 30_000;
/** How long the guest of a deleted system has to power off before it is quit. */
const DELETED_STOP_MS = 10_000;
const RECOVER_RETRY_MS = 1000;
const ARRIVAL_DEADLINE_MS = 15 * 60_000;

/**
 * The Hypervisor decides: it holds every local system's state machine, publishes it as meta, and
 * has one VMM per running system at `hypervisor/vmm/<id>` (under a `vmm` parent of their own, so
 * many systems never slow this mailbox: nact copies a parent's children on every message). Real
 * guests get a VMM container (a child process); simulated ones an inline VMM. A guest that ends
 * unasked, or a VMM that dies, marks the system crashed; its restart policy decides what follows.
 */
export function createHypervisor(ctx: ActorContext, deps: ServiceDeps): Actor {
  const { system, paths } = deps;
  const node = ctx.node.node;
  const clock = new ServiceClock();
  const cdb = ctx.ref(ctx.self.path.replace(/\/hypervisor$/, '/cdb'));
  const systems = new Map<string, Running>();
  const vmmParent = parsePath(`${ctx.self.path}/vmm`);
  let parent: LocalActor | undefined;
  const nics = new SystemNics(ctx, cdb);
  const disks = new SystemDisks(ctx);

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

  const consoleLog = (systemId: string) => guestFiles(paths.home, systemId).consoleLog;
  const vmmPath = (systemId: string) => parsePath(`${ctx.self.path}/vmm/${systemId}`);

  /** How QEMU guests run here: probed once, on the first QEMU start (the probe costs a boot; cached per host). */
  let accelerator: Promise<AcceleratorProbe> | undefined;
  const acceleratorFor = async (spec: SystemObject): Promise<'kvm' | 'tcg' | undefined> => {
    if (spec.driver !== 'qemu') return undefined;
    accelerator ??= probeAccelerator(guestImage(), GUEST_READY_LINE, join(homedir(), '.cache', 'acp', 'accelerator.json')).then((probe) => {
      ctx.log.info({ accelerator: probe.accelerator, why: probe.why }, 'QEMU accelerator chosen');
      deps.setNodeFact('accelerator', probe.accelerator);
      return probe;
    }, (error: unknown) => {
      // A failed probe is not kept: the next QEMU start probes again.
      accelerator = undefined;
      return { accelerator: 'tcg' as const, why: `the probe failed: ${errorMessage(error)}` };
    });
    return (await accelerator).accelerator;
  };

  /** A VMM container (child process) for a real guest, an inline VMM for a simulated one. */
  const vmmFactory = (systemId: string, entry: Running) =>
    entry.spec.driver === 'qemu'
      ? processActor(system, {
          module: vmmModule(paths.home),
          exportName: 'service',
          logLevel: deps.logLevel,
          logFile: undefined,
          socketDir: paths.run,
          onProcess: (pid, exited) => {
            if (exited) {
              releaseCgroup(node, systemId);
              return;
            }
            const placed = limitProcess(pid, node, systemId, entry.spec);
            if (!placed.ok && !cgroupWarned) {
              cgroupWarned = true;
              ctx.log.warn({ reason: placed.why }, 'VMM containers run without cgroup CPU and memory limits on this host');
            }
          },
        })
      : (vmmCtx: ActorContext) => createVmm(vmmCtx, { home: paths.home });
  let cgroupWarned = false;
  const vmmOptions = (systemId: string, entry: Running) => ({
    schema: vmmSchema,
    authority: vmmAuthority,
    forwardsUniversal: entry.spec.driver === 'qemu',
    onCrash: (error: AcpError) => {
      ctx.self.tell({ type: 'hypervisor.guest-exited', id: systemId, generation: -1, crashed: true, reason: `its VMM died: ${error.message}`, vmmDied: true });
    },
  });

  /** Spawns the VMM and starts the guest in it; the state ends running, or crashed with the reason. */
  const launch = async (systemId: string, entry: Running): Promise<void> => {
    try {
      entry.vmm = await system.spawn(vmmPath(systemId), vmmFactory(systemId, entry), vmmOptions(systemId, entry));
      const started = await ctx.ref(vmmPath(systemId)).ask<Message & { pid: number | null; vmmPid: number; accelerator: string }>(
        {
          type: 'vmm.start',
          spec: entry.spec,
          ...(entry.spec.driver === 'qemu' ? { accelerator: await acceleratorFor(entry.spec) } : {}),
          ...entry.storage,
        },
        { timeoutMs: 120_000 },
      );
      move(systemId, entry, 'started', { pid: started.pid, vmmPid: started.vmmPid, accelerator: started.accelerator });
    } catch (error) {
      const reason = errorMessage(error);
      ctx.log.warn({ system: systemId, err: reason }, 'system failed to start');
      await stopVmm(systemId, entry, 'start failed', 'stop');
      if (entry.state === 'starting') move(systemId, entry, 'crashed', { reason: `start failed: ${reason}`, pid: null, vmmPid: null });
      else if (entry.state === 'stopping' || entry.state === 'stopped') {
        throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' was stopped while it was starting; it is ${entry.state}`);
      }
      throw AcpError.from(error, 'ACP_ERR_VMM_FAILED');
    }
  };

  /**
   * Stops the VMM (a crashed one's path is released, so the next start can spawn it again).
   * `stop`: the guest must be gone (a QEMU the VMM could not stop is killed), and so are its taps.
   * `release`: the guest stays (a QEMU outlives its VMM; the next daemon adopts it), taps and all.
   */
  const stopVmm = async (systemId: string, entry: Running, reason: string, guest: 'stop' | 'release' = 'stop') => {
    const vmm = entry.vmm;
    entry.vmm = undefined;
    if (vmm?.alive) await vmm.stop(reason, 10_000).catch(() => undefined);
    system.release(`${ctx.self.path}/vmm/${systemId}`, reason);
    if (guest === 'release') return;
    if (entry.spec.driver === 'qemu') {
      const killed = killGuest(systemId, guestFiles(paths.home, systemId).runDir);
      if (killed !== undefined) ctx.log.warn({ system: systemId, pid: killed, reason }, 'its QEMU outlived its VMM where it had to go; killed');
    }
    // The guest is gone from here: so are its taps (made again by the next start or arrival).
    await nics.down(systemId, entry.spec);
    disks.forget(systemId);
  };

  const entryFor = (systemId: string): Running | undefined => systems.get(systemId);

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

  /** A new VMM takes over the QEMU this system left running (an earlier VMM's or daemon's). */
  const adoptGuest = async (systemId: string, entry: Running): Promise<{ pid: number | null; vmmPid: number; accelerator: string; status: 'running' | 'paused' }> => {
    // Its disks, so the new VMM reads their counters and changes them live; without them it still adopts.
    const storage = await disks.resolve(systemId, entry.spec).catch((error: unknown) => {
      ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'adopting without its disks: no disk stats or live disk changes until it restarts');
      return {};
    });
    entry.vmm = await system.spawn(vmmPath(systemId), vmmFactory(systemId, entry), vmmOptions(systemId, entry));
    return ctx.ref(vmmPath(systemId)).ask<Message & { pid: number | null; vmmPid: number; accelerator: string; status: 'running' | 'paused' }>({ type: 'vmm.adopt', ...storage }, { timeoutMs: 30_000 });
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
    adoptGuest,
    stopVmm,
    move,
    publish,
    scheduleRestart: (systemId, entry, reason) => scheduleRestart(systemId, entry, reason),
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
    await launch(systemId, entry);
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

  const requireEntry = (systemId: string): Running => {
    const entry = entryFor(systemId);
    if (!entry) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${systemId}' does not run on node '${node}' (it is defined or stopped here); start it first`);
    return entry;
  };

  /** The guest ended unasked, or its VMM died: crashed, then the restart policy. */
  const exited = async (systemId: string, crashed: boolean, reason: string, afterFailedRestart = false, vmmDied = false): Promise<void> => {
    const entry = entryFor(systemId);
    if (!entry) return;
    // A VMM that died leaves its QEMU running (its own session): a new VMM takes it over, and the
    // guest never notices. Only a QEMU that is gone too is a crash.
    if (vmmDied && !entry.arriving && entry.spec.driver === 'qemu' && (entry.state === 'running' || entry.state === 'paused') && findGuest(systemId, guestFiles(paths.home, systemId).runDir)?.alive) {
      await stopVmm(systemId, entry, 'its VMM died', 'release');
      try {
        const adopted = await adoptGuest(systemId, entry);
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
      scheduleRestart(systemId, entry, reason);
      return;
    }
    if (!['starting', 'running', 'paused', 'migrating'].includes(entry.state)) return;
    await stopVmm(systemId, entry, 'guest gone');
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
    scheduleRestart(systemId, entry, reason);
  };

  /** The restart policy's next try, within the intensity limit, after a backoff. */
  const scheduleRestart = (systemId: string, entry: Running, reason: string): void => {
    const verdict = checkIntensity(entry.restarts, Date.now(), MAX_RESTARTS, WITHIN_MS);
    entry.restarts = [...verdict.window];
    if (verdict.verdict === 'escalate') {
      entry.meta = { ...entry.meta, reason: `${reason}; restarted ${MAX_RESTARTS} times within ${WITHIN_MS / 1000} s, so it stays ${entry.state} (acp system start ${systemId} to try again)` };
      publish(systemId, entry);
      ctx.log.error({ system: systemId, code: 'ACP_ERR_SUPERVISOR_INTENSITY' }, 'system restarted too often; left as it is');
      return;
    }
    entry.attempt = entry.restarts.length;
    const delay = restartDelay(BACKOFF, entry.attempt, Math.random());
    ctx.log.info({ system: systemId, delayMs: delay, reason }, 'restarting the system per its policy');
    entry.retry = setTimeout(() => ctx.self.tell({ type: 'hypervisor.restart-due', id: systemId, attempt: entry.attempt }), delay);
    entry.retry.unref();
  };

  /** The address this node's guests are migrated to: its agent's host. */
  const migrationHost = (): string => {
    const listen = deps.config.agent.listen;
    return listen ? parseHostPort(listen, 'the agent address').host : '127.0.0.1';
  };

  /**
   * The host to send a guest to at `to`: the one it named, unless that is a wildcard (its agent
   * listens on every address), then the host this cluster reaches its agent at.
   */
  const reachable = async (to: string, host: string): Promise<string> => {
    if (host !== '0.0.0.0' && host !== '::') return host;
    const known = await cdb.ask<Message & { record: { value: { agent?: unknown } } }>({ type: 'cdb.get', key: objectKey('node', to) }).catch(() => undefined);
    const agent = known?.record.value.agent;
    const agentHost = typeof agent === 'string' ? parseHostPort(agent, `the agent address of ${to}`).host : undefined;
    if (agentHost === undefined || !isMigrationHost(agentHost) || agentHost === '0.0.0.0' || agentHost === '::') {
      throw new AcpError('ACP_ERR_NODE_UNREACHABLE', `node '${to}' waits for the guest on every address (${host}) and no address of its agent is known here; give its agent a specific listen address`);
    }
    return agentHost;
  };

  /** Disks (and the CD-ROM) must be on a pool marked shared: the target reads the same volume. */
  const checkMigratable = async (systemId: string, spec: SystemObject): Promise<void> => {
    for (const disk of [...spec.disks, ...(spec.iso ? [spec.iso] : [])]) {
      const pool = await cdb.ask<Message & { record: { value: { shared?: boolean } } }>({ type: 'cdb.get', key: objectKey('storage/pool', disk.pool) }).catch(() => undefined);
      if (!pool?.record.value.shared) {
        throw new AcpError('ACP_ERR_SYSTEM_NOT_MIGRATABLE', `system '${systemId}' has a disk on pool '${disk.pool}', which is not marked shared; only systems whose disks are all on shared pools migrate`);
      }
    }
  };

  const migrate = async (systemId: string, to: string): Promise<Message> => {
    const entry = requireEntry(systemId);
    if (!isValidName(to)) throw new AcpError('ACP_ERR_NAME_INVALID', `--to must name a node, not '${to}'`);
    if (to === node) throw new AcpError('ACP_ERR_TARGET_IS_SELF', `system '${systemId}' already runs on ${node}`);
    next(systemId, entry.state, 'migrate');
    await checkMigratable(systemId, entry.spec);
    const target = ctx.ref(`acp://${ctx.node.cluster}/${to}/hypervisor`);
    const vmm = ctx.ref(vmmPath(systemId));
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
      const address = incoming.data.address ? { ...incoming.data.address, host: await reachable(to, incoming.data.address.host) } : undefined;
      await vmm.ask({ type: 'vmm.migrate', target: { node: to, ...(address ? { address } : {}) } }, { timeoutMs: 600_000 });
      moved = true;
      const arrived = await target.ask<Message & SystemMeta>({ type: 'system.incoming-done', id: systemId }, { timeoutMs: 120_000 });
      // The target runs it: only now does the CDB say the system lives there, and this copy go.
      await cdb.ask({ type: 'cdb.put', key: objectKey('system', systemId), value: { ...entry.spec, node: to } }, { timeoutMs: 15_000 });
      await vmm.ask({ type: 'vmm.finish-migration' }, { timeoutMs: 30_000 }).catch((error: unknown) => ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'the source copy did not quit cleanly; its VMM is stopped'));
      await stopVmm(systemId, entry, `migrated to ${to}`);
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
  };

  const incoming = async (systemId: string, spec: SystemObject, from: string, transferred: unknown, guestAccelerator: 'kvm' | 'tcg' | undefined): Promise<Message> => {
    const existing = entryFor(systemId);
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
    systems.set(systemId, entry);
    publish(systemId, entry);
    try {
      // The taps are here before the guest arrives: it keeps its network across the move; its disks are resolved to this node's files.
      entry.storage = await disks.resolve(systemId, entry.spec);
      await nics.up(systemId, entry.spec);
      entry.vmm = await system.spawn(vmmPath(systemId), vmmFactory(systemId, entry), vmmOptions(systemId, entry));
      const ready = await ctx.ref(vmmPath(systemId)).ask<Message & { address?: { host: string; port: number }; pid: number | null; vmmPid: number; accelerator: string }>(
        {
          type: 'vmm.incoming',
          spec: entry.spec,
          host: migrationHost(),
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
      await stopVmm(systemId, entry, 'incoming failed');
      move(systemId, entry, 'migrated-away', { reason: `arrival from ${from} failed: ${errorMessage(error)}` });
      throw error;
    }
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

  /** This hypervisor itself, or one of its VMMs (their reports). */
  const view = (systemId: string, entry: Running) => ({ id: systemId, driver: entry.spec.driver, ha: entry.spec.ha, arriving: entry.arriving === true, ...entry.meta });

  /** Node and guest stats, collected in the worker pool, written as stats/ every `statsMs`. */
  let samples: Record<string, CpuSample> = {};
  let collecting = false;
  let statsTimer: NodeJS.Timeout | undefined;
  const collectStats = async (): Promise<void> => {
    if (collecting) return;
    collecting = true;
    try {
      const live = [...systems].filter(([, entry]) => entry.state === 'running' || entry.state === 'paused');
      const guests = live.filter(([, entry]) => entry.meta.pid !== null).map(([systemId, entry]) => ({ id: systemId, pid: entry.meta.pid! }));
      const collected = await ctx.runTask<StatsOutput>({ module: new URL('../../adapters/stats-task.js', import.meta.url).href, name: 'collect', input: { guests, previous: samples } });
      samples = collected.samples;
      // Each system's NIC counters, as the Network service last read them (none when it cannot answer).
      const nicStats = await ctx
        .ref(ctx.self.path.replace(/\/hypervisor$/, '/network'))
        .ask<Message & { systems: Record<string, unknown[]> }>({ type: 'network.nic-stats' }, { timeoutMs: 2000 })
        .then((reply) => reply.systems, () => ({}) as Record<string, unknown[]>);
      // Each QEMU guest's disk counters (query-blockstats through its VMM), with rates.
      const blockStats: Record<string, DiskStats[]> = {};
      await Promise.all(
        live
          .filter(([, entry]) => entry.spec.driver === 'qemu' && (entry.storage?.disks?.length ?? 0) > 0)
          .map(async ([systemId]) => {
            const reply = await ctx.ref(vmmPath(systemId)).ask<Message & { disks: DiskStats[] }>({ type: 'vmm.block-stats' }, { timeoutMs: 2000 }).catch(() => undefined);
            if (reply) blockStats[systemId] = disks.rates(systemId, reply.disks, Date.now());
          }),
      );
      const nodeMeta = await cdb.ask<Message & { record: { value: { eventLoopDelayMs?: unknown } } }>({ type: 'cdb.get', key: metaKey('node', node, node) }).catch(() => undefined);
      const at = new Date().toISOString();
      const ops: { op: 'put'; key: string; value: unknown }[] = [{ op: 'put', key: `stats/node/${node}@${node}`, value: { ...collected.node, eventLoopDelayMs: nodeMeta?.record.value.eventLoopDelayMs ?? null, at } }];
      // Only those still running once the numbers are in: a stop meanwhile removed their stats.
      for (const [systemId, entry] of live.filter(([, still]) => still.state === 'running' || still.state === 'paused')) {
        const measured = collected.guests[systemId];
        // A simulated guest has no process: it reports no load rather than an invented one.
        const value = measured ?? { cpuPercent: 0, rssBytes: 0, readBytes: null, writeBytes: null, simulated: entry.spec.driver === 'sim' };
        const nics = nicStats[systemId];
        const diskStats = blockStats[systemId];
        ops.push({ op: 'put', key: `stats/system/${systemId}@${node}`, value: { ...value, ...(nics ? { nics } : {}), ...(diskStats ? { disks: diskStats } : {}), state: entry.state, at } });
      }
      for (let offset = 0; offset < ops.length; offset += 1000) await cdb.ask({ type: 'cdb.batch', ops: ops.slice(offset, offset + 1000) }, { timeoutMs: 10_000 });
    } catch (error) {
      ctx.log.debug({ err: errorMessage(error) }, 'stats collection failed; the next one retries');
    } finally {
      collecting = false;
    }
  };

  return {
    async started() {
      // The VMMs' parent: its own (quiet) mailbox carries the family, not the hypervisor's.
      parent = await system.spawn(vmmParent, () => ({ receive: () => ({ type: 'vmm.parent' }) }));
      // Not awaited: the watch retries by itself, and the node's boot need not wait for it.
      void feed.start();
      ctx.self.tell({ type: 'hypervisor.recover' });
      if (deps.config.statsMs > 0) {
        statsTimer = setInterval(() => void collectStats(), deps.config.statsMs);
        statsTimer.unref();
      }
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
        case 'system.console': {
          const read = readConsole(consoleLog(parsed.id), parsed.offset, parsed.maxBytes);
          if (read === undefined) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${parsed.id}' has no console log on node '${node}' (it has not run here)`);
          return { type: 'system.console', id: parsed.id, node, ...read };
        }
        case 'system.console.input': {
          const entry = requireEntry(parsed.id);
          if (entry.state !== 'running' && entry.state !== 'paused') throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `cannot type into system '${parsed.id}': it is ${entry.state} on ${node} (start it first)`);
          return replyLater(ctx.ref(vmmPath(parsed.id)).ask({ type: 'vmm.console.input', data: parsed.data }, { timeoutMs: 10_000 }).then(() => ({ type: 'system.console.sent', id: parsed.id, node })));
        }
        case 'system.display': {
          const entry = requireEntry(parsed.id);
          if (entry.spec.display !== 'vnc' || entry.spec.driver !== 'qemu') throw new AcpError('ACP_ERR_SYSTEM_NO_DISPLAY', `system '${parsed.id}' has no display (give it display: 'vnc' and the qemu driver, then restart it)`);
          if (entry.state !== 'running' && entry.state !== 'paused') throw new AcpError('ACP_ERR_SYSTEM_NO_DISPLAY', `system '${parsed.id}' is ${entry.state} on ${node}: its display shows while it runs`);
          return { type: 'system.display', id: parsed.id, node, display: 'vnc' };
        }
        case 'system.disk-change': {
          const entry = requireEntry(parsed.id);
          if (entry.state !== 'running' && entry.state !== 'paused') throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `cannot change a disk of system '${parsed.id}' while it is ${entry.state} on ${node} (running or paused only)`);
          return replyLater(ctx.ref(vmmPath(parsed.id)).ask({ type: 'vmm.disk-change', volume: parsed.volume, change: parsed.change }, { timeoutMs: 70_000 }).then(() => ({ type: 'system.disk-changed', id: parsed.id, node, volume: parsed.volume })));
        }
        case 'system.migrate':
          return replyLater(migrate(parsed.id, parsed.to));
        case 'system.incoming':
          return replyLater(incoming(parsed.id, parsed.spec, parsed.from, parsed.transferred, parsed.accelerator));
        case 'system.incoming-done': {
          const entry = requireEntry(parsed.id);
          const arrive = async () => {
            await ctx.ref(vmmPath(parsed.id)).ask({ type: 'vmm.await-running', timeoutMs: 60_000 }, { timeoutMs: 70_000 });
            clearTimeout(entry.retry);
            entry.arriving = false;
            move(parsed.id, entry, 'migrated');
            return { type: 'system.arrived', ...view(parsed.id, entry) };
          };
          return replyLater(arrive());
        }
        case 'system.incoming-abort': {
          const entry = entryFor(parsed.id);
          // Only a copy still arriving is dropped; one that runs here already stays.
          if (!entry || entry.state !== 'migrating' || !entry.arriving) return { type: 'ok', dropped: false };
          entry.arriving = false;
          clearTimeout(entry.retry);
          const abandon = async () => {
            await stopVmm(parsed.id, entry, 'migration abandoned');
            move(parsed.id, entry, 'migrated-away', { reason: parsed.reason, pid: null, vmmPid: null });
            return { type: 'ok', dropped: true };
          };
          return replyLater(abandon());
        }
        case 'hypervisor.guest-exited':
          void exited(parsed.id, parsed.crashed, parsed.reason, false, parsed.vmmDied ?? false).catch((error: unknown) => ctx.log.warn({ system: parsed.id, err: errorMessage(error) }, 'handling a guest exit failed'));
          return undefined;
        case 'hypervisor.recover':
          void recovery.recover().catch((error: unknown) => {
            ctx.log.warn({ err: errorMessage(error) }, 'could not read the systems to recover yet; retrying');
            setTimeout(() => ctx.self.tell({ type: 'hypervisor.recover' }), RECOVER_RETRY_MS).unref();
          });
          return undefined;
        case 'system.stop-all': {
          const live = [...systems].filter(([, entry]) => ['starting', 'running', 'paused'].includes(entry.state) && !entry.arriving).map(([systemId]) => systemId);
          const stopAll = async () => {
            const results = await Promise.allSettled(live.map((systemId) => stop(systemId, false, parsed.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS, 'stopped with its node (acp down --stop-systems)')));
            const failed = results.flatMap((result, index) => (result.status === 'rejected' ? [{ id: live[index]!, error: errorMessage(result.reason) }] : []));
            return { type: 'system.stopped-all', stopped: live.filter((systemId) => !failed.some((failure) => failure.id === systemId)), failed };
          };
          return replyLater(stopAll());
        }
        case 'hypervisor.restart-due': {
          const entry = entryFor(parsed.id);
          if (!entry || entry.attempt !== parsed.attempt || (entry.state !== 'crashed' && entry.state !== 'stopped')) return undefined;
          void start(parsed.id).catch((error: unknown) => {
            ctx.log.warn({ system: parsed.id, err: errorMessage(error) }, 'restart failed; the policy tries again');
            void exited(parsed.id, true, `restart failed: ${errorMessage(error)}`, true);
          });
          return undefined;
        }
        default: {
          const unreachable: never = parsed;
          return unreachable;
        }
      }
    },
    async stopping(reason) {
      clearInterval(statsTimer);
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
      await parent?.stop(reason, 10_000);
    },
  };
}

const thisHypervisor = { service: 'hypervisor', nodes: 'self' } as const;

/** Who may send what to the hypervisor (see runtime/authority.ts). */
export const hypervisorAuthority: AuthorityTable = {
  'service.info': 'read',
  'system.status': 'read',
  'system.console': 'read',
  'system.console.input': 'operate',
  'system.display': 'operate',
  'system.start': 'operate',
  'system.ha-start': { internal: [{ service: 'ha', nodes: 'self' }] },
  'system.ha-fence': { internal: [{ service: 'ha', nodes: 'self' }] },
  'system.stop': 'operate',
  'system.pause': 'operate',
  'system.resume': 'operate',
  'system.restart': 'operate',
  'system.reset': 'operate',
  'system.migrate': 'operate',
  // Migration between hypervisors: the source node's hypervisor drives the target's.
  'system.incoming': { internal: [{ service: 'hypervisor', nodes: 'peers' }] },
  'system.incoming-done': { internal: [{ service: 'hypervisor', nodes: 'peers' }] },
  'system.incoming-abort': { internal: [{ service: 'hypervisor', nodes: 'any' }] },
  // A VMM reports its guest's exit; the hypervisor itself, a VMM that died.
  'hypervisor.guest-exited': { internal: [{ service: 'hypervisor/vmm', nodes: 'self', below: true }, thisHypervisor] },
  'hypervisor.restart-due': { internal: [thisHypervisor] },
  'hypervisor.recover': { internal: [thisHypervisor] },
  'system.stop-all': 'operate',
  // A volume's pool may be shared: the Storage service of any node changes a disk where its guest runs.
  'system.disk-change': { internal: [{ service: 'storage', nodes: 'any' }] },
};

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
