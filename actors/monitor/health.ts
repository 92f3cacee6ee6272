/**
 * The cluster's health score, 0-100, per node and for the cluster: a pure function of a view of
 * the CDB (and the primary's failure detector). Each problem takes points off 100; the weights
 * below are the documentation (README's Monitor section repeats them). They are chosen so that one
 * dead node alone costs more than any pile of warnings, and a failed service more than a slow loop.
 */
import type { Severity } from './alarms.js';

export const HEALTH_WEIGHTS = {
  /** Per node down / suspect. */
  nodeDown: 30,
  nodeSuspect: 10,
  /** Per service failed (crash-looped past its intensity) / restarting now. */
  serviceFailed: 10,
  serviceRestarting: 3,
  /** Per system crashed, at most `systemsCrashedMax` in all. */
  systemCrashed: 2,
  systemsCrashedMax: 20,
  /** Per node: one point per `syncLagPerPoint` changes it has not received yet, at most `syncLagMax`. */
  syncLagPerPoint: 100,
  syncLagMax: 10,
  /** Per filesystem above 90 % / above 80 % used. */
  storageAbove90: 10,
  storageAbove80: 3,
  /** Per node whose event-loop delay p99 is above 1 s / above 100 ms. */
  loopDelayAbove1s: 8,
  loopDelayAbove100ms: 2,
  /** Per open alarm, by severity (on top of what raised it). */
  alarm: { critical: 5, major: 3, warning: 1, info: 0 } satisfies Record<Severity, number>,
} as const;

export interface HealthInput {
  nodes: { name: string; state: 'up' | 'suspect' | 'down' }[];
  services: { node: string; service: string; state: string }[];
  systems: { id: string; node: string; state: string }[];
  syncLag: { node: string; lag: number }[];
  /** A node's filesystems, and its storage pools (`pool` set; from `stats/storage/pool/<id>@<node>`). */
  filesystems: { node: string; mount: string; usedBytes: number; sizeBytes: number; pool?: string }[];
  /** When each node's certificate ends (wall-clock ms), from its meta. */
  certificates?: { node: string; notAfter: number }[];
  loopDelayP99: { node: string; ms: number }[];
  alarms: { id: string; severity: Severity; subject: string }[];
}

export interface Contribution {
  points: number;
  /** The node it concerns, when it concerns one. */
  node: string | null;
  what: string;
}

export interface Health {
  score: number;
  nodes: Record<string, number>;
  /** What keeps the score from 100, most serious first. */
  contributions: Contribution[];
}

const clamp = (score: number) => Math.max(0, Math.min(100, Math.round(score)));

export function computeHealth(input: HealthInput): Health {
  const w = HEALTH_WEIGHTS;
  const out: Contribution[] = [];
  const known = new Set(input.nodes.map((node) => node.name));
  const dead = new Set(input.nodes.filter((node) => node.state === 'down').map((node) => node.name));
  for (const node of input.nodes) {
    if (node.state === 'down') out.push({ points: w.nodeDown, node: node.name, what: `node ${node.name} is down` });
    if (node.state === 'suspect') out.push({ points: w.nodeSuspect, node: node.name, what: `node ${node.name} is suspect` });
  }
  // What a down node last said about itself is stale: its node-down contribution stands for it.
  const live = (node: string) => known.has(node) && !dead.has(node);
  for (const service of input.services) {
    if (!live(service.node)) continue;
    if (service.state === 'failed') out.push({ points: w.serviceFailed, node: service.node, what: `service ${service.service} on ${service.node} failed` });
    if (service.state === 'restarting') out.push({ points: w.serviceRestarting, node: service.node, what: `service ${service.service} on ${service.node} is restarting` });
  }
  const crashed = input.systems.filter((system) => live(system.node) && system.state === 'crashed');
  if (crashed.length > 0) {
    const points = Math.min(w.systemsCrashedMax, crashed.length * w.systemCrashed);
    const names = crashed.slice(0, 5).map((system) => system.id).join(', ');
    out.push({ points, node: null, what: `${crashed.length} system(s) crashed: ${names}${crashed.length > 5 ? ', ...' : ''}` });
  }
  for (const { node, lag } of input.syncLag) {
    const points = Math.min(w.syncLagMax, Math.floor(lag / w.syncLagPerPoint));
    if (live(node) && points > 0) out.push({ points, node, what: `node ${node} lags ${lag} changes behind in sync` });
  }
  for (const fs of input.filesystems) {
    if (!live(fs.node) || fs.sizeBytes <= 0) continue;
    const used = fs.usedBytes / fs.sizeBytes;
    const percent = Math.round(used * 100);
    if (used > 0.9) out.push({ points: w.storageAbove90, node: fs.node, what: `${fs.mount} on ${fs.node} is ${percent} % full` });
    else if (used > 0.8) out.push({ points: w.storageAbove80, node: fs.node, what: `${fs.mount} on ${fs.node} is ${percent} % full` });
  }
  for (const { node, ms } of input.loopDelayP99) {
    if (!live(node)) continue;
    if (ms > 1000) out.push({ points: w.loopDelayAbove1s, node, what: `node ${node}'s event loop is delayed ${Math.round(ms)} ms (p99)` });
    else if (ms > 100) out.push({ points: w.loopDelayAbove100ms, node, what: `node ${node}'s event loop is delayed ${Math.round(ms)} ms (p99)` });
  }
  for (const alarm of input.alarms) {
    const points = w.alarm[alarm.severity];
    if (points > 0) out.push({ points, node: known.has(alarm.subject) ? alarm.subject : null, what: `alarm ${alarm.id} (${alarm.severity}) is open` });
  }
  out.sort((a, b) => b.points - a.points || a.what.localeCompare(b.what));
  const nodes: Record<string, number> = {};
  for (const node of [...known].sort()) nodes[node] = clamp(100 - out.filter((entry) => entry.node === node).reduce((sum, entry) => sum + entry.points, 0));
  return { score: clamp(100 - out.reduce((sum, entry) => sum + entry.points, 0)), nodes, contributions: out };
}
