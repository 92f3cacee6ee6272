import { z } from 'zod';
import type { ActorContext, Actor } from '../../runtime/actor.js';
import type { AuthorityTable } from '../../runtime/authority.js';
import type { NodeStatus, ServiceStatus } from '../../runtime/services.js';
import { serviceInfoSchema, ServiceCounters } from '../kit.js';
import { errorMessage } from '../../runtime/errors.js';
import { upsertNodeObject } from '../node-object.js';
import { metaKey, objectKey, SERVICE_TYPES, type NodeMeta, type ObjectType, type ServiceMeta } from '../model.js';
import { faultAuthority, faultMessages, handleFault, isFaultMessage, requireFaults, type FaultDeps } from './faults.js';

export const frameworkSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  z.strictObject({ type: z.literal('status') }),
  z.strictObject({ type: z.literal('shutdown'), reason: z.string().max(200).optional() }),
  z.strictObject({ type: z.literal('framework.heartbeat') }),
  z.strictObject({ type: z.literal('framework.service-changed'), service: z.string().max(63) }),
  ...faultMessages,
]);
export type FrameworkMessage = z.infer<typeof frameworkSchema>;

/** Who may send what to the Framework (see runtime/authority.ts). */
export const frameworkAuthority: AuthorityTable = {
  'service.info': 'read',
  status: 'read',
  shutdown: 'admin',
  // Its own timer and the service tree's notices.
  'framework.heartbeat': { internal: [{ service: 'framework', nodes: 'self' }] },
  'framework.service-changed': { internal: [{ service: 'framework', nodes: 'self' }] },
  ...faultAuthority,
};

export interface FrameworkDeps {
  /** Starts (or resumes) the service tree; idempotent. */
  boot(): Promise<void>;
  status(): NodeStatus;
  requestShutdown(reason: string): void;
  /** The daemon's event-loop delay since the last call, in milliseconds. */
  eventLoopDelay(): { p50: number; p99: number; max: number };
  /** Facts services set about this node (the hypervisor's accelerator, ...), carried in its meta. */
  nodeFacts?(): Record<string, string | number | boolean | null>;
  /** Calls `listener` whenever a service changes state; returns the unsubscribe function. */
  onServiceChange(listener: (service: ServiceStatus) => void): () => void;
  heartbeatMs: number;
  /** Where this node's agent listens, published in its node object. */
  agentAddress?: string;
  /** This node is a witness (a vote-only member), published in its node object. */
  witness?: boolean;
  /** Fault injection (acp up --faults) and the QEMU process scan: faults.ts. */
  faults: FaultDeps;
}

/** Every this many heartbeats the node checks its own object and puts its fields back if a writer dropped them. */
const NODE_OBJECT_EVERY = 30;

type Op = { op: 'put'; key: string; value: unknown };

function serviceType(name: string): ObjectType | undefined {
  return (SERVICE_TYPES as readonly string[]).includes(name) ? (`service/${name}` as ObjectType) : undefined;
}

/**
 * The Framework's actor: the node's root. It boots the service tree when it starts (without holding
 * its own mailbox, so status is answered during boot), reports the node's status, takes the
 * request to shut the node down, and publishes the node and its services to the CDB: objects once,
 * meta on every change and every heartbeat.
 */
