import { isAbsolute, join } from 'node:path';
import { z } from 'zod';
import { isMigrationHost, type GuestHandle, type GuestPaths, type MigrationCredentials, type SystemDriver } from '../../adapters/drivers/driver.js';
import { simDriver } from '../../adapters/drivers/sim.js';
import type { Actor, ActorContext, ServiceDefinition } from '../../runtime/actor.js';
import type { AuthorityTable } from '../../runtime/authority.js';
import { homePaths } from '../../runtime/config.js';
import { AcpError } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { assertName, isValidName, NAME_PATTERN } from '../../runtime/path.js';
import { serviceInfoSchema, ServiceCounters } from '../kit.js';
import { systemObjectSchema } from '../model.js';
import { resolvedCdromSchema, resolvedDiskSchema } from '../storage/schema.js';
import { prepareGuestDirs } from '../../adapters/guest-state.js';
import { fenceGuardSocket } from '../../adapters/fence-guard-protocol.js';

const nodeName = z.string().max(63).refine(isValidName, 'must be a node name: 1-63 characters of a-z, 0-9, ".", "_" or "-"');
const migrationHost = z.string().max(253).refine(isMigrationHost, 'must be an IPv4 or IPv6 address or a host name');
const accelerator = z.enum(['kvm', 'tcg']).optional();
/** The system's disks and CD-ROM, as the node's Storage service resolved them (files checked to be absolute paths). */
const disks = z.array(resolvedDiskSchema).max(64).optional();
const cdrom = resolvedCdromSchema.optional();
const liveDiskChangeSchema = z.discriminatedUnion('action', [
  z.strictObject({ action: z.literal('resize'), sizeBytes: z.number().int().min(1).max(2 ** 53 - 1) }),
  z.strictObject({ action: z.enum(['snapshot-create', 'snapshot-delete']), snapshot: z.string().regex(NAME_PATTERN) }),
]);

/**
 * A VMM's messages name no paths and no URIs: its console log and run directory come from the
 * system id and the home it was started with, and a migration names a node and its address,
 * from which the driver builds the (TLS) URI itself.
 */
export const vmmSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  z.strictObject({ type: z.literal('vmm.start'), spec: systemObjectSchema, accelerator, disks, cdrom }),
  z.strictObject({ type: z.literal('vmm.stop'), graceful: z.boolean().default(true), timeoutMs: z.number().int().min(0).max(600_000).default(30_000) }),
  z.strictObject({ type: z.literal('vmm.pause') }),
  z.strictObject({ type: z.literal('vmm.resume') }),
  z.strictObject({ type: z.literal('vmm.reset') }),
  /** What a console's user typed, for the guest's serial port. */
  z.strictObject({ type: z.literal('vmm.console.input'), data: z.string().min(1).max(4096) }),
  z.strictObject({ type: z.literal('vmm.status') }),
  /** Target of a migration: wait for the guest from node `from`, listening on `host`; answers the address to send it to. */
  z.strictObject({ type: z.literal('vmm.incoming'), spec: systemObjectSchema, host: migrationHost, from: nodeName, transferred: z.unknown(), accelerator, disks, cdrom }),
  /** Grow a disk, or take or drop an internal snapshot of it, while the guest runs (`volume` is `<pool>/<name>`). */
  z.strictObject({ type: z.literal('vmm.disk-change'), volume: z.string().max(127), change: liveDiskChangeSchema }),
  /** Each disk's I/O counters (query-blockstats). */
  z.strictObject({ type: z.literal('vmm.block-stats') }),
  z.strictObject({ type: z.literal('vmm.await-running'), timeoutMs: z.number().int().min(1).max(600_000).default(60_000) }),
  /** Source of a migration: what a simulated guest carries over. */
  z.strictObject({ type: z.literal('vmm.transferable') }),
  /**
   * Source of a migration: send the guest to node `target.node` at `target.address` (none for a
   * simulated guest); once it is there, this VMM's guest is gone.
   */
  z.strictObject({
    type: z.literal('vmm.migrate'),
    target: z.strictObject({ node: nodeName, address: z.strictObject({ host: migrationHost, port: z.number().int().min(1).max(65535) }).optional() }),
  }),
  /** Source of a migration, once the target runs: this copy of the guest goes. */
  z.strictObject({ type: z.literal('vmm.finish-migration') }),
  /** Takes over this system's QEMU left running by an earlier VMM (found by its pid file and QMP socket). */
  z.strictObject({ type: z.literal('vmm.adopt'), disks, cdrom }),
]);
export type VmmMessage = z.input<typeof vmmSchema>;

/** What a VMM tells its hypervisor when its guest ends without being asked to. */
export interface GuestExited extends Message {
  type: 'hypervisor.guest-exited';
  id: string;
  generation: number;
  crashed: boolean;
  reason: string;
}

