import { z } from 'zod';
import type { ActorContext, Actor, ServiceDefinition } from '../../runtime/actor.js';
import { replyLater } from '../../runtime/actor.js';
import type { AuthorityTable } from '../../runtime/authority.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { nameSchema } from '../../runtime/path.js';
import type { ServiceDeps } from '../../runtime/services.js';
import { apply, linkCounters, listLinks } from '../../adapters/iproute2.js';
import { vppAvailable, type VppAvailability } from '../../adapters/vpp.js';
import type { RecordView } from '../cdb/index.js';
import { CdbFeed } from '../cdb-feed.js';
import { networkInUse } from '../system-uses.js';
import { serviceInfoSchema, ServiceCounters } from '../kit.js';
import { metaKey, statsKey, networkObjectSchema, objectKey, parseKey, systemNicSchema, systemObjectSchema, type NetworkObject, type SystemNic } from '../model.js';
import { bridgeName, generatedMac, tapName } from '../../adapters/interface-names.js';
import { withRates, type LinkStats, type Sample } from './stats.js';
import { carries, describe, plan, tapsFound, tapWants, UnclaimedTaps, type NetworkReport, type TapWant } from './reconcile.js';

export const networkSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  /** Define a network (object/network/<name>), refused here when this node cannot realize its type (vpp-vlan without VPP). */
  z.strictObject({ type: z.literal('network.create'), spec: z.unknown() }),
  /** Remove a network, refused while a system has a NIC on it. */
  z.strictObject({ type: z.literal('network.rm'), name: nameSchema }),
  /** What this node has realized: one report per network. */
  z.strictObject({ type: z.literal('network.status'), name: nameSchema.optional() }),
  /** A system's NICs on this node: their taps made (on their bridges) before its guest starts or arrives. */
  z.strictObject({ type: z.literal('network.nics-up'), system: nameSchema, nics: z.array(systemNicSchema).max(32) }),
  /** The system's guest is gone from this node: its taps go. */
  z.strictObject({ type: z.literal('network.nics-down'), system: nameSchema }),
  /** After the hypervisor's recovery: the systems whose guests it adopted here. Taps kept at start for any other system go. */
  z.strictObject({ type: z.literal('network.nics-adopted'), systems: z.array(nameSchema).max(100_000) }),
  /** The latest counters and rates of each system's NICs here (the hypervisor puts them in stats/system/). */
  z.strictObject({ type: z.literal('network.nic-stats') }),
  /** Reconcile now (the service also does every RECONCILE_MS and on every change). */
  z.strictObject({ type: z.literal('network.tick') }),
]);

/** Who may send what to the network service (see runtime/authority.ts). */
export const networkAuthority: AuthorityTable = {
  'service.info': 'read',
  'network.status': 'read',
  'network.create': 'operate',
  'network.rm': 'operate',
  'network.nics-up': { internal: [{ service: 'hypervisor', nodes: 'self' }] },
  'network.nics-down': { internal: [{ service: 'hypervisor', nodes: 'self' }] },
  'network.nics-adopted': { internal: [{ service: 'hypervisor', nodes: 'self' }] },
  'network.nic-stats': 'read',
  'network.tick': { internal: [{ service: 'network', nodes: 'self' }] },
};

/** How long a stop waits for a reconcile pass in flight. */
const STOP_WAIT_MS = 200;
const RECONCILE_MS = 2000;
/** Outside the daemon's process (thread or process isolation) the node's config is not at hand: every second, as the design says. */
const DEFAULT_STATS_MS = 1000;
const VPP_PROBE_MS = 30_000;
const UNCLAIMED_TAPS_MS = 300_000; // taps found at start, if the hypervisor never says which guests it adopted (network.nics-adopted)
const DESCRIPTION = 'Network: bridges, VLANs and trunks for systems, reconciled with iproute2';

/**
 * The Network service decides what this node's networks need and has adapters/iproute2.ts do it:
 * it follows `object/network/` (CdbFeed), and on every change and every RECONCILE_MS compares the
 * networks it carries with what `ip -j -d link` reports, applies the difference to the interfaces
 * it owns (their alias names this node), and publishes `meta/network/<id>@<node>` when a report
 * changes. Reconciliations never overlap: one asked for meanwhile runs once the current one ends.
 */
