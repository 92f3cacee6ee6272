/**
 * A system's life, as plain data: every state, every event, and which event moves which state
 * where. Anything not in the table is refused with a message naming the current state and the
 * states the event needs.
 */
import { AcpError } from '../../runtime/errors.js';

export const SYSTEM_STATES = ['defined', 'starting', 'running', 'paused', 'stopping', 'stopped', 'crashed', 'migrating'] as const;
export type SystemState = (typeof SYSTEM_STATES)[number];

/** Commands (from a user) and reports (from a VMM), each with the states it may happen in. */
export const TRANSITIONS = {
  start: { from: ['defined', 'stopped', 'crashed'], to: 'starting' },
  started: { from: ['starting'], to: 'running' },
  /** The start was refused (a missing kernel, binary or disk): the caller was told why; nothing ran, so nothing crashed. */
  'start-failed': { from: ['starting'], to: 'stopped' },
  pause: { from: ['running'], to: 'paused' },
  resume: { from: ['paused'], to: 'running' },
  stop: { from: ['starting', 'running', 'paused'], to: 'stopping' },
  stopped: { from: ['stopping', 'running', 'paused', 'crashed'], to: 'stopped' },
  crashed: { from: ['starting', 'running', 'paused', 'stopping', 'migrating'], to: 'crashed' },
  migrate: { from: ['running'], to: 'migrating' },
  /** The migration ended with the guest running here: the target's, or the source's after a failure. */
  migrated: { from: ['migrating'], to: 'running' },
  /** The guest left: the source after a migration, or the target after one that failed. */
  'migrated-away': { from: ['migrating'], to: 'stopped' },
  /** A guest that outlived its daemon (or its VMM), taken over by a new VMM: running as it was. */
  adopted: { from: ['defined'], to: 'running' },
} as const satisfies Record<string, { from: readonly SystemState[]; to: SystemState }>;
export type SystemEvent = keyof typeof TRANSITIONS;

export function canHappen(state: SystemState, event: SystemEvent): boolean {
  return (TRANSITIONS[event].from as readonly SystemState[]).includes(state);
}

/** The state after `event`, or ACP_ERR_SYSTEM_BAD_STATE naming where the system is. */
export function next(id: string, state: SystemState, event: SystemEvent): SystemState {
  if (canHappen(state, event)) return TRANSITIONS[event].to;
  const needs = TRANSITIONS[event].from.join(', ');
  throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `cannot ${event} system '${id}': it is ${state} (${event} needs ${needs})`, { state });
}
