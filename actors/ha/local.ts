/**
 * The local manager: one per node, a pure step `(state, event, env) -> { state, effects }`. It
 * reports to the primary every `reportMs` and carries out the orders of the grants it gets back
 * through the node's hypervisor, refusing any grant from a term older than one it has seen.
 *
 * Self-fencing: it runs HA systems only while it holds its lease (`leaseMs` from when it sent the
 * report a grant answered); `stopAheadMs` before the lease ends without a renewal it stops every HA
 * guest on the node. While it holds the lease it feeds the fence guard (a process of its own that
 * kills the node's HA guests when not fed for `fenceTimeoutMs`), so a daemon that hangs or dies
 * leaves no HA guest running past lease + fence timeout: exactly what the primary waits for before
 * it recovers the node's systems elsewhere.
 *
 * A guest that stops by itself while ordered started is restarted here up to `maxRestart` times;
 * after that it is reported failed, and the primary relocates it.
 */
import type { HaConfig, HaGrantMessage, HaMessage, HaStatusMessage, Order } from './protocol.js';

export type GuestState = 'starting' | 'running' | 'migrating';

export interface LocalState {
  readonly self: string;
  /** The newest term seen, from the monitor or a grant: older grants are refused. */
  seenTerm: number;
  leaseUntil: number;
  holding: boolean;
  seq: number;
  /** Reports sent and not yet answered (by sequence number, with when they were sent). */
  pending: { seq: number; at: number }[];
  ordersTerm: number;
  version: number;
  orders: Order[];
  restarts: Record<string, number>;
  failed: string[];
  /** Guests this manager started or saw running at its last tick (their disappearance is a crash). */
  seen: string[];
  /** Guests it asked to stop or migrate (asked once). */
  asked: string[];
  /** Guests this incarnation migrated away under their current order. */
  sent: string[];
  lastReportAt: number;
  lastFeedAt: number;
}

export interface LocalEnv {
  readonly config: HaConfig;
  now(): number;
  /** The primary this node follows (null: none known). */
  leader(): string | null;
  /** The newest term this node's monitor knows. */
  term(): number;
  /** The HA guests on this node now. */
  guests(): Readonly<Record<string, GuestState>>;
  /** Set once the node is shutting down cleanly: what it does with its HA systems. */
  shutdown(): HaStatusMessage['shutdown'];
}

export type LocalEffect =
  | { kind: 'send'; to: string; message: HaMessage }
  | { kind: 'start'; system: string; term: number }
  | { kind: 'stop'; system: string; why: string }
  | { kind: 'migrate'; system: string; target: string; term: number }
  /** Feed the fence guard; `until`: when it fires unless fed again. */
  | { kind: 'feed'; until: number }
  | { kind: 'log'; line: string };

export type LocalEvent = { type: 'tick' } | { type: 'receive'; from: string; message: HaMessage };

/** A booting node's local manager: no lease, no orders; guests it finds are stopped unless a grant orders them. */
export function initialLocal(self: string, env: LocalEnv): LocalState {
  return { self, seenTerm: 0, leaseUntil: 0, holding: false, seq: 0, pending: [], ordersTerm: 0, version: 0, orders: [], restarts: {}, failed: [], seen: Object.keys(env.guests()).sort(), asked: [], sent: [], lastReportAt: -Infinity, lastFeedAt: -Infinity };
}

function log(s: LocalState, out: LocalEffect[], what: string): void {
  out.push({ kind: 'log', line: `${s.self}: local: ${what}` });
}

export function localStep(previous: LocalState, event: LocalEvent, env: LocalEnv): { state: LocalState; effects: LocalEffect[] } {
  const s: LocalState = { ...previous, pending: [...previous.pending], orders: [...previous.orders], restarts: { ...previous.restarts }, failed: [...previous.failed], seen: [...previous.seen], asked: [...previous.asked], sent: [...previous.sent] };
  const out: LocalEffect[] = [];
  s.seenTerm = Math.max(s.seenTerm, env.term());
  if (event.type === 'tick') onTick(s, out, env);
  else if (event.message.type === 'ha.grant') onGrant(s, out, env, event.from, event.message);
  return { state: s, effects: out };
}

function onGrant(s: LocalState, out: LocalEffect[], env: LocalEnv, from: string, grant: HaGrantMessage): void {
  if (grant.term < s.seenTerm) {
    log(s, out, `refuses orders of term ${grant.term} from ${from}: term ${s.seenTerm} seen`);
    return;
  }
  s.seenTerm = grant.term;
  const report = s.pending.find((pending) => pending.seq === grant.seq);
  if (report === undefined) return;
  s.pending = s.pending.filter((pending) => pending.seq > grant.seq);
  s.leaseUntil = Math.max(s.leaseUntil, report.at + env.config.leaseMs);
  if (!s.holding && env.now() < s.leaseUntil - env.config.stopAheadMs) {
    s.holding = true;
    log(s, out, `holds its HA lease (term ${grant.term})`);
  }
  if (grant.term === s.ordersTerm && grant.version === s.version) return;
  const before = new Map(s.orders.map((order) => [order.system, JSON.stringify(order)]));
  s.ordersTerm = grant.term;
  s.version = grant.version;
  s.orders = grant.orders;
  for (const order of grant.orders) {
    if (before.get(order.system) === JSON.stringify(order)) continue;
    // A new order for a system starts its restart count afresh.
    delete s.restarts[order.system];
    s.failed = s.failed.filter((system) => system !== order.system);
    s.asked = s.asked.filter((system) => system !== order.system);
    s.sent = s.sent.filter((system) => system !== order.system);
  }
}

