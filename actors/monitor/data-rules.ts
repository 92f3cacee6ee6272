/**
 * Alarm rules over the CDB's picture (the health score's input): which of these alarms should be
 * open now. The primary compares that with the open ones and raises or clears the difference,
 * stamped with its term. Nothing is decided about a down node's services, systems or disks (what
 * it last said is stale; its node-down alarm stands for them), so those alarms are left as they are.
 */
import { alarmId, type AlarmRuleName } from './alarms.js';
import type { HealthInput } from './health.js';

export const DATA_RULES = ['service-failed', 'system-crash-loop', 'sync-lag', 'storage-full'] as const satisfies readonly AlarmRuleName[];
export type DataRule = (typeof DATA_RULES)[number];

export const SYNC_LAG_ALARM = 1000;
export const STORAGE_FULL_ALARM = 0.9;

export interface DesiredAlarm {
  id: string;
  rule: DataRule;
  subject: string;
  /** The node it is about: its alarms are left alone while it is down. */
  node: string;
  detail: string;
}

export function dataAlarms(input: HealthInput): { desired: DesiredAlarm[]; down: string[] } {
  const down = input.nodes.filter((node) => node.state === 'down').map((node) => node.name);
  const live = new Set(input.nodes.filter((node) => node.state !== 'down').map((node) => node.name));
  const desired = new Map<string, DesiredAlarm>();
  const want = (rule: DataRule, subject: string, node: string, detail: string) => desired.set(alarmId(rule, subject), { id: alarmId(rule, subject), rule, subject, node, detail });
  for (const service of input.services) {
    if (live.has(service.node) && service.state === 'failed') want('service-failed', `${service.node}.${service.service}`, service.node, `${service.service} on ${service.node} is failed`);
  }
  for (const system of input.systems) {
    if (live.has(system.node) && system.state === 'crashed') want('system-crash-loop', system.id, system.node, `${system.id} on ${system.node} stays crashed`);
  }
  for (const { node, lag } of input.syncLag) {
    if (live.has(node) && lag >= SYNC_LAG_ALARM) want('sync-lag', node, node, `${lag} changes behind`);
  }
  for (const fs of input.filesystems) {
    if (live.has(fs.node) && fs.sizeBytes > 0 && fs.usedBytes / fs.sizeBytes > STORAGE_FULL_ALARM) want('storage-full', fs.node, fs.node, `${fs.mount} is ${Math.round((fs.usedBytes / fs.sizeBytes) * 100)} % full`);
  }
  return { desired: [...desired.values()].sort((a, b) => a.id.localeCompare(b.id)), down };
}

/** What to raise and clear, given the CDB's picture and the alarms open now. */
export function alarmChanges(input: HealthInput, open: readonly { id: string; rule: string; subject: string }[]): { raise: DesiredAlarm[]; clear: { id: string; rule: DataRule; subject: string }[] } {
  const { desired, down } = dataAlarms(input);
  const systemNode = new Map(input.systems.map((system) => [system.id, system.node]));
  const openIds = new Set(open.map((alarm) => alarm.id));
  const wanted = new Set(desired.map((alarm) => alarm.id));
  const raise = desired.filter((alarm) => !openIds.has(alarm.id));
  const clear: { id: string; rule: DataRule; subject: string }[] = [];
  for (const alarm of open) {
    const rule = DATA_RULES.find((name) => name === alarm.rule);
    if (rule === undefined || wanted.has(alarm.id)) continue;
    // The subject starts with its node for services; it is the node for sync-lag and storage-full.
    const node = rule === 'system-crash-loop' ? systemNode.get(alarm.subject) : alarm.subject.split('.')[0];
    if (node !== undefined && down.includes(node)) continue;
    clear.push({ id: alarm.id, rule, subject: alarm.subject });
  }
  return { raise, clear };
}
