import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { AcpError } from './errors.js';
import { LOG_LEVELS } from './logger.js';
import { isValidName, nameSchema } from './path.js';

const name = nameSchema;

export const serviceConfigSchema = z.strictObject({
  isolation: z.enum(['inline', 'thread', 'process']).optional(),
  maxRestarts: z.number().int().min(0).max(1000).optional(),
  withinMs: z.number().int().min(1).max(86_400_000).optional(),
  shutdownMs: z.number().int().min(0).max(600_000).optional(),
});
export type ServiceConfig = z.infer<typeof serviceConfigSchema>;

/** `<home>/config.json`. Written with defaults on first run; every field but the identity is optional. */
export const nodeConfigSchema = z.strictObject({
  cluster: name,
  node: name,
  /** A vote-only member (a two-node cluster's third vote): runs only cdb, agent, api and monitor, never stands for election. */
  witness: z.boolean().optional(),
  logLevel: z.enum(LOG_LEVELS).default('info'),
  services: z.record(z.string(), serviceConfigSchema).default({}),
  api: z
    .strictObject({
      maxFrameBytes: z.number().int().min(1024).max(256 * 1024 * 1024).default(4 * 1024 * 1024),
      /** Frames before a good hello: anyone who reaches a listener may send these. */
      maxHelloFrameBytes: z.number().int().min(1024).max(256 * 1024 * 1024).default(64 * 1024),
      /** Maps and arrays nested in one frame (the envelope is level 1). */
      maxFrameDepth: z.number().int().min(8).max(1000).default(64),
      /** CBOR items (keys, values, elements) in one frame. */
      maxFrameItems: z.number().int().min(1000).max(100_000_000).default(1_000_000),
      helloTimeoutMs: z.number().int().min(100).max(600_000).default(5000),
      maxConnections: z.number().int().min(1).max(100_000).default(1024),
      /** Watches (CDB subscriptions, death watches) one connection may hold at once. */
      maxWatches: z.number().int().min(1).max(100_000).default(256),
      /** Asks one connection may have waiting for an answer at once. */
      maxAsksInFlight: z.number().int().min(1).max(1_000_000).default(4096),
      /** The API on local TCP as well as the Unix socket (loopback only). */
      port: z.number().int().min(0).max(65535).optional(),
      host: z.enum(['127.0.0.1', '::1', 'localhost']).default('127.0.0.1'),
    })
    .default({ maxFrameBytes: 4 * 1024 * 1024, maxHelloFrameBytes: 64 * 1024, maxFrameDepth: 64, maxFrameItems: 1_000_000, helloTimeoutMs: 5000, maxConnections: 1024, maxWatches: 256, maxAsksInFlight: 4096, host: '127.0.0.1' }),
  agent: z
    .strictObject({
      /** Where this node's agent listens for other nodes (HOST:PORT); absent: no agent listener. */
      listen: z.string().max(300).optional(),
      /** The node that holds the cluster CA's key (signs certificates for joins and renewals). */
      caNode: name.optional(),
      /** Heartbeat on every peer connection; a peer silent for 3 heartbeats is reconnected. */
      heartbeatMs: z.number().int().min(100).max(60_000).default(2000),
      /** Frames queued per peer while it is unreachable or slow; beyond, sends fail. */
      maxQueuedFrames: z.number().int().min(1).max(1_000_000).default(10_000),
      /** Peers known from joining (the rest are learnt as they connect, and kept in the cdb). */
      seeds: z.array(z.strictObject({ node: name, agent: z.string().max(300) })).max(1000).default([]),
    })
    .default({ heartbeatMs: 2000, maxQueuedFrames: 10_000, seeds: [] }),
  webapi: z
    .strictObject({
      /**
       * Where the web UI listens: loopback by default; any other address (--web-bind) only with TLS,
       * from `tls` or else the node's own certificate.
       */
      host: z.string().max(253).refine((host) => host === 'localhost' || isIP(host) !== 0, 'must be an IP address or localhost').default('127.0.0.1'),
      /** An operator's certificate and key (PEM files) for the web UI; TLS even on loopback when given. */
      tls: z.strictObject({ cert: z.string().min(1).max(4096), key: z.string().min(1).max(4096) }).optional(),
      /**
       * Who may read /metrics without a token: 'loopback' (default: requests from this machine;
       * others need a bearer token), 'token' (nobody), 'open' (everyone).
       */
      metrics: z.enum(['loopback', 'token', 'open']).default('loopback'),
      port: z.number().int().min(0).max(65535).default(8480),
      /** Fail when the port is taken (a port given with --web-port is exact); otherwise take the next free one. */
      exactPort: z.boolean().default(false),
    })
    .default({ host: '127.0.0.1', port: 8480, exactPort: false, metrics: 'loopback' }),
  cdb: z
    .strictObject({
      /** Bound on meta and stats keys held in memory. */
      maxMemoryKeys: z.number().int().min(100).max(10_000_000).default(200_000),
      /** Values kept per stats key: 600 = 10 minutes at the 1 s collection interval. */
      statsHistory: z.number().int().min(1).max(100_000).default(600),
      /** A record from another node stamped further ahead of this node's clock is refused and counted. */
      maxClockAheadMs: z.number().int().min(100).max(86_400_000).default(10_000),
      /** A value's size (its JSON text, in characters); larger puts and merges are refused. */
      maxValueBytes: z.number().int().min(1024).max(64 * 1024 * 1024).default(1024 * 1024),
      /** Objects and arrays nested in a value; deeper puts and merges are refused. */
      maxValueDepth: z.number().int().min(2).max(100).default(32),
    })
    .default({ maxMemoryKeys: 200_000, statsHistory: 600, maxClockAheadMs: 10_000, maxValueBytes: 1024 * 1024, maxValueDepth: 32 }),
  /** How the CDB keeps every node's copy in step (docs/design.md, CDB). */
  sync: z
    .strictObject({
      /** GROUP:PORT of the cluster's multicast group; default: a group derived from the cluster name, port 5460. */
      multicast: z.string().max(100).optional(),
      /** The interface address to join the group on; default: the agent's address, else the system's choice. */
      multicastIf: z.string().max(100).optional(),
      /** Unicast mode: the stream goes to these agents (HOST:PORT) and to every node the CDB knows, over the agent. */
      peers: z.array(z.string().max(300)).max(1000).default([]),
      /** L3 gateways: remote domains' gateway agents (HOST:PORT) that this node forwards its domain's changes to. */
      gateways: z.array(z.string().max(300)).max(100).default([]),
      /** How often every node sends its digest of per-origin high-water marks (anti-entropy). */
      digestMs: z.number().int().min(50).max(60_000).default(1000),
      /** A node not heard from (heartbeat or digest) for this long is suspect... */
      suspectAfterMs: z.number().int().min(100).max(600_000).default(1500),
      /** ... and for this long, down. With 1 s heartbeats a dead node is down within 2.5 s. */
      downAfterMs: z.number().int().min(200).max(600_000).default(2500),
      /** Own changes kept to answer repair requests; older gaps are repaired from a snapshot. */
      repairKeep: z.number().int().min(100).max(10_000_000).default(20_000),
    })
    .default({ peers: [], gateways: [], digestMs: 1000, suspectAfterMs: 1500, downAfterMs: 2500, repairKeep: 20_000 }),
  ha: z
    .strictObject({
      /**
       * A hardware watchdog the fence guard keeps alive while it guards HA guests (off unless set):
       * a host whose guard cannot run (killed, hung) is reset by the hardware. A character device
       * such as /dev/watchdog, or the FIFO of a watchdog multiplexer.
       */
      watchdog: z.string().min(1).max(4096).refine((path) => path.startsWith('/') && !path.split('/').includes('..'), 'must be an absolute path without ..').optional(),
    })
    .default({}),
  /** How often node and system stats are collected (in the worker pool) and written to the CDB; 0: never. */
  statsMs: z.number().int().min(0).max(3_600_000).default(1000),
  /** How often the Framework publishes node and service meta to the CDB. */
  heartbeatMs: z.number().int().min(100).max(60_000).default(1000),
  /** After a service exhausts its restart intensity it is `failed`; the Framework tries it again after this. */
  failedRetryMs: z.number().int().min(1000).max(86_400_000).default(30_000),
});
export type NodeConfig = z.infer<typeof nodeConfigSchema>;

