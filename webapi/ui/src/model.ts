/** What the page reads out of the CDB records (actors/model.ts's keys). */
import type { Store } from './store.js';

export interface SystemMeta {
  node: string;
  state: string;
  since: string;
  reason?: string;
  pid?: number | null;
}

export interface SystemSpec {
  name: string;
  driver?: string;
  vcpus?: number;
  memoryMiB?: number;
  node?: string;
  ha?: boolean;
  display?: 'none' | 'vnc';
  boot?: { kernel?: string; initrd?: string; cmdline?: string; disk?: string };
}

export interface SystemView {
  id: string;
  spec: SystemSpec;
  state: string;
  node: string | undefined;
  reason: string | undefined;
}

const idOf = (key: string, prefix: string) => key.slice(prefix.length).split('@')[0]!;

/** Which node's meta tells a system's state (as `acp system ls`): where it is placed, else where it is not stopped, else the newest. */
export function systems(store: Store): SystemView[] {
  const metas = new Map<string, SystemMeta[]>();
  for (const record of store.under('meta/system/')) {
    const id = idOf(record.key, 'meta/system/');
    metas.set(id, [...(metas.get(id) ?? []), record.value as SystemMeta]);
  }
  return store.under('object/system/').map((record) => {
    const id = idOf(record.key, 'object/system/');
    const spec = record.value as SystemSpec;
    const newest = [...(metas.get(id) ?? [])].sort((a, b) => (b.since > a.since ? 1 : -1));
    const meta = newest.find((m) => m.node === spec.node) ?? newest.find((m) => !['stopped', 'defined'].includes(m.state)) ?? newest[0];
    return { id, spec, state: meta?.state ?? 'defined', node: meta?.node ?? spec.node, reason: meta?.reason };
  });
}

export interface NodeView {
  name: string;
  state: string;
  management: boolean;
  /** A vote-only member: it runs no systems. */
  witness: boolean;
}

export function nodes(store: Store, self: string): NodeView[] {
  const names = new Set<string>([self]);
  for (const record of store.under('object/node/')) names.add(idOf(record.key, 'object/node/'));
  for (const record of store.under('meta/node/')) names.add(idOf(record.key, 'meta/node/'));
  return [...names].sort().map((name) => {
    const meta = store.value<{ state?: string; heartbeatAt?: string }>(`meta/node/${name}@${name}`);
    const object = store.value<{ management?: boolean; witness?: boolean }>(`object/node/${name}`);
    const fresh = meta?.heartbeatAt !== undefined && Date.now() - Date.parse(meta.heartbeatAt) < 10_000;
    return { name, state: meta === undefined ? 'unknown' : fresh ? (meta.state ?? 'running') : 'down', management: object?.management !== false, witness: object?.witness === true };
  });
}

export interface Alarm {
  name: string;
  rule: string;
  subject: string;
  severity: string;
  open: boolean;
  acked?: boolean;
  raisedAt: string;
  detail: string;
}

export function alarms(store: Store): Alarm[] {
  return store.under('object/alarm/').map((record) => record.value as Alarm);
}
