/**
 * The monitors' election and failure detection, as one pure step function:
 * `step(state, event, env) -> { state, effects }`. No clock, randomness, timers or I/O inside:
 * the env gives readings (monotonic and wall clock, random, the cluster's members and open alarms
 * from the CDB), and the effects say what to do (send, persist, raise or clear an alarm, log a
 * transition). The same code runs under the deterministic simulator (node/sim/monitor.ts)
 * and in `acpd` (actors/monitor/index.ts).
 *
 * - Terms and votes are Raft's, among the voting members (`votes: 1`, the default). A follower
 *   that hears nothing from a primary for a randomized election timeout first asks a pre-vote
 *   (nobody changes state), so a node cut off alone never inflates the term and never disrupts a
 *   healthy primary when it comes back; only with a majority of pre-votes does it stand in a new
 *   term. `term` and `votedFor` are persisted before a vote is sent, so a restart never votes twice.
 * - Leases: every voter that acknowledges a primary (or grants a vote) promises to vote for nobody
 *   else for `leaseMs` from when it received the request. The primary's own ack in each round is
 *   such a promise too (it may step down early, on a newer term, while its lease still holds), and
 *   no node casts even its own ballot while its promise holds. The primary counts its lease from when
 *   it sent the request, minus a margin for clock-rate drift. So its lease always ends before the
 *   last of a majority's promises, and two leases never overlap in real time. A booting node makes
 *   the same promise (it may have made one before it stopped). Leases use the monotonic clock only:
 *   a wall-clock jump changes nothing.
 * - A primary that has not renewed with a majority by the end of its lease steps down then; it
 *   acts (raises alarms, answers for `@primary`) only while the lease holds. Every command it
 *   issues carries its term, and a node that has seen a newer term refuses it.
 * - Failure detection (on the primary): a member silent for `downAfterMs` is down, for
 *   `suspectAfterMs` suspect. Both are extended by the event-loop delay the member last reported
 *   (a busy node is slow, not dead), and when the primary's own loop stalls, the stall is given
 *   back to every member's silence (it heard nobody because it listened to nobody).
 */
import { alarmsOnAck, alarmsOnElection, alarmsOnTick } from './alarms.js';
import type { Member, PeerMessage } from './protocol.js';
import type { Effect, Liveness, MonitorEnv, MonitorEvent, MonitorState, PeerView, StepResult } from './state.js';

export { defaultMonitorConfig, type Member, type MonitorConfig, type PeerMessage } from './protocol.js';
export type { Effect, Liveness, MonitorEnv, MonitorEvent, MonitorState, PeerView, Role, Round, StepResult } from './state.js';

/** The state a node boots with, from what it persisted. It promises for one lease first (see above). */
export function initialState(self: string, persisted: { term: number; votedFor: string | null }, env: MonitorEnv): MonitorState {
  const now = env.now();
  return {
    self,
    term: persisted.term,
    votedFor: persisted.votedFor,
    role: 'follower',
    leader: null,
    lastLeader: null,
    lastLeaderAt: 0,
    promiseUntil: now + env.config.leaseMs,
    electionDeadline: now + electionTimeout(env),
    electionStartedAt: 0,
    ballots: [],
    leaseUntil: 0,
    primarySince: 0,
    round: 0,
    nextRenewAt: 0,
    rounds: [],
    peers: {},
    alarms: {},
    lastTickAt: now,
    loopDelayMs: 0,
  };
}

/** The node this one takes to hold the lease now, if any: what `@primary` resolves to. */
export function primaryOf(state: MonitorState, now: number): string | null {
  if (state.role === 'primary') return now < state.leaseUntil ? state.self : null;
  return state.leader !== null && now < state.promiseUntil ? state.leader : null;
}

function electionTimeout(env: MonitorEnv): number {
  const { electionMinMs, electionMaxMs } = env.config;
  return electionMinMs + Math.floor(env.random() * (electionMaxMs - electionMinMs));
}

export function quorumOf(members: readonly Member[]): number {
  return Math.floor(members.reduce((sum, member) => sum + member.votes, 0) / 2) + 1;
}

function clone(state: MonitorState): MonitorState {
  const peers: Record<string, PeerView> = {};
  for (const [name, view] of Object.entries(state.peers)) peers[name] = { ...view };
  return { ...state, ballots: [...state.ballots], rounds: state.rounds.map((round) => ({ ...round, acks: [...round.acks] })), peers, alarms: { ...state.alarms } };
}

