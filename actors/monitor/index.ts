/**
 * The Monitor service: runs the election and failure-detection step machine (election.ts) for
 * real. The actor decides nothing itself; it feeds the machine events (a tick from its own timer,
 * the other monitors' messages) and carries out the effects: messages to the other monitors over
 * the agents, the term and vote written durably to the home before anything else goes out, alarms
 * written to the CDB (`object/alarm/<id>`), and `@primary` resolved to the lease holder.
 * Members (with their `votes` and `witness`) and open alarms come from CDB watches.
 */
import { z } from 'zod';
import { VoteStore } from '../../adapters/vote-store.js';
import { replyLater, type ActorContext, type Actor, type ServiceDefinition } from '../../runtime/actor.js';
import type { AuthorityTable } from '../../runtime/authority.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { nameSchema } from '../../runtime/path.js';
import { formatPrincipal, type Principal } from '../../runtime/principal.js';
import type { ServiceDeps } from '../../runtime/services.js';
import type { RecordView } from '../cdb/index.js';
import { CdbFeed } from '../cdb-feed.js';
import { serviceInfoSchema, ServiceCounters } from '../kit.js';
import { alarmObjectSchema, objectKey, type AlarmObject } from '../model.js';
import { alarmRules, type AlarmEffect, type AlarmRuleName, type AlarmView } from './alarms.js';
import { computeHealth, type Health } from './health.js';
import { Notifier, TARGET_PREFIX } from './notify.js';
import { alarmChanges, type DataRule, type DesiredAlarm } from './data-rules.js';
import { gatherHealthInput } from './health-input.js';
import { initialState, primaryOf, quorumOf, step, type Effect, type Liveness, type MonitorEnv, type MonitorEvent, type MonitorState } from './election.js';
import { defaultMonitorConfig, peerMessageSchema, PEER_MESSAGE_TYPES, type Member, type PeerMessage } from './protocol.js';

const NODE_PREFIX = 'object/node/';
const ALARM_PREFIX = 'object/alarm/';
const HISTORY_KEEP = 50;
const SYNC_POLL_MS = 250;
/** How often the primary evaluates the alarm rules over the CDB (every this many ticks). */
const RULE_TICKS = 30;

export const monitorSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  z.strictObject({ type: z.literal('monitor.status') }),
  z.strictObject({ type: z.literal('monitor.tick') }),
  z.strictObject({ type: z.literal('monitor.synced') }),
  z.strictObject({ type: z.literal('monitor.health') }),
  z.strictObject({ type: z.literal('monitor.alarm.ack'), id: nameSchema }),
  z.strictObject({ type: z.literal('monitor.alarm.test'), target: nameSchema }),
  z.strictObject({ type: z.literal('monitor.webhook.retry'), key: z.string().max(600) }),
  z.strictObject({ type: z.literal('monitor.rules'), term: z.number().int().min(0), raise: z.array(z.unknown()), clear: z.array(z.unknown()) }),
  ...peerMessageSchema.options,
]);
export type MonitorMessage = z.infer<typeof monitorSchema>;

const peerMonitors = { internal: [{ service: 'monitor', nodes: 'peers' }] } as const;

/** Who may send what to the Monitor (see runtime/authority.ts): election traffic only from the other nodes' monitors. */
export const monitorAuthority: AuthorityTable = {
  'service.info': 'read',
  'monitor.status': 'read',
  'monitor.health': 'read',
  'monitor.alarm.ack': 'operate',
  'monitor.alarm.test': 'operate',
  'monitor.webhook.retry': { internal: [{ service: 'monitor', nodes: 'self' }] },
  'monitor.rules': { internal: [{ service: 'monitor', nodes: 'self' }] },
  'monitor.tick': { internal: [{ service: 'monitor', nodes: 'self' }] },
  'monitor.synced': { internal: [{ service: 'monitor', nodes: 'self' }] },
  ...Object.fromEntries(PEER_MESSAGE_TYPES.map((type) => [type, peerMonitors])),
};

