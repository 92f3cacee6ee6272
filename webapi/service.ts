import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { serviceInfoSchema, ServiceClock } from '../actors/kit.js';
import type { ServiceDefinition } from '../runtime/actor.js';
import { wireLimits } from '../runtime/config.js';
import type { Message } from '../runtime/messages.js';
import type { ServiceDeps } from '../runtime/services.js';
import { nodeMetrics } from './metrics.js';
import { createWebServer } from './server.js';

const webapiSchema = z.discriminatedUnion('type', [serviceInfoSchema, z.strictObject({ type: z.literal('webapi.address') })]);

/** The web API on loopback: the status page, REST under /api/v1, /ws and /metrics. */
export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'webapi',
  description: 'Web API and UI on loopback',
  schema: webapiSchema,
  authority: { 'service.info': 'read', 'webapi.address': 'read' },
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new Error('webapi runs inline only');
    const clock = new ServiceClock();
    const cdb = ctx.ref(deps.system.localPath('cdb'));
    let app: FastifyInstance | undefined;
    let port = 0;
    return {
      async started() {
        const { host, port: wanted } = deps.config.webapi;
        const { api } = deps.config;
        app = await createWebServer({
          system: deps.system,
          auth: { apiKey: () => deps.apiKey, tokens: deps.tokens },
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
        try {
          await app.listen({ host, port: wanted });
        } catch (error) {
          await app.close();
          throw new Error(
            `cannot listen on http://${host}:${wanted} (${(error as Error).message}); start with another --web-port N (0 picks a free one), or set "webapi": {"port": N} in ${deps.paths.config}`,
          );
        }
        const address = app.server.address();
        port = typeof address === 'object' && address ? address.port : wanted;
        ctx.log.info({ url: `http://${host}:${port}/` }, 'web UI listening');
      },
      receive(message) {
        clock.handled += 1;
        const parsed = webapiSchema.parse(message);
        switch (parsed.type) {
          case 'service.info':
            return clock.info('webapi', 'Web API and UI on loopback', ctx);
          case 'webapi.address':
            return { type: 'webapi.address', url: `http://${deps.config.webapi.host}:${port}/` };
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
