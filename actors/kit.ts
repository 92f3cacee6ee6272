import { threadId } from 'node:worker_threads';
import { z } from 'zod';
import type { ActorContext, Isolation, ServiceDefinition } from '../runtime/actor.js';
import type { Message } from '../runtime/messages.js';

/** `{type:'service.info'}`: every service's self-description, answered by the actor itself. */
export const serviceInfoSchema = z.strictObject({ type: z.literal('service.info') });

export interface ServiceInfo extends Message {
  type: 'service.info';
  service: string;
  path: string;
  description: string;
  generation: number;
  startedAt: string;
  handled: number;
  pid: number;
  /** 0 on the daemon's main thread; the worker's id under thread isolation. */
  threadId: number;
}

/** What every service reports about itself (service.info): when it started and how many messages it handled. */
export class ServiceCounters {
  readonly startedAt = new Date().toISOString();
  handled = 0;

  info(name: string, description: string, ctx: ActorContext): ServiceInfo {
    return {
      type: 'service.info',
      service: name,
      path: ctx.self.path,
      description,
      generation: ctx.generation,
      startedAt: this.startedAt,
      handled: this.handled,
      pid: process.pid,
      threadId,
    };
  }
}

/**
 * A service whose actor so far answers only its self-description: it holds its place, path and
 * supervision in the node's tree while its domain work is built (see the issue named in `description`).
 */
export function placeholderService(name: string, description: string, isolations: readonly Isolation[] = ['inline', 'thread', 'process']): ServiceDefinition<unknown> {
  return {
    name,
    description,
    schema: serviceInfoSchema,
    authority: { 'service.info': 'read' },
    isolations,
    create(ctx) {
      const counters = new ServiceCounters();
      return {
        receive(message) {
          counters.handled += 1;
          const parsed = serviceInfoSchema.parse(message);
          return counters.info(name, description, ctx) satisfies Message & { type: typeof parsed.type };
        },
      };
    },
  };
}
