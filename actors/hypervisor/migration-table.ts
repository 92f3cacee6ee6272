/**
 * A migration's phases, as plain data like a system's life (lifecycle.ts): on the source
 * (system.migrate) and on the target (system.incoming), which step moves which phase where, and
 * how long each phase may last. A step not in the table is refused with ACP_ERR_SYSTEM_BAD_STATE
 * naming the phase; a phase past its deadline fails the migration (source) or drops the copy
 * (target). While either side is in a phase, the system's own state is `migrating`.
 */
import { AcpError } from '../../runtime/errors.js';

/**
 * Source: preparing (the disks checked shared, the target's VMM waiting) → transferring (the
 * guest's state streamed) → confirming (the target runs it, the CDB says it lives there) →
 * finishing (this copy goes) → done; a failure before finishing → aborting (the target drops its
 * copy, this one runs on) → aborted. Target: incoming (its VMM made, listening) → waiting (for the
 * source's system.incoming-done) → arriving (the guest seen running) → arrived; or → dropping →
 * dropped (an abort, a stop, a failed arrival, or a deadline).
 */
export const MIGRATION_PHASES = ['preparing', 'transferring', 'confirming', 'finishing', 'done', 'aborting', 'aborted', 'incoming', 'waiting', 'arriving', 'arrived', 'dropping', 'dropped'] as const;
export type MigrationPhase = (typeof MIGRATION_PHASES)[number];
export type MigrationRole = 'source' | 'target';

export const MIGRATION_STEPS = {
  prepared: { role: 'source', from: ['preparing'], to: 'transferring' },
  transferred: { role: 'source', from: ['transferring'], to: 'confirming' },
  confirmed: { role: 'source', from: ['confirming'], to: 'finishing' },
  finished: { role: 'source', from: ['finishing'], to: 'done' },
  /** Before finishing only: once the target runs the guest, the source never takes it back. */
  fail: { role: 'source', from: ['preparing', 'transferring', 'confirming'], to: 'aborting' },
  aborted: { role: 'source', from: ['aborting'], to: 'aborted' },
  ready: { role: 'target', from: ['incoming'], to: 'waiting' },
  arrive: { role: 'target', from: ['waiting'], to: 'arriving' },
  arrived: { role: 'target', from: ['arriving'], to: 'arrived' },
  drop: { role: 'target', from: ['incoming', 'waiting', 'arriving'], to: 'dropping' },
  dropped: { role: 'target', from: ['dropping'], to: 'dropped' },
} as const satisfies Record<string, { role: MigrationRole; from: readonly MigrationPhase[]; to: MigrationPhase }>;
export type MigrationStep = keyof typeof MIGRATION_STEPS;

/**
 * How long a phase may last (ms); a phase not listed has none (finishing and aborting end by
 * their own I/O's timeouts; a final phase ends the migration). Each is a little over the timeout
 * of the ask its phase waits on, so the ask's own failure normally comes first.
 */
export const PHASE_DEADLINES_MS: Partial<Record<MigrationPhase, number>> = {
  preparing: 150_000,
  transferring: 620_000,
  confirming: 150_000,
  incoming: 150_000,
  /** A source that never follows up (it died, say) must not leave the copy waiting for ever. */
  waiting: 15 * 60_000,
  arriving: 90_000,
};

/** The phases that end a migration. */
export const FINAL_PHASES: readonly MigrationPhase[] = ['done', 'aborted', 'arrived', 'dropped'];

/** A migration in progress on this node, one side of it. */
export interface MigrationRecord {
  readonly role: MigrationRole;
  phase: MigrationPhase;
  /** The other node. */
  readonly peer: string;
  /** Source: the guest's state reached the target (from then on, the target may run it). */
  moved: boolean;
  /** Why it failed, once it did. */
  reason?: string;
  /** Cancels the current phase's deadline. */
  cancelDeadline?: () => void;
}

export function canStep(record: Pick<MigrationRecord, 'role' | 'phase'>, step: MigrationStep): boolean {
  const rule = MIGRATION_STEPS[step];
  return rule.role === record.role && (rule.from as readonly MigrationPhase[]).includes(record.phase);
}

/** The phase after `step`, or ACP_ERR_SYSTEM_BAD_STATE naming the phase the migration is in. */
export function nextPhase(id: string, record: Pick<MigrationRecord, 'role' | 'phase'>, step: MigrationStep): MigrationPhase {
  if (canStep(record, step)) return MIGRATION_STEPS[step].to;
  const rule = MIGRATION_STEPS[step];
  throw new AcpError(
    'ACP_ERR_SYSTEM_BAD_STATE',
    `cannot ${step} the migration of system '${id}': it is the ${record.role} of a migration in phase ${record.phase} (${step} needs the ${rule.role} in ${rule.from.join(', ')})`,
    { phase: record.phase },
  );
}
