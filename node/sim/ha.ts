/**
 * The HA managers under the monitors' simulator (monitor.ts): the same clock, queue, network
 * and scenario language, plus what HA needs. Each node's election machine is stepped as before;
 * after each tick the node runs its HA manager (only while its monitor holds the primary lease,
 * taking over from what the previous primary persisted) and its local manager, and HA messages
 * travel the same lossy network. Guests are processes apart from the daemon: `kill n2` kills the
 * daemon and leaves its guests and fence guard running (`kill n2 guard` kills the guard too, and
 * with it the HA guests, its children), `power n2 off` kills everything, `stall` stops the daemon
 * but not the guard. Extra commands: `kill n2 [guard]`, `start n2`, `crash X`,
 * `break n2 X` / `fix n2 X` (starts of X fail there), `maintenance n2 on|off`,
 * `shutdown n2 freeze|failover|migrate|conditional [reboot|poweroff]`, `system X stop|start`.
 *
 * Checked after every step (a violation throws): an HA system never runs on two nodes; every
 * grant is sent by the lease-holding primary of the term it carries; every start or migration a
 * node carries out comes from an order of a term no older than the newest its monitor knows;
 * HA state writes carry the newest term (older ones are refused, as the CDB's fencing would).
 */
import { primaryOf } from '../../actors/monitor/election.js';
import { localStep, initialLocal, type GuestState, type LocalEffect, type LocalEnv, type LocalState } from '../../actors/ha/local.js';
import { managerStep, takeOver, type ManagerEffect, type ManagerEnv, type ManagerState, type PersistedHa } from '../../actors/ha/manager.js';
import { defaultHaConfig, haMessageSchema, type HaConfig, type HaMessage, type HaNodeSpec, type HaStatusMessage, type HaSystemSpec } from '../../actors/ha/protocol.js';
import { MonitorSim, parseDuration, type ClusterSpec, type SimEvent, type SimNode } from './monitor.js';

export interface HaClusterSpec extends ClusterSpec {
  nodes: { name: string; votes?: 0 | 1; witness?: boolean; memoryMiB?: number; vcpus?: number }[];
  systems: (Omit<HaSystemSpec, 'want' | 'memoryMiB' | 'vcpus'> & { memoryMiB?: number; vcpus?: number; want?: 'started' | 'stopped' })[];
  ha?: Partial<HaConfig>;
}

interface HaNode {
  /** The machine is on (its guests and guard can live); the daemon is `SimNode.power`. */
  machine: boolean;
  guests: Map<string, GuestState>;
  guardAlive: boolean;
  /** When the guard fires unless fed (0: not armed). */
  guardUntil: number;
  local: LocalState | null;
  manager: ManagerState | null;
  breaks: Set<string>;
  shutdown: { policy: NonNullable<HaStatusMessage['shutdown']>; at: number } | null;
  spec: HaNodeSpec;
}

export class HaSim extends MonitorSim {
  readonly ha: HaConfig;
  readonly haNodes = new Map<string, HaNode>();
  readonly specs = new Map<string, HaSystemSpec>();
  persisted: PersistedHa = {};
  private persistFence = 0;
  private migrations: { system: string; from: string; to: string; at: number }[] = [];
  grantsChecked = 0;

  constructor(spec: HaClusterSpec) {
    super(spec);
    this.ha = { ...defaultHaConfig, tickMs: this.config.tickMs, ...spec.ha };
    for (const node of spec.nodes) {
      this.haNodes.set(node.name, { machine: false, guests: new Map(), guardAlive: false, guardUntil: 0, local: null, manager: null, breaks: new Set(), shutdown: null, spec: { name: node.name, memoryMiB: node.memoryMiB ?? 8192, vcpus: node.vcpus ?? 8, maintenance: false } });
    }
    for (const system of [...spec.systems].sort((a, b) => a.id.localeCompare(b.id))) {
      this.specs.set(system.id, { ...system, memoryMiB: system.memoryMiB ?? 1024, vcpus: system.vcpus ?? 1, want: system.want ?? 'started' });
    }
  }

  private haNode(name: string): HaNode {
    const node = this.haNodes.get(name);
    if (!node) throw new Error(`no node '${name}' in this scenario`);
    return node;
  }

  /** Where each HA system runs now (node names, sorted). */
  where(system: string): string[] {
    return [...this.haNodes.entries()].filter(([, node]) => node.guests.get(system) === 'running' || node.guests.get(system) === 'migrating').map(([name]) => name).sort();
  }

  protected override powerOn(node: SimNode): void {
    const ha = this.haNode(node.name);
    if (!ha.machine) {
      ha.machine = true;
      ha.shutdown = null;
    }
    // The daemon starts its guard when there is none.
    if (!ha.guardAlive) {
      ha.guardAlive = true;
      ha.guardUntil = 0;
    }
    super.powerOn(node);
    if (node.power && ha.local === null) ha.local = initialLocal(node.name, this.localEnv(node));
  }

