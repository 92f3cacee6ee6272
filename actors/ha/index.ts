/**
 * The HA service: runs the HA step machines for real, as the monitor runs the election. Every node
 * runs its local manager (local.ts); the node whose monitor holds the primary lease also runs the
 * HA manager (manager.ts), taking over from what the previous primary persisted in the CDB
 * (`object/ha/manager`). The actor decides nothing itself: it feeds the machines ticks (its own
 * timer, on the runtime Clock) and the other nodes' HA messages, and carries out their effects:
 * reports and grants to `acp://<cluster>/<node>/ha`, starts, stops and migrations asked of this
 * node's hypervisor, the manager's state written to the CDB before the grants that carry it, and
 * the fence guard fed with the HA guests' QEMU pids. What it learns asynchronously (the monitor's
 * view, the hypervisor's guests, results of its asks) comes back as messages to itself.
 */
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { FenceGuard } from '../../adapters/fence-guard.js';
import { replyLater, type Actor, type ActorContext, type ServiceDefinition } from '../../runtime/actor.js';
import { realClock, type Clock } from '../../runtime/clock.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { parsePath } from '../../runtime/path.js';
import type { Principal } from '../../runtime/principal.js';
import type { ServiceDeps } from '../../runtime/services.js';
import { HaClusterFeeds } from './feeds.js';
import type { MonitorStatus } from '../monitor/index.js';
import { ServiceCounters } from '../kit.js';
import { shutdownPolicyOf } from '../model.js';
import { drainOutcome, drainPolicyOf, reported, startDrain, type Drain, type HaDrained } from './drain.js';
import { viewOfMonitor, type MonitorView, guardedPids, guestsOf, haSpecOf, HA_OBJECT_KEY, hypervisorViewSchema, nodeSpecs, persistedOf, type HypervisorView } from './inputs.js';
import { initialLocal, localStep, type LocalEffect, type LocalEnv, type LocalState } from './local.js';
import { managerStep, takeOver, type ManagerEffect, type ManagerEnv, type ManagerState } from './manager.js';
import { defaultHaConfig, type HaMessage } from './protocol.js';
import { haAuthority, haSchema } from './schema.js';
import { haView, type HaView } from './view.js';

const ORDERED_STOP_MS = 30_000;
const ASK_MS = 2000;

