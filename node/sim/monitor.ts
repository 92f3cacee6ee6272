/**
 * A deterministic simulator for the monitors' step machine (actors/monitor/election.ts), in the
 * manner of pve-ha-manager's: one fake clock, one event queue ordered by time then by insertion,
 * nodes iterated in sorted order, one seeded random source, and a network that drops, delays,
 * duplicates and partitions. Commands are the scenario language (`power n2 off`, `network n3 off`,
 * `stall n1 4000`, `clock n2 +30s`, `partition n1,n2|n3`, `heal`, ...). Every transition is a line
 * of the log; the invariants are checked after every step and a violation throws.
 */
import { alarmRules, type AlarmEffect, type AlarmView } from '../../actors/monitor/alarms.js';
import { defaultMonitorConfig, initialState, primaryOf, quorumOf, step, type Effect, type Member, type MonitorConfig, type MonitorEnv, type MonitorEvent, type MonitorState, type PeerMessage } from '../../actors/monitor/election.js';
import { seeded } from '../../runtime/sim.js';

export { seeded };

export interface ClusterSpec {
  nodes: { name: string; votes?: 0 | 1; witness?: boolean }[];
  /** Simulated time each round of commands runs for (default 3000 ms). */
  roundMs?: number;
  seed?: number;
  config?: Partial<MonitorConfig>;
}

export interface SimNode {
  name: string;
  power: boolean;
  net: boolean;
  stalledUntil: number;
  /** Wall clock minus real time. */
  clockOffset: number;
  disk: { term: number; votedFor: string | null };
  state: MonitorState | null;
  /** Bumped at every power on, so a dead incarnation's queued events are ignored. */
  boot: number;
  random: () => number;
}

/** A monitor event, or one for an extension of the simulator (the HA managers: node/sim/ha.ts). */
export type SimEvent = MonitorEvent | { type: 'ext'; from: string; message: unknown };

interface Queued {
  at: number;
  seq: number;
  node: string;
  boot: number;
  event: SimEvent;
}

export interface StoredAlarm extends AlarmView {
  severity: string;
  open: boolean;
  term: number;
  by: string;
  history: string[];
}

export class InvariantViolation extends Error {}

export class MonitorSim {
  now = 0;
  readonly log: string[] = [];
  readonly config: MonitorConfig;
  readonly roundMs: number;
  readonly nodes = new Map<string, SimNode>();
  members: Member[];
  readonly alarms = new Map<string, StoredAlarm>();
  /** The highest term any alarm write carried: older ones are refused (the fencing token). */
  private alarmFence = 0;
  private queue: Queued[] = [];
  private seq = 0;
  protected readonly rand: () => number;
  private groups: string[][] | null = null;
  private dropRate = 0;
  private dupRate = 0;
  private delay: [number, number] = [1, 5];
  /** Invariant bookkeeping: who became primary in each term, who voted for whom, every lease. */
  private readonly primaryOfTerm = new Map<number, string>();
  private readonly votesOfTerm = new Map<number, Map<string, string>>();
  private readonly leases: { node: string; term: number; from: number; until: number }[] = [];
  stepsChecked = 0;

  constructor(spec: ClusterSpec) {
    this.config = { ...defaultMonitorConfig, ...spec.config };
    this.roundMs = spec.roundMs ?? 3000;
    this.rand = seeded(spec.seed ?? 1);
    this.members = spec.nodes.map((node) => ({ name: node.name, votes: node.votes ?? 1, ...(node.witness ? { witness: true } : {}) })).sort((a, b) => a.name.localeCompare(b.name));
    for (const member of this.members) {
      this.nodes.set(member.name, { name: member.name, power: false, net: true, stalledUntil: 0, clockOffset: 0, disk: { term: 0, votedFor: null }, state: null, boot: 0, random: seeded(Math.floor(this.rand() * 2 ** 32)) });
    }
  }

