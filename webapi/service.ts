import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { CdbFeed } from '../actors/cdb-feed.js';
import { serviceInfoSchema, ServiceCounters } from '../actors/kit.js';
import { replyLater, type ServiceDefinition } from '../runtime/actor.js';
import { wireLimits } from '../runtime/config.js';
import { AcpError, errorMessage } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import type { ServiceDeps } from '../runtime/services.js';
import { nodeMetrics } from './metrics.js';
import { webTls } from './exposure.js';
import { createWebServer } from './server.js';
import { WebSessions, type WebSession } from './sessions.js';
import type { Principal } from '../runtime/principal.js';
import { nameSchema } from '../runtime/path.js';
import { DisplayRelay } from './display-relay.js';

const stream = z.string().regex(/^[0-9a-f]{32}$/);
const displayBytes = z.instanceof(Uint8Array).refine((bytes) => bytes.byteLength <= 256 * 1024, 'at most 256 KiB');

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
  // A guest's display relayed between two nodes' webapi actors (webapi/display-relay.ts).
  z.strictObject({ type: z.literal('webapi.display.open'), id: nameSchema, stream }),
  z.strictObject({ type: z.literal('webapi.display.input'), stream, data: displayBytes }),
  z.strictObject({ type: z.literal('webapi.display.close'), stream }),
  z.strictObject({ type: z.literal('webapi.display.data'), stream, data: displayBytes }),
  z.strictObject({ type: z.literal('webapi.display.closed'), stream, reason: z.string().max(500) }),
]);

/** Ports tried after the configured one when it is taken (and was not asked for exactly). */
const PORT_TRIES = 20;

