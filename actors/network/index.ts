import { z } from 'zod';
import type { ActorContext, Actor, ServiceDefinition } from '../../runtime/actor.js';
import { replyLater } from '../../runtime/actor.js';
import type { AuthorityTable } from '../../runtime/authority.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { nameSchema } from '../../runtime/path.js';
import type { ServiceDeps } from '../../runtime/services.js';
import { apply, listLinks } from '../../adapters/iproute2.js';
import { vppAvailable, type VppAvailability } from '../../adapters/vpp.js';
import type { RecordView } from '../cdb/index.js';
import { CdbFeed } from '../cdb-feed.js';
import { serviceInfoSchema, ServiceClock } from '../kit.js';
import { metaKey, networkObjectSchema, objectKey, parseKey, systemObjectSchema, type NetworkObject } from '../model.js';
import { plan, type NetworkReport, type Operation, type TapWant } from './reconcile.js';

export const networkSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  /** Define a network (object/network/<name>), refused here when this node cannot realize its type (vpp-vlan without VPP). */
  z.strictObject({ type: z.literal('network.create'), spec: z.unknown() }),
  /** Remove a network, refused while a system has a NIC on it. */
  z.strictObject({ type: z.literal('network.rm'), name: nameSchema }),
  /** What this node has realized: one report per network. */
  z.strictObject({ type: z.literal('network.status'), name: nameSchema.optional() }),
  /** Reconcile now (the service also does every RECONCILE_MS and on every change). */
  z.strictObject({ type: z.literal('network.tick') }),
]);

/** Who may send what to the network service (see runtime/authority.ts). */
export const networkAuthority: AuthorityTable = {
  'service.info': 'read',
  'network.status': 'read',
  'network.create': 'operate',
  'network.rm': 'operate',
  'network.tick': { internal: [{ service: 'network', nodes: 'self' }] },
};

const RECONCILE_MS = 2000;
const VPP_PROBE_MS = 30_000;
const DESCRIPTION = 'Network: bridges, VLANs and trunks for systems, reconciled with iproute2';

function describe(operation: Operation): string {
  switch (operation.op) {
    case 'delete':
      return `removed ${operation.name}: ${operation.why}`;
    case 'add-bridge':
      return `created bridge ${operation.name}`;
    case 'add-vlan':
      return `created vlan ${operation.name} (id ${operation.vid} on ${operation.parent})`;
    case 'add-tap':
      return `created tap ${operation.name}`;
    case 'set-mtu':
      return `set ${operation.name} mtu ${operation.mtu}`;
    case 'set-master':
      return `put ${operation.name} in bridge ${operation.master}`;
    case 'set-up':
      return `set ${operation.name} ${operation.up ? 'up' : 'down'}`;
    default: {
      const unreachable: never = operation;
      return String(unreachable);
    }
  }
}

/**
 * The Network service decides what this node's networks need and has adapters/iproute2.ts do it:
 * it follows `object/network/` (CdbFeed), and on every change and every RECONCILE_MS compares the
 * networks it carries with what `ip -j -d link` reports, applies the difference to the interfaces
 * it owns (their alias names this node), and publishes `meta/network/<id>@<node>` when a report
 * changes. Reconciliations never overlap: one asked for meanwhile runs once the current one ends.
 */
export function createNetwork(ctx: ActorContext): Actor {
  const node = ctx.node.node;
  const scope = `${ctx.node.cluster}/${node}`;
  const clock = new ServiceClock();
  const cdb = ctx.ref(`acp://${ctx.node.cluster}/${node}/cdb`);
  const networks = new Map<string, NetworkObject>();
  const taps = new Map<string, TapWant[]>();
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
  });

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
    const listed = await cdb.ask<Message & { records: RecordView[] }>({ type: 'cdb.list', prefix: 'object/system/', limit: 10_000 }, { timeoutMs: 10_000 });
    const users = listed.records
      .filter((record) => !record.deleted)
      .map((record) => systemObjectSchema.safeParse(record.value))
      .flatMap((parsed) => (parsed.success && parsed.data.nics.some((nic) => nic.network === name) ? [parsed.data.name] : []));
    if (users.length > 0) throw new AcpError('ACP_ERR_NETWORK_IN_USE', `network '${name}' is used by system${users.length > 1 ? 's' : ''} ${users.sort().join(', ')}; remove their NICs on it first (acp system nic rm)`);
    await cdb.ask({ type: 'cdb.get', key: objectKey('network', name) }, { timeoutMs: 10_000 }).catch((error: unknown) => {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no network '${name}' (acp network ls)`);
      throw error;
    });
    await cdb.ask({ type: 'cdb.delete', key: objectKey('network', name) }, { timeoutMs: 10_000 });
    return { type: 'network.removed', name };
  };

  return {
    async started() {
      await feed.start();
      timer = setInterval(() => ctx.self.tell({ type: 'network.tick' }), RECONCILE_MS);
      timer.unref();
    },
    receive(message) {
      clock.handled += 1;
      const fed = feed.handle(message);
      if (fed !== false) return fed === true ? undefined : fed;
      const parsed = networkSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return clock.info('network', DESCRIPTION, ctx);
        case 'network.create':
          return replyLater(create(parsed.spec));
        case 'network.rm':
          return replyLater(remove(parsed.name));
        case 'network.status': {
          const chosen = parsed.name === undefined ? reports : Object.fromEntries(Object.entries(reports).filter(([id]) => id === parsed.name));
          return { type: 'network.status', node, networks: chosen };
        }
        case 'network.tick':
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
      feed.stop();
      // The interfaces stay: guests keep their network while the daemon restarts.
      await running;
    },
  };
}

export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'network',
  description: DESCRIPTION,
  schema: networkSchema,
  authority: networkAuthority,
  isolations: ['inline', 'thread', 'process'],
  create(ctx) {
    return createNetwork(ctx);
  },
};
