import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import type { GuestHandle, SystemDriver } from '../../adapters/drivers/driver.js';
import { simDriver } from '../../adapters/drivers/sim.js';
import type { Actor, ActorContext, ServiceDefinition } from '../../runtime/actor.js';
import type { AuthorityTable } from '../../runtime/authority.js';
import { AcpError } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { serviceInfoSchema, ServiceClock } from '../kit.js';
import { systemObjectSchema } from '../model.js';

export const vmmSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  z.strictObject({
    type: z.literal('vmm.start'),
    spec: systemObjectSchema,
    consoleLog: z.string().min(1).max(4096),
    runDir: z.string().min(1).max(4096),
    accelerator: z.enum(['kvm', 'tcg']).optional(),
  }),
  z.strictObject({ type: z.literal('vmm.stop'), graceful: z.boolean().default(true), timeoutMs: z.number().int().min(0).max(600_000).default(30_000) }),
  z.strictObject({ type: z.literal('vmm.pause') }),
  z.strictObject({ type: z.literal('vmm.resume') }),
  z.strictObject({ type: z.literal('vmm.reset') }),
  z.strictObject({ type: z.literal('vmm.status') }),
  /** Target of a migration: wait for the guest at an address on `host`; answers where to send it. */
  z.strictObject({
    type: z.literal('vmm.incoming'),
    spec: systemObjectSchema,
    consoleLog: z.string().min(1).max(4096),
    runDir: z.string().min(1).max(4096),
    host: z.string().min(1).max(255),
    transferred: z.unknown(),
    accelerator: z.enum(['kvm', 'tcg']).optional(),
  }),
  z.strictObject({ type: z.literal('vmm.await-running'), timeoutMs: z.number().int().min(1).max(600_000).default(60_000) }),
  /** Source of a migration: what a simulated guest carries over. */
  z.strictObject({ type: z.literal('vmm.transferable') }),
  /** Source of a migration: send the guest to `uri`; once it is there, this VMM's guest is gone. */
  z.strictObject({ type: z.literal('vmm.migrate'), uri: z.string().min(1).max(300) }),
  /** Source of a migration, once the target runs: this copy of the guest goes. */
  z.strictObject({ type: z.literal('vmm.finish-migration') }),
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

/**
 * A VMM: runs one system's guest through its driver and answers for it. The hypervisor spawns
 * one per running system at `hypervisor/vmm/<id>`: in a child process of its own for real guests,
 * inline for simulated ones. When the guest ends unasked, the VMM tells the hypervisor.
 */
export function createVmm(ctx: ActorContext): Actor {
  const id = ctx.path.segments.at(-1)!;
  const hypervisor = ctx.ref(ctx.self.path.replace(/\/vmm\/[^/]+$/, ''));
  const clock = new ServiceClock();
  let guest: GuestHandle | undefined;
  let stopping = false;

  const prepare = (consoleLog: string, runDir: string) => {
    mkdirSync(dirname(consoleLog), { recursive: true, mode: 0o700 });
    mkdirSync(runDir, { recursive: true, mode: 0o700 });
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
      clock.handled += 1;
      const parsed = vmmSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return clock.info(`vmm/${id}`, `VMM of system ${id}`, ctx);
        case 'vmm.start': {
          if (guest) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${id}' already runs in this VMM`);
          prepare(parsed.consoleLog, parsed.runDir);
          const driver = await driverFor(parsed.spec.driver);
          const started = await driver.start(id, parsed.spec, { consoleLog: parsed.consoleLog, runDir: parsed.runDir, ...(parsed.accelerator ? { accelerator: parsed.accelerator } : {}) });
          adopt(started);
          return { type: 'vmm.started', id, pid: started.pid ?? null, vmmPid: process.pid, accelerator: started.accelerator };
        }
        case 'vmm.incoming': {
          if (guest) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${id}' already runs in this VMM`);
          prepare(parsed.consoleLog, parsed.runDir);
          const driver = await driverFor(parsed.spec.driver);
          const incoming = await driver.incoming(id, parsed.spec, { consoleLog: parsed.consoleLog, runDir: parsed.runDir, ...(parsed.accelerator ? { accelerator: parsed.accelerator } : {}) }, parsed.host, parsed.transferred);
          adopt(incoming.handle);
          return { type: 'vmm.incoming', id, uri: incoming.uri, pid: incoming.handle.pid ?? null, vmmPid: process.pid, accelerator: incoming.handle.accelerator };
        }
        case 'vmm.await-running':
          await requireGuest().awaitRunning(parsed.timeoutMs);
          return { type: 'vmm.running', id };
        case 'vmm.transferable':
          return { type: 'vmm.transferable', id, state: requireGuest().transferable() };
        case 'vmm.migrate':
          // The guest's state is at the target; this copy stays paused until the hypervisor
          // knows the target runs (vmm.finish-migration), or resumes it if the move failed.
          await requireGuest().migrate(parsed.uri);
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
      // The container going away takes its guest with it: never a guest without its VMM.
      await guest?.stop(false, 0).catch(() => undefined);
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
  'vmm.status': fromItsHypervisor,
  'vmm.incoming': fromItsHypervisor,
  'vmm.await-running': fromItsHypervisor,
  'vmm.transferable': fromItsHypervisor,
  'vmm.migrate': fromItsHypervisor,
  'vmm.finish-migration': fromItsHypervisor,
};

export const service: ServiceDefinition<unknown> = {
  name: 'vmm',
  description: 'VMM: runs one system through its driver',
  schema: vmmSchema,
  authority: vmmAuthority,
  isolations: ['process', 'inline'],
  create: (ctx) => createVmm(ctx),
};