/** The wire limits every listener of a node applies (the API's socket and TCP, the agent's TLS). */
export function wireLimits(config: NodeConfig): { maxFrameBytes: number; maxHelloFrameBytes: number; maxDepth: number; maxItems: number } {
  const { api } = config;
  return { maxFrameBytes: api.maxFrameBytes, maxHelloFrameBytes: api.maxHelloFrameBytes, maxDepth: api.maxFrameDepth, maxItems: api.maxFrameItems };
}

export interface HomePaths {
  readonly home: string;
  readonly config: string;
  readonly secrets: string;
  readonly apiKey: string;
  readonly run: string;
  readonly socket: string;
  readonly pidfile: string;
  readonly log: string;
  readonly logFile: string;
  readonly data: string;
  readonly caCert: string;
  readonly caKey: string;
  readonly nodeCert: string;
  readonly nodeKey: string;
  readonly clusterKey: string;
  readonly tokens: string;
}

export function homePaths(home: string): HomePaths {
  return {
    home,
    config: join(home, 'config.json'),
    secrets: join(home, 'secrets'),
    apiKey: join(home, 'secrets', 'api.key'),
    run: join(home, 'run'),
    socket: join(home, 'run', 'acp.sock'),
    pidfile: join(home, 'run', 'acpd.pid'),
    log: join(home, 'log'),
    logFile: join(home, 'log', 'acpd.log'),
    data: join(home, 'data'),
    caCert: join(home, 'secrets', 'ca.crt'),
    caKey: join(home, 'secrets', 'ca.key'),
    nodeCert: join(home, 'secrets', 'node.crt'),
    nodeKey: join(home, 'secrets', 'node.key'),
    clusterKey: join(home, 'secrets', 'cluster.key'),
    tokens: join(home, 'secrets', 'tokens.json'),
  };
}