  protected override powerOff(node: SimNode): void {
    super.powerOff(node);
    const ha = this.haNode(node.name);
    ha.local = null;
    ha.manager = null;
    ha.machine = false;
    ha.guardAlive = false;
    ha.guardUntil = 0;
    for (const system of ha.guests.keys()) this.say(`guest ${system} on ${node.name} dies with the machine`);
    ha.guests.clear();
  }

  /** The daemon dies; its guests and (unless `guard`) its fence guard live on. */
  private kill(node: SimNode, guard: boolean): void {
    const ha = this.haNode(node.name);
    node.power = false;
    node.state = null;
    ha.local = null;
    ha.manager = null;
    if (guard) {
      // HA guests are the guard's children, started with a parent-death signal: they die with it.
      ha.guardAlive = false;
      ha.guardUntil = 0;
      for (const system of ha.guests.keys()) this.say(`guest ${system} on ${node.name} dies with its fence guard`);
      ha.guests.clear();
    }
  }

  protected override extCommand(words: readonly string[]): boolean {
    const [verb, a, b, c] = words;
    switch (verb) {
      case 'kill':
        this.kill(this.node(a ?? ''), b === 'guard');
        return true;
      case 'start': {
        const node = this.node(a ?? '');
        if (!this.haNode(node.name).machine) throw new Error(`start ${a}: the machine is off (use power ${a} on)`);
        this.powerOn(node);
        return true;
      }
      case 'crash':
        for (const [name, node] of this.haNodes) if (node.guests.delete(a ?? '')) this.say(`guest ${a} on ${name} crashes`);
        return true;
      case 'break':
        this.haNode(a ?? '').breaks.add(b ?? '');
        return true;
      case 'fix':
        this.haNode(a ?? '').breaks.delete(b ?? '');
        return true;
      case 'maintenance': {
        const node = this.haNode(a ?? '');
        node.spec = { ...node.spec, maintenance: b === 'on' };
        return true;
      }
      case 'shutdown': {
        const node = this.haNode(a ?? '');
        const policy = b === 'conditional' ? (c === 'reboot' ? 'freeze' : 'failover') : b;
        if (policy !== 'freeze' && policy !== 'failover' && policy !== 'migrate') throw new Error(`shutdown ${a}: policy must be freeze, failover, migrate or conditional`);
        node.shutdown = { policy, at: this.now };
        return true;
      }
      case 'system': {
        const spec = this.specs.get(a ?? '');
        if (!spec || (b !== 'stop' && b !== 'start')) throw new Error(`system ${a} ${b}: unknown system or verb`);
        this.specs.set(spec.id, { ...spec, want: b === 'stop' ? 'stopped' : 'started' });
        return true;
      }
      default:
        return false;
    }
  }

  private managerEnv(): ManagerEnv {
    return {
      config: this.ha,
      now: () => this.now,
      members: () => this.members.filter((member) => member.witness !== true).map((member) => member.name),
      nodes: () => [...this.haNodes.values()].map((node) => node.spec),
      systems: () => [...this.specs.values()],
    };
  }

  private localEnv(node: SimNode): LocalEnv {
    const ha = this.haNode(node.name);
    return {
      config: this.ha,
      now: () => this.now,
      leader: () => (node.state ? primaryOf(node.state, this.now) : null),
      term: () => node.state?.term ?? 0,
      guests: () => Object.fromEntries([...ha.guests.entries()].sort(([x], [y]) => x.localeCompare(y))),
      shutdown: () => ha.shutdown?.policy ?? null,
    };
  }

  protected override afterStep(node: SimNode, event: SimEvent): void {
    const ha = this.haNode(node.name);
    const state = node.state;
    if (!state || ha.local === null) return;
    if (event.type === 'tick') {
      const primary = primaryOf(state, this.now) === node.name && state.role === 'primary';
      if (!primary) ha.manager = null;
      else {
        if (ha.manager === null || ha.manager.term !== state.term) {
          const taken = takeOver(node.name, state.term, this.persisted);
          ha.manager = taken.state;
          this.applyManager(node, taken.effects);
        }
        const result = managerStep(ha.manager, { type: 'tick' }, this.managerEnv());
        ha.manager = result.state;
        this.applyManager(node, result.effects);
      }
      const local = localStep(ha.local, { type: 'tick' }, this.localEnv(node));
      ha.local = local.state;
      this.applyLocal(node, local.effects);
      return;
    }
    if (event.type !== 'ext') return;
    const message = haMessageSchema.parse(event.message);
    if (message.type === 'ha.status') {
      if (ha.manager === null || primaryOf(state, this.now) !== node.name) return;
      const result = managerStep(ha.manager, { type: 'receive', from: event.from, message }, this.managerEnv());
      ha.manager = result.state;
      this.applyManager(node, result.effects);
    } else {
      const local = localStep(ha.local, { type: 'receive', from: event.from, message }, this.localEnv(node));
      ha.local = local.state;
      this.applyLocal(node, local.effects);
    }
  }

  private sendHa(node: SimNode, to: string, message: HaMessage): void {
    this.send(node, to, { ext: message });
  }

