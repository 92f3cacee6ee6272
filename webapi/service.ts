import { z } from 'zod';
import { serviceInfoSchema, ServiceClock } from '../actors/kit.js';
import type { ServiceDefinition } from '../runtime/actor.js';
import type { ServiceDeps } from '../runtime/services.js';
import { LoopbackHttpServer, type Route } from './http.js';
import { statusPage } from './page.js';

const webapiSchema = z.discriminatedUnion('type', [serviceInfoSchema, z.strictObject({ type: z.literal('webapi.address') })]);

/** HTTP on loopback: the status page and `GET /api/v1/status`. */
export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'webapi',
  description: 'Web API and UI on loopback',
  schema: webapiSchema,
  authority: { 'service.info': 'read', 'webapi.address': 'read' },
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new Error('webapi runs inline only');
    const clock = new ServiceClock();
    const routes = new Map<string, Route>([
      ['/', async () => ({ status: 200, type: 'text/html; charset=utf-8', body: statusPage })],
      ['/api/v1/status', async () => ({ status: 200, type: 'application/json', body: JSON.stringify(deps.status()) })],
    ]);
    const server = new LoopbackHttpServer(routes);
    let port = 0;
    return {
      async started() {
        const { host, port: wanted } = deps.config.webapi;
        try {
          port = await server.listen(host, wanted);
        } catch (error) {
          throw new Error(
            `cannot listen on http://${host}:${wanted} (${(error as Error).message}); start with another --web-port N (0 picks a free one), or set "webapi": {"port": N} in ${deps.paths.config}`,
          );
        }
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
        await server.close();
      },
    };
  },
};