  protected say(line: string): void {
    this.log.push(`${String(this.now).padStart(6)} ${line}`);
  }

  protected node(name: string): SimNode {
    const node = this.nodes.get(name);
    if (!node) throw new Error(`no node '${name}' in this scenario`);
    return node;
  }

  private envFor(node: SimNode): MonitorEnv {
    return {
      config: this.config,
      now: () => this.now,
      wall: () => 1_800_000_000_000 + this.now + node.clockOffset,
      random: node.random,
      members: () => this.members,
      openAlarms: () => [...this.alarms.values()].filter((alarm) => alarm.open),
    };
  }

  protected push(at: number, node: SimNode, event: SimEvent): void {
    const item: Queued = { at, seq: this.seq++, node: node.name, boot: node.boot, event };
    // Insertion in order: queues are short (a few hundred events), and ties keep insertion order.
    let index = this.queue.length;
    while (index > 0 && (this.queue[index - 1]!.at > at || (this.queue[index - 1]!.at === at && this.queue[index - 1]!.seq > item.seq))) index -= 1;
    this.queue.splice(index, 0, item);
  }

  /** Runs one command of the scenario language. */
  command(text: string): void {
    this.say(`cmd: ${text}`);
    const words = text.trim().split(/\s+/);
    const [verb, target, arg] = words;
    const targets = (name: string | undefined) => (name === 'all' ? [...this.nodes.values()] : [this.node(name ?? '')]);
    switch (verb) {
      case 'power':
        for (const node of targets(target)) (arg === 'on' ? this.powerOn(node) : this.powerOff(node));
        return;
      case 'restart':
        for (const node of targets(target)) {
          this.powerOff(node);
          this.powerOn(node);
        }
        return;
      case 'network':
        for (const node of targets(target)) node.net = arg === 'on';
        return;
      case 'stall':
        for (const node of targets(target)) node.stalledUntil = this.now + Number(arg);
        return;
      case 'clock':
        for (const node of targets(target)) node.clockOffset += parseDuration(arg ?? '0');
        return;
      case 'partition':
        this.groups = (target ?? '').split('|').map((group) => group.split(','));
        return;
      case 'heal':
        this.groups = null;
        this.dropRate = 0;
        this.dupRate = 0;
        this.delay = [1, 5];
        for (const node of this.nodes.values()) node.net = true;
        return;
      case 'drop':
        this.dropRate = Number(target);
        return;
      case 'dup':
        this.dupRate = Number(target);
        return;
      case 'delay':
        this.delay = [Number(target), Number(arg)];
        return;
      case 'remove':
        this.members = this.members.filter((member) => member.name !== target);
        return;
      case 'wait':
        this.run(parseDuration(target ?? '0'));
        return;
      default:
        if (!this.extCommand(words)) throw new Error(`unknown scenario command '${text}'`);
    }
  }

  /** Scenario commands of an extension: true when handled. */
  protected extCommand(_words: readonly string[]): boolean {
    return false;
  }

  /** Called after every monitor step of a node, and for every `ext` event (not while the node is stalled). */
  protected afterStep(_node: SimNode, _event: SimEvent): void {}

  /** Called whenever the clock moves to the next event, before it is handled, stalled node or not. */
  protected onClock(): void {}

  protected powerOn(node: SimNode): void {
    if (node.power) return;
    node.power = true;
    node.boot += 1;
    node.stalledUntil = 0;
    node.state = initialState(node.name, node.disk, this.envFor(node));
    // The first tick at a random phase, so nodes do not tick in lockstep.
    this.push(this.now + 1 + Math.floor(node.random() * this.config.tickMs), node, { type: 'tick' });
  }

  protected powerOff(node: SimNode): void {
    node.power = false;
    // Its lease stays on the books: a dead primary's lease must still never overlap the next one.
    node.state = null;
  }

