/**
 * The VMMs of this node's systems, at `hypervisor/vmm/<id>` under a `vmm` parent of their own:
 * a VMM container (a child process) for a real guest, an inline VMM for a simulated one. Spawning
 * one and starting, adopting or stopping its guest; the QEMU accelerator, probed once.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Actor, ActorContext } from '../../runtime/actor.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { parsePath } from '../../runtime/path.js';
import { processActor } from '../../runtime/process.js';
import type { ServiceDeps } from '../../runtime/services.js';
import type { LocalActor } from '../../runtime/system.js';
import { limitProcess, releaseCgroup } from '../../adapters/cgroup.js';
import { killGuest } from '../../adapters/drivers/qemu.js';
import { probeAccelerator, type AcceleratorProbe } from '../../adapters/drivers/accelerator.js';
import { guestImage, GUEST_READY_LINE } from '../../adapters/guest-image.js';
import type { SystemObject } from '../model.js';
import { createVmm, guestFiles, vmmAuthority, vmmModule, vmmSchema } from '../vmm/index.js';
import type { SystemDisks, SystemStorage } from './disks.js';
import type { SystemNics } from './nics.js';

/** The hypervisor's parts that its VMMs use. */
export interface VmmHost {
  readonly ctx: ActorContext;
  readonly deps: ServiceDeps;
  readonly nics: SystemNics;
  readonly disks: SystemDisks;
  /** The inline VMM of a simulated guest (createVmm unless a test puts another in its place). */
  readonly simVmm?: (ctx: ActorContext, home: string) => Actor;
}

/** What a VMM answers once its guest runs. */
export interface Launched {
  pid: number | null;
  vmmPid: number;
  accelerator: string;
}

/**
 * Pure I/O for the hypervisor: none of this changes a system's entry (the hypervisor does that in
 * its receive, from what these return). The VMM actors' handles are this side's own.
 */
export class GuestVmms {
  private parent: LocalActor | undefined;
  private readonly handles = new Map<string, LocalActor>();
  /** How QEMU guests run here: probed once, on the first QEMU start (the probe costs a boot; cached per host). */
  private accelerator: Promise<AcceleratorProbe> | undefined;
  private cgroupWarned = false;

  constructor(private readonly h: VmmHost) {}

  path(systemId: string) {
    return parsePath(`${this.h.ctx.self.path}/vmm/${systemId}`);
  }

  /** The VMMs' parent: its own (quiet) mailbox carries the family, not the hypervisor's. */
  async spawnParent(): Promise<void> {
    this.parent = await this.h.deps.system.spawn(parsePath(`${this.h.ctx.self.path}/vmm`), () => ({ receive: () => ({ type: 'vmm.parent' }) }));
  }

  async stopParent(reason: string): Promise<void> {
    await this.parent?.stop(reason, 10_000);
  }

  private async acceleratorFor(spec: SystemObject): Promise<'kvm' | 'tcg' | undefined> {
    if (spec.driver !== 'qemu') return undefined;
    const { ctx, deps } = this.h;
    this.accelerator ??= probeAccelerator(guestImage(), GUEST_READY_LINE, join(homedir(), '.cache', 'acp', 'accelerator.json')).then((probe) => {
      ctx.log.info({ accelerator: probe.accelerator, why: probe.why }, 'QEMU accelerator chosen');
      deps.setNodeFact('accelerator', probe.accelerator);
      return probe;
    }, (error: unknown) => {
      // A failed probe is not kept: the next QEMU start probes again.
      this.accelerator = undefined;
      return { accelerator: 'tcg' as const, why: `the probe failed: ${errorMessage(error)}` };
    });
    return (await this.accelerator).accelerator;
  }

  /** A VMM container (child process) for a real guest, an inline VMM for a simulated one. */
  private factory(systemId: string, spec: SystemObject) {
    const { ctx, deps } = this.h;
    const node = ctx.node.node;
    const simVmm = this.h.simVmm ?? ((vmmCtx: ActorContext, home: string) => createVmm(vmmCtx, { home }));
    return spec.driver === 'qemu'
      ? processActor(deps.system, {
          module: vmmModule(deps.paths.home),
          exportName: 'service',
          logLevel: deps.logLevel,
          logFile: undefined,
          socketDir: deps.paths.run,
          onProcess: (pid, exited) => {
            if (exited) {
              releaseCgroup(node, systemId);
              return;
            }
            const placed = limitProcess(pid, node, systemId, spec);
            if (!placed.ok && !this.cgroupWarned) {
              this.cgroupWarned = true;
              ctx.log.warn({ reason: placed.why }, 'VMM containers run without cgroup CPU and memory limits on this host');
            }
          },
        })
      : (vmmCtx: ActorContext) => simVmm(vmmCtx, deps.paths.home);
  }