export function createHa(ctx: ActorContext, deps: ServiceDeps): Actor {
  // Monotonic, and the same clock as the hypervisor's (system.ha-fence deadlines are in it).
  const clock: Clock = { ...realClock, now: () => performance.now() };
  const info = new ServiceCounters();
  const self = ctx.node.node;
  const cluster = ctx.node.cluster;
  const config = defaultHaConfig;
  const cdb = ctx.ref(`acp://${cluster}/${self}/cdb`);
  const hypervisor = ctx.ref(`acp://${cluster}/${self}/hypervisor`);
  const monitor = ctx.ref(`acp://${cluster}/${self}/monitor`);
  const guard = new FenceGuard({ logFile: join(deps.paths.log, 'fence-guard.log'), watchdog: deps.config.ha.watchdog, runDir: deps.paths.run });

  let monitorView: MonitorView | undefined;
  let views = new Map<string, HypervisorView>();
  let viewsKnown = false;
  const pending = new Map<string, 'start' | 'stop' | 'migrate'>();
  /** Bumped when an ask's result changes the views: polls sent before are stale. */
  let epoch = 0;
  let local: LocalState | null = null;
  let manager: ManagerState | null = null;
  /** The term whose persisted state is being read (a takeover under way). */
  let loading: number | null = null;
  /** Grants held until the manager's state they carry is written (null: nothing being written). */
  let held: { to: string; message: HaMessage }[] | null = null;
  let cancelTick: (() => void) | undefined;
  /** The deadline of the guard's last feed (-Infinity: never fed). */
  let fedUntil = -Infinity;
  /** A clean shutdown under way (ha.drain), and who waits for its answer. */
  let drain: { state: Drain; answer: (reply: HaDrained) => void } | null = null;

  const feedGuard = (until: number) => {
    try {
      guard.feed(Math.max(100, Math.round(until - clock.now())), guardedPids(views));
    } catch (error) {
      ctx.log.warn({ err: errorMessage(error) }, 'feeding the fence guard failed; it is restarted at the next feed');
    }
  };

  const localEnv: LocalEnv = {
    config,
    now: () => clock.now(),
    leader: () => monitorView?.primary ?? null,
    term: () => monitorView?.term ?? 0,
    guests: () => guestsOf(views, pending),
    shutdown: () => drain?.state.policy ?? null, // told to the primary while a clean shutdown drains this node
  };
  const managerEnv: ManagerEnv = {
    config,
    now: () => clock.now(),
    members: () => monitorView?.members ?? [],
    nodes: () => nodeSpecs(capacity, nodeObjects),
    systems: () => [...specs].sort(([a], [b]) => a.localeCompare(b)).map(([id, spec]) => haSpecOf(id, spec)),
  };

  /** This node holds the primary lease now, in the term its monitor last told. */
  const leading = (): boolean => monitorView !== undefined && monitorView.role === 'primary' && monitorView.primary === self && deps.system.primary() === self;

  const { specs, capacity, nodeObjects, feeds } = new HaClusterFeeds(ctx);

  const sendHa = (to: string, message: HaMessage) => ctx.ref(`acp://${cluster}/${to}/ha`).tell(message);

  const persist = (persistTerm: number, systems: Record<string, unknown>) => {
    held ??= [];
    const write = async () => {
      // The fencing token: a newer primary's state is never overwritten by an older term.
      const existing = await cdb.ask<Message & { record: { value: unknown } }>({ type: 'cdb.get', key: HA_OBJECT_KEY }, { timeoutMs: ASK_MS }).then(
        (reply) => persistedOf(reply.record.value),
        (error: unknown) => {
          if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') return undefined;
          throw error;
        },
      );
      if (existing && existing.term > persistTerm) throw new AcpError('ACP_ERR_NO_PRIMARY', `the HA state was written in term ${existing.term} already; term ${persistTerm} is over`);
      await cdb.ask({ type: 'cdb.put', key: HA_OBJECT_KEY, value: { name: 'manager', term: persistTerm, by: self, at: new Date().toISOString(), systems } }, { timeoutMs: ASK_MS });
    };
    write().then(
      () => ctx.self.tell({ type: 'ha.persisted', term: persistTerm, ok: true }),
      (error: unknown) => ctx.self.tell({ type: 'ha.persisted', term: persistTerm, ok: false, error: errorMessage(error) }),
    );
  };

  const applyManager = (effects: readonly ManagerEffect[]) => {
    for (const effect of effects) {
      switch (effect.kind) {
        case 'send':
          if (held !== null) held.push({ to: effect.to, message: effect.message });
          else if (leading() && monitorView?.term === effect.message.term) sendHa(effect.to, effect.message);
          break;
        case 'persist':
          persist(effect.term, effect.systems);
          break;
        case 'log':
          ctx.log.info({ term: effect.line.match(/term (\d+)/)?.[1] }, effect.line);
          break;
        default: {
          const unreachable: never = effect;
          throw new Error(`unknown effect ${JSON.stringify(unreachable)}`);
        }
      }
    }
  };

  const ask = (system: string, op: 'start' | 'stop' | 'migrate', message: Message, timeoutMs: number) => {
    pending.set(system, op);
    hypervisor.ask<Message & Record<string, unknown>>(message, { timeoutMs }).then(
      (reply) => ctx.self.tell({ type: 'ha.done', system, op, ok: true, view: reply }),
      (error: unknown) => ctx.self.tell({ type: 'ha.done', system, op, ok: false, error: errorMessage(error) }),
    );
  };

  const applyLocal = (effects: readonly LocalEffect[]) => {
    for (const effect of effects) {
      switch (effect.kind) {
        case 'send':
          if (drain !== null && effect.message.type === 'ha.status') reported(drain.state, Object.keys(guestsOf(views, pending)));
          sendHa(effect.to, effect.message);
          break;
        case 'start':
          ask(effect.system, 'start', { type: 'system.ha-start', id: effect.system, term: effect.term }, 130_000);
          break;
        case 'stop': {
          // Self-fencing stops at once (the guard fires soon anyway); an ordered stop, or one for a clean shutdown, lets the guest shut down.
          const force = effect.why.startsWith('self-fence');
          ctx.log.info({ system: effect.system, why: effect.why }, `stopping HA system ${effect.system}`);
          ask(effect.system, 'stop', { type: 'system.stop', id: effect.system, force, timeoutMs: force ? 0 : ORDERED_STOP_MS }, force ? 20_000 : ORDERED_STOP_MS + 20_000);
          break;
        }
        case 'migrate':
          ask(effect.system, 'migrate', { type: 'system.migrate', id: effect.system, to: effect.target }, 700_000);
          break;
        case 'feed':
          // The hypervisor fences HA guests past this too (same process, same monotonic clock): see system.ha-fence.
          hypervisor.tell({ type: 'system.ha-fence', until: effect.until });
          fedUntil = effect.until;
          feedGuard(effect.until);
          break;
        case 'log':
          ctx.log.info(effect.line);
          break;
        default: {
          const unreachable: never = effect;
          throw new Error(`unknown effect ${JSON.stringify(unreachable)}`);
        }
      }
    }
  };

  const poll = () => {
    monitor.ask<MonitorStatus>({ type: 'monitor.status' }, { timeoutMs: ASK_MS }).then(
      (status) => ctx.self.tell({ type: 'ha.monitor', status }),
      () => undefined,
    );
    const asked = epoch;
    hypervisor.ask<Message & { systems: unknown[] }>({ type: 'system.status' }, { timeoutMs: ASK_MS }).then(
      (reply) => ctx.self.tell({ type: 'ha.guests', epoch: asked, systems: reply.systems }),
      () => undefined,
    );
  };

  const tick = () => {
    poll();
    if (monitorView === undefined || !viewsKnown) return;
    if (local === null) local = initialLocal(self, localEnv);
    if (leading()) {
      const leaseTerm = monitorView.term;
      if (manager !== null && manager.term !== leaseTerm) manager = null;
      if (manager === null && loading !== leaseTerm) {
        loading = leaseTerm;
        cdb.ask<Message & { record: { value: unknown } }>({ type: 'cdb.get', key: HA_OBJECT_KEY }, { timeoutMs: ASK_MS }).then(
          (reply) => ctx.self.tell({ type: 'ha.loaded', term: leaseTerm, persisted: reply.record.value }),
          (error: unknown) => ctx.self.tell({ type: 'ha.loaded', term: leaseTerm, persisted: error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND' ? null : 'unreadable' }),
        );
      }
      if (manager !== null && held === null) {
        const result = managerStep(manager, { type: 'tick' }, managerEnv);
        manager = result.state;
        applyManager(result.effects);
      }
    } else if (manager !== null || loading !== null) {
      if (manager !== null) ctx.log.info({ term: manager.term }, 'HA manager stops: this node no longer holds the primary lease');
      manager = null;
      loading = null;
      held = null;
    }
    const result = localStep(local, { type: 'tick' }, localEnv);
    local = result.state;
    applyLocal(result.effects);
    if (drain !== null) {
      const others = (monitorView?.members ?? []).some((member) => member !== self);
      const outcome = drainOutcome(drain.state, Object.keys(guestsOf(views, pending)), clock.now(), others);
      if (outcome !== null) finishDrain(outcome);
    }
  };

  const finishDrain = (outcome: HaDrained) => {
    ctx.log.info({ policy: outcome.policy, had: outcome.had, left: outcome.left, ms: outcome.ms }, `HA drain done: ${outcome.why}`);
    drain?.answer(outcome);
    drain = null;
  };

  /** ha.drain: the node shuts down cleanly; its HA systems go by its shutdown policy (drain.ts). A second one while it runs gets the same answer. */
  const beginDrain = (host: 'reboot' | 'poweroff' | null) => {
    const configured = shutdownPolicyOf(nodeObjects.get(self));
    const policy = drainPolicyOf(configured, host);
    const had = Object.keys(guestsOf(views, pending));
    if (policy === null) {
      const why = had.length === 0 ? 'no HA system runs here' : `policy conditional${host === null ? ' and only acpd stops' : ''}: HA guests run on until the fence guard ends them, then the primary recovers them`;
      return { type: 'ha.drained', configured, policy, had, left: had, ms: 0, why } satisfies HaDrained;
    }
    const running = drain;
    if (running !== null) {
      const previous = running.answer;
      return replyLater(new Promise<HaDrained>((resolve) => (running.answer = (reply) => { previous(reply); resolve(reply); })));
    }
    ctx.log.info({ policy, configured, host, systems: had }, `clean shutdown: HA systems ${policy === 'migrate' ? 'migrate away' : policy === 'freeze' ? 'are stopped and frozen' : 'are stopped and recovered elsewhere'}`);
    return replyLater(new Promise<HaDrained>((resolve) => {
      drain = { state: startDrain(configured, policy, clock.now(), had), answer: resolve };
    }));
  };

  const senderNode = (sender: Principal): string => {
    if (sender.kind === 'node') return sender.node;
    if (sender.kind === 'actor') return parsePath(sender.path).node;
    throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', 'HA reports and grants come only from the HA services of the cluster’s nodes');
  };

  const onHaMessage = (message: HaMessage, sender: Principal) => {
    const from = senderNode(sender);
    if (message.type === 'ha.status') {
      if (manager === null || !leading()) return;
      const result = managerStep(manager, { type: 'receive', from, message }, managerEnv);
      manager = result.state;
      applyManager(result.effects);
      return;
    }
    if (local === null) return;
    const result = localStep(local, { type: 'receive', from, message }, localEnv);
    local = result.state;
    applyLocal(result.effects);
  };

  const scheduleTick = () => {
    cancelTick = clock.setTimer(config.tickMs, () => {
      ctx.self.tell({ type: 'ha.tick' });
      scheduleTick();
    });
  };

  const show = (): HaView => haView({ self, now: clock.now(), config, term: monitorView?.term ?? 0, primary: monitorView?.primary ?? null, manager: leading() ? manager : null, local, guests: guestsOf(views, pending) });

  return {
    async started() {
      deps.setNodeFact('haMemoryMiB', Math.floor(totalmem() / 1024 / 1024));
      deps.setNodeFact('haVcpus', cpus().length);
      for (const feed of feeds) await feed.start();
      scheduleTick();
    },
    receive(message, sender) {
      info.handled += 1;
      const fed = feeds.map((feed) => feed.handle(message));
      if (fed.some((result) => result !== false)) return Promise.all(fed.filter((result): result is Promise<void> => result instanceof Promise)).then(() => undefined);
      const parsed = haSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return info.info('ha', 'HA: the local HA manager on every node, the HA manager on the primary', ctx);
        case 'ha.show':
          return show();
        case 'ha.tick':
          tick();
          return undefined;
        case 'ha.drain':
          return beginDrain(parsed.host);
        case 'ha.monitor': {
          const view = viewOfMonitor(parsed.status);
          if (view) monitorView = view;
          return undefined;
        }
        case 'ha.guests': {
          if (parsed.epoch !== epoch) return undefined;
          const next = new Map<string, HypervisorView>();
          for (const entry of parsed.systems) {
            const view = hypervisorViewSchema.safeParse(entry);
            if (view.success) next.set(view.data.id, view.data);
          }
          views = next;
          viewsKnown = true;
          return undefined;
        }
        case 'ha.done': {
          pending.delete(parsed.system);
          epoch += 1;
          // The hypervisor's answer carries the system's meta (state, pid); the HA service only ever acts on HA systems.
          const view = hypervisorViewSchema.safeParse({ driver: views.get(parsed.system)?.driver, ...(parsed.view as object), id: parsed.system, ha: true, arriving: false });
          if (parsed.ok && view.success) {
            views.set(parsed.system, parsed.op === 'migrate' ? { ...view.data, state: 'stopped', pid: null } : view.data);
            // A QEMU just started is guarded at once, not at the next feed (same deadline, one more pid).
            if (parsed.op === 'start' && view.data.pid !== null && clock.now() < fedUntil) feedGuard(fedUntil);
          }
          else if (!parsed.ok) {
            ctx.log.warn({ system: parsed.system, op: parsed.op, err: parsed.error }, `HA ${parsed.op} of ${parsed.system} failed`);
            // What the hypervisor holds now is learned by the next poll; a failed start leaves no guest.
            if (parsed.op === 'start') views.delete(parsed.system);
          }
          return undefined;
        }
        case 'ha.loaded': {
          if (loading !== parsed.term || !leading() || monitorView?.term !== parsed.term) return undefined;
          const persisted = parsed.persisted === null ? { term: 0, systems: {} } : persistedOf(parsed.persisted);
          if (persisted === undefined) {
            ctx.log.error({ term: parsed.term }, `the HA state (${HA_OBJECT_KEY}) cannot be read; the HA manager waits and tries again`);
            loading = null;
            return undefined;
          }
          const taken = takeOver(self, parsed.term, persisted.systems);
          manager = taken.state;
          loading = null;
          held = null;
          applyManager(taken.effects);
          return undefined;
        }
        case 'ha.persisted': {
          if (manager === null || manager.term !== parsed.term) return undefined;
          if (!parsed.ok) {
            ctx.log.error({ term: parsed.term, err: parsed.error }, 'writing the HA state failed; the HA manager starts over from the CDB');
            manager = null;
            held = null;
            return undefined;
          }
          const out = held ?? [];
          held = null;
          for (const grant of out) if (leading() && monitorView?.term === grant.message.term) sendHa(grant.to, grant.message);
          return undefined;
        }
        case 'ha.status':
        case 'ha.grant':
          onHaMessage(parsed, sender);
          return undefined;
        default: {
          const unreachable: never = parsed;
          return unreachable;
        }
      }
    },
    stopping() {
      cancelTick?.();
      for (const feed of feeds) feed.stop();
      // Not disarmed: a stopped daemon renews no lease, so the guard fires when its time is up.
      guard.release();
    },
  };
}

export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'ha',
  description: 'HA: each node runs its HA systems on the primary’s orders while it holds its lease; the primary places them',
  schema: haSchema,
  authority: haAuthority,
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new Error('the HA service runs inline only');
    return createHa(ctx, deps);
  },
};