  private applyManager(node: SimNode, effects: readonly ManagerEffect[]): void {
    for (const effect of effects) {
      switch (effect.kind) {
        case 'send': {
          const state = node.state;
          if (!state || state.role !== 'primary' || primaryOf(state, this.now) !== node.name || effect.message.term !== state.term) {
            this.violation(`${node.name} sent a grant of term ${effect.message.term} without holding the primary lease of that term`);
          }
          this.grantsChecked += 1;
          this.sendHa(node, effect.to, effect.message);
          break;
        }
        case 'persist':
          if (effect.term < this.persistFence) {
            this.say(`ha state write by ${node.name} term ${effect.term} refused: term ${this.persistFence} seen`);
            break;
          }
          this.persistFence = effect.term;
          this.persisted = effect.systems;
          break;
        case 'log':
          this.say(effect.line);
          break;
        default: {
          const unreachable: never = effect;
          throw new Error(`unknown effect ${JSON.stringify(unreachable)}`);
        }
      }
    }
  }

  private checkOrderTerm(node: SimNode, term: number, what: string): void {
    const known = node.state?.term ?? 0;
    if (term < known) this.violation(`${node.name} ${what} on an order of term ${term}, though its monitor knows term ${known}`);
  }

  private applyLocal(node: SimNode, effects: readonly LocalEffect[]): void {
    const ha = this.haNode(node.name);
    for (const effect of effects) {
      switch (effect.kind) {
        case 'send':
          this.sendHa(node, effect.to, effect.message);
          break;
        case 'start':
          this.checkOrderTerm(node, effect.term, `started ${effect.system}`);
          if (ha.guests.has(effect.system)) break;
          if (ha.breaks.has(effect.system)) {
            this.say(`guest ${effect.system} fails to start on ${node.name}`);
            break;
          }
          this.runGuest(node.name, effect.system, 'starts');
          break;
        case 'stop':
          if (ha.guests.delete(effect.system)) this.say(`guest ${effect.system} on ${node.name} stopped (${effect.why})`);
          break;
        case 'migrate':
          this.checkOrderTerm(node, effect.term, `migrated ${effect.system}`);
          if (ha.guests.get(effect.system) !== 'running') break;
          ha.guests.set(effect.system, 'migrating');
          this.migrations.push({ system: effect.system, from: node.name, to: effect.target, at: this.now + 500 });
          break;
        case 'feed':
          ha.guardUntil = effect.until;
          break;
        case 'log':
          this.say(effect.line);
          break;
        default: {
          const unreachable: never = effect;
          throw new Error(`unknown effect ${JSON.stringify(unreachable)}`);
        }
      }
    }
  }

  private runGuest(on: string, system: string, verb: string): void {
    const elsewhere = this.where(system).filter((name) => name !== on);
    if (elsewhere.length > 0) this.violation(`${system} runs on ${on} and on ${elsewhere.join(',')}`);
    this.haNode(on).guests.set(system, 'running');
    this.say(`guest ${system} ${verb} on ${on}`);
  }

  protected override onClock(): void {
    for (const [name, node] of this.haNodes) {
      if (node.guardAlive && node.guardUntil > 0 && this.now >= node.guardUntil) {
        node.guardUntil = 0;
        if (node.guests.size > 0) {
          this.say(`fence guard on ${name} fires: kills ${[...node.guests.keys()].sort().join(',')}`);
          node.guests.clear();
        }
      }
      // A node shutting down powers off once its HA guests are gone, after a second for its reports to reach the primary.
      const since = node.shutdown === null ? 0 : this.now - node.shutdown.at;
      if (node.shutdown !== null && node.machine && ((node.guests.size === 0 && since >= 1000) || since > 10_000)) {
        this.say(`${name} shuts down (policy ${node.shutdown.policy})`);
        this.powerOff(this.node(name));
      }
    }
    const due = this.migrations.filter((migration) => migration.at <= this.now);
    this.migrations = this.migrations.filter((migration) => migration.at > this.now);
    for (const migration of due) {
      const from = this.haNode(migration.from);
      if (from.guests.get(migration.system) !== 'migrating') continue;
      const to = this.haNodes.get(migration.to);
      if (to?.machine === true && this.reachable(migration.from, migration.to)) {
        from.guests.delete(migration.system);
        this.runGuest(migration.to, migration.system, `arrives from ${migration.from}`);
      } else {
        from.guests.set(migration.system, 'running');
        this.say(`migration of ${migration.system} from ${migration.from} to ${migration.to} fails`);
      }
    }
  }

  /** Runs a scenario, then says where every HA system runs. */
  override runRounds(rounds: readonly (readonly string[])[]): void {
    super.runRounds(rounds);
    for (const id of this.specs.keys()) {
      const where = this.where(id);
      this.say(`end: ${id} runs on ${where.length === 0 ? 'no node' : where.join(',')} (${this.persisted[id]?.state ?? 'unknown'})`);
    }
  }
}

export { parseDuration };
