import { z } from 'zod';
import { FrameListener } from '../../adapters/frame-listener.js';
import type { ServiceDefinition } from '../../runtime/actor.js';
import type { ServiceDeps } from '../../runtime/services.js';
import { serviceInfoSchema, ServiceClock } from '../kit.js';
import { ApiSession } from './session.js';

const apiSchema = z.discriminatedUnion('type', [serviceInfoSchema, z.strictObject({ type: z.literal('api.connections') })]);

/** The local API: the wire protocol on `<home>/run/acp.sock` (directory 0700, socket 0600, API key in hello). */
export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'api',
  description: 'Local API on a Unix socket',
  schema: apiSchema,
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new Error('api runs inline only');
    const clock = new ServiceClock();
    const listener = new FrameListener({
      socketPath: deps.paths.socket,
      maxFrameBytes: deps.config.api.maxFrameBytes,
      maxConnections: deps.config.api.maxConnections,
      log: ctx.log,
      accept: (connection) =>
        new ApiSession(connection, {
          system: deps.system,
          apiKey: deps.apiKey,
          helloTimeoutMs: deps.config.api.helloTimeoutMs,
          log: ctx.log,
          onRefused: () => deps.countRefusal(),
        }),
    });
    return {
      async started() {
        await listener.listen();
        ctx.log.info({ socket: deps.paths.socket }, 'API listening');
      },
      receive(message) {
        clock.handled += 1;
        const parsed = apiSchema.parse(message);
        switch (parsed.type) {
          case 'service.info':
            return clock.info('api', 'Local API on a Unix socket', ctx);
          case 'api.connections':
            return { type: 'api.connections', count: listener.connections };
          default: {
            const unreachable: never = parsed;
            return unreachable;
          }
        }
      },
      async stopping() {
        await listener.close();
      },
    };
  },
};