  private options(systemId: string, spec: SystemObject) {
    return {
      schema: vmmSchema,
      authority: vmmAuthority,
      forwardsUniversal: spec.driver === 'qemu',
      onCrash: (error: AcpError) => {
        this.h.ctx.self.tell({ type: 'hypervisor.guest-exited', id: systemId, generation: -1, crashed: true, reason: `its VMM died: ${error.message}`, vmmDied: true });
      },
    };
  }

  /** Whether the system has a VMM here. */
  has(systemId: string): boolean {
    return this.handles.has(systemId);
  }

  /** Spawns the system's VMM (its guest not started yet). */
  async spawn(systemId: string, spec: SystemObject): Promise<void> {
    this.handles.set(systemId, await this.h.deps.system.spawn(this.path(systemId), this.factory(systemId, spec), this.options(systemId, spec)));
  }

  /** Spawns the VMM and starts the guest in it; a start that fails leaves no VMM behind (its error is thrown). */
  async launch(systemId: string, spec: SystemObject, storage: SystemStorage | undefined): Promise<Launched> {
    const { ctx } = this.h;
    try {
      await this.spawn(systemId, spec);
      return await ctx.ref(this.path(systemId)).ask<Message & Launched>(
        {
          type: 'vmm.start',
          spec,
          ...(spec.driver === 'qemu' ? { accelerator: await this.acceleratorFor(spec) } : {}),
          ...storage,
        },
        { timeoutMs: 120_000 },
      );
    } catch (error) {
      ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'system failed to start');
      await this.stop(systemId, spec, 'start failed', 'stop');
      throw AcpError.from(error, 'ACP_ERR_VMM_FAILED');
    }
  }

  /**
   * Stops the VMM (a crashed one's path is released, so the next start can spawn it again).
   * `stop`: the guest must be gone (a QEMU the VMM could not stop is killed), and so are its taps.
   * `release`: the guest stays (a QEMU outlives its VMM; the next daemon adopts it), taps and all.
   */
  async stop(systemId: string, spec: SystemObject, reason: string, guest: 'stop' | 'release' = 'stop'): Promise<void> {
    const { ctx, deps } = this.h;
    const vmm = this.handles.get(systemId);
    this.handles.delete(systemId);
    if (vmm?.alive) await vmm.stop(reason, 10_000).catch(() => undefined);
    deps.system.release(`${ctx.self.path}/vmm/${systemId}`, reason);
    if (guest === 'release') return;
    if (spec.driver === 'qemu') {
      const killed = killGuest(systemId, guestFiles(deps.paths.home, systemId).runDir);
      if (killed !== undefined) ctx.log.warn({ system: systemId, pid: killed, reason }, 'its QEMU outlived its VMM where it had to go; killed');
    }
    // The guest is gone from here: so are its taps (made again by the next start or arrival).
    await this.h.nics.down(systemId, spec);
    this.h.disks.forget(systemId);
  }

  /** A new VMM takes over the QEMU this system left running (an earlier VMM's or daemon's). */
  async adopt(systemId: string, spec: SystemObject): Promise<Launched & { status: 'running' | 'paused' }> {
    const { ctx } = this.h;
    // Its disks, so the new VMM reads their counters and changes them live; without them it still adopts.
    const storage = await this.h.disks.resolve(systemId, spec).catch((error: unknown) => {
      ctx.log.warn({ system: systemId, err: errorMessage(error) }, 'adopting without its disks: no disk stats or live disk changes until it restarts');
      return {};
    });
    await this.spawn(systemId, spec);
    return ctx.ref(this.path(systemId)).ask<Message & { pid: number | null; vmmPid: number; accelerator: string; status: 'running' | 'paused' }>({ type: 'vmm.adopt', ...storage }, { timeoutMs: 30_000 });
  }
}
