import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { serviceInfoSchema, ServiceClock } from '../actors/kit.js';
import type { ServiceDefinition } from '../runtime/actor.js';
import { wireLimits } from '../runtime/config.js';
import type { Message } from '../runtime/messages.js';
import type { ServiceDeps } from '../runtime/services.js';
import { nodeMetrics } from './metrics.js';
import { webTls } from './exposure.js';
import { createWebServer } from './server.js';
import { WebSessions, type WebSession } from './sessions.js';
import type { Principal } from '../runtime/principal.js';

const webapiSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  z.strictObject({ type: z.literal('webapi.address') }),
  /** `acp ui`: a one-time link that logs a browser in as the asker. */
  z.strictObject({ type: z.literal('webapi.login-link') }),
  z.strictObject({ type: z.literal('webapi.sessions') }),
  z.strictObject({ type: z.literal('webapi.session.revoke'), id: z.string().min(4).max(64) }),
  // From the HTTP handlers, through this actor's own mailbox (the sessions are its state).
  z.strictObject({ type: z.literal('webapi.session.redeem'), code: z.string().max(100) }),
  z.strictObject({ type: z.literal('webapi.session.open'), principal: z.unknown() }),
  z.strictObject({ type: z.literal('webapi.session.close'), id: z.string().max(100) }),
]);

/** Ports tried after the configured one when it is taken (and was not asked for exactly). */
const PORT_TRIES = 20;

const itself = { internal: [{ service: 'webapi', nodes: 'self' }] } as const;

/** The web API on loopback: the status page, REST under /api/v1, /ws and /metrics. */
export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'webapi',
  description: 'Web API and UI on loopback',
  schema: webapiSchema,
  authority: {
    'service.info': 'read',
    'webapi.address': 'read',
    'webapi.login-link': 'local-admin',
    'webapi.sessions': 'admin',
    'webapi.session.revoke': 'admin',
    'webapi.session.redeem': itself,
    'webapi.session.open': itself,
    'webapi.session.close': itself,
  },
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new Error('webapi runs inline only');
    const clock = new ServiceClock();
    const cdb = ctx.ref(deps.system.localPath('cdb'));
    let app: FastifyInstance | undefined;
    let port = 0;
    let scheme = 'http';
    const hostInUrl = () => (deps.config.webapi.host.includes(':') ? `[${deps.config.webapi.host}]` : deps.config.webapi.host);
    const sessions = new WebSessions(Date.now);
    const asSession = (session: WebSession) => ({ type: 'webapi.session', id: session.id, expiresMs: session.expiresMs });
    return {
      async started() {
        const { host, port: wanted } = deps.config.webapi;
        const { api } = deps.config;
        const tls = webTls(host, deps.config.webapi.tls, { cert: deps.paths.nodeCert, key: deps.paths.nodeKey });
        scheme = tls ? 'https' : 'http';
        app = await createWebServer({
          ...(tls ? { tls } : {}),
          metricsAccess: deps.config.webapi.metrics,
          system: deps.system,
          auth: { apiKey: () => deps.apiKey, tokens: deps.tokens, session: (id) => sessions.check(id).principal },
          sessions: {
            redeem: async (code) => (await ctx.self.ask<Message & { id: string; expiresMs: number }>({ type: 'webapi.session.redeem', code })),
            open: async (principal) => (await ctx.self.ask<Message & { id: string; expiresMs: number }>({ type: 'webapi.session.open', principal })),
            revoke: async (id) => void (await ctx.self.ask({ type: 'webapi.session.close', id })),
          },
          metrics: nodeMetrics({
            status: () => deps.status(),
            list: async (prefix) => ((await cdb.ask({ type: 'cdb.list', prefix, limit: 10_000 })) as Message & { records: { key: string; value: unknown }[] }).records,
          }),
          status: () => deps.status(),
          log: ctx.log,
          wire: wireLimits(deps.config),
          limits: { maxWatches: api.maxWatches, maxAsksInFlight: api.maxAsksInFlight },
          helloTimeoutMs: api.helloTimeoutMs,
          countRefusal: () => deps.countRefusal(),
        });
        // A second node on the same machine takes the next free port, unless the port was asked for.
        const tries = deps.config.webapi.exactPort || wanted === 0 ? 1 : PORT_TRIES;
        for (let attempt = 0; ; attempt += 1) {
          try {
            await app.listen({ host, port: wanted + attempt });
            if (attempt > 0) ctx.log.warn({ wanted, port: wanted + attempt }, `web port ${wanted} is taken; listening on ${wanted + attempt} instead (--web-port chooses)`);
            break;
          } catch (error) {
            const taken = (error as NodeJS.ErrnoException).code === 'EADDRINUSE';
            if (taken && attempt + 1 < tries) continue;
            await app.close();
            throw new Error(
              `cannot listen on ${scheme}://${hostInUrl()}:${wanted + attempt} (${(error as Error).message}); start with another --web-port N (0 picks a free one), or set "webapi": {"port": N} in ${deps.paths.config}`,
            );
          }
        }
        const address = app.server.address();
        port = typeof address === 'object' && address ? address.port : wanted;
        ctx.log.info({ url: `${scheme}://${hostInUrl()}:${port}/`, tls: tls?.source ?? null }, 'web UI listening');
      },
      receive(message, sender) {
        clock.handled += 1;
        const parsed = webapiSchema.parse(message);
        const base = `${scheme}://${hostInUrl()}:${port}/`;
        switch (parsed.type) {
          case 'service.info':
            return clock.info('webapi', 'Web API and UI on loopback', ctx);
          case 'webapi.address':
            return { type: 'webapi.address', url: base };
          case 'webapi.login-link': {
            const { code, expiresMs } = sessions.loginCode(sender);
            return { type: 'webapi.login-link', url: `${base}login?code=${code}`, expiresAt: new Date(expiresMs).toISOString() };
          }
          case 'webapi.sessions':
            return { type: 'webapi.sessions', sessions: sessions.list() };
          case 'webapi.session.revoke':
            return { type: 'webapi.session.revoked', count: sessions.revokeByPrefix(parsed.id) };
          case 'webapi.session.redeem':
            return asSession(sessions.redeem(parsed.code));
          case 'webapi.session.open':
            // Only this actor sends it (authority: internal), with a principal its handler proved.
            return asSession(sessions.open(parsed.principal as Principal));
          case 'webapi.session.close':
            sessions.revoke(parsed.id);
            return { type: 'ok' };
          default: {
            const unreachable: never = parsed;
            return unreachable;
          }
        }
      },
      async stopping() {
        await app?.close();
      },
    };
  },
};