/** One step. The state passed in is not changed. */
export function step(previous: MonitorState, event: MonitorEvent, env: MonitorEnv): StepResult {
  const s = clone(previous);
  const out: Effect[] = [];
  const members = env.members();
  const me = members.find((member) => member.name === s.self);
  if (me === undefined) {
    // Removed from the cluster (or not yet in it): no vote, no candidacy, no primary.
    if (s.role === 'primary') stepDown(s, out, 'removed from the cluster');
    s.role = 'follower';
    return { state: s, effects: out };
  }
  const before = primaryOf(previous, env.now());
  switch (event.type) {
    case 'tick':
      onTick(s, out, env, members, me);
      break;
    case 'receive':
      if (members.some((member) => member.name === event.from)) onReceive(s, out, env, members, me, event.from, event.message);
      break;
    default: {
      const unreachable: never = event;
      return unreachable;
    }
  }
  const after = primaryOf(s, env.now());
  if (after !== before) out.push({ kind: 'primary', primary: after, term: s.term });
  return { state: s, effects: out };
}

function log(s: MonitorState, out: Effect[], what: string): void {
  out.push({ kind: 'log', line: `${s.self}: term ${s.term}: ${what}` });
}

function stepDown(s: MonitorState, out: Effect[], why: string): void {
  if (s.role === 'primary') log(s, out, `${s.self} steps down: ${why}`);
  s.role = 'follower';
  s.leader = null;
  s.leaseUntil = 0;
  s.rounds = [];
  s.peers = {};
  s.alarms = {};
}

/** Moves to a newer term seen in a message: persisted before anything else is sent. */
function adoptTerm(s: MonitorState, out: Effect[], term: number, from: string): void {
  if (s.role === 'primary') stepDown(s, out, `saw term ${term} from ${from}`);
  s.term = term;
  s.votedFor = null;
  s.role = 'follower';
  s.leader = null;
  s.ballots = [];
  out.push({ kind: 'persist', term: s.term, votedFor: null });
}

function voters(members: readonly Member[], except: string): string[] {
  return members.filter((member) => member.votes > 0 && member.name !== except).map((member) => member.name);
}

function onTick(s: MonitorState, out: Effect[], env: MonitorEnv, members: readonly Member[], me: Member): void {
  const now = env.now();
  const { config } = env;
  const delay = Math.max(0, now - s.lastTickAt - config.tickMs);
  s.lastTickAt = now;
  // Decays by a tenth per tick: a one-off stall is reported for a few seconds, then forgotten.
  s.loopDelayMs = Math.max(delay, Math.floor(s.loopDelayMs * 0.9));
  if (delay > config.tickMs) {
    // Our own loop stalled: nobody could be heard meanwhile. Give the stall back to the failure
    // detector and the election timer, never to the lease (real time did pass).
    for (const view of Object.values(s.peers)) view.lastSeen += delay;
    s.lastLeaderAt += delay;
    s.electionDeadline += delay;
  }
  switch (s.role) {
    case 'primary':
      if (now >= s.leaseUntil) {
        stepDown(s, out, delay > config.tickMs ? `its lease ran out while its event loop stalled ${delay} ms` : 'no majority renewed the lease in time');
        s.electionDeadline = now + electionTimeout(env);
        return;
      }
      s.lastLeader = s.self;
      s.lastLeaderAt = now;
      if (now >= s.nextRenewAt) startRound(s, out, env, members);
      detect(s, out, env, members);
      return;
    case 'follower':
    case 'precandidate':
    case 'candidate':
      if (now < s.electionDeadline) return;
      // Our own ballot is a vote like any other: while our promise holds (to a primary we acked,
      // or to ourselves as a primary that stepped down on a newer term), we cast none, not even for us.
      if (now < s.promiseUntil) return;
      s.electionDeadline = now + electionTimeout(env);
      if (me.votes === 0 || me.witness === true) return;
      // A failed attempt: go back to asking pre-votes, in the current term.
      s.role = 'precandidate';
      s.leader = null;
      s.ballots = [s.self];
      for (const voter of voters(members, s.self)) out.push({ kind: 'send', to: voter, message: { type: 'monitor.prevote', term: s.term + 1 } });
      maybeStand(s, out, env, members);
      return;
    default: {
      const unreachable: never = s.role;
      return unreachable;
    }
  }
}

