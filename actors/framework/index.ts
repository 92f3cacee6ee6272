import { z } from 'zod';
import type { ActorContext, Actor } from '../../runtime/actor.js';
import type { NodeStatus } from '../../runtime/services.js';
import { serviceInfoSchema, ServiceClock } from '../kit.js';

export const frameworkSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  z.strictObject({ type: z.literal('status') }),
  z.strictObject({ type: z.literal('shutdown'), reason: z.string().max(200).optional() }),
]);
export type FrameworkMessage = z.infer<typeof frameworkSchema>;

export interface FrameworkDeps {
  /** Starts (or resumes) the service tree; idempotent. */
  boot(): Promise<void>;
  status(): NodeStatus;
  requestShutdown(reason: string): void;
}

/**
 * The Framework's actor: the node's root. It boots the service tree when it starts (without holding
 * its own mailbox, so status is answered during boot), reports the node's status, and takes the
 * request to shut the node down.
 */
export function createFramework(ctx: ActorContext, deps: FrameworkDeps): Actor {
  const clock = new ServiceClock();
  return {
    started() {
      deps.boot().catch((error: unknown) => ctx.log.error({ err: (error as Error).message }, 'boot failed'));
    },
    receive(message) {
      clock.handled += 1;
      const parsed = frameworkSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return clock.info('framework', 'Root supervisor of the node', ctx);
        case 'status':
          return deps.status();
        case 'shutdown': {
          const reason = parsed.reason ?? 'requested';
          ctx.log.info({ reason }, 'shutdown requested');
          // Answer first: the shutdown stops this actor too.
          setImmediate(() => deps.requestShutdown(reason));
          return { type: 'shutting-down', pid: process.pid };
        }
        default: {
          const unreachable: never = parsed;
          return unreachable;
        }
      }
    },
  };
}
