/**
 * Alarm rules over the CDB's picture (the health score's input): which of these alarms should be
 * open now. The primary compares that with the open ones and raises or clears the difference,
 * stamped with its term. Nothing is decided about a down node's services, systems or disks (what
 * it last said is stale; its node-down alarm stands for them), so those alarms are left as they are.
 */
import { createHash } from 'node:crypto';
import { alarmId, type AlarmRuleName } from './alarms.js';
import type { HealthInput } from './health.js';

export const DATA_RULES = ['service-failed', 'system-crash-loop', 'sync-lag', 'storage-full', 'certificate-expiring'] as const satisfies readonly AlarmRuleName[];
export type DataRule = (typeof DATA_RULES)[number];

export const SYNC_LAG_ALARM = 1000;
export const STORAGE_FULL_ALARM = 0.9;
/** A certificate ending within this is reported (renew it with acp cert renew on its node). */
export const CERT_EXPIRING_MS = 30 * 86_400_000;
const DAY_MS = 86_400_000;

/** `<node>.<pool>` as an alarm subject; shortened (with a digest, so still unique) to fit a name. */
export function poolSubject(node: string, pool: string): string {
  const subject = `${node}.${pool}`;
  if (`storage-full.${subject}`.length <= 63) return subject;
  return `${node.slice(0, 20)}.${pool.slice(0, 20)}-${createHash('sha256').update(subject).digest('hex').slice(0, 8)}`;
}

export interface DesiredAlarm {
  id: string;
  rule: DataRule;
  subject: string;
  /** The node it is about: its alarms are left alone while it is down. */
  node: string;
  detail: string;
}

/** `now`: wall-clock milliseconds (the certificates' end is a wall-clock time). */
export function dataAlarms(input: HealthInput, now: number): { desired: DesiredAlarm[]; down: string[] } {
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
    if (!live.has(fs.node) || fs.sizeBytes <= 0 || fs.usedBytes / fs.sizeBytes <= STORAGE_FULL_ALARM) continue;
    // A pool has its own alarm; a node's filesystems share one.
    want('storage-full', fs.pool === undefined ? fs.node : poolSubject(fs.node, fs.pool), fs.node, `${fs.mount} on ${fs.node} is ${Math.round((fs.usedBytes / fs.sizeBytes) * 100)} % full`);
  }
  for (const { node, notAfter } of input.certificates ?? []) {
    if (!live.has(node) || notAfter - now > CERT_EXPIRING_MS) continue;
    const left = notAfter - now;
    want('certificate-expiring', node, node, left <= 0 ? `the certificate of ${node} ended ${new Date(notAfter).toISOString()}` : `the certificate of ${node} ends in ${Math.floor(left / DAY_MS)} days (${new Date(notAfter).toISOString()}); run acp cert renew on it`);
  }
  return { desired: [...desired.values()].sort((a, b) => a.id.localeCompare(b.id)), down };
}

/** What to raise and clear, given the CDB's picture and the alarms open now. */
export function alarmChanges(input: HealthInput, open: readonly { id: string; rule: string; subject: string }[], now: number): { raise: DesiredAlarm[]; clear: { id: string; rule: DataRule; subject: string }[] } {
  const { desired, down } = dataAlarms(input, now);
  const systemNode = new Map(input.systems.map((system) => [system.id, system.node]));
  const openIds = new Set(open.map((alarm) => alarm.id));
  const wanted = new Set(desired.map((alarm) => alarm.id));
  const raise = desired.filter((alarm) => !openIds.has(alarm.id));
  const clear: { id: string; rule: DataRule; subject: string }[] = [];
  for (const alarm of open) {
    const rule = DATA_RULES.find((name) => name === alarm.rule);
    if (rule === undefined || wanted.has(alarm.id)) continue;
    // The subject starts with its node for services and pools; it is the node for sync-lag, storage-full and certificates.
    const node = rule === 'system-crash-loop' ? systemNode.get(alarm.subject) : alarm.subject.split('.')[0];
    if (node !== undefined && down.includes(node)) continue;
    clear.push({ id: alarm.id, rule, subject: alarm.subject });
  }
  return { raise, clear };
}
