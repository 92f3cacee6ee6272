/** The hypervisor's messages (its zod schema), who may send each (its authority table), and a system's entry and meta. */
import { z } from 'zod';
import type { AuthorityTable } from '../../runtime/authority.js';
import { nameSchema } from '../../runtime/path.js';
import { serviceInfoSchema } from '../kit.js';
import { systemObjectSchema, type SystemObject } from '../model.js';
import type { SystemStorage } from './disks.js';
import type { SystemEvent, SystemState } from './lifecycle.js';
import { IO_OPS } from './io.js';
import type { MigrationRecord } from './migration-table.js';

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
  /** A migration phase's deadline passed (migration-table.ts); stale once the phase moved on. */
  z.strictObject({ type: z.literal('hypervisor.migration-deadline'), id, epoch: z.number().int(), phase: z.string().max(32) }),
  /** The autostart systems, one after the other (after the recovery at boot). */
  z.strictObject({ type: z.literal('hypervisor.autostart-next') }),
  // The I/O of an operation is over (io.ts): its continuation runs in receive.
  ...IO_OPS.map((op) => z.strictObject({ type: z.literal(`hypervisor.${op}-done` as const), id: z.string().max(128), epoch: z.number().int(), token: z.number().int() })),
]);

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
  /** While a migration runs: this node's side of it, its phase (migration-table.ts) and the other node. */
  migration?: { role: 'source' | 'target'; phase: string; peer: string };
}

/** One lifecycle step of a system on a node. */
export interface SystemStep {
  at: string;
  event: SystemEvent;
  state: SystemState;
  reason?: string;
}

/** A system's state machine on this node, with its VMM. */
export interface Running {
  state: SystemState;
  /** The target side of a migration, until the guest runs here. */
  arriving?: boolean;
  spec: SystemObject;
  /** Its disks' files here, resolved by the Storage service before the guest starts or arrives. */
  storage?: SystemStorage;
  meta: SystemMeta;
  restarts: number[];
  attempt: number;
  /** Cancels the restart the policy has scheduled, if any. */
  retry: (() => void) | undefined;
  /** Moves on with every state change: an I/O result from an older epoch is stale (io.ts). */
  epoch: number;
  /** The migration this node takes part in for the system, source or target side. */
  migration?: MigrationRecord;
  /** Its object was deleted while it ran or had I/O under way: forgotten once it is stopped or crashed. */
  objectDeleted?: boolean;
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
  'hypervisor.migration-deadline': { internal: [thisHypervisor] },
  'hypervisor.autostart-next': { internal: [thisHypervisor] },
  ...Object.fromEntries(IO_OPS.map((op) => [`hypervisor.${op}-done`, { internal: [thisHypervisor] }])),
  'system.stop-all': 'operate',
  // A volume's pool may be shared: the Storage service of any node changes a disk where its guest runs.
  'system.disk-change': { internal: [{ service: 'storage', nodes: 'any' }] },
};

/** What the hypervisor answers about one of its systems. */
export const viewOf = (systemId: string, entry: Running) => ({
  id: systemId,
  driver: entry.spec.driver,
  ha: entry.spec.ha,
  arriving: entry.arriving === true,
  ...entry.meta,
});