export function createNetwork(ctx: ActorContext, statsMs: number): Actor {
  const node = ctx.node.node;
  const scope = `${ctx.node.cluster}/${node}`;
  const counters = new ServiceCounters();
  const cdb = ctx.ref(`acp://${ctx.node.cluster}/${node}/cdb`);
  const networks = new Map<string, NetworkObject>();
  const taps = new Map<string, TapWant[]>();
  /** Systems whose taps were kept at start only because they were there, until the hypervisor claims them. */
  const unclaimed = new UnclaimedTaps(UNCLAIMED_TAPS_MS);
  const published = new Map<string, string>();
  let reports: Record<string, NetworkReport> = {};
  let running: Promise<void> | undefined;
  let again = false;
  let timer: NodeJS.Timeout | undefined;
  let lastFailure: string | undefined;
  let vpp: { at: number; probe: Promise<VppAvailability> } | undefined;

  const vppState = (): Promise<VppAvailability> => {
    if (!vpp || Date.now() - vpp.at > VPP_PROBE_MS) vpp = { at: Date.now(), probe: vppAvailable() };
    return vpp.probe;
  };

  const feed = new CdbFeed(ctx, 'object/network/', (records: readonly RecordView[]) => {
    for (const record of records) {
      const id = parseKey(record.key).id;
      const parsed = record.deleted ? undefined : networkObjectSchema.safeParse(record.value);
      if (parsed?.success) networks.set(id, parsed.data);
      else networks.delete(id);
    }
    ctx.self.tell({ type: 'network.tick' });
  }, () => (published.clear(), ctx.self.tell({ type: 'network.tick' }))); // rewatched: the CDB restarted and lost our meta/

  const publish = async (next: Record<string, NetworkReport>) => {
    for (const [id, report] of Object.entries(next)) {
      const text = JSON.stringify(report);
      if (published.get(id) === text) continue;
      await cdb.ask({ type: 'cdb.put', key: metaKey('network', id, node), value: report }, { timeoutMs: 10_000 });
      published.set(id, text);
      ctx.log.info({ network: id, state: report.state, reason: report.reason }, `network ${id} is ${report.state}`);
    }
    for (const id of [...published.keys()].filter((known) => !(known in next))) {
      await cdb.ask({ type: 'cdb.delete', key: metaKey('network', id, node) }, { timeoutMs: 10_000 }).catch(() => undefined);
      await cdb.ask({ type: 'cdb.delete', key: statsKey('network', id, node) }, { timeoutMs: 10_000 }).catch(() => undefined);
      published.delete(id);
    }
  };

  /** One pass: observe, plan, apply, report. A failed step degrades its network, and the next pass tries again. */
  const pass = async (): Promise<void> => {
    const wanted = [...networks.values()];
    const observed = await listLinks();
    const decided = plan(scope, node, wanted, [...taps.values()].flat(), observed);
    const owners = new Map<string, string>();
    for (const [id, report] of Object.entries(decided.reports)) for (const name of [...report.interfaces, ...(report.uplink ? [report.uplink] : [])]) owners.set(name, id);
    for (const operation of decided.operations) {
      try {
        await apply(operation);
        ctx.log.info({ network: owners.get(operation.name), op: operation.op, link: operation.name }, describe(operation));
      } catch (error) {
        const owner = owners.get(operation.name);
        const report = owner === undefined ? undefined : decided.reports[owner];
        if (report) Object.assign(report, { state: 'degraded', reason: `${report.reason ? `${report.reason}; ` : ''}${errorMessage(error)}` });
        ctx.log.warn({ network: owner, op: operation.op, link: operation.name, err: errorMessage(error) }, 'a network operation failed; the next pass retries');
      }
    }
    for (const network of wanted.filter((candidate) => candidate.type === 'vpp-vlan' && decided.reports[candidate.name]?.state !== 'absent')) {
      const available = await vppState();
      decided.reports[network.name] = {
        state: 'degraded',
        reason: available.ok ? 'VPP runs here, but vpp-vlan networks are not realized yet' : new AcpError('ACP_ERR_NETWORK_VPP_UNAVAILABLE', available.why).message,
        interfaces: [],
        uplink: decided.reports[network.name]?.uplink ?? null,
        carrier: null,
      };
    }
    reports = decided.reports;
    await publish(reports);
  };

  const reconcile = (): Promise<void> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        try {
          await pass();
          if (lastFailure !== undefined) ctx.log.info('network reconciliation works again');
          lastFailure = undefined;
        } catch (error) {
          // Logged once per distinct failure: a missing `ip` must not fill the log every 2 s.
          const why = errorMessage(error);
          if (why !== lastFailure) ctx.log.warn({ err: why }, 'network reconciliation failed; retrying');
          lastFailure = why;
        }
      } while (again);
    })().finally(() => {
      running = undefined;
    });
    return running;
  };

  const create = async (spec: unknown): Promise<Message> => {
    const result = networkObjectSchema.safeParse(spec);
    if (!result.success) {
      const issue = result.error.issues[0];
      throw new AcpError('ACP_ERR_CDB_BAD_VALUE', `bad network: ${issue && issue.path.length > 0 ? `field '${issue.path.join('.')}'` : 'value'}: ${issue?.message ?? 'invalid'}`);
    }
    const network = result.data;
    if (network.type === 'vpp-vlan') {
      const available = await vppState();
      if (!available.ok) throw new AcpError('ACP_ERR_NETWORK_VPP_UNAVAILABLE', `cannot create vpp-vlan network '${network.name}' on node '${node}': ${available.why}; nothing was changed`);
    }
    try {
      const reply = await cdb.ask<Message & { version: string }>({ type: 'cdb.cas', key: objectKey('network', network.name), value: network, expect: null }, { timeoutMs: 10_000 });
      return { type: 'network.created', name: network.name, version: reply.version, spec: network };
    } catch (error) {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_CONFLICT') throw new AcpError('ACP_ERR_CDB_CONFLICT', `network '${network.name}' already exists; acp network rm ${network.name} first, or pick another name`);
      throw error;
    }
  };

  const remove = async (name: string): Promise<Message> => {
    const list = (prefix: string) => cdb.ask<Message & { records: RecordView[] }>({ type: 'cdb.list', prefix, limit: 10_000 }, { timeoutMs: 10_000 }).then((reply) => reply.records);
    const inUse = networkInUse(name, await list('object/system/'), await list('meta/system/'));
    if (inUse) throw new AcpError('ACP_ERR_NETWORK_IN_USE', inUse);
    await cdb.ask({ type: 'cdb.get', key: objectKey('network', name) }, { timeoutMs: 10_000 }).catch((error: unknown) => {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no network '${name}' (acp network ls)`);
      throw error;
    });
    await cdb.ask({ type: 'cdb.delete', key: objectKey('network', name) }, { timeoutMs: 10_000 });
    return { type: 'network.removed', name };
  };

  /** Why a NIC cannot have its tap here, or undefined when it can. */
  const refuseNic = async (system: string, index: number, nic: SystemNic): Promise<AcpError | undefined> => {
    const network = networks.get(nic.network);
    const which = `system '${system}' NIC ${index}`;
    if (!network) return new AcpError('ACP_ERR_NETWORK_NOT_CARRIED', `${which} is on network '${nic.network}', which does not exist (acp network create ${nic.network} --type bridge)`);
    if (!carries(network, node)) return new AcpError('ACP_ERR_NETWORK_NOT_CARRIED', `${which} is on network '${nic.network}', which node '${node}' does not carry (it is on ${network.nodes!.join(', ')}); start the system there or add ${node} to the network's nodes`);
    if (network.type === 'vpp-vlan') {
      const available = await vppState();
      return new AcpError('ACP_ERR_NETWORK_VPP_UNAVAILABLE', `${which} is on vpp-vlan network '${nic.network}': ${available.ok ? 'VPP NICs (vhost-user) are not supported yet' : available.why}`);
    }
    if (nic.vlan !== undefined || nic.trunks !== undefined) return new AcpError('ACP_ERR_NETWORK_UNSUPPORTED', `${which} asks for a VLAN tag or trunk, which needs a VLAN-aware bridge; those are not realized on node '${node}' yet (use a vlan network instead)`);
    // Never accepted and ignored: a limit in both directions needs tc policing on the tap's ingress, which ACP does not set up.
    if (nic.rateMbps !== undefined) return new AcpError('ACP_ERR_NETWORK_UNSUPPORTED', `${which} asks for rateMbps ${nic.rateMbps}, and NIC rate limits are not applied on node '${node}' (nor any node yet); remove rateMbps from the NIC (acp system nic rm, then add it again without it)`);
    return undefined;
  };

  /** The taps of a system defined in the CDB (its NICs); undefined when it has none or is gone (ACP_ERR_CDB_NOT_FOUND); rejects when the CDB cannot say. */
  const definedTaps = async (system: string): Promise<TapWant[] | undefined> => {
    const object = await cdb
      .ask<Message & { record: RecordView }>({ type: 'cdb.get', key: objectKey('system', system) }, { timeoutMs: 5000 })
      .catch((error: unknown) => (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND' ? undefined : Promise.reject(error)));
    const spec = systemObjectSchema.safeParse(object?.record.value);
    return spec.success && spec.data.nics.length > 0 ? tapWants(system, spec.data.nics) : undefined;
  };

  /**
   * At a restart, taps kept from the first pass until the hypervisor claims them (`unclaimed`): of systems whose meta
   * says they run here (no deadline: a restart of this service alone has no recovery to report), and, as a restarted
   * daemon has no meta (it lives in memory), every tap of ours still there for a defined system.
   */
  const adoptTaps = async (): Promise<void> => {
    try {
      const metas = await cdb.ask<Message & { records: RecordView[] }>({ type: 'cdb.list', prefix: 'meta/system/', limit: 10_000 }, { timeoutMs: 5000 });
      const live = metas.records.filter((record) => record.key.endsWith(`@${node}`) && !record.deleted && ['starting', 'running', 'paused', 'migrating', 'stopping'].includes(String((record.value as { state?: unknown }).state)));
      for (const record of live) {
        const system = parseKey(record.key).id;
        const wants = await definedTaps(system).catch(() => undefined);
        if (!wants) continue;
        taps.set(system, wants);
        unclaimed.keep(system, Date.now(), false);
      }
    } catch (error) {
      ctx.log.warn({ err: errorMessage(error) }, "could not read this node's running systems; their taps are kept as found");
    }
    try {
      for (const [system, asFound] of tapsFound(scope, await listLinks())) {
        if (taps.has(system)) continue;
        const wants = await definedTaps(system).catch(() => asFound); // kept as found while the CDB cannot say
        if (!wants) continue;
        taps.set(system, wants);
        unclaimed.keep(system, Date.now());
      }
      if (unclaimed.systems.length > 0) ctx.log.info({ systems: unclaimed.systems }, 'taps found from before the restart are kept until the hypervisor adopts their guests');
    } catch (error) {
      ctx.log.warn({ err: errorMessage(error) }, "could not list this node's interfaces at start; the first pass lists them again");
    }
  };

  /** Taps kept at start and not claimed: released, and removed by the next pass. */
  const release = (systems: readonly string[], why: string): void => {
    for (const system of systems) if (taps.delete(system)) ctx.log.info({ system }, `the taps of system '${system}' kept since the restart are removed: ${why}`);
  };

  /** Registers the system's taps, reconciles, and checks each tap is in its bridge. */
  const nicsUp = async (system: string, nics: readonly SystemNic[]): Promise<Message> => {
    for (const [index, nic] of nics.entries()) {
      const refusal = await refuseNic(system, index, nic);
      if (refusal) throw refusal;
    }
    const wants = tapWants(system, nics);
    taps.set(system, wants);
    unclaimed.claim(system);
    await reconcile();
    const observed = new Map((await listLinks()).map((link) => [link.name, link]));
    const missing = wants.filter((want) => observed.get(want.name)?.master !== bridgeName(want.network));
    if (missing.length > 0) {
      const reasons = [...new Set(missing.map((want) => reports[want.network]?.reason ?? 'the tap could not be made'))];
      throw new AcpError('ACP_ERR_NETWORK_COMMAND', `system '${system}': tap${missing.length > 1 ? 's' : ''} ${missing.map((want) => want.name).join(', ')} not ready on node '${node}': ${reasons.join('; ')}`);
    }
    return { type: 'network.nics', system, taps: nics.map((nic, index) => ({ index, ifname: tapName(system, index), network: nic.network, mac: nic.mac ?? generatedMac(system, index) })) };
  };

  /** Interface counters, every statsMs: per network (its bridge, and uplink) and per system NIC, with rates. */
  const samples = new Map<string, Sample>();
  let nicStats: Record<string, (LinkStats & { index: number; ifname: string; network: string })[]> = {};
  let collecting = false;
  let statsTimer: NodeJS.Timeout | undefined;
  const collectStats = async (): Promise<void> => {
    if (collecting || (networks.size === 0 && taps.size === 0)) return;
    collecting = true;
    try {
      const counters = await linkCounters();
      const at = Date.now();
      const statsOf = (name: string): LinkStats | undefined => {
        const now = counters[name];
        if (!now) return undefined;
        const stats = withRates(now, samples.get(name), at);
        samples.set(name, { counters: now, at });
        return stats;
      };
      const ops: { op: 'put'; key: string; value: unknown }[] = [];
      for (const [id, report] of Object.entries(reports)) {
        const bridge = report.interfaces.length > 0 ? statsOf(bridgeName(id)) : undefined;
        if (!bridge) continue;
        ops.push({ op: 'put', key: statsKey('network', id, node), value: { ...bridge, uplink: report.uplink === null ? null : (statsOf(report.uplink) ?? null), at: new Date(at).toISOString() } });
      }
      nicStats = Object.fromEntries(
        [...taps].map(([system, wants]) => [system, wants.flatMap((want, index) => {
          const stats = statsOf(want.name);
          return stats ? [{ index, ifname: want.name, network: want.network, ...stats }] : [];
        })]),
      );
      for (const name of [...samples.keys()].filter((known) => !(known in counters))) samples.delete(name);
      if (ops.length > 0) await cdb.ask({ type: 'cdb.batch', ops }, { timeoutMs: 10_000 });
    } catch (error) {
      ctx.log.debug({ err: errorMessage(error) }, 'network stats collection failed; the next one retries');
    } finally {
      collecting = false;
    }
  };

  return {
    async started() {
      await adoptTaps();
      await feed.start();
      timer = setInterval(() => ctx.self.tell({ type: 'network.tick' }), RECONCILE_MS);
      timer.unref();
      if (statsMs > 0) {
        statsTimer = setInterval(() => void collectStats(), statsMs);
        statsTimer.unref();
      }
    },
    receive(message) {
      counters.handled += 1;
      const fed = feed.handle(message);
      if (fed !== false) return fed === true ? undefined : fed;
      const parsed = networkSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return counters.info('network', DESCRIPTION, ctx);
        case 'network.create':
          return replyLater(create(parsed.spec));
        case 'network.rm':
          return replyLater(remove(parsed.name));
        case 'network.status': {
          const chosen = parsed.name === undefined ? reports : Object.fromEntries(Object.entries(reports).filter(([id]) => id === parsed.name));
          return { type: 'network.status', node, networks: chosen };
        }
        case 'network.nics-up':
          return replyLater(nicsUp(parsed.system, parsed.nics));
        case 'network.nics-down': {
          taps.delete(parsed.system);
          unclaimed.claim(parsed.system);
          return replyLater(reconcile().then(() => ({ type: 'network.nics-down', system: parsed.system })));
        }
        case 'network.nics-adopted': {
          const released = unclaimed.release(Date.now(), new Set(parsed.systems));
          release(released, "the hypervisor's recovery adopted no guest of it here");
          return replyLater(reconcile().then(() => ({ type: 'network.nics-adopted', released })));
        }
        case 'network.nic-stats':
          return { type: 'network.nic-stats', node, systems: nicStats };
        case 'network.tick':
          release(unclaimed.release(Date.now()), `the hypervisor did not claim them within ${UNCLAIMED_TAPS_MS / 1000} s`);
          void reconcile();
          return undefined;
        default: {
          const unreachable: never = parsed;
          return unreachable;
        }
      }
    },
    async stopping() {
      clearInterval(timer);
      clearInterval(statsTimer);
      feed.stop();
      // The interfaces stay: guests keep their network while the daemon restarts. A pass in flight
      // gets a moment to finish, not the CDB's whole timeout (the node is stopping; it may be stalled).
      await Promise.race([running, new Promise((resolve) => setTimeout(resolve, STOP_WAIT_MS).unref())]);
    },
  };
}

export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'network',
  description: DESCRIPTION,
  schema: networkSchema,
  authority: networkAuthority,
  isolations: ['inline', 'thread', 'process'],
  create(ctx, deps) {
    return createNetwork(ctx, deps?.config.statsMs ?? DEFAULT_STATS_MS);
  },
};