async function driverFor(name: string): Promise<SystemDriver> {
  if (name === 'sim') return simDriver;
  if (name === 'qemu') return (await import('../../adapters/drivers/qemu.js')).qemuDriver;
  throw new AcpError('ACP_ERR_SCHEMA_REJECTED', `unknown driver '${name}' (use qemu or sim)`);
}

/** A system's files on a node, from its id and the node's home only: `<home>/log/systems/<id>.console.log`, `<home>/run/vmm/<id>`. */
export function guestFiles(home: string, id: string): { consoleLog: string; runDir: string } {
  assertName(id, 'system');
  const paths = homePaths(home);
  return { consoleLog: join(paths.log, 'systems', `${id}.console.log`), runDir: join(paths.run, 'vmm', id) };
}

/**
 * The module a VMM container loads, with the node's home in its URL: the daemon fixes it when it
 * spawns the container, and no message can change it afterwards.
 */
export function vmmModule(home: string): string {
  const url = new URL(import.meta.url);
  url.search = '';
  url.searchParams.set('home', home);
  return url.href;
}

/** The home this module was loaded with (see vmmModule). */
function moduleHome(): string {
  const home = new URL(import.meta.url).searchParams.get('home');
  if (!home || !isAbsolute(home)) throw new AcpError('ACP_ERR_PROCESS_START_FAILED', 'a VMM container is started by its hypervisor, with the node\'s home in its module URL (vmmModule)');
  return home;
}

export interface VmmOptions {
  /** The node's home: where the guest's console log and run directory are, and its certificates. */
  readonly home: string;
}

/**
 * A VMM: runs one system's guest through its driver and answers for it. The hypervisor spawns
 * one per running system at `hypervisor/vmm/<id>`: in a child process of its own for real guests,
 * inline for simulated ones. When the guest ends unasked, the VMM tells the hypervisor.
 */
