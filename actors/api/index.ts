import { z } from 'zod';
import { FrameListener, type FrameConnection } from '../../adapters/frame-listener.js';
import type { ServiceDefinition } from '../../runtime/actor.js';
import type { AuthorityTable } from '../../runtime/authority.js';
import { wireLimits } from '../../runtime/config.js';
import type { ServiceDeps } from '../../runtime/services.js';
import { CdbFeed } from '../cdb-feed.js';
import { serviceInfoSchema, ServiceCounters } from '../kit.js';
import { ApiSession } from './session.js';
import { applyTokenRecords, TOKEN_PREFIX, TokenAdmin, tokenMessages } from './tokens.js';

const apiSchema = z.discriminatedUnion('type', [serviceInfoSchema, z.strictObject({ type: z.literal('api.connections') }), ...tokenMessages]);
export type ApiMessage = z.infer<typeof apiSchema>;

/** Who may send what to the API service (see runtime/authority.ts). */
export const apiAuthority: AuthorityTable = {
  'service.info': 'read',
  'api.connections': 'read',
  'api.token.create': 'admin',
  'api.token.list': 'admin',
  'api.token.remove': 'admin',
};

/** The local API: the wire protocol on `<home>/run/acp.sock` (directory 0700, socket 0600, API key in hello). */
export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'api',
  description: 'Local API on a Unix socket',
  schema: apiSchema,
  authority: apiAuthority,
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new Error('api runs inline only');
    const counters = new ServiceCounters();
    const { api } = deps.config;
    const accept = (connection: FrameConnection) =>
      new ApiSession(connection, {
        system: deps.gateway,
        apiKey: deps.apiKey,
        tokens: deps.tokens,
        limits: { maxWatches: api.maxWatches, maxAsksInFlight: api.maxAsksInFlight },
        helloTimeoutMs: api.helloTimeoutMs,
        log: ctx.log,
        onRefused: () => deps.countRefusal(),
      });
    const common = { ...wireLimits(deps.config), maxConnections: api.maxConnections, log: ctx.log, accept };
    const listener = new FrameListener({ ...common, socketPath: deps.paths.socket });
    // The same protocol on local TCP, for clients that cannot reach the socket file; loopback only.
    const tcp = api.port === undefined ? undefined : new FrameListener({ ...common, host: api.host, port: api.port });
    const cdb = ctx.ref(deps.system.localPath('cdb'));
    const tokens = new TokenAdmin(cdb, deps.tokens);
    // The cluster's tokens, from the CDB: a snapshot, then every change (a revocation included).
    const tokenFeed = new CdbFeed(ctx, TOKEN_PREFIX, (records) => applyTokenRecords(deps.tokens, records));
    return {
      async started() {
        await tokenFeed.start();
        await listener.listen();
        ctx.log.info({ socket: deps.paths.socket }, 'API listening');
        if (tcp) {
          try {
            await tcp.listen();
          } catch (error) {
            await listener.close();
            throw new Error(`the API cannot listen on ${api.host}:${api.port} (${(error as Error).message}); choose another --api-port`);
          }
          ctx.log.info({ host: api.host, port: tcp.port }, 'API listening on local TCP');
        }
      },
      receive(message, sender) {
        counters.handled += 1;
        const fed = tokenFeed.handle(message);
        if (fed !== false) return fed === true ? undefined : fed;
        const parsed = apiSchema.parse(message);
        switch (parsed.type) {
          case 'service.info':
            return counters.info('api', 'Local API on a Unix socket', ctx);
          case 'api.connections':
            return { type: 'api.connections', count: listener.connections + (tcp?.connections ?? 0), tcpPort: tcp?.port ?? null };
          case 'api.token.create':
            return tokens.create(parsed.role, parsed.ttlMs, parsed.comment, sender);
          case 'api.token.list':
            return tokens.list();
          case 'api.token.remove':
            return tokens.remove(parsed.id);
          default: {
            const unreachable: never = parsed;
            return unreachable;
          }
        }
      },
      async stopping() {
        tokenFeed.stop();
        await tcp?.close();
        await listener.close();
      },
    };
  },
};