  protected reachable(from: string, to: string): boolean {
    const a = this.nodes.get(from);
    const b = this.nodes.get(to);
    if (!a || !b || !a.net || !b.net) return false;
    if (this.groups === null) return true;
    return this.groups.some((group) => group.includes(from) && group.includes(to));
  }

  protected send(from: SimNode, to: string, message: PeerMessage | { ext: unknown }): void {
    const target = this.nodes.get(to);
    if (!target || !this.reachable(from.name, to) || this.rand() < this.dropRate) return;
    const copies = this.rand() < this.dupRate ? 2 : 1;
    for (let copy = 0; copy < copies; copy += 1) {
      const latency = this.delay[0] + Math.floor(this.rand() * (this.delay[1] - this.delay[0] + 1));
      this.push(this.now + latency, target, 'ext' in message ? { type: 'ext', from: from.name, message: message.ext } : { type: 'receive', from: from.name, message });
    }
  }

  /** Runs the queue until `ms` of simulated time have passed. */
  run(ms: number): void {
    const end = this.now + ms;
    while (this.queue.length > 0 && this.queue[0]!.at <= end) {
      const item = this.queue.shift()!;
      this.now = item.at;
      this.onClock();
      const node = this.nodes.get(item.node)!;
      if (!node.power || node.state === null || item.boot !== node.boot) continue;
      if (item.event.type !== 'tick' && !this.reachable(item.event.from, node.name)) continue;
      if (this.now < node.stalledUntil) {
        // A stalled loop handles nothing; what arrived waits, and the interval timer fires once after.
        const pendingTick = item.event.type === 'tick' && this.queue.some((other) => other.node === node.name && other.event.type === 'tick' && other.boot === node.boot);
        if (!pendingTick) this.push(node.stalledUntil, node, item.event);
        continue;
      }
      if (item.event.type === 'tick') this.push(this.now + this.config.tickMs, node, { type: 'tick' });
      if (item.event.type !== 'ext') {
        const { state, effects } = step(node.state, item.event, this.envFor(node));
        node.state = state;
        this.apply(node, effects);
        this.check(node);
      }
      this.afterStep(node, item.event);
    }
    this.now = end;
    this.onClock();
  }

  private apply(node: SimNode, effects: readonly Effect[]): void {
    for (const effect of effects) {
      switch (effect.kind) {
        case 'send':
          this.send(node, effect.to, effect.message);
          break;
        case 'persist':
          node.disk = { term: effect.term, votedFor: effect.votedFor };
          if (effect.votedFor !== null) this.recordVote(node.name, effect.term, effect.votedFor);
          break;
        case 'log':
          this.say(effect.line);
          if (effect.line.includes(' becomes primary ')) this.recordPrimary(node);
          break;
        case 'primary':
          break;
        case 'alarm':
          this.writeAlarm(effect);
          break;
        default: {
          const unreachable: never = effect;
          throw new Error(`unknown effect ${JSON.stringify(unreachable)}`);
        }
      }
    }
  }

  private writeAlarm(effect: AlarmEffect): void {
    const verb = effect.op === 'raise' ? 'raised' : 'cleared';
    if (effect.term < this.alarmFence) {
      this.say(`alarm ${effect.rule} ${effect.subject} ${verb} by ${effect.by} term ${effect.term} refused: term ${this.alarmFence} seen`);
      return;
    }
    this.alarmFence = effect.term;
    const holder = this.nodes.get(effect.by)?.state;
    if (this.primaryOfTerm.get(effect.term) !== effect.by || !holder || primaryOf(holder, this.now) !== effect.by) {
      this.violation(`alarm ${effect.id} ${verb} by ${effect.by} in term ${effect.term}, which is not the lease-holding primary of that term`);
    }
    const existing = this.alarms.get(effect.id);
    if (effect.op === 'raise' && existing?.open) this.violation(`alarm ${effect.id} raised twice (open since term ${existing.term})`);
    const alarm: StoredAlarm = existing ?? { id: effect.id, rule: effect.rule, subject: effect.subject, severity: alarmRules[effect.rule].severity, open: false, term: effect.term, by: effect.by, history: [] };
    alarm.open = effect.op === 'raise';
    alarm.term = effect.term;
    alarm.by = effect.by;
    alarm.history.push(`${this.now} ${verb} by ${effect.by} term ${effect.term}`);
    this.alarms.set(effect.id, alarm);
    this.say(`alarm ${effect.rule} ${effect.subject} ${verb} by ${effect.by} term ${effect.term} (${effect.detail})`);
  }