export interface MonitorStatus extends Message {
  type: 'monitor.status';
  node: string;
  role: MonitorState['role'];
  term: number;
  /** The lease holder as this node sees it; null: none (no quorum, or an election under way). */
  primary: string | null;
  leaseRemainingMs: number | null;
  votedFor: string | null;
  voters: { total: number; needed: number; present: number | null };
  witnesses: string[];
  members: { name: string; votes: 0 | 1; witness: boolean; state: 'up' | 'suspect' | 'down' | null }[];
  openAlarms: { id: string; rule: string; subject: string; severity: string; term: number; by: string; raisedAt: string }[];
}

export interface HealthReply extends Message, Health {
  type: 'monitor.health';
  /** The node that computed it, and whether it was the primary then. */
  by: string;
  primary: boolean;
}

/** The members from `object/node/*`; this node's own `witness` comes from its config too, so a witness never stands even before its object says so. */
function membersFrom(records: Map<string, RecordView>, self: string, selfWitness: boolean): Member[] {
  const members: Member[] = [];
  for (const record of records.values()) {
    if (record.deleted) continue;
    const value = record.value as { votes?: unknown; witness?: unknown } | null;
    const votes = value?.votes === 0 ? 0 : 1;
    const name = record.key.slice(NODE_PREFIX.length);
    const witness = value?.witness === true || (name === self && selfWitness);
    members.push({ name, votes, ...(witness ? { witness: true } : {}) });
  }
  return members.sort((a, b) => a.name.localeCompare(b.name));
}

