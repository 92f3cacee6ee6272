/**
 * What a hypervisor does when its daemon starts, as plain data from what it finds: the guests
 * that outlived the daemon (a QEMU whose pid file, command line and QMP socket say it is this
 * system's), the systems' metas (what this node said last), and the systems' objects (what the
 * cluster wants). Pure: the hypervisor gathers the input and carries the actions out.
 */
import type { SystemObject } from '../model.js';
import type { SystemState } from './lifecycle.js';

/** States in which a system has (or is getting) a guest on its node. */
export const LIVE_STATES: readonly SystemState[] = ['starting', 'running', 'paused', 'stopping', 'migrating'];

export interface RecoveryInput {
  node: string;
  /** This node's metas: system id to its last published state. */
  metas: ReadonlyMap<string, { state: SystemState }>;
  /** Every system object the CDB holds. */
  objects: ReadonlyMap<string, SystemObject>;
  /** Systems with a live QEMU in this node's run dir. */
  liveGuests: ReadonlySet<string>;
}

export type RecoveryAction =
  /** A QEMU that outlived the daemon, still wanted here: a new VMM takes it over, same pid and console. */
  | { id: string; action: 'adopt' }
  /** A QEMU nobody wants here any more: stopped cleanly, with the reason logged. */
  | { id: string; action: 'orphan'; why: string }
  /** A system this node said was live, whose guest did not outlive the daemon. */
  | { id: string; action: 'gone'; state: 'crashed' | 'stopped'; reason: string };

export function recoveryPlan(input: RecoveryInput): RecoveryAction[] {
  const actions: RecoveryAction[] = [];
  for (const id of [...input.liveGuests].sort()) {
    const spec = input.objects.get(id);
    if (!spec) actions.push({ id, action: 'orphan', why: `its object object/system/${id} no longer exists` });
    else if (spec.driver !== 'qemu') actions.push({ id, action: 'orphan', why: `system '${id}' is a ${spec.driver} system now` });
    // An HA guest runs wherever its manager placed it: adopted, and the HA service stops it unless a grant orders it here.
    else if (spec.node !== undefined && spec.node !== input.node && !spec.ha) actions.push({ id, action: 'orphan', why: `system '${id}' is placed on node '${spec.node}' now` });
    else actions.push({ id, action: 'adopt' });
  }
  for (const [id, meta] of [...input.metas].sort(([a], [b]) => a.localeCompare(b))) {
    if (input.liveGuests.has(id) || !LIVE_STATES.includes(meta.state)) continue;
    const spec = input.objects.get(id);
    if (!spec) actions.push({ id, action: 'gone', state: 'stopped', reason: `its object object/system/${id} was deleted while the daemon was down` });
    else if (spec.driver === 'sim') actions.push({ id, action: 'gone', state: 'stopped', reason: 'the daemon stopped; a simulated guest does not outlive it' });
    else actions.push({ id, action: 'gone', state: 'crashed', reason: 'its QEMU was gone when the daemon started again (it ended while the daemon was down)' });
  }
  return actions;
}

/**
 * The systems a node starts when its daemon starts, in order: autostart, not HA (those are the
 * HA manager's), placed on this node; ascending startOrder (unset last), then id.
 */
export function autostartOrder(objects: ReadonlyMap<string, SystemObject>, node: string): { id: string; spec: SystemObject }[] {
  return [...objects]
    .filter(([, spec]) => spec.autostart === true && !spec.ha && spec.node === node)
    .map(([id, spec]) => ({ id, spec }))
    .sort((a, b) => (a.spec.startOrder ?? Number.MAX_SAFE_INTEGER) - (b.spec.startOrder ?? Number.MAX_SAFE_INTEGER) || a.id.localeCompare(b.id));
}

/**
 * What a system's state honestly is, seen from elsewhere: a live state on a node the monitor
 * says is down is `unknown` (its guest may or may not still run there), with the last known state
 * and since when; never `running` with a pid nobody can vouch for.
 */
export function honestState<T extends { state: SystemState; since: string; pid: number | null }>(
  meta: T,
  nodeDown: boolean,
): Omit<T, 'state'> & { state: SystemState | 'unknown'; lastState?: SystemState } {
  if (!nodeDown || !LIVE_STATES.includes(meta.state)) return meta;
  return { ...meta, state: 'unknown', lastState: meta.state, pid: null };
}
