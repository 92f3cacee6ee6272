import { z } from 'zod';
import { FrameListener, type FrameConnection } from '../../adapters/frame-listener.js';
import type { ServiceDefinition } from '../../runtime/actor.js';
import type { AuthorityTable } from '../../runtime/authority.js';
import { errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { wireLimits } from '../../runtime/config.js';
import type { ServiceDeps } from '../../runtime/services.js';
import type { CdbEvent, CdbSnapshot } from '../cdb/index.js';
import { serviceInfoSchema, ServiceClock } from '../kit.js';
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

const RESUBSCRIBE_MS = 1000;

/** The local API: the wire protocol on `<home>/run/acp.sock` (directory 0700, socket 0600, API key in hello). */
export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'api',
  description: 'Local API on a Unix socket',
  schema: apiSchema,
  authority: apiAuthority,
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new Error('api runs inline only');
    const clock = new ServiceClock();
    const { api } = deps.config;
    const accept = (connection: FrameConnection) =>
      new ApiSession(connection, {
        system: deps.system,
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
    let tokenWatch: number | undefined;
    let resubscribe: NodeJS.Timeout | undefined;
    /** The cluster's tokens, from the CDB: a snapshot, then every change (a revocation included). */
    const watchTokens = async () => {
      try {
        const reply = await cdb.ask<Message & { watch: number }>({ type: 'cdb.watch', prefix: TOKEN_PREFIX, subscriber: ctx.self.path }, { timeoutMs: 10_000 });
        tokenWatch = reply.watch;
      } catch (error) {
        ctx.log.warn({ err: errorMessage(error) }, 'cannot watch the API tokens in the cdb yet; retrying');
        resubscribe = setTimeout(() => ctx.self.tell({ type: 'api.tokens-resubscribe' }), RESUBSCRIBE_MS);
      }
    };
    return {
      async started() {
        await watchTokens();
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
        clock.handled += 1;
        // From the CDB (its watch on object/token/) and from this actor's own retry timer.
        switch (message.type) {
          case 'cdb.snapshot': {
            const snapshot = message as CdbSnapshot;
            if (snapshot.watch === tokenWatch || tokenWatch === undefined) applyTokenRecords(deps.tokens, snapshot.records);
            return undefined;
          }
          case 'cdb.event':
            applyTokenRecords(deps.tokens, [(message as CdbEvent).record]);
            return undefined;
          case 'watch.ended':
            tokenWatch = undefined;
            resubscribe = setTimeout(() => ctx.self.tell({ type: 'api.tokens-resubscribe' }), RESUBSCRIBE_MS);
            return undefined;
          case 'api.tokens-resubscribe':
            return watchTokens();
        }
        const parsed = apiSchema.parse(message);
        switch (parsed.type) {
          case 'service.info':
            return clock.info('api', 'Local API on a Unix socket', ctx);
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
        clearTimeout(resubscribe);
        await tcp?.close();
        await listener.close();
      },
    };
  },
};
