/**
 * Alarm rules as data, and the decisions the primary takes with them inside the election's step
 * (see election.ts): which alarms to raise or clear given what the failure detector and the
 * members' acknowledgements say. Only a primary within its lease gets here; every effect carries
 * its term, so a store that has seen a newer term refuses it.
 */
import type { Member } from './protocol.js';
import type { MonitorEnv, MonitorState } from './state.js';

export type Severity = 'critical' | 'major' | 'warning' | 'info';

export interface AlarmRule {
  readonly severity: Severity;
  readonly summary: string;
}

/** The rules the monitor applies now; the rest of the list arrives with health. */
export const alarmRules = {
  'node-down': { severity: 'critical', summary: 'a member has not been heard for longer than its allowed silence' },
  'node-suspect': { severity: 'warning', summary: 'a member stayed suspect (late, not yet down) for 2 s, or turned suspect 3 times within 30 s: slow, or its link flaps' },
  'clock-skew': { severity: 'warning', summary: "a member's wall clock differs from the primary's by more than maxClockSkewMs" },
  'event-loop-stall': { severity: 'warning', summary: "a member's daemon reports an event-loop delay of 2 s or more" },
  'quorum-lost': { severity: 'critical', summary: 'the cluster had no primary for longer than a failover (no majority of voters could elect one); open until it can lose a voter again' },
  // Rules over the CDB (dataAlarms in data-rules.ts), evaluated by the primary every few seconds.
  'service-failed': { severity: 'major', summary: 'a service exhausted its restart intensity and is failed' },
  'system-crash-loop': { severity: 'major', summary: 'a system crashed and stays crashed (its restarts are used up)' },
  'sync-lag': { severity: 'warning', summary: 'a node is 1,000 changes or more behind in sync' },
  'storage-full': { severity: 'warning', summary: "a filesystem or a storage pool of a node is more than 90 % full" },
  'certificate-expiring': { severity: 'major', summary: "a node's certificate ends within 30 days (acp cert renew on it)" },
} as const satisfies Record<string, AlarmRule>;

export type AlarmRuleName = keyof typeof alarmRules;

/** A member suspect this long raises `node-suspect` (a dying node goes down sooner: no alarm for it)... */
export const SUSPECT_ALARM_MS = 2000;
/** ... as does one that turned suspect this many times within the window (a flapping member); it clears after a window without. */
export const SUSPECT_FLAPS = 3;
export const SUSPECT_WINDOW_MS = 30_000;

/** A stall this long, reported by a member, raises `event-loop-stall`; it clears below half. */
export const STALL_ALARM_MS = 2000;

export interface AlarmView {
  readonly id: string;
  readonly rule: AlarmRuleName;
  readonly subject: string;
}

export interface AlarmEffect {
  kind: 'alarm';
  op: 'raise' | 'clear';
  id: string;
  rule: AlarmRuleName;
  subject: string;
  severity: Severity;
  /** The fencing token: the raiser's term. */
  term: number;
  by: string;
  detail: string;
}

export function alarmId(rule: AlarmRuleName, subject: string): string {
  return `${rule}.${subject}`;
}

function effect(s: MonitorState, op: 'raise' | 'clear', rule: AlarmRuleName, subject: string, detail: string): AlarmEffect {
  const id = alarmId(rule, subject);
  if (op === 'raise') s.alarms[id] = true;
  else delete s.alarms[id];
  return { kind: 'alarm', op, id, rule, subject, severity: alarmRules[rule].severity, term: s.term, by: s.self, detail };
}

/** `quorum-lost` is about the whole cluster. */
export const QUORUM_SUBJECT = 'cluster';

/**
 * On becoming primary: if the last primary this node knew (itself or another) is older than
 * `quorumLostAfterMs`, nobody could be elected meanwhile: raise `quorum-lost`. A node that has
 * known no primary since it booted (a cluster starting) raises nothing.
 */
export function alarmsOnElection(s: MonitorState, env: MonitorEnv): AlarmEffect[] {
  const id = alarmId('quorum-lost', QUORUM_SUBJECT);
  const gap = env.now() - s.lastLeaderAt;
  if (s.lastLeader === null || gap <= env.config.quorumLostAfterMs || s.alarms[id]) return [];
  return [effect(s, 'raise', 'quorum-lost', QUORUM_SUBJECT, `no primary for ${Math.round(gap / 1000)} s`)];
}

