/**
 * The HA manager: runs on the monitors' primary only while it holds its lease, as a pure step
 * `(state, event, env) -> { state, effects }` like the election (actors/monitor/election.ts).
 * It decides where every HA system runs and answers each node's report with a grant stamped with
 * its term: the node's lease and its orders.
 *
 * Safety (a system never runs on two nodes): a system only ever runs on its `node` (or, while it
 * migrates, on the migration's target, which the source hands it to). The manager changes a
 * system's node only once the old node has confirmed the system stopped (a report that applied the
 * stop order and no longer lists it) or has been fenced: silent since the manager's last grant to it
 * for longer than lease + fence timeout + margin, by which time the node stopped it itself (it
 * lost its lease) or its fence guard killed it. A new primary counts every node's last grant from
 * its own takeover (the previous primary's lease, and so every grant it gave, ended before), and
 * places nothing on one node while another has neither reported in its term nor been fenced.
 */
import { bestNode, type Placed } from './placement.js';
import type { HaConfig, HaGrantMessage, HaNodeSpec, HaNodeState, HaState, HaStatusMessage, HaSystemSpec, Order } from './protocol.js';
import type { ManagerEffect, ManagerEnv, ManagerEvent, ManagerState, NodeStatus, PersistedHa, SystemStatus } from './state.js';

export type { ManagerEffect, ManagerEnv, ManagerEvent, ManagerState, NodeStatus, PersistedHa, SystemStatus } from './state.js';

/** A new primary's manager, from what the previous one persisted. */
export function takeOver(self: string, term: number, persisted: PersistedHa): { state: ManagerState; effects: ManagerEffect[] } {
  const systems: Record<string, SystemStatus> = {};
  for (const [id, saved] of Object.entries(persisted)) systems[id] = { ...saved, tried: [...saved.tried], stopVersion: null };
  const state: ManagerState = { self, term, systems, nodes: {}, waiting: [] };
  const out: ManagerEffect[] = [];
  log(state, out, `HA manager takes over (${Object.keys(systems).length} systems)`);
  return { state, effects: out };
}

function log(s: ManagerState, out: ManagerEffect[], what: string): void {
  out.push({ kind: 'log', line: `${s.self}: term ${s.term}: ha ${what}` });
}

function clone(s: ManagerState): ManagerState {
  const systems: Record<string, SystemStatus> = {};
  for (const [id, sys] of Object.entries(s.systems)) systems[id] = { ...sys, tried: [...sys.tried] };
  const nodes: Record<string, NodeStatus> = {};
  for (const [name, node] of Object.entries(s.nodes)) nodes[name] = { ...node };
  return { ...s, systems, nodes, waiting: [...s.waiting] };
}

export function fenceDeadline(node: NodeStatus, config: HaConfig): number {
  return node.lastGrant + config.leaseMs + config.fenceTimeoutMs + config.marginMs;
}

export function managerStep(previous: ManagerState, event: ManagerEvent, env: ManagerEnv): { state: ManagerState; effects: ManagerEffect[] } {
  const s = clone(previous);
  const out: ManagerEffect[] = [];
  if (event.type === 'receive') {
    // A report changes what the manager knows of a node, never a system's state.
    if (event.message.type === 'ha.status') onStatus(s, out, env, event.from, event.message);
    return { state: s, effects: out };
  }
  const before = JSON.stringify(persistable(s));
  onTick(s, out, env);
  const after = persistable(s);
  // Persist before the grants that carry the decision go out.
  if (JSON.stringify(after) !== before) out.unshift({ kind: 'persist', term: s.term, systems: after });
  return { state: s, effects: out };
}

function persistable(s: ManagerState): PersistedHa {
  const out: PersistedHa = {};
  for (const id of Object.keys(s.systems).sort()) {
    const { state, node, target, home, relocates, tried } = s.systems[id]!;
    out[id] = { state, node, target, home, relocates, tried: [...tried] };
  }
  return out;
}

function nodeOf(s: ManagerState, name: string, env: ManagerEnv): NodeStatus {
  return (s.nodes[name] ??= { state: 'unknown', reported: false, lastReport: env.now(), lastGrant: env.now(), applied: 0, running: [], migrating: [], migrated: [], failed: [], shutdown: null, version: 0, orders: [] });
}