function startRound(s: MonitorState, out: Effect[], env: MonitorEnv, members: readonly Member[]): void {
  const now = env.now();
  s.round += 1;
  s.nextRenewAt = now + env.config.renewMs;
  s.rounds.push({ round: s.round, sentAt: now, acks: [s.self] });
  // Acks older than a lease can no longer extend it.
  const oldest = now - env.config.leaseMs;
  s.rounds = s.rounds.filter((round) => round.sentAt >= oldest);
  const message: PeerMessage = { type: 'monitor.renew', term: s.term, round: s.round, wall: env.wall(), loopDelayMs: s.loopDelayMs };
  for (const member of members) {
    if (member.name === s.self) continue;
    // A member held down hears every fifth renewal only: enough to rejoin, without a dead letter
    // (and a reconnection attempt) five times a second for as long as it is dead.
    if (s.peers[member.name]?.state === 'down' && s.round % 5 !== 0) continue;
    out.push({ kind: 'send', to: member.name, message });
  }
  extendLease(s, members, env);
}

function extendLease(s: MonitorState, members: readonly Member[], env: MonitorEnv): void {
  const quorum = quorumOf(members);
  const votes = new Set(members.filter((member) => member.votes > 0).map((member) => member.name));
  for (const round of s.rounds) {
    if (round.acks.filter((name) => votes.has(name)).length < quorum) continue;
    s.leaseUntil = Math.max(s.leaseUntil, round.sentAt + env.config.leaseMs - env.config.leaseMarginMs);
    // The primary's own ack is one of that majority, so it is a promise like any voter's: should it
    // step down early (on a newer term), it votes for nobody until this lease has ended.
    s.promiseUntil = Math.max(s.promiseUntil, round.sentAt + env.config.leaseMs);
  }
}

function detect(s: MonitorState, out: Effect[], env: MonitorEnv, members: readonly Member[]): void {
  const now = env.now();
  const { config } = env;
  for (const member of members) {
    if (member.name === s.self) continue;
    const view = (s.peers[member.name] ??= { lastSeen: now, loopDelayMs: 0, state: 'up', skewMs: 0 });
    const credit = Math.min(view.loopDelayMs, config.maxStallCreditMs);
    const silent = now - view.lastSeen;
    const state: Liveness = silent > config.downAfterMs + credit ? 'down' : silent > config.suspectAfterMs + credit ? 'suspect' : 'up';
    if (state === view.state) continue;
    view.state = state;
    view.since = now;
    if (state === 'suspect') view.suspicions = [...(view.suspicions ?? []), now];
    log(s, out, `node ${member.name} ${state} (silent ${Math.round(silent)} ms)`);
  }
  out.push(...alarmsOnTick(s, env, members));
}

/** Becomes a candidate once a majority granted pre-votes, and primary once a majority voted. */
function maybeStand(s: MonitorState, out: Effect[], env: MonitorEnv, members: readonly Member[]): void {
  const quorum = quorumOf(members);
  if (s.role === 'precandidate' && s.ballots.length >= quorum) {
    s.role = 'candidate';
    s.term += 1;
    s.votedFor = s.self;
    s.ballots = [s.self];
    s.electionStartedAt = env.now();
    out.push({ kind: 'persist', term: s.term, votedFor: s.self });
    log(s, out, `${s.self} stands for election`);
    for (const voter of voters(members, s.self)) out.push({ kind: 'send', to: voter, message: { type: 'monitor.vote', term: s.term } });
  }
  if (s.role === 'candidate' && s.ballots.length >= quorum) {
    const leaseUntil = s.electionStartedAt + env.config.leaseMs - env.config.leaseMarginMs;
    // Votes that came too late to cover any lease: wait for the timeout and try again.
    if (env.now() >= leaseUntil) return;
    s.role = 'primary';
    s.leader = s.self;
    s.leaseUntil = leaseUntil;
    // Its own vote is one of the majority behind this lease: a promise, as in extendLease.
    s.promiseUntil = Math.max(s.promiseUntil, s.electionStartedAt + env.config.leaseMs);
    s.round = 0;
    s.rounds = [];
    s.nextRenewAt = env.now();
    s.peers = {};
    if (s.lastLeader !== null && s.lastLeader !== s.self) s.peers[s.lastLeader] = { lastSeen: s.lastLeaderAt, loopDelayMs: 0, state: 'up', skewMs: 0 };
    s.alarms = {};
    for (const alarm of env.openAlarms()) s.alarms[alarm.id] = true;
    s.primarySince = env.now();
    log(s, out, `${s.self} becomes primary (votes ${[...s.ballots].sort().join(',')})`);
    out.push(...alarmsOnElection(s, env));
    startRound(s, out, env, members);
  }
}