export function createVmm(ctx: ActorContext, options: VmmOptions): Actor {
  const id = assertName(ctx.path.segments.at(-1) ?? '', 'system');
  const hypervisor = ctx.ref(ctx.self.path.replace(/\/vmm\/[^/]+$/, ''));
  const counters = new ServiceCounters();
  const files = guestFiles(options.home, id);
  const home = homePaths(options.home);
  const credentials: MigrationCredentials = { node: ctx.node.node, caCert: home.caCert, cert: home.nodeCert, key: home.nodeKey };
  let guest: GuestHandle | undefined;
  let stopping = false;

  /** The guest's paths (their directories made, private). */
  const prepare = (accelerator: 'kvm' | 'tcg' | undefined, storage: Pick<GuestPaths, 'disks' | 'cdrom'> = {}): GuestPaths => {
    prepareGuestDirs(files.runDir, files.consoleLog);
    return { ...files, guardSocket: fenceGuardSocket(home.run), ...(accelerator ? { accelerator } : {}), ...(storage.disks ? { disks: storage.disks } : {}), ...(storage.cdrom ? { cdrom: storage.cdrom } : {}) };
  };

  /** This VMM's guest from now on; when it ends unasked, the hypervisor hears of it. */
  const adopt = (handle: GuestHandle) => {
    guest = handle;
    void handle.exited.then((exit) => {
      if (guest === handle) guest = undefined;
      if (stopping) return;
      const report: GuestExited = { type: 'hypervisor.guest-exited', id, generation: ctx.generation, crashed: exit.crashed, reason: exit.reason };
      hypervisor.tell(report);
    });
  };

  const requireGuest = (): GuestHandle => {
    if (!guest) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${id}' has no running guest in its VMM`);
    return guest;
  };

  return {
    async receive(message) {
      counters.handled += 1;
      const parsed = vmmSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return counters.info(`vmm/${id}`, `VMM of system ${id}`, ctx);
        case 'vmm.start': {
          if (guest) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${id}' already runs in this VMM`);
          const driver = await driverFor(parsed.spec.driver);
          const started = await driver.start(id, parsed.spec, prepare(parsed.accelerator, parsed));
          adopt(started);
          return { type: 'vmm.started', id, pid: started.pid ?? null, vmmPid: process.pid, accelerator: started.accelerator };
        }
        case 'vmm.incoming': {
          if (guest) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${id}' already runs in this VMM`);
          const driver = await driverFor(parsed.spec.driver);
          const incoming = await driver.incoming(id, parsed.spec, prepare(parsed.accelerator, parsed), { host: parsed.host, from: parsed.from }, credentials, parsed.transferred);
          adopt(incoming.handle);
          return { type: 'vmm.incoming', id, ...(incoming.address ? { address: incoming.address } : {}), pid: incoming.handle.pid ?? null, vmmPid: process.pid, accelerator: incoming.handle.accelerator };
        }
        case 'vmm.await-running':
          await requireGuest().awaitRunning(parsed.timeoutMs);
          return { type: 'vmm.running', id };
        case 'vmm.transferable':
          return { type: 'vmm.transferable', id, state: requireGuest().transferable() };
        case 'vmm.migrate':
          // The guest's state is at the target; this copy stays paused until the hypervisor
          // knows the target runs (vmm.finish-migration), or resumes it if the move failed.
          await requireGuest().migrate(parsed.target, credentials);
          return { type: 'vmm.migrated', id };
        case 'vmm.finish-migration': {
          const running = requireGuest();
          stopping = true;
          await running.stop(false, 0);
          guest = undefined;
          return { type: 'vmm.finished', id };
        }
        case 'vmm.stop': {
          const running = requireGuest();
          stopping = true;
          await running.stop(parsed.graceful, parsed.timeoutMs);
          guest = undefined;
          return { type: 'vmm.stopped', id };
        }
        case 'vmm.pause':
          await requireGuest().pause();
          return { type: 'vmm.paused', id };
        case 'vmm.resume':
          await requireGuest().resume();
          return { type: 'vmm.resumed', id };
        case 'vmm.reset':
          await requireGuest().reset();
          return { type: 'vmm.reset', id };
        case 'vmm.console.input':
          await requireGuest().consoleInput(parsed.data);
          return { type: 'vmm.console.sent', id, bytes: Buffer.byteLength(parsed.data) };
        case 'vmm.block-stats': {
          const running = requireGuest();
          return { type: 'vmm.block-stats', id, disks: running.blockStats ? await running.blockStats() : [] };
        }
        case 'vmm.disk-change': {
          const running = requireGuest();
          if (!running.changeDisk) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${id}' has no disks in this VMM (a simulated guest, or one adopted when its disks could not be resolved); stop and start it to change ${parsed.volume} while it runs`);
          await running.changeDisk(parsed.volume, parsed.change);
          return { type: 'vmm.disk-changed', id, volume: parsed.volume };
        }
        case 'vmm.adopt': {
          if (guest) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${id}' already runs in this VMM`);
          const { adoptQemu } = await import('../../adapters/drivers/qemu.js');
          const adopted = await adoptQemu(id, prepare(undefined, parsed));
          adopt(adopted.handle);
          return { type: 'vmm.adopted', id, pid: adopted.handle.pid ?? null, vmmPid: process.pid, accelerator: adopted.handle.accelerator, status: adopted.status };
        }
        case 'vmm.status':
          return { type: 'vmm.status', id, running: guest !== undefined, pid: guest?.pid ?? null, vmmPid: process.pid, accelerator: guest?.accelerator ?? null };
        default: {
          const unreachable: never = parsed;
          return unreachable;
        }
      }
    },
    async stopping() {
      stopping = true;
      // A QEMU outlives its container (the daemon going, the hypervisor restarting): it is let go
      // of, and adopted by the next VMM. A guest that cannot outlive it (sim) goes with it. The
      // hypervisor stops a guest that must go (vmm.stop) before it stops this VMM.
      if (guest?.release) guest.release();
      else await guest?.stop(false, 0).catch(() => undefined);
      guest = undefined;
    },
  };
}

const fromItsHypervisor = { internal: [{ service: 'hypervisor', nodes: 'self' }] } as const;

/**
 * A VMM takes orders from its node's hypervisor only: nobody else, not even the node's own
 * administrator, may drive a guest's QEMU directly (a migration target, say).
 */
export const vmmAuthority: AuthorityTable = {
  'service.info': 'read',
  'vmm.start': fromItsHypervisor,
  'vmm.stop': fromItsHypervisor,
  'vmm.pause': fromItsHypervisor,
  'vmm.resume': fromItsHypervisor,
  'vmm.reset': fromItsHypervisor,
  'vmm.console.input': fromItsHypervisor,
  'vmm.status': fromItsHypervisor,
  'vmm.incoming': fromItsHypervisor,
  'vmm.await-running': fromItsHypervisor,
  'vmm.transferable': fromItsHypervisor,
  'vmm.migrate': fromItsHypervisor,
  'vmm.finish-migration': fromItsHypervisor,
  'vmm.block-stats': fromItsHypervisor,
  'vmm.disk-change': fromItsHypervisor,
  'vmm.adopt': fromItsHypervisor,
};

export const service: ServiceDefinition<unknown> = {
  name: 'vmm',
  description: 'VMM: runs one system through its driver',
  schema: vmmSchema,
  authority: vmmAuthority,
  isolations: ['process', 'inline'],
  create: (ctx) => createVmm(ctx, { home: moduleHome() }),
};