export function createFramework(ctx: ActorContext, deps: FrameworkDeps): Actor {
  const counters = new ServiceCounters();
  const node = ctx.node.node;
  const cdb = ctx.ref(ctx.self.path.replace(/\/framework$/, '/cdb'));
  let heartbeat: NodeJS.Timeout | undefined;
  let unsubscribe: (() => void) | undefined;
  let objectsPublished = false;
  let beats = 0;
  /** What each service's meta was last published as: only a change is written again. */
  const published = new Map<string, string>();
  /** The CDB's restarts when we last published: meta lives in its memory, so a restart loses it. */
  let cdbRestarts: number | undefined;

  const cdbRunning = (status: NodeStatus) => status.services.some((service) => service.name === 'cdb' && service.state === 'running');

  const serviceMeta = (service: ServiceStatus): ServiceMeta => ({
    state: service.state,
    restarts: service.restarts,
    isolation: service.isolation,
    pid: service.pid ?? null,
    since: service.since,
    ...(service.lastError === undefined ? {} : { lastError: service.lastError }),
  });

  const publish = (ops: Op[]) => {
    if (ops.length === 0) return;
    cdb.ask({ type: 'cdb.batch', ops }, { timeoutMs: Math.max(2000, deps.heartbeatMs * 2) }).catch((error: unknown) => {
      // Forget what did not land, so the next heartbeat writes it again.
      for (const op of ops) published.delete(op.key);
      ctx.log.debug({ err: (error as Error).message }, 'publishing to the cdb failed; the next heartbeat retries');
    });
  };

  /** A service's meta, if it changed since it was last published. */
  const changedServiceOps = (services: readonly ServiceStatus[]): Op[] => {
    const ops: Op[] = [];
    for (const service of services) {
      const type = serviceType(service.name);
      if (!type) continue;
      const key = metaKey(type, node, node);
      const value = serviceMeta(service);
      const text = JSON.stringify(value);
      if (published.get(key) === text) continue;
      published.set(key, text);
      ops.push({ op: 'put', key, value });
    }
    return ops;
  };

  /**
   * The node's own fields of its object (node-object.ts): merged over what is there, so an
   * operator's `votes` and `labels` survive a restart; checked again now and then, so a peer's
   * write that raced this one cannot drop `witness` for good.
   */
  const publishNodeObject = () => {
    upsertNodeObject(cdb, node, { cluster: ctx.node.cluster, ...(deps.agentAddress ? { agent: deps.agentAddress } : {}), witness: deps.witness === true ? true : undefined })
      .then((wrote) => {
        if (wrote) ctx.log.debug({ witness: deps.witness === true }, 'published the node object');
      })
      .catch((error: unknown) => ctx.log.debug({ err: errorMessage(error) }, 'publishing the node object failed; a later heartbeat retries'));
  };

  const heartbeatOps = (status: NodeStatus): Op[] => {
    const ops: Op[] = [];
    // Written apart from the batch (a read, then a compare-and-set); 30 heartbeats apart, two never overlap.
    if (!objectsPublished || beats % NODE_OBJECT_EVERY === 0) publishNodeObject();
    beats += 1;
    if (!objectsPublished) {
      for (const service of status.services) {
        const type = serviceType(service.name);
        if (type) ops.push({ op: 'put', key: objectKey(type, node), value: { node, isolation: service.isolation } });
      }
      objectsPublished = true;
    }
    const meta: NodeMeta = {
      ...deps.nodeFacts?.(),
      state: status.booting ? 'starting' : 'running',
      incarnation: status.incarnation,
      pid: status.pid,
      uptimeMs: status.uptimeMs,
      heartbeatAt: new Date().toISOString(),
      eventLoopDelayMs: deps.eventLoopDelay(),
    };
    // The node's meta is its heartbeat (one record a second); a service's meta changes rarely.
    ops.push({ op: 'put', key: metaKey('node', node, node), value: meta });
    const restarts = status.services.find((service) => service.name === 'cdb')?.restarts ?? 0;
    if (restarts !== cdbRestarts) {
      published.clear();
      cdbRestarts = restarts;
    }
    ops.push(...changedServiceOps(status.services));
    return ops;
  };

  return {
    started() {
      deps.boot().catch((error: unknown) => ctx.log.error({ err: (error as Error).message }, 'boot failed'));
      heartbeat = setInterval(() => ctx.self.tell({ type: 'framework.heartbeat' }), deps.heartbeatMs);
      heartbeat.unref();
      unsubscribe = deps.onServiceChange((service) => ctx.self.tell({ type: 'framework.service-changed', service: service.name }));
    },
    receive(message) {
      counters.handled += 1;
      // The runtime checked the fields against the schema; without --faults nothing more is read.
      if (isFaultMessage(message.type)) requireFaults(deps.faults.faults);
      const parsed = frameworkSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return counters.info('framework', 'Root supervisor of the node', ctx);
        case 'status':
          return deps.status();
        case 'shutdown': {
          const reason = parsed.reason ?? 'requested';
          ctx.log.info({ reason }, 'shutdown requested');
          // Answer first: the shutdown stops this actor too.
          setImmediate(() => deps.requestShutdown(reason));
          return { type: 'shutting-down', pid: process.pid };
        }
        case 'framework.heartbeat': {
          const status = deps.status();
          if (cdbRunning(status)) publish(heartbeatOps(status));
          return undefined;
        }
        case 'framework.service-changed': {
          const status = deps.status();
          const service = status.services.find((candidate) => candidate.name === parsed.service);
          if (service && cdbRunning(status)) publish(changedServiceOps([service]));
          return undefined;
        }
        case 'faults.kill':
        case 'faults.stop':
        case 'faults.partition':
        case 'faults.drop':
        case 'framework.qemu':
          return handleFault(ctx, deps.faults, parsed);
        default: {
          const unreachable: never = parsed;
          return unreachable;
        }
      }
    },
    stopping() {
      clearInterval(heartbeat);
      unsubscribe?.();
    },
  };
}