function onTick(s: LocalState, out: LocalEffect[], env: LocalEnv): void {
  const started = new Set<string>();
  const migrating = new Set<string>();
  const now = env.now();
  const { config } = env;
  const guests = env.guests();
  const present = Object.keys(guests).sort();
  s.asked = s.asked.filter((system) => present.includes(system));
  const holds = now < s.leaseUntil - config.stopAheadMs;
  if (s.holding && !holds) {
    s.holding = false;
    log(s, out, `lease ends: stops its HA systems (${present.length === 0 ? 'none' : present.join(',')})`);
  }
  const shutdown = env.shutdown();
  if (!holds || shutdown === 'freeze' || shutdown === 'failover') {
    const why = holds ? `node shutting down (policy ${shutdown})` : 'self-fence: no lease';
    for (const system of present) {
      if (s.asked.includes(system) && guests[system] !== 'migrating') continue;
      s.asked.push(system);
      if (holds) log(s, out, `stops ${system}: ${why}`);
      out.push({ kind: 'stop', system, why });
    }
    if (holds && now - s.lastFeedAt >= config.feedMs) {
      s.lastFeedAt = now;
      out.push({ kind: 'feed', until: now + config.fenceTimeoutMs });
    }
    s.seen = [];
  } else {
    if (now - s.lastFeedAt >= config.feedMs) {
      s.lastFeedAt = now;
      out.push({ kind: 'feed', until: now + config.fenceTimeoutMs });
    }
    const seen: string[] = [];
    // Orders from a term older than the newest seen are not acted on (no start, no migration).
    const current = s.ordersTerm === s.seenTerm;
    for (const order of s.orders) {
      const state = guests[order.system];
      switch (order.want) {
        case 'started':
          if (state !== undefined) {
            seen.push(order.system);
            break;
          }
          if (s.failed.includes(order.system) || !current) break;
          if (s.seen.includes(order.system)) {
            const restarts = (s.restarts[order.system] ?? 0) + 1;
            s.restarts[order.system] = restarts;
            if (restarts > order.maxRestart) {
              s.failed.push(order.system);
              log(s, out, `${order.system} failed: stopped ${restarts} times, restarts used up (${order.maxRestart})`);
              break;
            }
            log(s, out, `${order.system} stopped by itself: restart ${restarts} of ${order.maxRestart}`);
          } else log(s, out, `starts ${order.system} (order of term ${s.ordersTerm})`);
          seen.push(order.system);
          started.add(order.system);
          out.push({ kind: 'start', system: order.system, term: s.ordersTerm });
          break;
        case 'stopped':
          if (state === undefined || s.asked.includes(order.system)) break;
          s.asked.push(order.system);
          log(s, out, `stops ${order.system} (order of term ${s.ordersTerm})`);
          out.push({ kind: 'stop', system: order.system, why: 'ordered' });
          break;
        case 'migrate':
          if (state === undefined && current && !s.sent.includes(order.system) && !s.failed.includes(order.system)) {
            // Ordered to migrate a guest that is not here (it died meanwhile): say so, and the primary restarts it here.
            s.failed.push(order.system);
            log(s, out, `cannot migrate ${order.system}: it does not run here`);
            break;
          }
          if (state !== 'running' || s.asked.includes(order.system) || order.target === undefined || !current) break;
          s.asked.push(order.system);
          log(s, out, `migrates ${order.system} to ${order.target} (order of term ${s.ordersTerm})`);
          migrating.add(order.system);
          s.sent.push(order.system);
          out.push({ kind: 'migrate', system: order.system, target: order.target, term: s.ordersTerm });
          break;
        default: {
          const unreachable: never = order.want;
          return unreachable;
        }
      }
    }
    s.seen = seen;
  }
  const leader = env.leader();
  if (leader === null || now - s.lastReportAt < config.reportMs) return;
  s.lastReportAt = now;
  s.seq += 1;
  s.pending = [...s.pending.filter((pending) => pending.at > now - config.leaseMs), { seq: s.seq, at: now }];
  const message: HaStatusMessage = {
    type: 'ha.status',
    term: s.seenTerm,
    seq: s.seq,
    applied: s.ordersTerm === s.seenTerm ? s.version : 0,
    // What it just asked for counts already: a guest it starts runs, one it migrates is migrating.
    running: [...new Set([...present.filter((system) => guests[system] !== 'migrating' && !migrating.has(system)), ...started])].sort(),
    migrating: [...new Set([...present.filter((system) => guests[system] === 'migrating'), ...migrating])].sort(),
    migrated: s.sent.filter((system) => !present.includes(system) && !migrating.has(system)).sort(),
    failed: [...s.failed].sort(),
    shutdown: env.shutdown(),
  };
  out.push({ kind: 'send', to: leader, message });
}