function onStatus(s: ManagerState, out: ManagerEffect[], env: ManagerEnv, from: string, message: HaStatusMessage): void {
  if (message.term !== s.term || !env.members().includes(from)) return;
  const node = nodeOf(s, from, env);
  node.reported = true;
  node.lastReport = env.now();
  node.applied = message.applied;
  node.running = [...message.running];
  node.migrating = [...message.migrating];
  node.migrated = [...message.migrated];
  node.failed = [...message.failed];
  node.shutdown = message.shutdown;
  node.lastGrant = env.now();
  const grant: HaGrantMessage = { type: 'ha.grant', term: s.term, seq: message.seq, version: node.version, orders: node.orders };
  out.push({ kind: 'send', to: from, message: grant });
}

function move(s: ManagerState, out: ManagerEffect[], id: string, sys: SystemStatus, state: HaState, why: string): void {
  const where = sys.node === null ? '' : `@${sys.node}`;
  log(s, out, `${id}${where} ${sys.state} -> ${state}: ${why}`);
  sys.state = state;
  if (state !== 'request-stop' && state !== 'relocate') sys.stopVersion = null;
}

const ACTIVE: readonly HaState[] = ['started', 'request-stop', 'relocate', 'migrate', 'fence'];

function onTick(s: ManagerState, out: ManagerEffect[], env: ManagerEnv): void {
  const now = env.now();
  const { config } = env;
  const members = env.members();
  const specs = new Map(env.systems().map((spec) => [spec.id, spec]));
  const nodeSpecs = new Map(env.nodes().map((node) => [node.name, node]));
  for (const spec of specs.values()) {
    if (s.systems[spec.id] !== undefined) continue;
    s.systems[spec.id] = { state: spec.want === 'started' ? 'started' : 'stopped', node: null, target: null, home: null, relocates: 0, tried: [], stopVersion: null };
    log(s, out, `${spec.id} added (${spec.want})`);
  }
  for (const id of Object.keys(s.systems)) {
    if (specs.has(id)) continue;
    log(s, out, `${id} removed`);
    delete s.systems[id];
  }
  const names = [...new Set([...members, ...Object.keys(s.nodes)])].sort();
  const heardOf = new Map(names.map((name) => {
    const node = nodeOf(s, name, env);
    return [name, members.includes(name) && node.reported && now - node.lastReport <= config.unknownAfterMs];
  }));
  // Node states, and fencing.
  for (const name of names) {
    const node = nodeOf(s, name, env);
    const member = members.includes(name);
    const recent = member && now - node.lastReport <= config.unknownAfterMs;
    const heard = heardOf.get(name) === true;
    const involved = Object.entries(s.systems).filter(([, sys]) => ACTIVE.includes(sys.state) && (sys.node === name || sys.target === name));
    let next: HaNodeState;
    if (heard) next = nodeSpecs.get(name)?.maintenance === true ? 'maintenance' : 'online';
    // A new primary gives every node the time to report before it fences any.
    else if (recent) next = 'unknown';
    else if (involved.length === 0) next = member ? 'unknown' : 'gone';
    else if (now < fenceDeadline(node, config)) next = 'fence';
    else {
      log(s, out, `node ${name} fenced: silent since its last grant at ${node.lastGrant}, lease and fence guard have run out`);
      for (const [id, sys] of involved) {
        if (sys.target === name && sys.node !== name) {
          // The migration's target was fenced: the guest is on the source or nowhere.
          sys.target = null;
          move(s, out, id, sys, 'started', `migration target ${name} fenced`);
          continue;
        }
        sys.tried = [];
        move(s, out, id, sys, 'recovery', `node ${name} fenced`);
        sys.node = null;
        sys.target = null;
      }
      next = member ? 'unknown' : 'gone';
    }
    if (next === 'fence') for (const [id, sys] of involved) if (sys.state !== 'fence') move(s, out, id, sys, 'fence', `node ${name} silent`);
    if (heard) {
      const back = (other: string | null): boolean => other === null || heardOf.get(other) === true;
      for (const [id, sys] of Object.entries(s.systems)) if (sys.state === 'fence' && (sys.node === name || sys.target === name) && back(sys.node) && back(sys.target)) move(s, out, id, sys, sys.target === null ? 'started' : 'migrate', `node ${name} back before it was fenced`);
    }
    if (next !== node.state) log(s, out, `node ${name} ${node.state} -> ${next}`);
    node.state = next;
  }
  const placed = (): Placed[] => {
    const list: Placed[] = [];
    for (const [id, sys] of Object.entries(s.systems)) {
      if (sys.node !== null && sys.state !== 'stopped' && sys.state !== 'error') list.push({ id, node: sys.node });
      if (sys.target !== null) list.push({ id, node: sys.target });
    }
    return list;
  };
  const candidates = (exclude: readonly string[]): HaNodeSpec[] =>
    names.filter((name) => s.nodes[name]!.state === 'online' && s.nodes[name]!.shutdown === null && !exclude.includes(name) && nodeSpecs.has(name)).map((name) => nodeSpecs.get(name)!);
  /** No node but `to` (and `from`, a migration's source) may still run `id`: every other one reported in this term, not running it, or was fenced. */
  const clear = (id: string, to: string, from: string | null = null): boolean =>
    names.every((name) => {
      if (name === to || name === from) return true;
      const node = s.nodes[name]!;
      if (now >= fenceDeadline(node, config)) return true;
      return node.reported && !node.running.includes(id) && !node.migrating.includes(id);
    });
  const place = (id: string, sys: SystemStatus, spec: HaSystemSpec, exclude: readonly string[], why: string): boolean => {
    const fits = candidates(exclude);
    // A system's first placement honours the node its object names, when that node can take it.
    const named = sys.relocates === 0 && why === 'start' && spec.node !== undefined ? fits.find((node) => node.name === spec.node) : undefined;
    const best = named !== undefined && bestNode(spec, [named], placed(), specs) !== null ? named.name : bestNode(spec, fits, placed(), specs);
    if (best === null || !clear(id, best)) {
      if (!s.waiting.includes(id)) {
        s.waiting.push(id);
        log(s, out, `${id}: ${best === null ? 'no node can take it' : 'waiting for every node to report or be fenced'}, retrying`);
      }
      return false;
    }
    s.waiting = s.waiting.filter((other) => other !== id);
    sys.node = best;
    if (sys.state === 'started') log(s, out, `${id} placed on ${best} (${why})`);
    else move(s, out, id, sys, 'started', `${why}: placed on ${best}`);
    return true;
  };
  const stopConfirmed = (id: string, sys: SystemStatus): boolean => {
    if (sys.node === null) return true;
    const node = s.nodes[sys.node]!;
    return sys.stopVersion !== null && node.reported && node.applied >= sys.stopVersion && !node.running.includes(id) && !node.migrating.includes(id);
  };
  // Systems found running where the manager does not expect them: adopted when it has them nowhere, else stopped there.
  const strays = new Map<string, string[]>();
  for (const name of names) {
    const node = s.nodes[name]!;
    if (node.state !== 'online' && node.state !== 'maintenance') continue;
    for (const id of node.running) {
      const sys = s.systems[id];
      if (!sys || sys.node === name || sys.target === name) continue;
      if (sys.node === null && (sys.state === 'recovery' || sys.state === 'started')) {
        sys.node = name;
        move(s, out, id, sys, 'started', `found running on ${name}`);
        continue;
      }
      strays.set(name, [...(strays.get(name) ?? []), id]);
    }
  }
  for (const id of Object.keys(s.systems).sort()) {
    const sys = s.systems[id]!;
    const spec = specs.get(id)!;
    const node = sys.node === null ? null : s.nodes[sys.node]!;
    const up = node !== null && (node.state === 'online' || node.state === 'maintenance');
    switch (sys.state) {
      case 'started':
        if (sys.node === null) {
          if (spec.want === 'started') place(id, sys, spec, [], 'start');
          else move(s, out, id, sys, 'stopped', 'stopped by the operator');
          break;
        }
        if (spec.want === 'stopped') {
          move(s, out, id, sys, 'request-stop', 'stopped by the operator');
          break;
        }
        if (!up || node === null) break;
        if (node.failed.includes(id)) {
          sys.tried = [...new Set([...sys.tried, sys.node])];
          if (sys.relocates < (spec.maxRelocate ?? 1)) move(s, out, id, sys, 'relocate', `failed on ${sys.node} after ${spec.maxRestart ?? 1} restarts`);
          else move(s, out, id, sys, 'error', `failed on ${sys.node}, relocated ${sys.relocates} times already`);
          break;
        }
        if (node.state === 'maintenance' || node.shutdown === 'migrate') {
          const to = bestNode(spec, candidates([sys.node]), placed(), specs);
          if (to !== null && clear(id, to, sys.node) && node.running.includes(id)) {
            if (node.state === 'maintenance') sys.home = sys.node;
            sys.target = to;
            move(s, out, id, sys, 'migrate', `node ${sys.node} ${node.state === 'maintenance' ? 'in maintenance' : 'shutting down'}: to ${to}`);
          }
          break;
        }
        if (node.shutdown === 'freeze' && !node.running.includes(id)) {
          move(s, out, id, sys, 'freeze', `node ${sys.node} shut down with policy freeze`);
          break;
        }
        if (node.shutdown === 'failover' && !node.running.includes(id)) {
          sys.tried = [sys.node];
          move(s, out, id, sys, 'recovery', `node ${sys.node} shut down with policy failover`);
          sys.node = null;
          break;
        }
        if (sys.home !== null && sys.home !== sys.node && s.nodes[sys.home]?.state === 'online' && node.running.includes(id)) {
          const home = nodeSpecs.get(sys.home);
          if (home !== undefined && bestNode(spec, [home], placed(), specs) === sys.home && clear(id, sys.home, sys.node)) {
            sys.target = sys.home;
            move(s, out, id, sys, 'migrate', `node ${sys.home} out of maintenance: back to it`);
          }
        }
        break;
      case 'request-stop':
        if (stopConfirmed(id, sys)) move(s, out, id, sys, 'stopped', `stopped on ${sys.node}`);
        break;
      case 'stopped':
        if (spec.want !== 'started') break;
        if (up && node !== null && node.state === 'online' && node.shutdown === null) move(s, out, id, sys, 'started', 'started by the operator');
        else {
          sys.node = null;
          place(id, sys, spec, [], 'start');
        }
        break;
      case 'relocate':
        if (!stopConfirmed(id, sys)) break;
        if (place(id, sys, spec, sys.tried, `relocate ${sys.relocates + 1}`)) sys.relocates += 1;
        break;
      case 'migrate': {
        const target = sys.target === null ? null : s.nodes[sys.target];
        const handed = up && node !== null && sys.stopVersion !== null && node.applied >= sys.stopVersion && node.migrated.includes(id);
        if (target !== null && target !== undefined && ((target.reported && target.running.includes(id)) || handed)) {
          const from = sys.node;
          sys.node = sys.target;
          sys.target = null;
          if (sys.home === sys.node) sys.home = null;
          move(s, out, id, sys, 'started', `migrated from ${from} to ${sys.node}`);
          break;
        }
        if (up && node !== null && node.failed.includes(id) && !(target?.running.includes(id) ?? false)) {
          sys.target = null;
          move(s, out, id, sys, 'started', `cannot migrate from ${sys.node}: it no longer ran there`);
          break;
        }
        // The source still runs it after applying the order, and is not migrating it: the migration failed.
        if (up && node !== null && node.applied >= node.version && node.running.includes(id) && !node.migrating.includes(id) && sys.stopVersion !== null && node.applied >= sys.stopVersion) {
          sys.target = null;
          move(s, out, id, sys, 'started', `migration from ${sys.node} failed, stays there`);
        }
        break;
      }
      case 'fence':
        break;
      case 'recovery':
        if (spec.want === 'stopped') {
          move(s, out, id, sys, 'stopped', 'stopped by the operator');
          break;
        }
        place(id, sys, spec, [], 'recover');
        break;
      case 'freeze':
        if (up && node !== null && node.state === 'online' && node.shutdown === null) move(s, out, id, sys, 'started', `node ${sys.node} back`);
        break;
      case 'error':
        if (spec.want === 'stopped') move(s, out, id, sys, 'stopped', 'stopped by the operator');
        break;
      default: {
        const unreachable: never = sys.state;
        return unreachable;
      }
    }
  }
  // Each node's orders; a changed list gets a new version.
  for (const name of names) {
    const node = s.nodes[name]!;
    const orders: Order[] = [];
    for (const id of Object.keys(s.systems).sort()) {
      const sys = s.systems[id]!;
      const maxRestart = specs.get(id)?.maxRestart ?? 1;
      if (sys.node === name) {
        // A fenced system's node is silent: should it come back in time, it goes on as before.
        if (sys.state === 'started' || (sys.state === 'fence' && sys.target === null)) orders.push({ system: id, want: 'started', maxRestart });
        else if ((sys.state === 'migrate' || sys.state === 'fence') && sys.target !== null) orders.push({ system: id, want: 'migrate', target: sys.target, maxRestart });
        else orders.push({ system: id, want: 'stopped', maxRestart });
      } else if ((strays.get(name) ?? []).includes(id)) orders.push({ system: id, want: 'stopped', maxRestart });
    }
    if (JSON.stringify(orders) !== JSON.stringify(node.orders)) {
      node.version += 1;
      node.orders = orders;
    }
  }
  for (const sys of Object.values(s.systems)) {
    if ((sys.state === 'request-stop' || sys.state === 'relocate' || sys.state === 'migrate') && sys.stopVersion === null && sys.node !== null) sys.stopVersion = s.nodes[sys.node]!.version;
  }
}
