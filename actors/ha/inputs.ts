/**
 * What the HA service reads from the CDB and the hypervisor, turned into the step machines'
 * inputs: HA systems' specs (object/system/*), nodes' capacity and maintenance (meta/node/* facts
 * and object/node/*), and which HA guests run here (the hypervisor's system.status).
 */
import { z } from 'zod';
import { nameSchema } from '../../runtime/path.js';
import { haObjectSchema, systemObjectSchema, type SystemObject } from '../model.js';
import type { GuestState } from './local.js';
import { SHUTDOWN_POLICIES, type HaNodeSpec, type HaSystemSpec, type ShutdownPolicy } from './protocol.js';
import type { PersistedHa } from './state.js';
import type { MonitorStatus } from '../monitor/index.js';

export const HA_OBJECT_KEY = 'object/ha/manager';

/** The HA part of a system object. */
export function haSpecOf(id: string, spec: SystemObject): HaSystemSpec {
  return {
    id,
    memoryMiB: spec.memoryMiB,
    vcpus: spec.vcpus,
    want: spec.haState ?? 'started',
    node: spec.node,
    prefer: spec.prefer,
    strict: spec.strict,
    antiAffinity: spec.antiAffinity,
    maxRestart: spec.maxRestart,
    maxRelocate: spec.maxRelocate,
  };
}

/** An HA system object, or undefined for anything else (not HA, deleted, malformed). */
export function parseHaSystem(value: unknown): SystemObject | undefined {
  // Most systems are not HA: they are passed over without a parse (a heal brings 100,000 at once).
  if (typeof value !== 'object' || value === null || (value as { ha?: unknown }).ha !== true) return undefined;
  const parsed = systemObjectSchema.safeParse(value);
  return parsed.success && parsed.data.ha ? parsed.data : undefined;
}

/** The capacity facts a node's HA service puts in its meta (memory and vCPUs it offers HA guests). */
const nodeFactsSchema = z.object({ haMemoryMiB: z.number().int().min(0), haVcpus: z.number().int().min(0) });
export function capacityOf(value: unknown): { memoryMiB: number; vcpus: number } | undefined {
  const parsed = nodeFactsSchema.safeParse(value);
  return parsed.success ? { memoryMiB: parsed.data.haMemoryMiB, vcpus: parsed.data.haVcpus } : undefined;
}

/** A node object's shutdown policy (conditional when it names none, or none known). */
export function shutdownPolicyIn(value: unknown): ShutdownPolicy {
  return SHUTDOWN_POLICIES.find((policy) => policy === value) ?? 'conditional';
}

/** Nodes the manager may place on: known capacity, not a witness. */
export function nodeSpecs(capacity: ReadonlyMap<string, { memoryMiB: number; vcpus: number }>, objects: ReadonlyMap<string, { witness?: boolean | undefined; maintenance?: boolean | undefined }>): HaNodeSpec[] {
  const out: HaNodeSpec[] = [];
  for (const [name, cap] of [...capacity].sort(([a], [b]) => a.localeCompare(b))) {
    const object = objects.get(name);
    if (object?.witness === true) continue;
    out.push({ name, memoryMiB: cap.memoryMiB, vcpus: cap.vcpus, maintenance: object?.maintenance === true });
  }
  return out;
}

export function persistedOf(value: unknown): { term: number; systems: PersistedHa } | undefined {
  const parsed = haObjectSchema.safeParse(value);
  return parsed.success ? { term: parsed.data.term, systems: parsed.data.systems } : undefined;
}

/** One system as the hypervisor's system.status lists it. */
export const hypervisorViewSchema = z.object({
  id: nameSchema,
  ha: z.boolean().optional(),
  arriving: z.boolean().optional(),
  state: z.string(),
  pid: z.number().int().nullable(),
  /** Unknown until a status poll lists it (a start's answer does not say). */
  driver: z.string().optional(),
});
export type HypervisorView = z.infer<typeof hypervisorViewSchema>;

/**
 * The HA guests here as the local manager sees them. Conservative: anything that may still run
 * counts as running (a stopping guest runs until it stopped); a copy still arriving is not here yet
 * (its source runs it, and reports it migrating).
 */
export function guestsOf(views: ReadonlyMap<string, HypervisorView>, pending: ReadonlyMap<string, 'start' | 'stop' | 'migrate'>): Record<string, GuestState> {
  const guests: Record<string, GuestState> = {};
  for (const [id, view] of views) {
    if (view.ha !== true) continue;
    if (view.state === 'starting') guests[id] = 'starting';
    else if (view.state === 'running' || view.state === 'paused' || view.state === 'stopping') guests[id] = 'running';
    else if (view.state === 'migrating' && view.arriving !== true) guests[id] = 'migrating';
  }
  for (const [id, op] of pending) {
    if (op === 'start' && guests[id] === undefined) guests[id] = 'starting';
    if (op === 'migrate') guests[id] = 'migrating';
  }
  return Object.fromEntries(Object.entries(guests).sort(([a], [b]) => a.localeCompare(b)));
}

/** The QEMU pids of the HA guests here: what the fence guard kills when not fed (a simulated guest has none). */
export function guardedPids(views: ReadonlyMap<string, HypervisorView>): number[] {
  return [...views.values()].filter((view) => view.ha === true && view.driver !== 'sim' && view.pid !== null && view.state !== 'stopped' && view.state !== 'crashed').map((view) => view.pid!);
}

/** What the HA service needs of its monitor's status: the term, its role, the primary and the voting members. */
export interface MonitorView {
  term: number;
  role: string;
  primary: string | null;
  members: string[];
}

export function viewOfMonitor(value: unknown): MonitorView | undefined {
  const status = value as Partial<MonitorStatus> | null;
  if (!status || typeof status.term !== 'number' || typeof status.role !== 'string' || !Array.isArray(status.members)) return undefined;
  return {
    term: status.term,
    role: status.role,
    primary: typeof status.primary === 'string' ? status.primary : null,
    members: status.members.filter((member) => !member.witness).map((member) => member.name).sort(),
  };
}