/** The default node name: the host name, lower-cased, with anything outside the name alphabet replaced. */
export function defaultNodeName(host: string = hostname()): string {
  const cleaned = host.toLowerCase().split('.')[0]!.replace(/[^a-z0-9._-]/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 63);
  return isValidName(cleaned) ? cleaned : 'node';
}

export function defaultConfig(cluster: string | undefined, node: string | undefined): NodeConfig {
  return nodeConfigSchema.parse({ cluster: cluster ?? 'local', node: node ?? defaultNodeName() });
}

/** A CDB value travels a few levels down in a frame (envelope, body, records, record): room for them. */
const FRAME_LEVELS_AROUND_A_VALUE = 8;

export function parseConfig(input: unknown, file: string): NodeConfig {
  const result = nodeConfigSchema.safeParse(input);
  if (result.success) {
    const { api, cdb } = result.data;
    if (api.maxFrameDepth < cdb.maxValueDepth + FRAME_LEVELS_AROUND_A_VALUE) {
      throw new AcpError(
        'ACP_ERR_CONFIG_INVALID',
        `${file}: field 'api.maxFrameDepth' (${api.maxFrameDepth}) must be at least cdb.maxValueDepth + ${FRAME_LEVELS_AROUND_A_VALUE} (${cdb.maxValueDepth + FRAME_LEVELS_AROUND_A_VALUE}), or values the CDB accepts could not travel; fix or remove the file`,
      );
    }
    return result.data;
  }
  const issue = result.error.issues[0];
  const where = issue && issue.path.length > 0 ? `field '${issue.path.join('.')}'` : 'the file';
  throw new AcpError('ACP_ERR_CONFIG_INVALID', `${file}: ${where}: ${issue?.message ?? 'invalid'}; fix or remove the file`);
}