function onReceive(s: MonitorState, out: Effect[], env: MonitorEnv, members: readonly Member[], me: Member, from: string, message: PeerMessage): void {
  const now = env.now();
  const sender = members.find((member) => member.name === from);
  const senderVotes = sender !== undefined && sender.votes > 0;
  switch (message.type) {
    case 'monitor.prevote': {
      // No state changes: a pre-vote only asks whether a real vote could succeed.
      const granted = me.votes > 0 && message.term > s.term && now >= s.promiseUntil && s.role !== 'primary';
      out.push({ kind: 'send', to: from, message: { type: 'monitor.prevote-reply', term: message.term, granted } });
      return;
    }
    case 'monitor.prevote-reply':
      if (s.role !== 'precandidate' || message.term !== s.term + 1 || !message.granted || !senderVotes) return;
      if (!s.ballots.includes(from)) s.ballots = [...s.ballots, from].sort();
      maybeStand(s, out, env, members);
      return;
    case 'monitor.vote': {
      // While a promise holds, a vote request changes nothing, not even the term: the primary is alive.
      const free = now >= s.promiseUntil && s.role !== 'primary';
      if (message.term > s.term && free) adoptTerm(s, out, message.term, from);
      const granted = free && me.votes > 0 && message.term === s.term && (s.votedFor === null || s.votedFor === from);
      if (granted) {
        s.votedFor = from;
        s.promiseUntil = now + env.config.leaseMs;
        s.electionDeadline = now + electionTimeout(env);
        out.push({ kind: 'persist', term: s.term, votedFor: from });
      }
      out.push({ kind: 'send', to: from, message: { type: 'monitor.vote-reply', term: s.term, granted } });
      return;
    }
    case 'monitor.vote-reply':
      if (message.term > s.term) {
        adoptTerm(s, out, message.term, from);
        return;
      }
      if (s.role !== 'candidate' || message.term !== s.term || !message.granted || !senderVotes) return;
      if (!s.ballots.includes(from)) s.ballots = [...s.ballots, from].sort();
      maybeStand(s, out, env, members);
      return;
    case 'monitor.renew': {
      if (message.term < s.term) {
        // A fencing refusal: the old primary learns the newer term and steps down.
        out.push({ kind: 'send', to: from, message: { type: 'monitor.ack', term: s.term, round: message.round, ok: false, wall: env.wall(), loopDelayMs: s.loopDelayMs } });
        return;
      }
      if (message.term > s.term) adoptTerm(s, out, message.term, from);
      if (s.role !== 'follower') {
        s.role = 'follower';
        s.ballots = [];
      }
      if (s.leader !== from) {
        s.leader = from;
        log(s, out, `${s.self} follows ${from}`);
      }
      s.lastLeader = from;
      s.lastLeaderAt = now;
      s.promiseUntil = Math.max(s.promiseUntil, now + env.config.leaseMs);
      s.electionDeadline = now + electionTimeout(env);
      out.push({ kind: 'send', to: from, message: { type: 'monitor.ack', term: s.term, round: message.round, ok: true, wall: env.wall(), loopDelayMs: s.loopDelayMs } });
      return;
    }
    case 'monitor.ack': {
      if (message.term > s.term) {
        adoptTerm(s, out, message.term, from);
        s.electionDeadline = now + electionTimeout(env);
        return;
      }
      if (s.role !== 'primary' || message.term !== s.term || !message.ok) return;
      const round = s.rounds.find((candidate) => candidate.round === message.round);
      if (round && !round.acks.includes(from)) round.acks.push(from);
      extendLease(s, members, env);
      const view = (s.peers[from] ??= { lastSeen: now, loopDelayMs: 0, state: 'up', skewMs: 0 });
      view.lastSeen = now;
      view.loopDelayMs = message.loopDelayMs;
      view.skewMs = message.wall - env.wall();
      if (view.state !== 'up') {
        view.state = 'up';
        view.since = now;
        log(s, out, `node ${from} up`);
      }
      if (now < s.leaseUntil) out.push(...alarmsOnAck(s, env, from));
      return;
    }
    default: {
      const unreachable: never = message;
      return unreachable;
    }
  }
}