/**
 * On every tick: raise `node-down` for members the detector holds down. Clearing waits for an
 * acknowledgement (below), so an alarm a new primary adopted is not cleared before it heard the node.
 * `quorum-lost` clears once more voters are up than a majority needs (one may go again), or every
 * voter is (one or two voters: no more can come), judged only after a primary has had
 * `downAfterMs` to hear everyone.
 */
export function alarmsOnTick(s: MonitorState, env: MonitorEnv, members: readonly Member[]): AlarmEffect[] {
  const out: AlarmEffect[] = [];
  const quorumId = alarmId('quorum-lost', QUORUM_SUBJECT);
  if (s.alarms[quorumId] && env.now() - s.primarySince > env.config.downAfterMs) {
    const voting = members.filter((member) => member.votes > 0);
    const up = voting.filter((member) => member.name === s.self || s.peers[member.name]?.state === 'up').length;
    const needed = Math.floor(voting.length / 2) + 1;
    if (up > needed || up === voting.length) out.push(effect(s, 'clear', 'quorum-lost', QUORUM_SUBJECT, `${up} of ${voting.length} voters up, ${needed} needed`));
  }
  const settled = env.now() - s.primarySince > env.config.downAfterMs;
  for (const [name, view] of Object.entries(s.peers).sort(([a], [b]) => a.localeCompare(b))) {
    const id = alarmId('node-down', name);
    if (view.state === 'down' && !s.alarms[id]) out.push(effect(s, 'raise', 'node-down', name, `silent ${Math.round(env.now() - view.lastSeen)} ms`));
    const suspectId = alarmId('node-suspect', name);
    const now = env.now();
    if (view.suspicions !== undefined) view.suspicions = view.suspicions.filter((at) => now - at < SUSPECT_WINDOW_MS);
    const flaps = view.suspicions?.length ?? 0;
    const suspectFor = view.state === 'suspect' && view.since !== undefined ? now - view.since : 0;
    if ((suspectFor >= SUSPECT_ALARM_MS || flaps >= SUSPECT_FLAPS) && !s.alarms[suspectId]) {
      out.push(effect(s, 'raise', 'node-suspect', name, suspectFor >= SUSPECT_ALARM_MS ? `suspect for ${Math.round(suspectFor)} ms` : `suspect ${flaps} times within ${SUSPECT_WINDOW_MS / 1000} s`));
    }
    // Cleared after a window up without a suspicion, once this primary has had time to hear
    // everyone (an adopted alarm is not cleared on a blank view).
    if (s.alarms[suspectId] && settled && view.state === 'up' && flaps === 0) out.push(effect(s, 'clear', 'node-suspect', name, `up, and not suspect for ${SUSPECT_WINDOW_MS / 1000} s`));
  }
  return out;
}

/** On an acknowledgement from `from`: it is alive; check its clock and its event loop. */
export function alarmsOnAck(s: MonitorState, env: MonitorEnv, from: string): AlarmEffect[] {
  const view = s.peers[from];
  if (view === undefined) return [];
  const out: AlarmEffect[] = [];
  if (s.alarms[alarmId('node-down', from)]) out.push(effect(s, 'clear', 'node-down', from, 'heard again'));
  const skewed = Math.abs(view.skewMs) > env.config.maxClockSkewMs;
  if (skewed && !s.alarms[alarmId('clock-skew', from)]) out.push(effect(s, 'raise', 'clock-skew', from, `${view.skewMs > 0 ? '+' : ''}${Math.round(view.skewMs / 1000)} s`));
  if (!skewed && s.alarms[alarmId('clock-skew', from)]) out.push(effect(s, 'clear', 'clock-skew', from, 'within bounds'));
  const stalled = view.loopDelayMs >= STALL_ALARM_MS;
  if (stalled && !s.alarms[alarmId('event-loop-stall', from)]) out.push(effect(s, 'raise', 'event-loop-stall', from, `${Math.round(view.loopDelayMs)} ms`));
  if (view.loopDelayMs < STALL_ALARM_MS / 2 && s.alarms[alarmId('event-loop-stall', from)]) out.push(effect(s, 'clear', 'event-loop-stall', from, `${Math.round(view.loopDelayMs)} ms`));
  return out;
}
