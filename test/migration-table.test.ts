/** A migration's phases as a table (actors/hypervisor/migration-table.ts), walked. */
import test from 'ava';
import { canStep, FINAL_PHASES, MIGRATION_PHASES, MIGRATION_STEPS, nextPhase, PHASE_DEADLINES_MS, type MigrationPhase, type MigrationRole, type MigrationStep } from '../actors/hypervisor/migration-table.js';
import { AcpError } from '../runtime/errors.js';

const steps = Object.keys(MIGRATION_STEPS) as MigrationStep[];
const roles: MigrationRole[] = ['source', 'target'];

test('every step is allowed exactly where the table says, and refused elsewhere naming the phase', (t) => {
  for (const role of roles) {
    for (const phase of MIGRATION_PHASES) {
      for (const step of steps) {
        const rule = MIGRATION_STEPS[step];
        const allowed = rule.role === role && (rule.from as readonly MigrationPhase[]).includes(phase);
        t.is(canStep({ role, phase }, step), allowed, `${role} ${phase} ${step}`);
        if (allowed) {
          t.is(nextPhase('vm1', { role, phase }, step), rule.to);
        } else {
          const error = t.throws(() => nextPhase('vm1', { role, phase }, step)) as AcpError;
          t.is(error.code, 'ACP_ERR_SYSTEM_BAD_STATE');
          t.true(error.message.includes(`in phase ${phase}`), error.message);
        }
      }
    }
  }
});

test('each side reaches its final phases from its first, and a final phase has no way out', (t) => {
  const reach = (role: MigrationRole, first: MigrationPhase) => {
    const seen = new Set<MigrationPhase>([first]);
    for (let grew = true; grew; ) {
      grew = false;
      for (const step of steps) {
        const rule = MIGRATION_STEPS[step];
        if (rule.role !== role || seen.has(rule.to) || !rule.from.some((phase: MigrationPhase) => seen.has(phase))) continue;
        seen.add(rule.to);
        grew = true;
      }
    }
    return seen;
  };
  t.deepEqual([...reach('source', 'preparing')].sort(), ['aborted', 'aborting', 'confirming', 'done', 'finishing', 'preparing', 'transferring']);
  t.deepEqual([...reach('target', 'incoming')].sort(), ['arrived', 'arriving', 'dropped', 'dropping', 'incoming', 'waiting']);
  for (const phase of FINAL_PHASES) {
    for (const role of roles) t.false(steps.some((step) => canStep({ role, phase }, step)), `${phase} is final`);
  }
});

test('once the source finishes (the target runs the guest) it can no longer fail back; deadlines are on waiting phases only', (t) => {
  t.false(canStep({ role: 'source', phase: 'finishing' }, 'fail'));
  for (const phase of Object.keys(PHASE_DEADLINES_MS) as MigrationPhase[]) {
    t.false(FINAL_PHASES.includes(phase), phase);
    t.false(['finishing', 'aborting', 'dropping'].includes(phase), `${phase}: its own I/O's timeouts end it`);
  }
  t.is(PHASE_DEADLINES_MS.waiting, 15 * 60_000);
});