function createMonitor(ctx: ActorContext, deps: ServiceDeps): Actor {
  const counters = new ServiceCounters();
  const self = ctx.node.node;
  const config = defaultMonitorConfig;
  const votes = new VoteStore(deps.paths.data);
  const cdb = ctx.ref(`acp://${ctx.node.cluster}/${self}/cdb`);
  const nodeRecords = new Map<string, RecordView>();
  const alarms = new Map<string, AlarmObject>();
  let members: Member[] = [];
  let membersKnown = false;
  /** The CDB has caught up with the cluster once: before, a joining node may know only itself. */
  let synced = false;
  /** Whether the machine runs yet (it starts once the two above hold). */
  let taking = false;
  let ticks = 0;
  let evaluating = false;
  let timer: NodeJS.Timeout | undefined;
  let syncPoll: NodeJS.Timeout | undefined;

  const env: MonitorEnv = {
    config,
    now: () => performance.now(),
    wall: () => Date.now(),
    random: () => Math.random(),
    members: () => members,
    openAlarms: () =>
      [...alarms.values()].filter((alarm) => alarm.open && alarm.rule in alarmRules).map((alarm): AlarmView => ({ id: alarm.name, rule: alarm.rule as AlarmRuleName, subject: alarm.subject })),
  };
  let state: MonitorState = initialState(self, votes.read(), env);

  // Both feeds' records reach both callbacks (one mailbox): each keeps to its prefix.
  const nodeFeed = new CdbFeed(ctx, NODE_PREFIX, (records) => {
    for (const record of records) if (record.key.startsWith(NODE_PREFIX)) nodeRecords.set(record.key, record);
    members = membersFrom(nodeRecords, self, deps.config.witness === true);
    membersKnown = true;
  });
  const alarmFeed = new CdbFeed(ctx, ALARM_PREFIX, (records) => {
    for (const record of records) {
      if (!record.key.startsWith(ALARM_PREFIX)) continue;
      const id = record.key.slice(ALARM_PREFIX.length);
      const parsed = alarmObjectSchema.safeParse(record.value);
      if (record.deleted || !parsed.success) alarms.delete(id);
      else alarms.set(id, parsed.data);
    }
  });

  const notifier = new Notifier(ctx);
  const targetFeed = new CdbFeed(ctx, TARGET_PREFIX, (records) => notifier.apply(records));

  const writeAlarm = (effect: AlarmEffect) => {
    const existing = alarms.get(effect.id);
    if (existing && existing.term > effect.term) {
      // The fencing token: a newer primary already wrote this alarm.
      ctx.log.warn({ alarm: effect.id, term: effect.term, seen: existing.term }, 'alarm change refused: a newer term wrote it');
      return;
    }
    const at = new Date().toISOString();
    const raise = effect.op === 'raise';
    const value: AlarmObject = {
      name: effect.id,
      rule: effect.rule,
      subject: effect.subject,
      severity: effect.severity,
      open: raise,
      term: effect.term,
      by: effect.by,
      raisedAt: raise ? at : (existing?.raisedAt ?? at),
      clearedAt: raise ? null : at,
      detail: effect.detail,
      history: [...(existing?.history ?? []), { at, op: effect.op, by: effect.by, term: effect.term, detail: effect.detail }].slice(-HISTORY_KEEP),
    };
    alarms.set(effect.id, value);
    notifier.notify(effect);
    ctx.log.warn({ alarm: effect.id, severity: effect.severity, term: effect.term, detail: effect.detail }, `alarm ${effect.rule} ${effect.subject} ${raise ? 'raised' : 'cleared'}`);
    cdb.ask({ type: 'cdb.put', key: objectKey('alarm', effect.id), value }).catch((error: unknown) => {
      ctx.log.error({ alarm: effect.id, err: errorMessage(error) }, 'writing the alarm to the cdb failed');
    });
  };

  const apply = (effects: readonly Effect[]) => {
    for (const effect of effects) {
      switch (effect.kind) {
        case 'send':
          ctx.ref(`acp://${ctx.node.cluster}/${effect.to}/monitor`).tell(effect.message);
          break;
        case 'persist':
          // Durable before the next effect (a vote reply) goes out.
          votes.write({ term: effect.term, votedFor: effect.votedFor });
          break;
        case 'log':
          ctx.log.info({ term: state.term }, effect.line);
          break;
        case 'primary':
          ctx.log.info({ term: effect.term, primary: effect.primary }, effect.primary === null ? 'no primary known' : `primary is ${effect.primary}`);
          break;
        case 'alarm':
          writeAlarm(effect);
          break;
        default: {
          const unreachable: never = effect;
          throw new Error(`unknown effect ${JSON.stringify(unreachable)}`);
        }
      }
    }
  };

  const run = (event: MonitorEvent) => {
    // Until the node list is known and the CDB caught up, a joining node alone would count itself a majority.
    if (!membersKnown || !synced) return;
    if (!taking) {
      // Start from now: the wait is not a stall of our loop (it would be reported as one, and given back).
      state = initialState(self, votes.read(), env);
      taking = true;
    }
    const result = step(state, event, env);
    state = result.state;
    apply(result.effects);
  };

  const status = (): MonitorStatus => {
    const now = env.now();
    const primary = primaryOf(state, now);
    const voting = members.filter((member) => member.votes > 0);
    const remaining = state.role === 'primary' ? state.leaseUntil - now : primary !== null ? state.promiseUntil - now : null;
    return {
      type: 'monitor.status',
      node: self,
      role: state.role,
      term: state.term,
      primary,
      leaseRemainingMs: remaining === null ? null : Math.max(0, Math.round(remaining)),
      votedFor: state.votedFor,
      voters: {
        total: voting.length,
        needed: quorumOf(members),
        present: state.role === 'primary' ? voting.filter((member) => member.name === self || state.peers[member.name]?.state === 'up').length : null,
      },
      witnesses: members.filter((member) => member.witness === true).map((member) => member.name),
      members: members.map((member) => ({ name: member.name, votes: member.votes, witness: member.witness === true, state: member.name === self ? 'up' : (state.peers[member.name]?.state ?? null) })),
      openAlarms: [...alarms.values()].filter((alarm) => alarm.open).map((alarm) => ({ id: alarm.name, rule: alarm.rule, subject: alarm.subject, severity: alarm.severity, term: alarm.term, by: alarm.by, raisedAt: alarm.raisedAt })),
    };
  };

  const health = async (): Promise<HealthReply> => {
    const isPrimary = primaryOf(state, env.now()) === self;
    let detector: Map<string, Liveness> | null = null;
    if (isPrimary) {
      detector = new Map([[self, 'up']]);
      for (const [name, view] of Object.entries(state.peers)) detector.set(name, view.state);
    }
    const input = await gatherHealthInput(cdb, members.map((member) => member.name), detector, [...alarms.values()]);
    return { type: 'monitor.health', by: self, primary: isPrimary, ...computeHealth(input) };
  };

  /** An operator's acknowledgement: kept on the alarm by the primary, stamped with its term. */
  const ack = (id: string, sender: Principal) => {
    if (primaryOf(state, env.now()) !== self) throw new AcpError('ACP_ERR_NO_PRIMARY', `${self} does not hold the primary lease; send the acknowledgement to acp://${ctx.node.cluster}/@primary/monitor`);
    const alarm = alarms.get(id);
    if (!alarm) throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no alarm '${id}'; acp alarm ls --all lists them`);
    const at = new Date().toISOString();
    const value: AlarmObject = { ...alarm, acked: true, history: [...alarm.history, { at, op: 'ack' as const, by: formatPrincipal(sender), term: state.term, detail: 'acknowledged' }].slice(-HISTORY_KEEP) };
    alarms.set(id, value);
    return cdb.ask({ type: 'cdb.put', key: objectKey('alarm', id), value }).then(() => ({ type: 'monitor.alarm.acked', id, term: state.term }));
  };

  /** The data rules (data-rules.ts): gathered off the mailbox, applied back in it if still primary in that term. */
  const evaluateRules = () => {
    if (evaluating || primaryOf(state, env.now()) !== self) return;
    evaluating = true;
    const term = state.term;
    const detector = new Map<string, Liveness>([[self, 'up']]);
    for (const [name, view] of Object.entries(state.peers)) detector.set(name, view.state);
    gatherHealthInput(cdb, members.map((member) => member.name), detector, [...alarms.values()])
      .then((input) => {
        const open = [...alarms.values()].filter((alarm) => alarm.open).map((alarm) => ({ id: alarm.name, rule: alarm.rule, subject: alarm.subject }));
        const { raise, clear } = alarmChanges(input, open, Date.now());
        if (raise.length > 0 || clear.length > 0) ctx.self.tell({ type: 'monitor.rules', term, raise, clear });
      })
      .catch((error: unknown) => ctx.log.warn({ err: errorMessage(error) }, 'evaluating the alarm rules failed; next time'))
      .finally(() => {
        evaluating = false;
      });
  };

  const applyRules = (term: number, raise: readonly DesiredAlarm[], clear: readonly { id: string; rule: DataRule; subject: string }[]) => {
    // Only the primary of the term that evaluated them, still within its lease.
    if (primaryOf(state, env.now()) !== self || state.term !== term) return;
    for (const alarm of raise) {
      if (alarms.get(alarm.id)?.open) continue;
      writeAlarm({ kind: 'alarm', op: 'raise', id: alarm.id, rule: alarm.rule, subject: alarm.subject, severity: alarmRules[alarm.rule].severity, term, by: self, detail: alarm.detail });
    }
    for (const alarm of clear) {
      if (!alarms.get(alarm.id)?.open) continue;
      writeAlarm({ kind: 'alarm', op: 'clear', id: alarm.id, rule: alarm.rule, subject: alarm.subject, severity: alarmRules[alarm.rule].severity, term, by: self, detail: 'no longer so' });
    }
  };

  const pollSync = () => {
    cdb
      .ask<Message & { synced: boolean }>({ type: 'cdb.sync.status' }, { timeoutMs: 2000 })
      .then((reply) => reply.synced, (error: unknown) => error instanceof AcpError && error.code === 'ACP_ERR_SYNC_NOT_PEER')
      .then((done) => {
        if (done) ctx.self.tell({ type: 'monitor.synced' });
        else syncPoll = setTimeout(pollSync, SYNC_POLL_MS);
      }, () => undefined);
  };

  const peerOf = (sender: Principal): string => {
    // The authority table lets only a peer node's monitor send these; its node is proven by its certificate.
    if (sender.kind !== 'node') throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', 'monitor messages come only from the other nodes’ monitors');
    return sender.node;
  };

  return {
    async started() {
      // `@primary`, on every node, is the node whose monitor holds the lease now; none: ACP_ERR_NO_PRIMARY.
      deps.system.setPrimaryResolver(() => primaryOf(state, env.now()) ?? undefined);
      await nodeFeed.start();
      await alarmFeed.start();
      await targetFeed.start();
      pollSync();
      timer = setInterval(() => ctx.self.tell({ type: 'monitor.tick' }), config.tickMs);
      timer.unref();
    },
    receive(message, sender) {
      counters.handled += 1;
      // Every feed sees every feed message (a CdbFeed takes any cdb.events as its own); each keeps to its prefix.
      const fed = [nodeFeed, alarmFeed, targetFeed].map((feed) => feed.handle(message));
      if (fed.some((result) => result !== false)) return Promise.all(fed.filter((result): result is Promise<void> => result instanceof Promise)).then(() => undefined);
      const parsed = monitorSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return counters.info('monitor', 'Monitor: primary election, failure detection and alarms', ctx);
        case 'monitor.status':
          return status();
        case 'monitor.tick':
          run({ type: 'tick' });
          ticks += 1;
          if (ticks % RULE_TICKS === 0) evaluateRules();
          return undefined;
        case 'monitor.rules':
          applyRules(parsed.term, parsed.raise as DesiredAlarm[], parsed.clear as { id: string; rule: DataRule; subject: string }[]);
          return undefined;
        case 'monitor.health':
          return replyLater(health());
        case 'monitor.alarm.ack':
          return replyLater(ack(parsed.id, sender));
        case 'monitor.alarm.test':
          if (primaryOf(state, env.now()) !== self) throw new AcpError('ACP_ERR_NO_PRIMARY', `${self} does not hold the primary lease; send it to acp://${ctx.node.cluster}/@primary/monitor`);
          return replyLater(notifier.test(parsed.target, state.term));
        case 'monitor.webhook.retry':
          notifier.retry(parsed.key);
          return undefined;
        case 'monitor.synced':
          if (!synced) ctx.log.info({ members: members.map((member) => member.name) }, 'the cdb has caught up: taking part in elections');
          synced = true;
          return undefined;
        case 'monitor.prevote':
        case 'monitor.prevote-reply':
        case 'monitor.vote':
        case 'monitor.vote-reply':
        case 'monitor.renew':
        case 'monitor.ack':
          run({ type: 'receive', from: peerOf(sender), message: parsed satisfies PeerMessage });
          return undefined;
        default: {
          const unreachable: never = parsed;
          return unreachable;
        }
      }
    },
    stopping() {
      clearInterval(timer);
      clearTimeout(syncPoll);
      nodeFeed.stop();
      alarmFeed.stop();
      targetFeed.stop();
      notifier.stop();
      // A stopped monitor vouches for no primary: asks to `@primary` fail at once rather than guess.
      deps.system.setPrimaryResolver(() => undefined);
    },
  };
}

export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'monitor',
  description: 'Monitor: primary election with terms and leases, failure detection, alarms',
  schema: monitorSchema,
  authority: monitorAuthority,
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new Error('the monitor runs inline only');
    return createMonitor(ctx, deps);
  },
};