  protected violation(what: string): never {
    throw new InvariantViolation(`invariant violated at ${this.now} ms: ${what}\n${this.log.slice(-30).join('\n')}`);
  }

  private recordVote(voter: string, term: number, candidate: string): void {
    const votes = this.votesOfTerm.get(term) ?? new Map<string, string>();
    const earlier = votes.get(voter);
    if (earlier !== undefined && earlier !== candidate) this.violation(`${voter} voted twice in term ${term}: ${earlier} and ${candidate}`);
    votes.set(voter, candidate);
    this.votesOfTerm.set(term, votes);
  }

  private recordPrimary(node: SimNode): void {
    const state = node.state!;
    const earlier = this.primaryOfTerm.get(state.term);
    if (earlier !== undefined && earlier !== node.name) this.violation(`two primaries in term ${state.term}: ${earlier} and ${node.name}`);
    this.primaryOfTerm.set(state.term, node.name);
    const votes = [...(this.votesOfTerm.get(state.term) ?? new Map<string, string>()).entries()].filter(([, candidate]) => candidate === node.name).map(([voter]) => voter);
    const voting = votes.filter((voter) => this.members.some((member) => member.name === voter && member.votes > 0));
    if (voting.length < quorumOf(this.members)) this.violation(`${node.name} became primary of term ${state.term} with votes ${voting.join(',')}: no majority`);
    this.leases.push({ node: node.name, term: state.term, from: this.now, until: state.leaseUntil });
  }

  /** After every step: the lease of the node that stepped may only have grown within its term, and no two leases overlap. */
  private check(node: SimNode): void {
    this.stepsChecked += 1;
    const state = node.state;
    if (!state || state.role !== 'primary') return;
    const lease = this.leases.findLast((candidate) => candidate.node === node.name && candidate.term === state.term);
    if (!lease) this.violation(`${node.name} is primary of term ${state.term} without having been elected`);
    lease.until = Math.max(lease.until, state.leaseUntil);
    for (const other of this.leases) {
      if (other === lease || other.until <= other.from) continue;
      if (other.from < lease.until && lease.from < other.until) {
        this.violation(`leases overlap: ${lease.node} term ${lease.term} [${lease.from}, ${lease.until}) and ${other.node} term ${other.term} [${other.from}, ${other.until})`);
      }
    }
  }

  /** What every powered node takes the primary to be now. */
  views(): Map<string, string | null> {
    const views = new Map<string, string | null>();
    for (const node of this.nodes.values()) if (node.state) views.set(node.name, primaryOf(node.state, this.now));
    return views;
  }

  /** Runs a scenario: rounds of commands, each round followed by `roundMs` of simulated time. */
  runRounds(rounds: readonly (readonly string[])[]): void {
    for (const round of rounds) {
      for (const command of round) this.command(command);
      this.run(this.roundMs);
    }
    const views = [...this.views().entries()].map(([name, primary]) => `${name}=${primary ?? '-'}`);
    this.say(`end: primary as seen by ${views.join(' ')}`);
  }
}

export function parseDuration(text: string): number {
  const match = /^([+-]?\d+)(ms|s)?$/.exec(text);
  if (!match) throw new Error(`bad duration '${text}': use e.g. 4000, 4000ms or +30s`);
  return Number(match[1]) * (match[2] === 's' ? 1000 : 1);
}