const itself = { internal: [{ service: 'webapi', nodes: 'self' }] } as const;
/** Another node's webapi actor (a display relayed between nodes). */
const peers = { internal: [{ service: 'webapi', nodes: 'peers' }] } as const;

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
    'webapi.display.open': peers,
    'webapi.display.input': peers,
    'webapi.display.close': peers,
    'webapi.display.data': peers,
    'webapi.display.closed': peers,
  },
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new Error('webapi runs inline only');
    const counters = new ServiceCounters();
    const cdb = ctx.ref(deps.system.localPath('cdb'));
    let app: FastifyInstance | undefined;
    let port = 0;
    let scheme = 'http';
    const hostInUrl = () => (deps.config.webapi.host.includes(':') ? `[${deps.config.webapi.host}]` : deps.config.webapi.host);
    const sessions = new WebSessions(Date.now, undefined, (id) => void deps.tokens.alive(id));
    const relay = new DisplayRelay(ctx, deps.paths.home);
    const asSession = (session: WebSession) => ({ type: 'webapi.session', id: session.id, expiresMs: session.expiresMs });
    let management = true;
    let tlsSource: string | null = null;
    /** Opens or closes the web port, one change at a time, as the node's management flag says. */
    let changing: Promise<void> = Promise.resolve();
    const open = async (): Promise<void> => {
      const { host, port: wanted } = deps.config.webapi;
      const { api } = deps.config;
      const tls = webTls(host, deps.config.webapi.tls, { cert: deps.paths.nodeCert, key: deps.paths.nodeKey });
      const server = await createWebServer({
        ...(tls ? { tls } : {}),
        metricsAccess: deps.config.webapi.metrics,
        system: deps.gateway,
        home: deps.paths.home,
        relay,
        auth: { apiKey: () => deps.apiKey, tokens: deps.tokens, session: (id) => sessions.check(id).principal },
        sessions: {
          redeem: async (code) => await ctx.self.ask<Message & { id: string; expiresMs: number }>({ type: 'webapi.session.redeem', code }),
          open: async (principal) => await ctx.self.ask<Message & { id: string; expiresMs: number }>({ type: 'webapi.session.open', principal }),
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
          await server.listen({ host, port: wanted + attempt });
          if (attempt > 0) ctx.log.warn({ wanted, port: wanted + attempt }, `web port ${wanted} is taken; listening on ${wanted + attempt} instead (--web-port chooses)`);
          break;
        } catch (error) {
          const taken = (error as NodeJS.ErrnoException).code === 'EADDRINUSE';
          if (taken && attempt + 1 < tries) continue;
          await server.close();
          throw new Error(
            `cannot listen on ${scheme}://${hostInUrl()}:${wanted + attempt} (${(error as Error).message}); start with another --web-port N (0 picks a free one), or set "webapi": {"port": N} in ${deps.paths.config}`,
          );
        }
      }
      const address = server.server.address();
      port = typeof address === 'object' && address ? address.port : wanted;
      app = server;
      ctx.log.info({ url: `${scheme}://${hostInUrl()}:${port}/`, tls: tlsSource }, 'web UI listening');
    };
    const close = async (): Promise<void> => {
      const server = app;
      app = undefined;
      port = 0;
      await server?.close();
    };
    const feed = new CdbFeed(ctx, `object/node/${deps.system.identity.node}`, (records) => {
      const own = records.find((record) => record.key === `object/node/${deps.system.identity.node}`);
      const wanted = own?.deleted ? true : (own?.value as { management?: unknown } | undefined)?.management !== false;
      if (own === undefined || wanted === management) return;
      management = wanted;
      ctx.log.info({ management }, management ? 'now a management node: opening the web port' : 'no longer a management node: closing the web port');
      changing = changing.then(() => (management ? (app ? undefined : open()) : close())).catch((error: unknown) => ctx.log.error({ err: errorMessage(error) }, 'cannot change the web port'));
    });
    return {
      async started() {
        const tls = webTls(deps.config.webapi.host, deps.config.webapi.tls, { cert: deps.paths.nodeCert, key: deps.paths.nodeKey });
        scheme = tls ? 'https' : 'http';
        tlsSource = tls?.source ?? null;
        // A management node (object/node/<self>, management not false) serves the web port; others do not.
        const own = await cdb.ask<Message & { record: { value: { management?: unknown } } }>({ type: 'cdb.get', key: `object/node/${deps.system.identity.node}` }).catch(() => undefined);
        management = own?.record.value.management !== false;
        if (management) await open();
        else ctx.log.info('not a management node: no web port (acp node set NAME --management on)');
        await feed.start();
      },
      receive(message, sender) {
        const fed = feed.handle(message);
        if (fed !== false) return fed === true ? undefined : fed;
        counters.handled += 1;
        const parsed = webapiSchema.parse(message);
        const base = `${scheme}://${hostInUrl()}:${port}/`;
        switch (parsed.type) {
          case 'service.info':
            return counters.info('webapi', 'Web API and UI on loopback', ctx);
          case 'webapi.address':
            return { type: 'webapi.address', url: app ? base : null, management };
          case 'webapi.login-link': {
            if (!app) throw new AcpError('ACP_ERR_WEB_NOT_MANAGEMENT', `node ${deps.system.identity.node} is not a management node and serves no web UI: use a management node's, or acp node set ${deps.system.identity.node} --management on`);
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
          case 'webapi.display.open':
            return replyLater(relay.serve(parsed.id, parsed.stream, sender));
          case 'webapi.display.input':
            return relay.write(parsed.stream, parsed.data, sender);
          case 'webapi.display.close':
            relay.stop(parsed.stream, sender);
            return undefined;
          case 'webapi.display.data':
            return replyLater(relay.data(parsed.stream, parsed.data));
          case 'webapi.display.closed':
            relay.closed(parsed.stream, parsed.reason);
            return undefined;
          default: {
            const unreachable: never = parsed;
            return unreachable;
          }
        }
      },
      async stopping() {
        feed.stop();
        relay.shutdown();
        await changing;
        await close();
      },
    };
  },
};
